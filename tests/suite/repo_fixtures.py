"""Helpers for tests that read this repository's own git history."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def first_parent_shas(n: int) -> list[str]:
    """The newest ``n`` first-parent commits of HEAD, newest first; skips the test when the
    clone holds fewer."""
    shas = subprocess.run(
        ["git", "rev-list", "--first-parent", "-n", str(n), "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if len(shas) < n:
        pytest.skip(f"needs a clone with at least {n} commits")
    return shas
