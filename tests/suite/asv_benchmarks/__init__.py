"""Tests of suite.asv_benchmarks (mirrors the package)."""
