"""``python -m suite.reproduce``: the steps in order (fresh store, sweep, bench, comparison) and
the command line; see :mod:`suite.reproduce` for what each step does."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from suite import machine
from suite.cli import exit_on_sigterm, one_line_errors
from suite.report import frames as rd
from suite.reproduce import sweep
from suite.reproduce.compare import Outcome, compare_bench, compare_cells, machine_class
from suite.reproduce.document import fmt_seconds, write_document
from suite.reproduce.publish import publish
from suite.reproduce.store import prepare_store, write_marker
from suite.reproduce.sweep import ReproduceError
from suite.results import ResultStore

log = logging.getLogger(__name__)


def run_sweep(cfg: DictConfig) -> int:
    """Run the train sweep (a Hydra multirun); its exit status."""
    cmd = sweep.sweep_command(cfg)
    log.info(f"train: {sweep.expected_jobs(cfg)} jobs through hydra/launcher={cfg.launcher}")
    log.info(f"  {sweep.shell_line(cmd)}")
    return subprocess.run(cmd, check=False).returncode


def run_bench(cfg: DictConfig, marker: dict[str, Any]) -> list[str]:
    """Run the profile's bench runs not done yet (resume); the failed ones' commands."""
    failed = []
    for i, overrides in enumerate(sweep.bench_runs(cfg)):
        if i in marker.get("bench_done", []):
            log.info(f"bench {i + 1}: done before (resume)")
            continue
        cmd = sweep.bench_command(cfg, overrides)
        log.info(f"bench {i + 1}: {sweep.shell_line(cmd)}")
        if subprocess.run(cmd, check=False).returncode != 0:
            failed.append(f"bench: {sweep.shell_line(cmd)}")
            continue
        marker.setdefault("bench_done", []).append(i)
        write_marker(Path(cfg.store_dir), marker)
    return failed


def this_machine(reproduced: Sequence[dict[str, Any]]) -> str | None:
    """The machine class of the reproduction: the most common class of its train records
    (they say where they were made), else this machine's (:func:`suite.machine.identity`)."""
    names = [machine_class(r.get("host")) for r in reproduced if r.get("kind") == "train"]
    names = [n for n in names if n is not None]
    if names:
        return max(sorted(set(names)), key=names.count)
    return machine_class(machine.identity())


def compare(cfg: DictConfig, outcome: Outcome) -> Outcome:
    """Compare the store with the published records; write REPRODUCTION.md and the figure."""
    published, bad_pub = ResultStore(cfg.published_dir).read_with_errors()
    reproduced, bad_new = ResultStore(cfg.store_dir).read_with_errors()
    for e in bad_pub + bad_new:
        outcome.failed_steps.append(f"invalid record file {e.path}: {e.error}")
    if not published:
        log.warning(f"no published records in {cfg.published_dir}: nothing to compare with")
    outcome.cells = compare_cells(published, reproduced, float(cfg.noise_se))
    outcome.machine = this_machine(reproduced)
    outcome.bench = compare_bench(published, reproduced, float(cfg.bench.tolerance))
    write_document(cfg, outcome, published, reproduced)
    return outcome


def run(cfg: DictConfig) -> Outcome:
    """The whole reproduction: fresh store, sweep, bench, comparison (see the module doc).

    Raises:
        ReproduceError: before any compute, when the run cannot start.
    """
    t0 = time.perf_counter()
    outcome = Outcome(cells=pd.DataFrame(), bench=pd.DataFrame())
    sweep.sweep_grids(cfg)  # a bad grid fails here, before anything else
    if cfg.dry_run:
        log.info(
            f"reproduce profile={cfg.profile.name}: {sweep.expected_jobs(cfg)} train jobs into "
            f"{cfg.store_dir} (dense once per seed), then the bench, then the comparison"
        )
        log.info(f"train: {sweep.shell_line(sweep.sweep_command(cfg))}")
        for r in sweep.bench_runs(cfg) if cfg.bench.enabled else []:
            log.info(f"bench: {sweep.shell_line(sweep.bench_command(cfg, r))}")
        log.info(f"compare with {cfg.published_dir} -> {cfg.out}")
        return outcome
    sweep.check_can_start(cfg)
    marker = prepare_store(cfg)
    t = time.perf_counter()
    rc = run_sweep(cfg)
    outcome.seconds["train"] = time.perf_counter() - t
    if rc != 0:
        outcome.failed_steps.append(
            f"train sweep exited with status {rc} (its failure summary is above; job logs under "
            f"{cfg.sweep_dir}; RESUME=1 reruns only what is missing)"
        )
    if cfg.bench.enabled:
        t = time.perf_counter()
        outcome.failed_steps += run_bench(cfg, marker)
        outcome.seconds["bench"] = time.perf_counter() - t
    outcome.seconds["total"] = time.perf_counter() - t0  # up to the comparison (seconds)
    compare(cfg, outcome)
    marker["finished"] = not outcome.failed_steps
    marker["last_line"] = outcome.last_line()
    write_marker(Path(cfg.store_dir), marker)
    return outcome


def cells_of(outcome: Outcome, verdict: str) -> pd.DataFrame:
    """The compared cells of one verdict (``differs``, ``not bitwise``)."""
    cells = outcome.compared
    return cells[cells["verdict"] == verdict] if len(cells) else cells


@one_line_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: Hydra-style overrides of ``suite/conf/reproduce.yaml``.

    Exit status: 0 reproduced (or published), 1 a cell differs or a step failed, 2 could not
    start.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        sys.stdout.write(str(sys.modules[__package__].__doc__) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    exit_on_sigterm()  # a killed reproduction stops its sweep too (no orphaned training)
    from hydra.errors import HydraException

    try:
        cfg = sweep.compose(argv)
    except HydraException as exc:  # a bad override: say which, without Hydra's traceback
        log.error(f"error: {exc}")
        return 2
    try:
        if cfg.publish:
            publish(cfg)
            return 0
        outcome = run(cfg)
    except ReproduceError as exc:
        log.error(f"error: {exc}")
        return 2
    if cfg.dry_run:
        return 0
    for step in outcome.failed_steps:
        log.error(f"FAILED {step}")
    for r in cells_of(outcome, "differs").itertuples():
        log.error(
            f"DIFFERS {r.experiment} {r.method} {rd.sparsity_label(r.sparsity)}: published "
            f"{r.published}, reproduced {r.reproduced}"
        )
    for r in cells_of(outcome, "not bitwise").itertuples():
        log.warning(
            f"INVESTIGATE {r.experiment} {r.method} {rd.sparsity_label(r.sparsity)}: seed(s) "
            f"{r.investigate} not bitwise identical to their published runs of the same "
            f"machine class ({outcome.machine})"
        )
    times = ", ".join(f"{k} {fmt_seconds(v)}" for k, v in outcome.seconds.items())
    log.info(f"wrote {cfg.out} ({times})")
    log.info(outcome.headline())
    log.info(outcome.last_line())
    return 0 if outcome.ok else 1
