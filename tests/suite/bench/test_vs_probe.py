"""suite.bench.vs_probe: the fused kernel paired with this CPU's C probe in one process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from suite.bench import vs_probe as vp


def test_make_cell_is_a_constant_fan_in_layer_with_sorted_rows():
    cell = vp.make_cell(64, 32, 0.75, 1, seed=3)
    assert cell.idx.shape == (32, 16) and cell.idx.dtype == np.int32
    assert (np.diff(cell.idx, axis=1) > 0).all()  # ascending, distinct
    assert cell.values.shape == (32, 16) and cell.values.dtype == np.float32
    assert cell.x.shape == (1, 64) and cell.bias.shape == (32,)
    again = vp.make_cell(64, 32, 0.75, 1, seed=3)
    assert np.array_equal(cell.idx, again.idx) and np.array_equal(cell.x, again.x)


def test_reference_is_the_masked_dense_product():
    cell = vp.make_cell(64, 32, 0.5, 3, seed=1)
    dense = np.zeros((32, 64))
    np.put_along_axis(dense, cell.idx.astype(np.int64), cell.values.astype(np.float64), axis=1)
    want = cell.x.astype(np.float64) @ dense.T + cell.bias
    assert np.allclose(vp._reference(cell), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "shape, batch, threads, word",
    [
        ((64, 32), 7, 2, "batch=7"),
        ((48, 32), 1, 2, "48->32"),
        ((64, 24), 1, 2, "64->24"),
        ((64, 32), 1, 0, "threads=0"),
    ],
)
def test_check_cell_names_the_value_it_refuses(shape, batch, threads, word):
    cell = vp.make_cell(*shape, 0.5, batch)
    with pytest.raises(ValueError, match=word):
        vp.check_cell(cell, threads, 256)


def test_format_rows_prints_every_ratio_with_its_interval():
    row = {
        "in_features": 64,
        "out_features": 32,
        "sparsity": 0.9,
        "batch": 1,
        "probe_median_s": 2e-6,
        "probe_layout": "zmm",
        "fused_native_median_s": 2.2e-6,
        "fused_median_s": 5e-6,
        "overhead_s": 2.8e-6,
        "fused_variant": "avx512/perm16x32/par",
    }
    for key in ("fused_native_over_probe", "fused_over_probe", "probe_aa_over_probe"):
        row.update({key: 1.1, f"{key}_ci_low": 1.0, f"{key}_ci_high": 1.2})
    text = vp.format_rows([row])
    assert "| 64->32 | 90% | 1 | 2.0 (zmm) | 2.2 | 1.10 [1.00, 1.20] |" in text
    assert "avx512/perm16x32/par" in text


def test_cli_refuses_a_bad_shape_in_one_line(capsys):
    with pytest.raises(SystemExit, match="INxOUT"):
        vp.cli(["--shapes", "3072by768"])


def _probe_or_skip():
    try:
        return vp.ProbeLibrary(vp.build_probe_library())
    except vp.ProbeUnavailableError as err:
        pytest.skip(f"probe library unavailable here: {err}")


@pytest.mark.parametrize("batch", [1, 256])
def test_compare_cell_pairs_probe_and_fused_on_one_small_layer(batch):
    pytest.importorskip("backends.kernels.ops")
    from backends.kernels import ops

    ok, why = ops.available()
    if not ok:
        pytest.skip(f"C++ kernels unavailable: {why}")
    lib = _probe_or_skip()
    cell = vp.make_cell(128, 64, 0.75, batch, seed=2)
    row = vp.compare_cell(lib, cell, threads=1, pairs=3, block_seconds=0.002)
    assert row["probe_layout"] in row["probe_layouts_us"]
    for key in ("fused_native_over_probe", "fused_over_probe", "probe_aa_over_probe"):
        assert row[f"{key}_ci_low"] <= row[key] <= row[f"{key}_ci_high"]
        assert np.isfinite(row[key]) and row[key] > 0
    assert row["n_pairs"] == 3 and row["k"] == 32
    assert row["fused_variant"].startswith(("avx512", "avx2", "generic"))


def test_cli_writes_one_record_with_the_machine(tmp_path, capsys):
    from backends.kernels import ops

    ok, why = ops.available()
    if not ok:
        pytest.skip(f"C++ kernels unavailable: {why}")
    _probe_or_skip()
    rc = vp.cli(
        [
            "--shapes",
            "128x64",
            "--sparsities",
            "0.75",
            "--batches",
            "1",
            "--threads",
            "1",
            "--pairs",
            "2",
            "--block-seconds",
            "0.002",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    files = list(tmp_path.glob("probe-*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["kind"] == "vs_probe" and record["host"]["asv_name"]
    assert len(record["rows"]) == 1 and record["config"]["threads"] == 1
    assert "GOMP_SPINCOUNT" in record["config"]
    assert "| 128->64 | 75% | 1 |" in capsys.readouterr().out
