"""What asv lacks: an offline summary of its history, ``results/ASV.md`` (one section per asv
machine: benchmark x commit) and one figure per machine,
``results/figures/asv_history_<machine>.png``; ``make asv-publish`` runs ``asv publish``, then
this::

    python -m suite.asv_summary [--results results/asv] [--machine NAME ...]

Machines are asv's machine folders (names derived from :func:`suite.machine.identity`, e.g.
``amd-f25m17-avx512-2c``); each section and figure is labelled with the CPU that
``machine.json`` records. ``unknown-mixed-cpus-2c`` holds the history recorded before machine
identity existed, on two different CPUs, and says so.

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
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

UNKNOWN_MIXED = "unknown-mixed-cpus-2c"
MIXED_NOTE = (
    "recorded before machine identity existed, on two different 2-core CPUs (an AVX-512 Zen 5 "
    "and an AVX2 Zen 3) under one name; which commit ran on which is not known, so a change "
    "between commits may be a change of CPU"
)
RESULTS_DIR = Path("results") / "asv"
SUMMARY_MD = Path("results") / "ASV.md"
FIGURES_DIR = Path("results") / "figures"
PNG_PREFIX = "asv_history"
COLUMNS = ["commit", "date", "env", "benchmark", "params", "value", "unit"]

# Panels of the PNG: (title, benchmark name, params glob, y label)
_RATIO = "bench_backends.LayerRatio.track_ratio_vs_dense"
_COUNT = "bench_counts.InstructionCount.track_instructions"
PANELS: tuple[tuple[str, str, str, str], ...] = (
    ("fused kernel, ViT-B/16 MLP: instructions per call", _COUNT, "fused/*", "instructions"),
    ("other backends, 768->3072 90% b1: instructions", _COUNT, "backend/*", "instructions"),
    ("digits MLP step / topology update: instructions", _COUNT, "[su][tp]*", "instructions"),
    ("digits top-1 error", "bench_training.DigitsAccuracy.track_top1_error", "*", "% error"),
    ("layer 3072->768, 90%, batch 1: time / dense", _RATIO, "*, *3072x768, 0.9, 1", "ratio"),
    ("layer 3072->768, 90%, batch 256: time / dense", _RATIO, "*, *3072x768, 0.9, 256", "ratio"),
    ("condensed ViT forward", "bench_models.WholeModelForward.time_forward", "*", "seconds"),
    ("ResNet-50 step", "bench_training.TopologyUpdate.time_step", "*", "seconds"),
    ("peak memory, load + run", "bench_models.WholeModelMemory.peakmem_load_and_run", "*", "MiB"),
)


def machines(results_dir: Path = RESULTS_DIR) -> list[str]:
    """The asv machines with results in ``results_dir``: folders holding a machine.json and at
    least one result file (``asv run --python=same``, as in ``make asv-check``, writes the
    machine.json alone)."""
    folders = (p.parent for p in Path(results_dir).glob("*/machine.json"))
    return sorted(f.name for f in folders if any(f.glob("*-*.json")))


def machine_label(results_dir: Path, machine: str) -> str:
    """What is known of ``machine``: its machine.json's cpu, num_cpu, ram and os, and for
    :data:`UNKNOWN_MIXED` the warning that two CPUs are mixed."""
    path = Path(results_dir) / machine / "machine.json"
    info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if machine == UNKNOWN_MIXED:
        return f"`{machine}`: {MIXED_NOTE}"
    facts = [f"{info[k]}" for k in ("cpu",) if info.get(k)]
    facts += [f"{info[k]} CPUs" for k in ("num_cpu",) if info.get(k)]
    facts += [f"{k} {info[k]}" for k in ("ram", "os") if info.get(k)]
    return f"`{machine}`: " + (", ".join(facts) if facts else "no machine.json facts recorded")


def load_results(results_dir: Path, machine: str) -> pd.DataFrame:
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
    ``1,234,567`` (instructions: every digit, a 0.1% change shows), ``n/a`` (NaN: failed or
    skipped)."""
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
    if unit == "instructions":
        return f"{value:,.0f}"
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


def markdown_section(
    df: pd.DataFrame, commits: list[str], machine: str, label: str, max_commits: int = 8
) -> str:
    """One machine's section of ASV.md: its label, the table of the newest ``max_commits`` of
    ``commits`` (oldest first) and a legend."""
    shown = commits[-max_commits:]
    table = summary_table(df, shown)
    omitted = df[df["commit"].isin(shown)].groupby(["benchmark", "params"]).ngroups - len(table)
    envs = ", ".join(f"`{e}`" for e in sorted(df["env"].unique()))
    text = (
        f"## Machine {label}\n\n"
        f"Environment {envs}; {len(commits)} commits recorded, the newest "
        f"{len(shown)} shown (oldest left). Times per call, ratios = backend / dense in the same "
        "process, instructions = callgrind's count of one call on one thread, top-1 error in %, "
        "peak memory of the whole process; n/a = skipped or failed. "
        f"{omitted} parameter sets without any value in these commits (skipped here, e.g. GPU "
        f"backends, or not run) are left out. Figure: `figures/{PNG_PREFIX}_{machine}.png`.\n\n"
    )
    align = ("left",) + ("right",) * len(shown)
    return text + table.to_markdown(colalign=align) + "\n"


def plot_history(df: pd.DataFrame, commits: list[str], path: Path, machine: str = "") -> None:
    """``path``: one panel per entry of :data:`PANELS`, value vs ``commits`` (oldest first, as
    the x axis), one line per parameter set; "no results" where a panel has none; ``machine``
    (its label) in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = {c: i for i, c in enumerate(commits)}
    fig, axes = plt.subplots(3, 3, figsize=(16, 12.5))
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
        if ylabel in ("seconds", "ratio", "instructions"):
            ax.set_yscale("log")
    title = "srigl-bench asv history (lower is better everywhere)"
    note = textwrap.fill(f"machine {machine}", 150)
    fig.suptitle(f"{title}\n{note}" if machine else title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_summary(
    results_dir: Path = RESULTS_DIR,
    md_path: Path = SUMMARY_MD,
    figures_dir: Path = FIGURES_DIR,
    machine_names: Sequence[str] | None = None,
    max_commits: int = 8,
) -> dict[str, pd.DataFrame]:
    """Read the results of ``machine_names`` (default: every machine in ``results_dir``, the
    mixed-CPU history last); write one markdown file with a section per machine and one PNG per
    machine (``<figures_dir>/asv_history_<machine>.png``).

    Returns:
        ``{machine: its results}``.

    Raises:
        ValueError: a machine has no results (names ``make asv``), or there are none at all.
    """
    names = list(machine_names or machines(results_dir))
    names.sort(key=lambda m: (m == UNKNOWN_MIXED, m))
    if not names:
        raise ValueError(f"no asv results in {results_dir}; run `make asv` first")
    sections, frames = [], {}
    for machine in names:
        df = load_results(results_dir, machine)
        if df.empty:
            raise ValueError(
                f"no asv results for machine {machine!r} in {results_dir}; known: "
                f"{machines(results_dir)}; run `make asv` first"
            )
        commits = commit_order(df)
        label = machine_label(results_dir, machine)
        sections.append(markdown_section(df, commits, machine, label, max_commits))
        png = Path(figures_dir) / f"{PNG_PREFIX}_{machine}.png"
        plot_history(df, commits, png, label.replace("`", ""))
        frames[machine] = df
        log.info("%s: %d commits -> %s", machine, df["commit"].nunique(), png)
    text = (
        "# asv history (generated by `make asv-publish`; do not edit)\n\n"
        "One section per asv machine (a machine class: CPU vendor, family/model, ISA level, "
        "cores); histories of different machines are never mixed. The interactive history is "
        "`results/asv/html/index.html` (`make asv-publish`, works offline).\n\n"
        + "\n".join(sections)
    )
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(text, encoding="utf-8")
    log.info("wrote %s", md_path)
    return frames


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m suite.asv_summary", description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="asv results_dir")
    parser.add_argument("--machine", nargs="*", default=None, help="default: every machine")
    parser.add_argument("--md", type=Path, default=SUMMARY_MD)
    parser.add_argument("--figures", type=Path, default=FIGURES_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        write_summary(args.results, args.md, args.figures, args.machine)
    except ValueError as err:
        log.error("error: %s", err)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
