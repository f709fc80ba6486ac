"""The report's machine-limit table and roofline figure, from bench rows that carry the
roofline fields (and nothing from older rows that do not)."""

from __future__ import annotations

import pandas as pd

from suite.report import figures, speed


def _rows(with_roofline: bool = True) -> pd.DataFrame:
    rows = []
    for backend, gflops, pct in (("dense", 40.0, 20.0), ("fused", 12.0, 6.0)):
        row = {
            "machine": "amd-f25m17-avx512-2c (AMD EPYC)",
            "device": "cpu",
            "mode": "kernel",
            "shape": "768->3072",
            "dtype": "float32",
            "threads": 2,
            "batch": 1,
            "sparsity": 0.9,
            "backend": backend,
        }
        if with_roofline:
            row |= {
                "gflops": gflops,
                "pct_of_limit": pct,
                "intensity_flop_per_byte": 0.5 if backend == "dense" else 0.3,
                "limit_gflops": 200.0,
            }
        rows.append(row)
    return pd.DataFrame(rows)


def test_limit_grid_gives_gflops_and_percent_of_limit_per_backend():
    table = speed.limit_grid(_rows())
    assert list(table["dense"]) == ["40.0 (20%)"] and list(table["fused"]) == ["12.0 (6%)"]
    assert list(table["sparsity"]) == ["90%"]


def test_rows_without_roofline_fields_give_no_limit_table_and_no_figure(tmp_path):
    assert speed.limit_grid(_rows(with_roofline=False)).empty
    assert figures.roofline(_rows(with_roofline=False), tmp_path / "r.png") is None


def test_the_roofline_figure_is_a_non_empty_png(tmp_path):
    path = figures.roofline(_rows(), tmp_path / "roofline.png")
    assert path is not None and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
