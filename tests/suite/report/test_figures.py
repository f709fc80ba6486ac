"""suite.report.figures: the accuracy figure has a panel per experiment, a y-range fitted to
its data and 95% intervals over seeds as error bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from suite.report import figures
from suite.report.claims import mean_interval


def _train() -> pd.DataFrame:
    """Two experiments, dense + two methods at 90/99%, 4 seeds; ``rigl`` collapses at 99% on
    the cnn (chance level), everything else is 93-98%."""
    rows = []
    for exp in ("cnn", "mlp"):
        for seed in range(4):
            rows.append((exp, "dense", 0.0, seed, 97.5 + 0.3 * seed))
            for sp in (0.9, 0.99):
                rows.append((exp, "srigl", sp, seed, 96.0 - 2 * (sp > 0.95) + 0.4 * seed))
                rigl = 10.0 + 0.1 * seed if (exp, sp) == ("cnn", 0.99) else 95.5 + 0.2 * seed
                rows.append((exp, "rigl", sp, seed, rigl))
    return pd.DataFrame(rows, columns=["experiment", "method", "sparsity", "seed", "top1"])


@pytest.fixture(scope="module")
def axes(tmp_path_factory, request):
    """The axes of the accuracy figure (captured before the figure is closed) and its path."""
    captured = {}
    save = figures._save

    def keep(fig, path):
        captured["axes"] = [ax for ax in fig.axes if ax.get_title()]
        return save(fig, path)

    patch = pytest.MonkeyPatch()
    patch.setattr(figures, "_save", keep)
    path = figures.accuracy_vs_sparsity(_train(), tmp_path_factory.mktemp("fig") / "acc.png")
    patch.undo()
    return captured["axes"], path


def test_one_panel_per_experiment(axes):
    panels, path = axes
    assert [ax.get_title() for ax in panels] == ["cnn", "mlp"]
    assert path.read_bytes().startswith(b"\x89PNG")


def test_the_y_range_is_fitted_to_the_data_not_10_to_100(axes):
    panels, _ = axes
    for ax in panels:
        low, high = ax.get_ylim()
        assert 90 < low < 94 and 97 < high < 102, ax.get_title()  # data: 93.6-99.0
    ticks = [t.get_text() for t in panels[0].get_xticklabels()]
    assert ticks[0] == "90%" and ticks[1].startswith("99%\nrigl 10.")  # the collapsed cell
    assert ticks[1].endswith("(below)")


def test_error_bars_are_95_percent_t_intervals_over_seeds(axes):
    panels, _ = axes
    data = _train()
    # seaborn draws a bar with its caps as one line broken by NaNs: cap, bar, cap
    ys = [np.asarray(line.get_ydata(), dtype=float) for line in panels[1].lines]
    bars = {(round(np.nanmin(y), 6), round(np.nanmax(y), 6)) for y in ys if np.isnan(y).any()}
    for method in ("srigl", "rigl"):
        for sp in (0.9, 0.99):
            cell = data.query("experiment == 'mlp' and method == @method and sparsity == @sp")
            low, high = mean_interval(cell["top1"])
            assert (round(low, 6), round(high, 6)) in bars, (method, sp)


def test_fitted_range_covers_the_kept_intervals_and_leaves_far_cells_out():
    cells = pd.DataFrame(
        {
            "mean": [97.0, 95.0, 10.0, 90.0],
            "low": [96.0, 93.0, 9.0, float("nan")],  # one cell of one seed: its mean counts
            "high": [98.5, 96.0, 11.0, float("nan")],
        }
    )
    low, high = figures.fitted_range(cells, span=20.0, pad=0.0)
    assert (low, high) == (90.0, 98.5)
    low, high = figures.fitted_range(cells, span=100.0, pad=0.1)
    assert low == pytest.approx(9.0 - 0.1 * 89.5) and high == pytest.approx(98.5 + 8.95)
