"""Tests of suite.train (mirrors the package)."""
