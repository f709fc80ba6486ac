"""``scripts/gpu_check.py`` (``make gpu-check``) runs on CPU too, as the GPU machine would run
it: from the source tree, with Hydra, omegaconf and torchvision impossible to import."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from scaleout import ROOT, clean_env, run_checked

SCRIPT = ROOT / "scripts" / "gpu_check.py"
#: run the script as on the GPU machine: these imports fail there
WITHOUT = ("hydra", "omegaconf", "torchvision")
PRELUDE = (
    "import runpy, sys\n"
    "for name in {without!r}: sys.modules[name] = None\n"
    "sys.argv = {argv!r}\n"
    "runpy.run_path({script!r}, run_name='__main__')\n"
)


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.md"
    argv = ["gpu_check.py", "--device", "cpu", "--steps", "3", "--shapes", "small", "--batches",
            "1,8", "--train-batch", "2", "--width", "8", "--out", str(out)]  # fmt: skip
    code = PRELUDE.format(without=WITHOUT, argv=argv, script=str(SCRIPT))
    stdout = run_checked([sys.executable, "-c", code], clean_env({"PYTHONPATH": ""}))
    text = out.read_text()
    assert "### Training" in stdout  # printed as well as written
    return text


def _rows(text: str, title: str) -> list[list[str]]:
    section = text.split(f"### {title}", 1)[1].split("###", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")][2:]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_gpu_check_runs_without_hydra_omegaconf_or_torchvision(cpu_report):
    env = {row[0]: row[1] for row in _rows(cpu_report, "Environment")}
    assert env["hydra"] == env["omegaconf"] == env["torchvision"] == "absent"
    assert env["device"] == "cpu"
    assert "skipped: the device is not CUDA" in cpu_report


def test_gpu_check_times_fused_dense_and_csr_and_checks_their_outputs(cpu_report):
    rows = _rows(cpu_report, "Kernels")
    assert {r[4] for r in rows} == {"dense", "fused", "csr"}
    assert {(r[0], r[1], r[2]) for r in rows} == {
        (shape, sparsity, batch)
        for shape in ("128->256", "256->128")
        for sparsity in ("0.90", "0.99")
        for batch in ("1", "8")
    }
    for row in rows:
        assert float(row[5]) > 0, row  # a median time, not "n/a"
        assert float(row[8]) < 1e-5, row  # matches F.linear(x, weight * mask, bias)
        if row[4] == "dense":
            assert row[6] == "1.00"


def test_gpu_check_trains_resnet18_with_srigl_under_bf16(cpu_report):
    rows = {r[0]: r for r in _rows(cpu_report, "Training")}
    assert set(rows) == {"dense", "srigl"}
    srigl = rows["srigl"]
    assert srigl[1] == "bf16" and srigl[3] == "3"
    assert int(srigl[6]) >= 1  # at least one topology update in 3 steps (delta_t = 1)
    assert float(srigl[7]) == pytest.approx(0.1, abs=0.01)
    assert srigl[9] == "ok"
    assert rows["dense"][7] == "1.0000"


def test_fallback_resnet18_has_the_layers_of_the_suite_model():
    pytest.importorskip("torchvision")
    from suite.models import create_model

    gpu_check = _load_script()
    ours = gpu_check.CifarResNet18(10).state_dict()
    suite_model = create_model("resnet18_cifar", 10, (3, 32, 32)).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in suite_model.items()}
    x = torch.randn(2, 3, 32, 32)
    assert gpu_check.CifarResNet18(10)(x).shape == (2, 10)


def test_gpu_check_names_the_allowed_values_of_a_bad_option():
    gpu_check = _load_script()
    with pytest.raises(gpu_check.GpuCheckError, match="allowed"):
        gpu_check.main(["--device", "cpu", "--amp", "fp8", "--out", "/dev/null"])
    with pytest.raises(gpu_check.GpuCheckError, match="allowed"):
        gpu_check._device("tpu")


def test_gpu_check_builds_constant_fan_in_layers():
    gpu_check = _load_script()
    weight, mask, bias = gpu_check.constant_fan_in_layer(768, 96, 0.9, torch.device("cpu"),
                                                         torch.float32)  # fmt: skip
    assert mask.dtype == torch.bool and weight.shape == mask.shape == (96, 768)
    assert bool((mask.sum(1) == 76).all())
    assert not bool(weight[~mask].any()) and bias.shape == (96,)


def test_make_gpu_check_runs_the_script_from_the_source_tree():
    makefile = (ROOT / "Makefile").read_text()
    assert "gpu-check:" in makefile
    assert "PYTHONPATH=$(CURDIR)" in makefile and "scripts/gpu_check.py" in makefile
    assert Path(SCRIPT).is_file()
