"""Helpers of the scale-out tests: start ``suite.train`` in fresh processes, as users do."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRY = Path(__file__).resolve().parent / "train_entry.py"
#: variables a launcher sets; a test must not inherit them from whatever started pytest
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                 "MASTER_PORT", "SLURM_NTASKS", "SUBMITIT_EXECUTOR", "SUBMITIT_FOLDER")  # fmt: skip


def clean_env(extra: Mapping[str, str] = ()) -> dict[str, str]:
    """The environment for a child process: the repository first on PYTHONPATH, one thread
    per process, no inherited launcher variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    env["HYDRA_FULL_ERROR"] = "1"
    env.update(extra)
    return env


def run_checked(cmd: Sequence[str], env: Mapping[str, str], timeout: float = 300) -> str:
    """Run ``cmd`` in the repository root; return its stdout, or fail with its output tail."""
    done = subprocess.run(
        list(cmd), cwd=ROOT, env=dict(env), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd[:6])} ... exited with {done.returncode}\n"
            f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
        )
    return done.stdout


def train_command(overrides: Sequence[str], nproc: int = 1) -> list[str]:
    """The command that runs the ``suite.train`` app (through :data:`ENTRY`) in one process,
    or in ``nproc`` processes started by torchrun (``torch.distributed.run --standalone``,
    which picks a free rendezvous port itself)."""
    if nproc == 1:
        return [sys.executable, str(ENTRY), *overrides]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(ENTRY),
        *overrides,
    ]
