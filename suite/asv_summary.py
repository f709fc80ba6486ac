"""What asv lacks: an offline summary of its history, ``results/ASV.md`` (benchmark x commit)
and ``results/figures/asv_history.png``; ``make asv-publish`` runs ``asv publish``, then this::

    python -m suite.asv_summary [--results results/asv] [--machine srigl-bench-2core]

asv's result files (``<machine>/<commit>-<env>.json``, results format version 2, whose
``result_columns`` name the fields of each entry) are read as JSON, not through asv's internals.
"""

from __future__ import annotations

import argparse
import fnmatch
import itertools
import json
import logging
import math
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

MACHINE = "srigl-bench-2core"
RESULTS_DIR = Path("results") / "asv"
SUMMARY_MD = Path("results") / "ASV.md"
SUMMARY_PNG = Path("results") / "figures" / "asv_history.png"
COLUMNS = ["commit", "date", "env", "benchmark", "params", "value", "unit"]

# Panels of the PNG: (title, benchmark name, params glob, y label)
_RATIO = "bench_backends.LayerRatio.track_ratio_vs_dense"
PANELS: tuple[tuple[str, str, str, str], ...] = (
    ("digits top-1 error", "bench_training.DigitsAccuracy.track_top1_error", "*", "% error"),
    ("layer 3072->768, 90%, batch 1: time / dense", _RATIO, "*, *3072x768, 0.9, 1", "ratio"),
    ("layer 3072->768, 90%, batch 256: time / dense", _RATIO, "*, *3072x768, 0.9, 256", "ratio"),
    ("condensed ViT forward", "bench_models.WholeModelForward.time_forward", "*", "seconds"),
    ("ResNet-50 step", "bench_training.TopologyUpdate.time_step", "*", "seconds"),
    ("peak memory, load + run", "bench_models.WholeModelMemory.peakmem_load_and_run", "*", "MiB"),
)


def load_results(results_dir: Path = RESULTS_DIR, machine: str = MACHINE) -> pd.DataFrame:
    """Every value asv recorded for ``machine``: one row per benchmark, parameter set, commit
    and environment.

    Returns:
        columns ``commit`` (full sha), ``date`` (commit date, ms since epoch), ``env`` (asv's
        environment name), ``benchmark``, ``params`` (e.g. ``"naive, vit_b16_fc1_768x3072,
        0.9, 1"``), ``value`` (float, NaN = failed or skipped), ``unit`` (from benchmarks.json).
    """
    bench_file = Path(results_dir) / "benchmarks.json"
    meta = json.loads(bench_file.read_text(encoding="utf-8")) if bench_file.is_file() else {}
    units = {k: v.get("unit", "") for k, v in meta.items() if isinstance(v, dict)}
    frames = [pd.DataFrame(columns=COLUMNS)]
    for path in sorted((Path(results_dir) / machine).glob("*-*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        col = {name: i for i, name in enumerate(data["result_columns"])}
        for bench, entry in data["results"].items():
            combos = list(itertools.product(*(entry[col["params"]] or [])))
            values = entry[col["result"]] or [None] * len(combos)  # None: the whole run failed
            frame = pd.DataFrame({"params": [", ".join(p.strip("'") for p in c) for c in combos]})
            frames.append(
                frame.assign(
                    value=pd.to_numeric(pd.Series(values, dtype=object), errors="coerce"),
                    commit=data["commit_hash"],
                    date=data["date"],
                    env=data["env_name"],
                    benchmark=bench,
                    unit=units.get(bench, ""),
                )
            )
    return pd.concat(frames, ignore_index=True)[COLUMNS].astype({"value": float})


def format_value(value: float, unit: str) -> str:
    """A compact human form of one asv value: ``12.3 us``, ``3 MiB``, ``4.25%``, ``0.431``,
    ``n/a`` (NaN: failed or skipped)."""
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


def commit_order(df: pd.DataFrame, repo: Path = Path(".")) -> list[str]:
    """The recorded commits, oldest first: by commit date, ties (commits made within one
    second) by their order on ``repo``'s first-parent history where git knows them."""
    git = ["git", "rev-list", "--first-parent", "--reverse", "HEAD"]
    out = subprocess.run(git, cwd=repo, capture_output=True, text=True).stdout.split()
    position = {sha: i for i, sha in enumerate(out)}
    dates = df.groupby("commit")["date"].max()
    return sorted(dates.index, key=lambda c: (dates[c], position.get(c, -1)))


def summary_table(df: pd.DataFrame, commits: Sequence[str]) -> pd.DataFrame:
    """Benchmark x commit table of formatted values for ``commits`` (columns: short shas);
    parameter sets without any value in these commits are left out."""
    part = df[df["commit"].isin(commits)].assign(
        row=lambda d: (
            d["benchmark"].str.replace(r"^bench_", "", regex=True)
            + d["params"].map(lambda p: f" ({p})" if p else "")
        ),
        text=lambda d: [format_value(v, u) for v, u in zip(d["value"], d["unit"], strict=True)],
    )
    measured = part.dropna(subset=["value"])["row"].unique()
    part = part[part["row"].isin(measured)]
    table = part.pivot_table(index="row", columns="commit", values="text", aggfunc="first")
    table = table.reindex(columns=list(commits)).fillna("n/a").sort_index()
    table.columns = [c[:8] for c in commits]
    table.index = table.index.str.replace("|", "/").rename("benchmark (params)")
    return table


def write_markdown(
    df: pd.DataFrame, commits: list[str], path: Path, machine: str, max_commits: int = 8
) -> None:
    """``path``: the table of the newest ``max_commits`` of ``commits`` (oldest first) and a
    legend."""
    shown = commits[-max_commits:]
    table = summary_table(df, shown)
    omitted = df[df["commit"].isin(shown)].groupby(["benchmark", "params"]).ngroups - len(table)
    envs = ", ".join(f"`{e}`" for e in sorted(df["env"].unique()))
    text = (
        "# asv history (generated by `make asv-publish`; do not edit)\n\n"
        f"Machine `{machine}`, environment {envs}; {len(commits)} commits recorded, the newest "
        f"{len(shown)} shown (oldest left). Times per call, ratios = backend / dense in the same "
        "process, top-1 error in %, peak memory of the whole process; n/a = skipped or failed. "
        f"{omitted} parameter sets without any value in these commits (skipped here, e.g. GPU "
        "backends, or not run) are left out. The interactive history is "
        "`results/asv/html/index.html` (`make asv-publish`).\n\n"
    )
    align = ("left",) + ("right",) * len(shown)
    text += table.to_markdown(colalign=align) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def plot_history(df: pd.DataFrame, commits: list[str], path: Path) -> None:
    """``path``: one panel per entry of :data:`PANELS`, value vs ``commits`` (oldest first, as
    the x axis), one line per parameter set; "no results" where a panel has none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = {c: i for i, c in enumerate(commits)}
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    for ax, (title, bench, pattern, ylabel) in zip(axes.flat, PANELS, strict=False):
        match = df["params"].map(lambda p, pat=pattern: fnmatch.fnmatchcase(p, pat))
        part = df[(df["benchmark"] == bench) & match].dropna(subset=["value"])
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_summary(
    results_dir: Path = RESULTS_DIR,
    md_path: Path = SUMMARY_MD,
    png_path: Path = SUMMARY_PNG,
    machine: str = MACHINE,
    max_commits: int = 8,
) -> pd.DataFrame:
    """Read ``machine``'s results in ``results_dir``; write the markdown and the PNG.

    Raises:
        ValueError: there are no results for ``machine`` (names ``make asv``).
    """
    df = load_results(results_dir, machine)
    if df.empty:
        raise ValueError(
            f"no asv results for machine {machine!r} in {results_dir}; run `make asv` first"
        )
    commits = commit_order(df)
    write_markdown(df, commits, md_path, machine, max_commits)
    plot_history(df, commits, png_path)
    log.info("wrote %s and %s (%d commits)", md_path, png_path, df["commit"].nunique())
    return df


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m suite.asv_summary", description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="asv results_dir")
    parser.add_argument("--machine", default=MACHINE)
    parser.add_argument("--md", type=Path, default=SUMMARY_MD)
    parser.add_argument("--png", type=Path, default=SUMMARY_PNG)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        write_summary(args.results, args.md, args.png, args.machine)
    except ValueError as err:
        log.error("error: %s", err)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
