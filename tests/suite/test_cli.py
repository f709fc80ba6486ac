"""suite.cli: how every entry point ends (one-line errors, SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_stops_the_child_a_run_waits_for():
    """A killed reproduction must not leave its sweep running: with exit_on_sigterm, SIGTERM
    becomes SystemExit and subprocess.run stops the child it waits for."""
    child = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    code = (
        "import subprocess, sys\n"
        "from suite.cli import exit_on_sigterm\n"
        "exit_on_sigterm()\n"
        f"subprocess.run([sys.executable, '-c', {child!r}])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", code]
    parent = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    child_pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) == 128 + signal.SIGTERM
    for _ in range(100):  # the child is gone within a few seconds
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"child {child_pid} still runs after its parent was stopped")
