"""Tests of suite.report (mirrors the package)."""
