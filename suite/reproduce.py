"""``python -m suite.reproduce profile=<name> dry_run=<0|1>``: the whole comparison, resumable.

Steps, for the profile ``suite/conf/profile/<name>.yaml``:

1. **train**: every job of ``train.experiments x train.methods x train.sparsities x
   train.seeds``, dense once per seed (its config carries ``sparsity=dense_sparsity``, 0 by
   default, because dense ignores it). A job whose record is already in the store is skipped,
   so an interrupted reproduce resumes. Jobs run in ``workers`` spawned processes with
   ``threads_per_worker`` torch threads each; a tqdm bar shows progress and the ETA. Before any
   compute the data of every experiment is opened, so a missing data set stops the run at once
   with the loader's message (where it looked, how to get the data).
2. **bench**: ``python -m suite.bench profile=<bench profile>`` (the quick bench for the quick
   and default profiles), skipped when the store holds a bench record of that profile.
3. **report**: :func:`suite.report.build_report` over the store.

A failed job does not stop the others; failures are listed at the end (with their log file
and the command that reruns them alone) and the exit status is 1. ``dry_run=1`` lists the
jobs (done or to do) and the bench and report steps without running anything.

Config: ``suite/conf/reproduce.yaml``; any key can be overridden on the command line, e.g.
``python -m suite.reproduce profile=quick 'profile.train.seeds=[0,1]' workers=1``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import multiprocessing
import os
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from suite.report.frames import get_path
from suite.results import ResultStore

CONF_DIR = Path(__file__).resolve().parent / "conf"
CONFIG_NAME = "reproduce"
DENSE = "dense"
_MISSING = object()


class ReproduceError(RuntimeError):
    """Reproduce cannot start (missing data, no GPU where the profile needs one, bad grid)."""


# --------------------------------------------------------------------------- config


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The resolved reproduce config (``suite/conf/reproduce.yaml`` + ``overrides``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One train run of the grid.

    Attributes:
        experiment, method, seed: the grid point.
        sparsity: the grid sparsity, ``None`` for dense (run once per seed).
        overrides: the full ``suite.train`` command-line overrides of the run.
        match: ``(key, value)`` pairs a stored train record's config must hold to count as
            this job done.
    """

    experiment: str
    method: str
    sparsity: float | None
    seed: int
    overrides: tuple[str, ...]
    match: tuple[tuple[str, Any], ...]

    @property
    def name(self) -> str:
        """``digits_mlp/srigl/s0.9/seed0`` (``.../dense/seed0`` for dense)."""
        sp = "" if self.sparsity is None else f"s{self.sparsity:g}/"
        return f"{self.experiment}/{self.method}/{sp}seed{self.seed}"

    @property
    def command(self) -> str:
        """The shell command that runs this job alone."""
        return "python -m suite.train " + " ".join(shlex.quote(o) for o in self.overrides)


def parse_override(override: str) -> tuple[str, Any]:
    """``"a.b=0.9" -> ("a.b", 0.9)`` (``+``/``++`` prefixes dropped, value read as YAML).

    Raises:
        ValueError: ``override`` has no ``=``.
    """
    if "=" not in override:
        raise ValueError(f"override {override!r} is not of the form key=value")
    key, value = override.split("=", 1)
    key = key.lstrip("+~")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def plan_jobs(cfg: DictConfig) -> list[Job]:
    """Every train job of ``cfg.profile.train``, seed-major (a stopped run holds whole seeds).

    Raises:
        ReproduceError: an empty grid axis (naming it and the profile).
    """
    grid = cfg.profile.train
    for axis in ("experiments", "methods", "seeds"):
        if not grid.get(axis):
            raise ReproduceError(
                f"profile {cfg.profile.get('name')!r}: train.{axis} is empty; give at least one"
            )
    if not grid.get("sparsities") and any(m != DENSE for m in grid.methods):
        raise ReproduceError(
            f"profile {cfg.profile.get('name')!r}: train.sparsities is empty but methods "
            f"{[m for m in grid.methods if m != DENSE]} need one"
        )
    extra = [f"results_dir={cfg.results_dir}", f"checkpoint_dir={cfg.checkpoint_dir}"]
    if grid.get("epochs") is not None:
        extra.append(f"{cfg.epochs_key}={grid.epochs}")
    extra += list(cfg.train_overrides)
    ignore = set(cfg.match_ignore)
    jobs = []
    for seed in grid.seeds:
        for experiment in grid.experiments:
            for method in grid.methods:
                sparsities = [None] if method == DENSE else list(grid.sparsities)
                for sp in sparsities:
                    written_sp = cfg.dense_sparsity if sp is None else sp
                    overrides = (
                        f"experiment={experiment}",
                        f"trainer={method}",
                        f"sparsity={written_sp}",
                        f"seed={seed}",
                        *extra,
                    )
                    match = tuple(
                        (k, v)
                        for k, v in map(parse_override, overrides)
                        if k not in ignore and not (sp is None and k == "sparsity")
                    )
                    jobs.append(Job(experiment, method, sp, int(seed), overrides, match))
    return jobs


def _same(stored: Any, wanted: Any) -> bool:
    if isinstance(stored, Mapping):  # a config group: its label, else its name
        key = "label" if "label" in stored else "name"
        return key in stored and stored[key] == wanted
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return stored == wanted
    if isinstance(stored, (int, float)) and isinstance(wanted, (int, float)):
        return math.isclose(float(stored), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
    return stored == wanted


def record_matches(config: Mapping[str, Any], match: Sequence[tuple[str, Any]]) -> bool:
    """Whether a stored record's ``config`` holds every ``(dotted key, value)`` of ``match``."""
    for key, wanted in match:
        stored = get_path(config, key, _MISSING)
        if stored is _MISSING or not _same(stored, wanted):
            return False
    return True


def split_done(jobs: Sequence[Job], records: Sequence[Mapping[str, Any]]) -> tuple[list, list]:
    """``(done, pending)``: jobs with / without a matching train record in ``records``."""
    configs = [r["config"] for r in records if r["kind"] == "train"]
    done, pending = [], []
    for job in jobs:
        (done if any(record_matches(c, job.match) for c in configs) else pending).append(job)
    return done, pending


# --------------------------------------------------------------------------- running jobs


@dataclass
class JobResult:
    """Outcome of one job: ok, seconds, the error text (traceback) and the job's log file."""

    job: Job
    ok: bool
    seconds: float
    error: str | None = None
    log: str | None = None


def _init_worker(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def _run_one(overrides: Sequence[str], log_path: str | None) -> tuple[bool, float, str | None]:
    """Run ``suite.train`` in this process with its output sent to ``log_path``."""
    start = time.perf_counter()
    log = open(log_path, "w", encoding="utf-8") if log_path else open(os.devnull, "w")  # noqa: SIM115
    with log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            from suite import train

            train.run(train.compose(list(overrides)))
            return True, time.perf_counter() - start, None
        except Exception:  # a failed job is reported, it never stops the others
            text = traceback.format_exc()
            log.write(text)
            return False, time.perf_counter() - start, text


def _log_path(log_dir: Path, job: Job) -> str:
    return str(log_dir / (job.name.replace("/", "_") + ".log"))


def run_jobs(
    jobs: Sequence[Job], workers: int, threads: int | None, log_dir: Path
) -> list[JobResult]:
    """Run ``jobs`` (in ``workers`` spawned processes when > 1) with a tqdm bar and ETA."""
    from tqdm import tqdm

    log_dir.mkdir(parents=True, exist_ok=True)
    results: list[JobResult] = []
    bar = tqdm(total=len(jobs), unit="job", desc="train", dynamic_ncols=True, file=sys.stderr)

    def finish(job: Job, ok: bool, seconds: float, error: str | None) -> None:
        results.append(JobResult(job, ok, seconds, error, _log_path(log_dir, job)))
        failed = sum(not r.ok for r in results)
        bar.set_postfix_str(f"last={job.name} failed={failed}", refresh=False)
        bar.update(1)

    try:
        if workers <= 1:
            _init_worker(threads)
            for job in jobs:
                finish(job, *_run_one(job.overrides, _log_path(log_dir, job)))
        else:
            ctx = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(workers, ctx, _init_worker, (threads,))
            try:
                futures = {
                    pool.submit(_run_one, job.overrides, _log_path(log_dir, job)): job
                    for job in jobs
                }
                for fut in as_completed(futures):
                    job = futures[fut]
                    try:
                        finish(job, *fut.result())
                    except Exception:  # the worker process died (e.g. out of memory)
                        finish(job, False, 0.0, traceback.format_exc())
            finally:
                # Do not wait for the workers to exit (torch's teardown takes seconds): the
                # bench and the report go on meanwhile; the interpreter joins them at exit.
                pool.shutdown(wait=False, cancel_futures=True)
    finally:
        bar.close()
    return results


# --------------------------------------------------------------------------- checks


def check_can_start(cfg: DictConfig, pending: Sequence[Job]) -> None:
    """Fail before any compute when the profile needs a GPU that is not there, or when the
    data of an experiment is missing (the data set's own message says where it looked).

    Raises:
        ReproduceError: with the reason.
    """
    if cfg.require_gpu:
        import torch

        if not torch.cuda.is_available():
            raise ReproduceError(
                f"profile {cfg.profile.name!r} needs a CUDA GPU (require_gpu=true) and there is "
                "none here; run it on a GPU machine, or pass require_gpu=false to train on CPU"
            )
    from suite import train
    from suite.data import DatasetNotFoundError, create_dataset

    seen = set()
    for job in pending:
        if job.experiment in seen:
            continue
        try:
            tcfg = train.compose(list(job.overrides))
        except Exception:  # a broken job fails on its own and is reported; check the next one
            continue
        seen.add(job.experiment)
        dataset = OmegaConf.to_container(tcfg.dataset, resolve=True)
        name = dataset.pop("name")
        try:
            create_dataset(name, seed=tcfg.seed, **dataset)
        except DatasetNotFoundError as exc:
            raise ReproduceError(
                f"experiment {job.experiment!r} cannot start, nothing was run: {exc}"
            ) from exc


# --------------------------------------------------------------------------- bench and report


def bench_profile(cfg: DictConfig) -> str:
    """The bench profile reproduce runs: ``bench.profile_for[profile]``, else the profile."""
    return str(cfg.bench.profile_for.get(cfg.profile.name, cfg.profile.name))


def bench_command(cfg: DictConfig) -> list[str]:
    """The bench step's command line."""
    return [
        sys.executable,
        "-m",
        "suite.bench",
        f"profile={bench_profile(cfg)}",
        f"results_dir={cfg.results_dir}",
        *cfg.bench.overrides,
    ]


def bench_done(cfg: DictConfig, records: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the store holds a bench record of :func:`bench_profile`."""
    match = [("profile", bench_profile(cfg))]
    return any(r["kind"] == "bench" and record_matches(r["config"], match) for r in records)


def report_commands(cfg: DictConfig) -> list[str]:
    """The commands that regenerate the report (shown in it)."""
    return [
        f"make reproduce PROFILE={cfg.profile.name}   # or: python -m suite.reproduce "
        f"profile={cfg.profile.name}",
        f"python -m suite.report --runs {cfg.results_dir} --out {cfg.out_dir}",
    ]


# --------------------------------------------------------------------------- the whole run


@dataclass
class Summary:
    """What :func:`run` did (``failed`` holds failed train jobs; ``errors`` failed steps)."""

    jobs: list[Job] = field(default_factory=list)
    done_before: list[Job] = field(default_factory=list)
    results: list[JobResult] = field(default_factory=list)
    bench: str = "not run"
    report: Path | None = None
    errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors


def _fmt_s(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def _print_plan(cfg: DictConfig, jobs: Sequence[Job], done: Sequence[Job], records) -> None:
    done_set = set(done)
    print(
        f"reproduce profile={cfg.profile.name}: {len(jobs)} train jobs "
        f"({len(done)} already in {cfg.results_dir}, {len(jobs) - len(done)} to run; "
        "dense once per seed)"
    )
    for job in jobs:
        print(f"  [{'done' if job in done_set else 'todo'}] {job.command}")
    bench = "done" if bench_done(cfg, records) and not cfg.bench.rerun else "todo"
    if not cfg.bench.enabled:
        bench = "off"
    print(
        f"then bench [{bench}]: python {' '.join(shlex.quote(a) for a in bench_command(cfg)[1:])}"
    )
    report = "todo" if cfg.report.enabled else "off"
    print(
        f"then report [{report}]: python -m suite.report --runs {cfg.results_dir} "
        f"--out {cfg.out_dir}"
    )


def run(cfg: DictConfig) -> Summary:
    """Run (or with ``cfg.dry_run`` list) the profile's train jobs, the bench and the report.

    Raises:
        ReproduceError: before any compute, when the run cannot start.
    """
    t0 = time.perf_counter()
    summary = Summary(jobs=plan_jobs(cfg))
    store = ResultStore(cfg.results_dir)
    records, invalid = store.read_with_errors()
    for e in invalid:
        print(f"WARNING: invalid record file in the store: {e.path}: {e.error}", file=sys.stderr)
    summary.done_before, pending = split_done(summary.jobs, records)
    if cfg.dry_run:
        _print_plan(cfg, summary.jobs, summary.done_before, records)
        return summary

    print(
        f"reproduce profile={cfg.profile.name}: {len(summary.jobs)} train jobs, "
        f"{len(summary.done_before)} already done, {len(pending)} to run "
        f"({cfg.workers} worker(s) x {cfg.threads_per_worker or 'default'} thread(s))",
        file=sys.stderr,
    )
    if pending:
        check_can_start(cfg, pending)
        t = time.perf_counter()
        summary.results = run_jobs(
            pending, int(cfg.workers), cfg.threads_per_worker, Path(cfg.job_log_dir)
        )
        summary.seconds["train"] = time.perf_counter() - t

    if cfg.bench.enabled:
        t = time.perf_counter()
        summary.bench = _run_bench(cfg, store, summary)
        summary.seconds["bench"] = time.perf_counter() - t
    if cfg.report.enabled:
        from suite.report import build_report

        t = time.perf_counter()
        try:
            rep = build_report(
                cfg.results_dir, cfg.out_dir, allow_invalid=True, commands=report_commands(cfg)
            )
            summary.report = rep.path
            if rep.invalid:
                summary.errors.append(f"{len(rep.invalid)} invalid record file(s), see the report")
        except Exception:
            summary.errors.append("report failed:\n" + traceback.format_exc())
        summary.seconds["report"] = time.perf_counter() - t
    summary.seconds["total"] = time.perf_counter() - t0
    _print_summary(cfg, summary)
    return summary


def _run_bench(cfg: DictConfig, store: ResultStore, summary: Summary) -> str:
    if not cfg.bench.rerun and bench_done(cfg, store.read_with_errors()[0]):
        return f"skipped (a bench record of profile={bench_profile(cfg)} is in the store)"
    if importlib.util.find_spec("suite.bench") is None:
        summary.errors.append("bench: suite.bench is not installed in this checkout")
        return "failed"
    cmd = bench_command(cfg)
    print("bench: python " + " ".join(shlex.quote(a) for a in cmd[1:]), file=sys.stderr)
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        summary.errors.append(f"bench exited with status {proc.returncode}: {' '.join(cmd[1:])}")
        return "failed"
    return "ok"


def _print_summary(cfg: DictConfig, summary: Summary) -> None:
    ran = summary.results
    times = ", ".join(f"{k} {_fmt_s(v)}" for k, v in summary.seconds.items())
    print(
        f"\nreproduce profile={cfg.profile.name}: {len(summary.jobs)} train jobs: "
        f"{len(ran) - len(summary.failed)} run, {len(summary.done_before)} already done, "
        f"{len(summary.failed)} failed; bench: {summary.bench}; "
        f"report: {summary.report or 'not written'}; wall time: {times}"
    )
    for r in summary.failed:
        last = (r.error or "").strip().splitlines()[-1:] or ["(no message)"]
        print(f"FAILED {r.job.name}: {last[0]}\n  log: {r.log}\n  rerun: {r.job.command}")
    for err in summary.errors:
        print(f"ERROR {err}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: Hydra-style overrides of ``suite/conf/reproduce.yaml``.

    Exit status: 0 all done, 1 a job or step failed, 2 could not start.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    from hydra.errors import HydraException

    try:
        cfg = compose(argv)
    except HydraException as exc:  # a bad override: say which, without Hydra's traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = run(cfg)
    except ReproduceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
