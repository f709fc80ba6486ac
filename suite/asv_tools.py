"""asv plumbing: fixed machine, one-commit runs, history backfill over git worktrees, summary.

The project is installed once in ``.venv`` (torch is too large to rebuild per commit), so every
run uses asv's ``existing`` environment (this interpreter) and names the commit explicitly::

    python -m suite.asv_tools machine              # asv machine --machine srigl-bench-2core ...
    python -m suite.asv_tools run                  # benchmarks of this checkout, as HEAD's sha
    python -m suite.asv_tools history --n 20       # last 20 commits of main, one worktree each
    python -m suite.asv_tools publish              # asv publish + results/ASV.md + PNG
    python -m suite.asv_tools compare A B          # asv compare --factor 1.1 --split --only-changed
    python -m suite.asv_tools check                # asv check (CI)

History: each commit is checked out with ``git worktree add --detach`` under a temporary
directory; asv runs that worktree's ``suite/asv_benchmarks`` (whose ``__init__`` puts the worktree
first on ``sys.path``; verified before the run) through a generated config that stores the
results in this repository's ``results/asv``. A commit without ``asv.conf.json`` or
``suite/asv_benchmarks`` is skipped with a message; commits that already have results for the
machine are skipped unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
MACHINE = "srigl-bench-2core"
CONFIG_NAME = "asv.conf.json"
BENCHMARK_DIR = Path("suite") / "asv_benchmarks"
HISTORY_CONFIG = ".asv-history.conf.json"
SUMMARY_MD = Path("results") / "ASV.md"
SUMMARY_PNG = Path("results") / "figures" / "asv_history.png"
DEFAULT_FACTOR = 1.1
# CI smoke: every benchmark class once, on one representative parameter set each (asv matches
# a regex against "name(param, ...)"): with --quick this takes about a minute on 2 cores.
SMOKE_BENCH = (
    r"LayerForward\.time_forward\(.*'vit_b16_fc2_3072x768', 0\.9, 1\)",
    r"LayerRatio\.track_ratio_vs_dense\(.*'vit_b16_fc2_3072x768', 0\.9, 1\)",
    r"WholeModel(Forward|Memory)\.\w+\('(dense|naive)'\)",
    r"TrainingStep\.time_step\('srigl'\)",
    r"TopologyUpdate\.time_step\('srigl', True\)",
    r"DigitsAccuracy\.track_top1_error\('srigl', 0\.9\)",
)

# Probe run in a fresh interpreter exactly as asv_runner imports a benchmark suite: the
# package ``benchmarks`` from the given folder, without adding its parent to sys.path.
_IMPORT_PROBE = """
import importlib, json, os, sys
from asv_runner._aux import update_sys_path
update_sys_path(sys.argv[1])
benchmarks = importlib.import_module(os.path.basename(sys.argv[1]))
import backends, srigl, suite
print(json.dumps({m.__name__: m.__path__[0] for m in (benchmarks, backends, srigl, suite)}))
"""


class AsvToolError(RuntimeError):
    """A git or asv step failed; the message holds the command and its output."""


# --------------------------------------------------------------------------- small helpers


def _run(cmd: Sequence[str], cwd: Path | None = None, check: bool = True) -> str:
    """Run ``cmd`` and return its stdout; raise :class:`AsvToolError` on failure if ``check``."""
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AsvToolError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def _stream(cmd: Sequence[str], cwd: Path | None = None) -> int:
    """Run ``cmd``, relaying its output (stdout and stderr) line by line; return its status.

    asv's forkserver children write to the inherited descriptors; reading them through one
    pipe keeps the log complete and in order when our own output is a file.
    """
    print("+", " ".join(cmd), flush=True)
    with subprocess.Popen(
        list(cmd), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
    return proc.returncode


def load_config(path: Path) -> dict[str, Any]:
    """An asv config file as a dict (asv reads it as JSON5: comments, trailing commas)."""
    from asv import util

    return util.load_json(str(path), api_version=1, js_comments=True)


def resolve_commit(rev: str, root: Path = REPO_ROOT) -> str:
    """The full sha of ``rev`` (a sha, prefix, branch or ``HEAD``) in the repository ``root``."""
    return _run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=root).strip()


def env_spec(python: str | None = None) -> str:
    """asv's ``-E`` spec for an existing interpreter (default: this one)."""
    return f"existing:{python or sys.executable}"


def machine_info() -> dict[str, str]:
    """This machine as asv describes it: os, arch, cpu (model), num_cpu, ram (kB)."""
    from asv.machine import Machine

    info = Machine.get_defaults()
    info.pop("machine", None)
    return {key: str(value) for key, value in info.items()}


# --------------------------------------------------------------------------- commands


def register_machine(machine: str = MACHINE) -> dict[str, str]:
    """Record this host in asv's machine file (``~/.asv-machine.json``) as ``machine``.

    This is what ``asv machine --machine <machine> --yes`` does, except that the CLI stores only
    the fields that differ from its detected defaults (so CPU, RAM, OS and arch would be left
    empty under a custom name); here every detected field is stored, through asv's own
    ``Machine.load``. The name is fixed (host names change between sessions; CI has no
    terminal), so every session's results land on one history line; ``asv run`` copies the
    entry to ``results/asv/<machine>/machine.json``. Returns the recorded fields.
    """
    from asv.machine import Machine

    info = machine_info()
    Machine.load(machine_name=machine, machine=machine, **info)
    return {"machine": machine, **info}


def run_benchmarks(
    commit: str,
    config: Path,
    machine: str = MACHINE,
    quick: bool = False,
    dry_run: bool = False,
    bench: Sequence[str] = (),
    show_stderr: bool = True,
) -> int:
    """``asv run`` of the benchmarks that ``config`` points at, recorded under ``commit``.

    Returns:
        asv's exit status (2 when a benchmark failed).
    """
    cmd = [sys.executable, "-m", "asv", "run", "--config", str(config), "-E", env_spec()]
    cmd += ["--set-commit-hash", commit, "--machine", machine, "--launch-method", "forkserver"]
    if quick:
        cmd.append("--quick")
    if dry_run:
        cmd.append("--dry-run")
    if show_stderr:
        cmd.append("--show-stderr")
    if not quick:
        cmd += ["--durations", "8"]
    for regex in bench:
        cmd += ["--bench", regex]
    return _stream(cmd)


def has_benchmarks(tree: Path) -> bool:
    """Whether the checkout ``tree`` has an asv config and the benchmark package."""
    return (tree / CONFIG_NAME).is_file() and (tree / BENCHMARK_DIR / "__init__.py").is_file()


def verify_imports(tree: Path) -> dict[str, str]:
    """Import the benchmark suite of ``tree`` the way asv does and return where each package
    came from; raise :class:`AsvToolError` unless all of them come from ``tree``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE, str(tree / BENCHMARK_DIR)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        raise AsvToolError(f"importing the benchmarks of {tree} failed:\n{proc.stderr}")
    where = json.loads(proc.stdout.strip().splitlines()[-1])
    wrong = {k: v for k, v in where.items() if not Path(v).resolve().is_relative_to(tree)}
    if wrong:
        raise AsvToolError(f"benchmarks of {tree} imported {wrong} from another checkout")
    return where


def results_path(root: Path = REPO_ROOT, results_dir: Path | None = None) -> Path:
    """The asv results folder: ``results_dir`` if given, else the config's (results/asv)."""
    if results_dir is not None:
        return Path(results_dir).resolve()
    return (root / load_config(root / CONFIG_NAME)["results_dir"]).resolve()


def redirected_config(
    source: Path, dest: Path, root: Path = REPO_ROOT, results_dir: Path | None = None
) -> Path:
    """Write the asv config ``source`` to ``dest`` with every path absolute: its benchmarks
    stay those next to ``source``; repo, env dir, results (``results_dir`` if given, else
    ``root``'s) and html go to ``root``.

    Returns:
        ``dest``.
    """
    conf = load_config(source)
    main = load_config(root / CONFIG_NAME)
    conf["version"] = 1  # asv's loader checks and drops it
    conf["repo"] = str(root)
    conf["benchmark_dir"] = str((source.parent / conf["benchmark_dir"]).resolve())
    conf["env_dir"] = str((root / main["env_dir"]).resolve())
    conf["results_dir"] = str(results_path(root, results_dir))
    conf["html_dir"] = str(
        (root / main["html_dir"]).resolve()
        if results_dir is None
        else results_path(root, results_dir) / "html"
    )
    dest.write_text(json.dumps(conf, indent=2), encoding="utf-8")
    return dest


def history_config(tree: Path, root: Path = REPO_ROOT, results_dir: Path | None = None) -> Path:
    """Write ``tree``'s asv config (``tree``'s benchmarks) with results, html, env dir and
    repo in ``root``; returns its path (inside ``tree``, removed with the worktree)."""
    return redirected_config(tree / CONFIG_NAME, tree / HISTORY_CONFIG, root, results_dir)


def recorded_commits(
    machine: str = MACHINE, root: Path = REPO_ROOT, results_dir: Path | None = None
) -> set[str]:
    """Full shas that have a result file for ``machine`` in the results folder."""
    found = set()
    for path in (results_path(root, results_dir) / machine).glob("*.json"):
        if path.name in ("machine.json",):
            continue
        try:
            found.add(json.loads(path.read_text(encoding="utf-8"))["commit_hash"])
        except (OSError, ValueError, KeyError):
            continue
    return found


def record_commit(
    commit: str,
    machine: str = MACHINE,
    root: Path = REPO_ROOT,
    bench: Sequence[str] = (),
    results_dir: Path | None = None,
) -> str:
    """Run the benchmarks of ``commit`` from a temporary worktree; results go to ``root``'s
    results folder (or ``results_dir``).

    Returns:
        ``"recorded"``, ``"failed"`` (asv ran, some benchmark failed) or ``"skipped: why"``.
    """
    short = commit[:8]
    with tempfile.TemporaryDirectory(prefix=f"srigl-asv-{short}-") as tmp:
        tree = Path(tmp) / "tree"
        _run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=root)
        try:
            if not has_benchmarks(tree):
                return f"skipped: no {CONFIG_NAME} or {BENCHMARK_DIR} at {short}"
            where = verify_imports(tree)
            print(f"[asv-history] {short}: benchmarks import {where}", flush=True)
            config = history_config(tree, root, results_dir)
            status = run_benchmarks(commit, config, machine, bench=bench)
            return "recorded" if status == 0 else "failed"
        finally:
            _run(["git", "worktree", "remove", "--force", str(tree)], cwd=root, check=False)
            _run(["git", "worktree", "prune"], cwd=root, check=False)


def history(
    n: int,
    branch: str = "main",
    machine: str = MACHINE,
    force: bool = False,
    root: Path = REPO_ROOT,
    bench: Sequence[str] = (),
    results_dir: Path | None = None,
) -> list[tuple[str, str]]:
    """Backfill the last ``n`` first-parent commits of ``branch``, oldest first (so the newest
    commit's benchmark list is the one asv keeps in benchmarks.json).

    Returns:
        ``[(sha, status)]`` in the order run.
    """
    if n < 1:
        raise ValueError(f"n must be a positive number of commits, got {n!r}")
    shas = _run(["git", "rev-list", "--first-parent", "-n", str(n), branch], cwd=root).split()
    done = set() if force else recorded_commits(machine, root, results_dir)
    report = []
    for sha in reversed(shas):
        if sha in done:
            status = "skipped: already recorded (--force re-runs)"
        else:
            status = record_commit(sha, machine, root, bench, results_dir)
        print(f"[asv-history] {sha[:8]}: {status}", flush=True)
        report.append((sha, status))
    return report


# --------------------------------------------------------------------------- summary


def load_results(
    machine: str = MACHINE, root: Path = REPO_ROOT, results_dir: Path | None = None
) -> list[dict[str, Any]]:
    """Every recorded value for ``machine``: one dict per benchmark, parameter set and commit.

    Keys: ``commit``, ``date`` (ms since epoch, the commit's), ``benchmark`` (asv name),
    ``params`` (e.g. ``"naive, vit_b16_fc1_768x3072, 0.9, 1"``), ``value`` (float or NaN for a
    failure or a skip), ``unit``.
    """
    import itertools

    from asv.results import iter_results_for_machine

    results_dir = results_path(root, results_dir)
    units: dict[str, str] = {}
    bench_file = results_dir / "benchmarks.json"
    if bench_file.is_file():
        meta = json.loads(bench_file.read_text(encoding="utf-8"))
        units = {k: v.get("unit", "") for k, v in meta.items() if isinstance(v, dict)}
    rows = []
    for res in iter_results_for_machine(str(results_dir), machine):
        for key in res.get_all_result_keys():
            params = res.get_result_params(key)
            values = res.get_result_value(key, params)
            combos = list(itertools.product(*params)) if params else [()]
            for combo, value in zip(combos, values, strict=False):
                rows.append(
                    {
                        "commit": res.commit_hash,
                        "date": res.date,
                        "benchmark": key,
                        "params": ", ".join(str(p).strip("'") for p in combo),
                        "value": float("nan") if value is None else float(value),
                        "unit": units.get(key, ""),
                    }
                )
    return rows


def format_value(value: float, unit: str) -> str:
    """A compact human form of one asv value: ``12.3 us``, ``1.8 GB``, ``0.43``, ``n/a``."""
    if value is None or math.isnan(value):
        return "n/a"
    if unit == "seconds":
        for scale, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
            if value >= scale:
                return f"{value / scale:.3g} {name}"
        return f"{value / 1e-9:.3g} ns"
    if unit == "bytes":
        return f"{value / 2**20:.0f} MiB"
    if unit == "%":
        return f"{value:.2f}%"
    return f"{value:.3g}"


def write_summary(
    rows: list[dict[str, Any]],
    md_path: Path,
    png_path: Path,
    max_commits: int = 8,
    machine: str = MACHINE,
) -> None:
    """Write the offline summary: a markdown table (benchmark x commit, the newest
    ``max_commits`` commits) at ``md_path`` and a PNG of selected histories at ``png_path``."""
    import pandas as pd

    if not rows:
        raise ValueError(f"no asv results for machine {machine!r}; run `make asv` first")
    df = pd.DataFrame(rows)
    order = df.groupby("commit")["date"].max().sort_values()
    commits = list(order.index)
    shown = commits[-max_commits:]
    df["name"] = df["benchmark"].str.replace(r"^bench_", "", regex=True)
    df["row"] = df["name"] + df["params"].map(lambda p: f" ({p})" if p else "")
    cell = {(r.row, r.commit): (r.value, r.unit) for r in df.itertuples()}
    table_rows = []
    for row in sorted(df["row"].unique()):
        values = [cell.get((row, c), (math.nan, "")) for c in shown]
        if all(v is None or math.isnan(v) for v, _ in values):
            continue  # never measured in the shown commits (not run, or skipped everywhere)
        table_rows.append([row.replace("|", "/")] + [format_value(v, u) for v, u in values])
    omitted = df["row"].nunique() - len(table_rows)
    header = ["benchmark (params)"] + [c[:8] for c in shown]
    lines = [
        "# asv history (generated by `make asv-publish`; do not edit)",
        "",
        f"Machine `{machine}`; {len(commits)} commits recorded, the newest {len(shown)} shown"
        " (oldest left). Times per call, ratios = backend / dense in the same process, "
        "top-1 error in %, peak memory of the whole process; n/a = skipped or failed. "
        f"{omitted} parameter sets without any value in these commits (skipped here, e.g. GPU "
        "backends, or not run) are left out. "
        "The interactive history is `results/asv/html/index.html` (`make asv-publish`).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(shown)) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows]
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_history(df, commits, png_path)


# Panels of the PNG: (title, benchmark name, params glob, y label)
PANELS: tuple[tuple[str, str, str, str], ...] = (
    ("digits top-1 error", "bench_training.DigitsAccuracy.track_top1_error", "*", "% error"),
    (
        "layer 3072->768, 90%, batch 1: time / dense",
        "bench_backends.LayerRatio.track_ratio_vs_dense",
        "*, vit_b16_fc2_3072x768, 0.9, 1",
        "ratio",
    ),
    (
        "layer 3072->768, 90%, batch 256: time / dense",
        "bench_backends.LayerRatio.track_ratio_vs_dense",
        "*, vit_b16_fc2_3072x768, 0.9, 256",
        "ratio",
    ),
    ("condensed ViT forward", "bench_models.WholeModelForward.time_forward", "*", "seconds"),
    ("ResNet-50 step", "bench_training.TopologyUpdate.time_step", "*", "seconds"),
    ("peak memory, load + run", "bench_models.WholeModelMemory.peakmem_load_and_run", "*", "MiB"),
)


def _glob(pattern: str) -> Any:
    import fnmatch

    return lambda text: fnmatch.fnmatchcase(text, pattern)


def plot_history(df: Any, commits: list[str], png_path: Path) -> None:
    """One panel per entry of :data:`PANELS`: value vs commit (oldest left), a line per
    parameter set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = {c: i for i, c in enumerate(commits)}
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    for ax, (title, bench, pattern, ylabel) in zip(axes.flat, PANELS, strict=False):
        part = df[(df["benchmark"] == bench) & df["params"].map(_glob(pattern))]
        part = part.dropna(subset=["value"])
        for params, line in part.groupby("params"):
            line = line.assign(x=line["commit"].map(pos)).sort_values("x")
            y = line["value"] / 2**20 if ylabel == "MiB" else line["value"]
            label = params if pattern == "*" else params.split(", ")[0]
            ax.plot(line["x"], y, marker="o", label=label)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.set_xticks(range(len(commits)), [c[:7] for c in commits], rotation=60, fontsize=7)
        if part.empty:
            ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.legend(fontsize=6)
        if ylabel in ("seconds", "ratio"):
            ax.set_yscale("log")
    fig.suptitle("srigl-bench asv history (lower is better everywhere)")
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def summary_paths(root: Path = REPO_ROOT, results_dir: Path | None = None) -> tuple[Path, Path]:
    """Where the offline summary goes: results/ASV.md and results/figures/asv_history.png, or
    next to the results in ``results_dir`` when that is given (experiments)."""
    if results_dir is not None:
        return Path(results_dir) / SUMMARY_MD.name, Path(results_dir) / SUMMARY_PNG.name
    return root / SUMMARY_MD, root / SUMMARY_PNG


def publish(
    machine: str = MACHINE,
    root: Path = REPO_ROOT,
    conf: Path | None = None,
    results_dir: Path | None = None,
) -> int:
    """``asv publish`` into results/asv/html, then the offline summary (markdown + PNG)."""
    conf = conf or root / CONFIG_NAME
    status = _stream([sys.executable, "-m", "asv", "publish", "--config", str(conf)], cwd=root)
    rows = load_results(machine, root, results_dir)
    md, png = summary_paths(root, results_dir)
    write_summary(rows, md, png, machine=machine)
    print(f"wrote {md} and {png}")
    return status


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m suite.asv_tools", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--machine", default=MACHINE, help=f"asv machine name (default {MACHINE})")
    parser.add_argument(
        "--results-dir", type=Path, default=None, help="results elsewhere (experiments, tests)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("machine", help="record this machine under the fixed name")
    p_run = sub.add_parser("run", help="benchmark this checkout as commit --commit")
    p_run.add_argument("--commit", default="HEAD")
    p_run.add_argument("--quick", action="store_true", help="each benchmark once, not saved")
    p_run.add_argument("--dry-run", action="store_true", help="do not save results")
    p_run.add_argument("--bench", action="append", default=[], help="regex (repeatable)")
    p_run.add_argument(
        "--smoke", action="store_true", help="CI: --quick on SMOKE_BENCH (one set per class)"
    )
    p_hist = sub.add_parser("history", help="backfill the last N commits of a branch")
    p_hist.add_argument("--n", type=int, default=20)
    p_hist.add_argument("--branch", default="main")
    p_hist.add_argument("--force", action="store_true", help="re-run recorded commits")
    p_hist.add_argument("--bench", action="append", default=[], help="regex (repeatable)")
    sub.add_parser("publish", help="asv publish + results/ASV.md + results/figures PNG")
    sub.add_parser("summary", help="only results/ASV.md + PNG (no HTML)")
    p_cmp = sub.add_parser("compare", help="asv compare A B: regressions and improvements")
    p_cmp.add_argument("a")
    p_cmp.add_argument("b")
    p_cmp.add_argument("--factor", type=float, default=DEFAULT_FACTOR)
    sub.add_parser("check", help="asv check (imports every benchmark, checks signatures)")
    args = parser.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="srigl-asv-conf-")
    conf = REPO_ROOT / CONFIG_NAME
    if args.results_dir is not None:
        conf = redirected_config(conf, Path(tmp.name) / CONFIG_NAME, REPO_ROOT, args.results_dir)
    with tmp:
        try:
            return _dispatch(args, conf)
        except (AsvToolError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1


def _dispatch(args: argparse.Namespace, conf: Path) -> int:
    """Run the sub-command of ``args`` against the asv config ``conf``."""

    if args.command == "machine":
        print(json.dumps(register_machine(args.machine), indent=2))
        return 0
    if args.command == "run":
        register_machine(args.machine)
        commit = resolve_commit(args.commit)
        if _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT).strip():
            print(f"warning: uncommitted changes are measured as {commit[:8]}", file=sys.stderr)
        where = verify_imports(REPO_ROOT)
        print(f"[asv] benchmarks import {where}", flush=True)
        quick = args.quick or args.smoke
        bench = [*args.bench, *(SMOKE_BENCH if args.smoke else ())]
        return run_benchmarks(commit, conf, args.machine, quick, args.dry_run or quick, bench)
    if args.command == "history":
        register_machine(args.machine)
        report = history(
            args.n,
            args.branch,
            args.machine,
            args.force,
            bench=args.bench,
            results_dir=args.results_dir,
        )
        return 2 if any(status == "failed" for _, status in report) else 0
    if args.command == "publish":
        return publish(args.machine, conf=conf, results_dir=args.results_dir)
    if args.command == "summary":
        rows = load_results(args.machine, results_dir=args.results_dir)
        write_summary(rows, *summary_paths(REPO_ROOT, args.results_dir), machine=args.machine)
        return 0
    if args.command == "compare":
        a, b = resolve_commit(args.a), resolve_commit(args.b)
        cmd = [sys.executable, "-m", "asv", "compare", "--config", str(conf), "--machine"]
        cmd += [args.machine, "--factor", str(args.factor), "--split", "--only-changed", a, b]
        return _stream(cmd, cwd=REPO_ROOT)
    if args.command == "check":
        cmd = [sys.executable, "-m", "asv", "check", "--config", str(conf), "-E", env_spec()]
        return _stream(cmd, cwd=REPO_ROOT)
    raise AssertionError(args.command)  # argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
