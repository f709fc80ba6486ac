"""The Hydra plugins of srigl-bench: the ``pool`` launcher and the ``grids`` sweeper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from hydra_plugins.srigl_bench_plugins.grids_sweeper import expand_grids

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).with_name("sweep_app.py")


def test_grids_are_a_union_of_cartesian_products_each_job_once_arguments_win():
    parser = OverridesParser.create()
    grids = [
        {"trainer": "rigl,srigl", "sparsity": "0.9,0.95", "seed": "range(2)"},
        {"trainer": "dense", "sparsity": 0, "seed": "range(2)"},
        {"trainer": "srigl", "sparsity": "0.9", "seed": "0"},  # already in the first grid
    ]
    jobs = expand_grids(grids, ["epochs=3"], parser)
    assert len(jobs) == 2 * 2 * 2 + 2
    assert len({tuple(j) for j in jobs}) == len(jobs)
    assert all("epochs=3" in j for j in jobs)
    assert ["trainer=dense", "sparsity=0", "seed=1", "epochs=3"] in jobs
    # a command-line value of a grid key replaces the grid's for every grid
    only = expand_grids(grids, ["seed=7"], parser)
    assert {j[2] for j in only} == {"seed=7"} and len(only) == 2 * 2 + 1


def _pool_sweep(tmp_path: Path, *overrides: str) -> tuple[str, subprocess.CompletedProcess]:
    """Run the test app as a multirun with the ``pool`` launcher (2 workers) and the ``grids``
    sweeper; its jobs write to ``tmp_path / "out"``, Hydra to ``tmp_path / "sweep"``. Returns
    (its stdout + stderr, the finished process)."""
    cmd = [
        sys.executable,
        str(APP),
        "-m",
        "hydra/launcher=pool",
        "hydra/sweeper=grids",
        "hydra.launcher.workers=2",
        *overrides,
        f"+out={tmp_path / 'out'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    return proc.stdout + proc.stderr, proc


def test_pool_launcher_runs_the_union_in_parallel_workers_and_summarises_failures(tmp_path):
    out, sweep = tmp_path / "out", tmp_path / "sweep"
    log, proc = _pool_sweep(
        tmp_path,
        "hydra.launcher.threads_per_worker=1",
        'hydra.sweeper.grids=[{+x:"1,2,3",+y:a},{+x:1,+y:a},{+x:9,+y:b}]',
    )
    assert proc.returncode != 0, log  # a failed job fails the multirun, after the others ran
    done = sorted(p.name for p in out.glob("*.json"))
    assert done == ["1-a.json", "3-a.json", "9-b.json"], log  # (1, a) ran once
    infos = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert {i["omp"] for i in infos} == {"1"}  # 1 thread per worker, set before torch
    assert "3/4 jobs completed, 1 failed" in log
    assert "FAILED job #1: ValueError: x=2 is refused by the test app" in log
    assert "rerun: python " in log and "+x=2 +y=a" in log
    # each job's console output is in its own Hydra output folder, not on the terminal
    consoles = sorted(sweep.glob("*/console.log"))
    assert len(consoles) == 4
    assert "job x=2 y=a" in (sweep / "1" / "console.log").read_text()
    assert "Traceback" in (sweep / "1" / "console.log").read_text()
    assert "job x=9 y=b" not in log


def test_a_pool_worker_exits_when_its_launcher_is_gone():
    """A worker whose recorded launcher pid is no longer its parent (the launcher was killed)
    exits on its own instead of training on as an orphan."""
    code = (
        "import os, time\n"
        "from hydra_plugins.srigl_bench_plugins.pool_launcher import _watch_parent\n"
        "_watch_parent(os.getppid() + 1, interval=0.05)\n"  # not our parent: as if orphaned
        "time.sleep(10)\n"
        "print('still alive')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=8)
    assert done.returncode == 1 and "still alive" not in done.stdout


def test_a_pool_worker_keeps_running_while_its_launcher_lives():
    code = (
        "import os, time\n"
        "from hydra_plugins.srigl_bench_plugins.pool_launcher import _watch_parent\n"
        "_watch_parent(os.getppid(), interval=0.05)\n"
        "time.sleep(0.5)\n"
        "print('still alive')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=8)
    assert done.returncode == 0 and "still alive" in done.stdout


def test_a_job_that_kills_its_worker_fails_alone_and_the_others_complete(tmp_path):
    """A dead worker breaks the whole process pool; the launcher runs the jobs it took down
    again, alone, so only the job that kills its worker is reported failed."""
    out = tmp_path / "out"
    log, proc = _pool_sweep(tmp_path, 'hydra.sweeper.grids=[{+x:"5,6,7,8",+y:a}]')
    assert proc.returncode != 0, log
    assert sorted(p.name for p in out.glob("*.json")) == ["6-a.json", "7-a.json", "8-a.json"], log
    assert "3/4 jobs completed, 1 failed" in log
    assert "FAILED job #0: its worker process died" in log
