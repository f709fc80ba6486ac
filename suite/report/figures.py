"""Seaborn figures of the report (matplotlib's Agg backend: no display needed).

Each function takes a frame of :mod:`suite.report.frames`, writes one PNG and returns its path,
or returns ``None`` when the frame holds nothing to plot.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from suite.report.claims import mean_interval  # noqa: E402
from suite.report.frames import DENSE, method_sort_key, sparsity_label  # noqa: E402

DPI = 110
# Accuracy panels: the y-range covers the cells within this many points of the best one.
FIT_SPAN = 20.0


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def fitted_range(
    cells: pd.DataFrame, span: float = FIT_SPAN, pad: float = 0.08
) -> tuple[float, float]:
    """The y-range of one accuracy panel, fitted to its data.

    ``cells``: one row per plotted cell with columns mean, low, high (the 95% interval; NaN
    for one seed). The range covers the intervals (or means) of every cell whose mean is
    within ``span`` points of the panel's best mean, padded by ``pad`` of its height; cells
    further below (a collapsed run at chance level) are named with their mean under the
    x-axis instead of stretching the axis over them.
    """
    best = cells["mean"].max()
    shown = cells[cells["mean"] >= best - span]
    low = shown["low"].fillna(shown["mean"]).min()
    high = shown["high"].fillna(shown["mean"]).max()
    height = max(high - low, 1.0)
    return (float(low - pad * height), float(high + pad * height))


def _cell_intervals(data: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and 95% t-interval of top-1 per group of ``keys``."""
    rows = []
    for key, grp in data.groupby(keys, sort=False):
        low, high = mean_interval(grp["top1"])
        rows.append({**dict(zip(keys, key)), "mean": grp["top1"].mean(), "low": low, "high": high})
    return pd.DataFrame(rows, columns=keys + ["mean", "low", "high"])


def accuracy_vs_sparsity(train: pd.DataFrame, path: Path) -> Path | None:
    """Top-1 accuracy vs sparsity, one panel per experiment, hue = method, error bars = 95%
    t-intervals of the mean over seeds (:func:`suite.report.claims.mean_interval`); the dense
    reference is a horizontal line with its interval as a band. Each panel's y-range is fitted
    to its data (:func:`fitted_range`); cells far below it are named under their sparsity."""
    if train.empty:
        return None
    experiments = sorted(train["experiment"].dropna().unique())
    fig, axes = plt.subplots(
        1, len(experiments), figsize=(5.5 * len(experiments), 4.4), squeeze=False
    )
    for ax, exp in zip(axes[0], experiments):
        sub = train[train["experiment"] == exp]
        sparse = sub[sub["method"] != DENSE].copy()
        dense = sub[sub["method"] == DENSE]["top1"]
        cells = _cell_intervals(sub, ["method", "sparsity"])
        order: list[str] = []
        if not sparse.empty:
            sparse["at sparsity"] = sparse["sparsity"].map(sparsity_label)
            order = [sparsity_label(s) for s in sorted(sparse["sparsity"].unique())]
            methods = sorted(sparse["method"].unique(), key=method_sort_key)
            sns.pointplot(
                data=sparse,
                x="at sparsity",
                y="top1",
                hue="method",
                hue_order=methods,
                order=order,
                errorbar=mean_interval,
                dodge=0.4 if len(methods) > 1 else False,
                capsize=0.08,
                linestyle="-",
                markers="o",
                ax=ax,
            )
        if not dense.empty:
            low, high = mean_interval(dense)
            ax.axhline(dense.mean(), color="black", linestyle="--", linewidth=1, label="dense")
            if len(dense) > 1:
                ax.axhspan(low, high, color="grey", alpha=0.2)
        bottom, top = fitted_range(cells)
        ax.set_ylim(bottom, top)
        below = cells[(cells["mean"] < bottom) & (cells["method"] != DENSE)]
        ticks = []
        for label in order:
            hits = below[below["sparsity"].map(sparsity_label) == label]
            named = sorted(zip(hits["method"], hits["mean"]), key=lambda h: method_sort_key(h[0]))
            ticks.append("\n".join([label] + [f"{m} {v:.1f} (below)" for m, v in named]))
        if order:
            ax.set_xticks(range(len(order)), labels=ticks, fontsize=8)
        ax.set_title(exp)
        ax.set_xlabel("sparsity")
        ax.set_ylabel("top-1 accuracy (%), 95% interval over seeds")
        ax.grid(axis="y", alpha=0.3)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    handles, labels = {}, []
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = h
                labels.append(label)
    fig.legend(
        [handles[label] for label in labels],
        labels,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize="small",
        title="method",
    )
    fig.tight_layout()
    return _save(fig, path)


def ablation_over_training(curves: pd.DataFrame, path: Path) -> Path | None:
    """Ablated neurons (summed over layers) vs optimizer step; a panel per experiment,
    hue = sparsity, line style = method, band = std over seeds. Drawn: the runs whose trainer
    ablates (config ``trainer.ablation``); without that flag, the methods that ablate a neuron
    somewhere (all methods when none does)."""
    if curves.empty:
        return None
    flagged = curves["ablating"].eq(True)
    if flagged.any():  # runs of an ablating trainer (SRigL): other methods' dead neurons aside
        data = curves[flagged].copy()
    else:
        ablating = curves.groupby("method")["n_ablated"].max()
        ablating = ablating[ablating > 0].index
        data = curves[curves["method"].isin(ablating)].copy() if len(ablating) else curves.copy()
    data["at sparsity"] = data["sparsity"].map(sparsity_label)
    hue_order = [sparsity_label(s) for s in sorted(data["sparsity"].unique())]
    grid = sns.relplot(
        data=data,
        x="step",
        y="n_ablated",
        hue="at sparsity",
        hue_order=hue_order,
        style="method",
        col="experiment",
        kind="line",
        errorbar="sd",
        facet_kws={"sharey": False},
        height=3.8,
        aspect=1.3,
    )
    grid.set_axis_labels("optimizer step", "ablated neurons")
    return _save(grid.figure, path)


def _speedup_data(bench: pd.DataFrame) -> pd.DataFrame:
    """The plotted rows: no dense row, no A/A control; a panel row per machine class (where
    there are several), device and mode, so that two CPUs never share a line."""
    data = bench[~bench["backend"].isin([DENSE, "dense_aa"])].copy()
    data["shape"] = data["shape"].astype(str)
    data["setting"] = data["device"] + " " + data["mode"]
    if "machine" in data and data["machine"].nunique() > 1:
        data["setting"] = data["machine"].astype(str) + "\n" + data["setting"]
    return data


def _interval_bars(data: pd.DataFrame, x: str, **_: object) -> None:
    """The 95% interval of each plotted speed-up as a vertical bar (rows that have one)."""
    if not {"speedup_ci_low", "speedup_ci_high"} <= set(data.columns):
        return
    rows = data.dropna(subset=["speedup_ci_low", "speedup_ci_high"])
    if len(rows):
        plt.gca().vlines(
            rows[x], rows["speedup_ci_low"], rows["speedup_ci_high"], colors="grey", alpha=0.6
        )


def _speedup_grid(data: pd.DataFrame, x: str, xlabel: str, aspect: float, **facets):
    """One seaborn relplot of speed-up vs dense over ``x``: hue = backend, style = shape, rows =
    (machine,) device and mode, log y with a dashed line at 1x, grey bars for the rows' 95%
    intervals; ``facets`` adds col/col_order."""
    grid = sns.relplot(
        data=data,
        x=x,
        y="speedup_vs_dense",
        hue="backend",
        style="shape",
        row="setting",
        kind="line",
        markers=True,
        errorbar=None,
        height=3.6,
        aspect=aspect,
        **facets,
    )
    grid.map_dataframe(_interval_bars, x=x)
    grid.set(yscale="log")
    for ax in grid.axes.flat:
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    grid.set_axis_labels(xlabel, "speed-up vs dense (x; grey: 95% interval)")
    return grid


def speedup_vs_sparsity(bench: pd.DataFrame, path: Path, batches=(1, 256)) -> Path | None:
    """Speed-up vs dense over sparsity per backend (log y); columns = batch sizes ``batches``
    (those measured), rows = device and mode, line style = layer shape."""
    if bench.empty:
        return None
    all_data = _speedup_data(bench)
    data = all_data[all_data["batch"].isin(batches)]
    if data.empty:
        data = all_data
    grid = _speedup_grid(data, "sparsity", "sparsity", aspect=1.3, col="batch")
    return _save(grid.figure, path)


def speedup_vs_batch(bench: pd.DataFrame, path: Path) -> Path | None:
    """Speed-up vs dense over batch size per backend (log-log); a column per sparsity, rows =
    device and mode, line style = layer shape."""
    if bench.empty:
        return None
    data = _speedup_data(bench)
    data["at sparsity"] = data["sparsity"].map(sparsity_label)
    col_order = [sparsity_label(s) for s in sorted(data["sparsity"].unique())]
    grid = _speedup_grid(
        data, "batch", "batch size", aspect=1.1, col="at sparsity", col_order=col_order
    )
    grid.set(xscale="log")
    return _save(grid.figure, path)


def roofline(bench: pd.DataFrame, path: Path) -> Path | None:
    """Every backend on its machine's roofline: arithmetic intensity (FLOP/byte, log x) vs
    achieved GFLOP/s (log y), hue = backend, style = batch; one panel per machine class with
    the compute roof (the FMA peak: the highest ``limit_gflops`` of its rows) as a dashed line.
    Rows without roofline fields (older records) are left out; ``None`` when none has them."""
    cols = {"intensity_flop_per_byte", "gflops", "limit_gflops", "machine"}
    if bench.empty or not cols <= set(bench.columns):
        return None
    data = bench.dropna(subset=["intensity_flop_per_byte", "gflops"])
    data = data[(data["backend"] != "dense_aa") & (data["mode"] == "kernel")].copy()
    if data.empty:
        return None
    machines = sorted(data["machine"].unique())
    fig, axes = plt.subplots(1, len(machines), figsize=(6.5 * len(machines), 4.2), squeeze=False)
    for ax, machine in zip(axes[0], machines):
        panel = data[data["machine"] == machine]
        sns.scatterplot(
            panel, x="intensity_flop_per_byte", y="gflops", hue="backend", ax=ax,
            style=panel["batch"].astype(str).rename("batch"), s=60,
        )  # fmt: skip
        ax.axhline(panel["limit_gflops"].max(), color="black", linestyle="--", linewidth=0.8)
        ax.set(xscale="log", yscale="log", title=str(machine))
        ax.set(xlabel="arithmetic intensity (FLOP / byte read or written)")
        ax.set(ylabel="GFLOP/s achieved (dashed: FMA peak)")
    return _save(fig, path)


def reproduction_accuracy(cells: pd.DataFrame, path: Path) -> Path | None:
    """Published vs reproduced top-1 per cell (mean ± std over seeds), one panel per
    experiment, colour = verdict, the diagonal = reproduced exactly. ``cells``: the frame of
    ``suite.reproduce.compare_cells``; cells without a published counterpart are left out."""
    if cells.empty or "pub_mean" not in cells:
        return None
    data = cells[cells["pub_mean"].notna()]
    if data.empty:
        return None
    experiments = sorted(data["experiment"].unique())
    fig, axes = plt.subplots(
        1, len(experiments), figsize=(5 * len(experiments), 4.6), squeeze=False
    )
    colours = {"identical": "tab:green", "within noise": "tab:blue", "differs": "tab:red"}
    colours["not bitwise"] = "tab:orange"  # same machine class, hashes differ: investigate
    for ax, exp in zip(axes[0], experiments):
        sub = data[data["experiment"] == exp]
        for verdict, grp in sub.groupby("verdict"):
            ax.errorbar(
                grp["pub_mean"],
                grp["new_mean"],
                xerr=grp["pub_std"].fillna(0),
                yerr=grp["new_std"].fillna(0),
                fmt="o",
                color=colours.get(verdict, "grey"),
                label=f"{verdict} ({len(grp)})",
                alpha=0.8,
                capsize=2,
            )
        low = min(sub["pub_mean"].min(), sub["new_mean"].min()) - 1
        high = max(sub["pub_mean"].max(), sub["new_mean"].max()) + 1
        ax.plot([low, high], [low, high], color="black", linewidth=0.8, linestyle="--")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_title(exp)
        ax.set_xlabel("published top-1 (%)")
        ax.set_ylabel("reproduced top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Published vs reproduced accuracy per cell (mean ± std over seeds)")
    return _save(fig, path)
