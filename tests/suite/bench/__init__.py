"""Tests of suite.bench (mirrors the package)."""
