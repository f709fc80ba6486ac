"""suite.bench: the benchmark runner, driven through its real Hydra config (made tiny)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import backends
import suite
from backends.dense import DenseLinear
from srigl.masks import SparsityTooHighError
from suite.bench import BenchConfigError, resolve_settings, run_bench
from suite.bench.masks import model_masks
from suite.bench.timing import BenchMismatchError, check_linear
from suite.checkpointing.loader import CheckpointError
from suite.results import BENCH_INTERVAL_KEYS, BENCH_ROW_KEYS, ResultStore
from suite.runtime import set_threads

CONF = str(Path(suite.__file__).resolve().parent / "conf")
ROOT = Path(suite.__file__).resolve().parent.parent


def bench_cfg(tmp_path, *overrides: str):
    """The real bench config (profile=quick by default) shrunk to a tiny, fast grid."""
    tiny = [
        "shapes=[[24,16],[33,20]]",
        "sparsities=[0.5,0.75]",
        "batches=[1,3]",
        "backends=[dense,naive]",
        "min_run_time=0.0005",
        "pairs=3",
        "threads=1",
        "progress=false",
        f"results_dir={tmp_path / 'runs'}",
    ]
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose("bench", overrides=tiny + list(overrides))


class OffByALittle(DenseLinear):
    """A deliberately broken backend: dense plus 1e-3."""

    def forward(self, x):
        return super().forward(x) + 1e-3


class Transposing(DenseLinear):
    """A backend offering the [in, batch] -> [out, batch] kernel path."""

    calls = 0

    def forward_transposed(self, xt):
        Transposing.calls += 1
        return torch.addmm(self.bias.unsqueeze(1), self.weight, xt)


class NeverHere(DenseLinear):
    @classmethod
    def available(cls, device="cpu"):
        return False, "needs a machine that does not exist"


@pytest.fixture
def extra_backend(monkeypatch):
    """Register a test backend under a name for one test; removed afterwards."""

    def add(name, cls):
        monkeypatch.setitem(backends.BACKENDS._entries, name, cls)
        return name

    return add


# --------------------------------------------------------------------------- the runner


def test_bench_writes_one_valid_record_with_a_row_per_case(tmp_path):
    record, path = run_bench(bench_cfg(tmp_path, "backends=[dense,naive,csr]"))
    stored = ResultStore(tmp_path / "runs").read(kind="bench")
    assert [r["run_id"] for r in stored] == [record["run_id"]] and path.is_file()
    all_rows = stored[0]["metrics"]["rows"]
    # 2 shapes x 2 sparsities x 2 batches x (3 backends x 2 modes + the A/A control)
    assert len(all_rows) == 56
    assert all(set(BENCH_ROW_KEYS) | set(BENCH_INTERVAL_KEYS) <= set(r) for r in all_rows)
    assert sum(r["backend"] == "dense_aa" for r in all_rows) == 8
    rows = [r for r in all_rows if r["backend"] != "dense_aa"]
    for r in all_rows:  # the paired protocol: interval, pairs and the per-block samples
        assert r["speedup_ci_low"] <= r["speedup"] <= r["speedup_ci_high"]
        assert r["n_pairs"] == 3 == len(r["samples_s"]) == len(r["dense_samples_s"])
    assert {(r["in_features"], r["out_features"]) for r in rows} == {(24, 16), (33, 20)}
    assert {r["sparsity"] for r in rows} == {0.5, 0.75}
    assert {r["mode"] for r in rows} == {"kernel", "end_to_end"}
    assert {r["threads"] for r in rows} == {1} and stored[0]["metrics"]["threads"] == 1
    # Every row carries its own dense baseline, timed in alternation with it; a backend
    # without a transposed path has one measurement serving both modes.
    by_case = {}
    for r in rows:
        assert r["dense_median_s"] > 0 and r["csr_median_s"] > 0 and r["path"] == "forward"
        assert r["speedup_vs_csr"] == pytest.approx(r["speedup"] / _csr(rows, r)["speedup"])
        key = (r["backend"], r["in_features"], r["sparsity"], r["batch"])
        by_case.setdefault(key, set()).add((r["median_s"], r["dense_median_s"]))
    assert all(len(v) == 1 for v in by_case.values())
    # Constant fan-in masks: k = floor(B / out) per neuron.
    row = next(r for r in rows if r["in_features"] == 33 and r["sparsity"] == 0.75)
    assert row["k"] == (33 * 20 // 4) // 20 and row["n_active"] == 20


def _csr(rows, row):
    """The csr row of ``row``'s case (same shape, sparsity, batch, mode) in the same run."""
    keys = ("in_features", "sparsity", "batch", "mode")
    return next(r for r in rows if r["backend"] == "csr" and all(r[k] == row[k] for k in keys))


def test_bench_records_the_kernel_variant_threads_omp_policy_and_load(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # recorded as read (set before start)
    record, _ = run_bench(bench_cfg(tmp_path, "backends=[dense,fused]"))
    metrics = record["metrics"]
    assert metrics["threads"] == 1 and metrics["omp_wait_policy"] == "PASSIVE"
    for key in ("load_avg_1m", "load_avg_1m_start"):
        assert metrics[key] is None or metrics[key] >= 0
    fused = [r for r in metrics["rows"] if r["backend"] == "fused"]
    dense = [r for r in metrics["rows"] if r["backend"] == "dense"]
    assert fused and all(isinstance(r["variant"], str) and r["variant"] for r in fused)
    assert all(r["variant"] is None for r in dense)
    assert {r["variant"].split("/")[0] for r in fused} <= {"generic", "avx2", "avx512", "numba"}


def test_top_level_keys_override_the_profile_and_null_takes_the_profile(tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        quick = compose("bench", overrides=["profile=quick"])
        mixed = compose("bench", overrides=["profile=default", "batches=[2]"])
    s = resolve_settings(quick)
    prof = quick.profile.bench
    assert s.shapes == [tuple(x) for x in prof.shapes]
    assert s.sparsities == list(prof.sparsities) and s.batches == list(prof.batches)
    assert s.backends == backends.names()  # profile says null: every registered backend
    assert s.min_run_time == prof.min_run_time and s.whole_model == prof.whole_model
    m = resolve_settings(mixed)
    assert m.batches == [2] and m.sparsities == list(mixed.profile.bench.sparsities)


def test_correctness_check_stops_the_run_on_a_broken_backend(tmp_path, extra_backend):
    extra_backend("off_by_a_little", OffByALittle)
    cfg = bench_cfg(tmp_path, "backends=[dense,off_by_a_little]")
    with pytest.raises(BenchMismatchError, match="off_by_a_little"):
        run_bench(cfg)
    assert ResultStore(tmp_path / "runs").files() == []  # no record of a failed run


def test_kernel_mode_times_the_transposed_path_when_a_backend_offers_it(tmp_path, extra_backend):
    extra_backend("transposing", Transposing)
    Transposing.calls = 0
    record, _ = run_bench(bench_cfg(tmp_path, "backends=[dense,transposing]"))
    rows = record["metrics"]["rows"]
    paths = {(r["backend"], r["mode"]): r["path"] for r in rows}
    assert paths[("transposing", "kernel")] == "forward_transposed"
    assert paths[("transposing", "end_to_end")] == "forward"
    assert paths[("dense", "kernel")] == "forward"  # no transposed path: its forward
    assert Transposing.calls > 0


def test_broken_transposed_path_is_caught_too(tmp_path, extra_backend):
    class BadTransposed(Transposing):
        def forward_transposed(self, xt):
            return super().forward_transposed(xt) * 1.01

    extra_backend("bad_transposed", BadTransposed)
    with pytest.raises(BenchMismatchError, match="forward_transposed"):
        run_bench(bench_cfg(tmp_path, "backends=[bad_transposed]"))


def test_unavailable_backends_are_listed_with_their_reason(tmp_path, extra_backend, caplog):
    extra_backend("never_here", NeverHere)
    record, _ = run_bench(bench_cfg(tmp_path, "backends=[dense,never_here]"))
    assert record["metrics"]["skipped"] == {"never_here": "needs a machine that does not exist"}
    assert {r["backend"] for r in record["metrics"]["rows"]} == {"dense", "dense_aa"}
    assert "never_here" in caplog.text


def test_bench_logs_speedups_vs_dense_and_vs_csr(tmp_path, caplog):
    caplog.set_level("INFO", logger="suite.bench.app")
    run_bench(bench_cfg(tmp_path, "backends=[dense,csr]", "batches=[1]", "modes=[end_to_end]"))
    out = caplog.text
    assert "speed-up vs dense" in out and "speed-up vs csr" in out and "A/A control" in out


@pytest.mark.parametrize(
    "override, error, match",
    [
        ("backends=[no_such_backend]", ValueError, "no_such_backend.*dense"),
        ("modes=[warp]", BenchConfigError, "warp.*kernel"),
        ("dtype=float64", BenchConfigError, "float64.*float32"),
        ("batches=[]", BenchConfigError, "batches"),
        ("shapes=[[3]]", BenchConfigError, r"\[3\]"),
        ("min_run_time=0", BenchConfigError, "min_run_time"),
        ("device=tpu", BenchConfigError, "tpu.*allowed"),
        ("threads=0", BenchConfigError, "threads=0.*integer >= 1"),
        ("threads=2.5", BenchConfigError, "threads=2.5 is not an integer.*>= 1 or null"),
        ("threads=true", BenchConfigError, "threads=True is not an integer"),
        ("batches=[-3]", BenchConfigError, r"batch -3 is invalid; allowed: integers >= 1"),
        ("batches=[0]", BenchConfigError, r"batch 0 is invalid; allowed: integers >= 1"),
        ("batches=[1.5]", BenchConfigError, r"batch 1.5 is invalid"),
        ("sparsities=[1.0]", BenchConfigError, r"sparsity 1.0 is invalid; allowed: .*\[0, 1\)"),
        ("pairs=1", BenchConfigError, "pairs=1 is invalid; allowed: an integer >= 2"),
        ("min_run_time=-1", BenchConfigError, "min_run_time=-1 is invalid"),
    ],
)
def test_bad_settings_are_errors_naming_the_value(tmp_path, override, error, match):
    with pytest.raises(error, match=match):
        resolve_settings(bench_cfg(tmp_path, override))


def test_grid_sparsity_that_leaves_no_input_is_an_error(tmp_path):
    with pytest.raises(SparsityTooHighError, match="k = 0"):
        run_bench(bench_cfg(tmp_path, "sparsities=[0.99]"))


def test_whole_model_part_times_condensed_vs_dense(tmp_path):
    cfg = bench_cfg(
        tmp_path,
        "whole_model=true",
        "whole_model_options.models=[mlp]",
        "whole_model_options.experiments=[]",
        "whole_model_options.image_size=6",
        "whole_model_options.batches=[1,4]",
        "whole_model_options.backends=[naive,structured,fused_triton]",
        "whole_model_options.ablate=0.25",
        "whole_model_options.structured=true",
        "backends=[dense,naive]",  # structured is not in the grid's list: it runs all the same
    )
    record, _ = run_bench(cfg)
    whole = [w for w in record["metrics"]["whole_model"] if w["backend"] != "dense_aa"]
    aa = [w for w in record["metrics"]["whole_model"] if w["backend"] == "dense_aa"]
    assert [(w["model"], w["batch"]) for w in aa] == [("mlp", 1), ("mlp", 4)]
    triton_runs, why = backends.get("fused_triton").supports(torch.device("cpu"), torch.float32)
    runs = ("naive", "structured") + (("fused_triton",) if triton_runs else ())
    assert {(w["model"], w["backend"], w["batch"]) for w in whole} == {
        ("mlp", name, batch) for name in runs for batch in (1, 4)
    }
    if not triton_runs:  # a backend that cannot run here is skipped, saying why
        assert record["metrics"]["skipped"]["whole_model/fused_triton"] == why
    for w in whole:
        assert w["median_s"] > 0 and w["dense_median_s"] > 0 and w["structured"] is True
        assert w["speedup_ci_low"] <= w["speedup"] <= w["speedup_ci_high"]
        assert w["n_pairs"] == len(w["samples_s"]) == 10  # whole_model_options.pairs
        assert w["condensed_layers"] == 3 and 0.99 < w["condensed_weight_fraction"] <= 1.0


# --------------------------------------------------------------------------- checkpoints


def _mlp_and_masks():
    from suite.models import create_model

    torch.manual_seed(0)
    model = create_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=[32, 24])
    return model, model_masks(model, 0.75, seed=0, ablate=0.2)


# what the bench must be told about _mlp_and_masks's model when a checkpoint does not say it
MLP_OVERRIDES = ("model=mlp", "model.hidden=[32,24]", "input_shape=[1,8,8]")


def _plain_checkpoint(path: Path, model: torch.nn.Module, masks: dict) -> Path:
    """Save ``model`` and ``masks`` as a plain checkpoint (a state dict and masks, no config)."""
    torch.save({"state_dict": model.state_dict(), "masks": masks}, path)
    return path


def test_checkpoint_from_suite_train_is_rebuilt_from_its_config(tmp_path):
    model, masks = _mlp_and_masks()
    config_yaml = (
        "model: {name: mlp, hidden: [32, 24]}\n"
        "dataset: {name: synthetic, input_shape: [1, 8, 8], num_classes: 10}\n"
    )
    ckpt = {
        "model": {f"module.{k}": v for k, v in model.state_dict().items()},  # DDP names
        "optimizer": {},
        "masks": masks,
        "trainer": {},
        "rng": {},
        "epoch": 1,
        "config_yaml": config_yaml,
    }
    path = tmp_path / "checkpoint.pt"
    torch.save(ckpt, path)
    record, _ = run_bench(bench_cfg(tmp_path, f"checkpoint={path}", "modes=[end_to_end]"))
    rows = record["metrics"]["rows"]
    layers = {r["layer"] for r in rows}
    assert layers == {"1", "3", "5"} and {r["model"] for r in rows} == {"mlp"}
    for r in rows:  # the real layer's sparsity, not a grid value
        mask = masks[f"{r['layer']}.weight"]
        assert r["sparsity"] == pytest.approx(1 - mask.float().mean().item(), abs=1e-6)
    assert {w["backend"] for w in record["metrics"]["whole_model"]} == {
        "dense",
        "naive",
        "dense_aa",
    }
    assert record["metrics"]["checkpoint"]["source"] == str(path)


def test_plain_state_dict_checkpoint_takes_the_model_from_overrides(tmp_path):
    model, masks = _mlp_and_masks()
    path = _plain_checkpoint(tmp_path / "plain.pt", model, masks)
    overrides = [f"checkpoint={path}", *MLP_OVERRIDES, "batches=[2]"]
    with pytest.raises(CheckpointError, match="input shape"):  # nothing says the input shape
        run_bench(bench_cfg(tmp_path, *overrides[:3]))
    record, _ = run_bench(bench_cfg(tmp_path, *overrides))
    assert {r["layer"] for r in record["metrics"]["rows"]} == {"1", "3", "5"}


def test_truncated_checkpoint_is_an_error_naming_the_file(tmp_path):
    model, masks = _mlp_and_masks()
    good = _plain_checkpoint(tmp_path / "good.pt", model, masks)
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        run_bench(bench_cfg(tmp_path, f"checkpoint={bad}", "model=mlp"))


def test_foreign_checkpoint_is_an_error_listing_what_it_holds(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match=r"foreign.pt.*'masks'.*weights"):
        run_bench(bench_cfg(tmp_path, f"checkpoint={path}", "model=mlp"))


def test_checkpoint_with_unstructured_masks_lists_the_rejecting_backends(tmp_path):
    model, masks = _mlp_and_masks()
    masks["3.weight"][0] = True  # not constant fan-in any more
    path = _plain_checkpoint(tmp_path / "rigl.pt", model, masks)
    overrides = [f"checkpoint={path}", *MLP_OVERRIDES, "backends=[dense,naive]", "batches=[1]"]
    record, _ = run_bench(bench_cfg(tmp_path, *overrides))
    skipped = record["metrics"]["skipped"]
    assert "naive@3" in skipped and "fan-in" in skipped["naive@3"]
    assert {(r["backend"], r["layer"]) for r in record["metrics"]["rows"]} >= {("dense", "3")}


# --------------------------------------------------------------------------- building blocks


def test_set_threads_sets_torch_and_numba():
    numba = pytest.importorskip("numba")
    info = set_threads(1)
    assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
    assert info == {"threads": 1, "numba_threads": 1}
    set_threads(2)


def test_check_linear_accepts_rounding_and_rejects_an_error():
    gen = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(4, 300, generator=gen), torch.randn(7, 300, generator=gen), None
    check_linear(torch.nn.functional.linear(x, w), x, w, b, "exact")
    y = torch.nn.functional.linear(x, w)
    y[2, 3] += 1e-2  # ~40x the bound of 16 eps * (|W| @ |x|) here
    with pytest.raises(BenchMismatchError, match=r"1 of 28"):
        check_linear(y, x, w, b, "broken")


@pytest.mark.slow
def test_python_m_suite_bench_runs_from_the_command_line(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "suite.bench",
        "shapes=[[16,8]]",
        "sparsities=[0.5]",
        "batches=[1]",
        "backends=[dense,naive]",
        "min_run_time=0.001",
        "progress=false",
        f"results_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(ResultStore(tmp_path).read(kind="bench")) == 1


def test_a_run_with_background_load_records_how_many_busy_processes_ran(tmp_path):
    record, _ = run_bench(
        bench_cfg(tmp_path, "backends=[dense]", "batches=[1]", "modes=[end_to_end]", "load=1")
    )
    assert record["metrics"]["load_processes"] == 1


def test_a_bad_load_is_refused_before_anything_is_timed(tmp_path):
    with pytest.raises(BenchConfigError, match="load=-2 is invalid"):
        run_bench(bench_cfg(tmp_path, "backends=[dense]", "load=-2"))
    assert not list(tmp_path.rglob("*.json"))


def test_a_bench_record_id_names_the_machine_so_another_cpu_adds_a_record(monkeypatch):
    """The same bench config on two machine classes: two records, neither replaces the other."""
    from suite import machine
    from suite.bench.app import bench_run_id

    config = {"profile": {"name": "quick"}, "threads": 2}
    real = machine.identity()
    here = bench_run_id(config)
    assert bench_run_id(dict(config)) == here  # the same machine: the same id (a rerun replaces)
    monkeypatch.setattr(machine, "identity", lambda: {**real, "asv_name": real["asv_name"] + "-x"})
    assert bench_run_id(config) != here
