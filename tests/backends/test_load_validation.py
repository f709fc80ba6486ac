"""Loaded layer states are untrusted input: every backend validates them before any kernel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from backend_cases import CASES, constant_fan_in_layer, skip_unless_supported
from load_fuzz import KINDS

import backends
from backends.state_checks import LayerStateError, validate_layer_state

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _layer(name):
    skip_unless_supported(name, "cpu", torch.float32)
    weight, mask, bias = constant_fan_in_layer(CASES[0], 0)  # 37 -> 23, k=5, 19 active
    return backends.create(name, weight, mask, bias, layer_name="fc")


def _refused_both_ways(name, sd, match):
    """``from_state_dict`` and ``load_state_dict`` both refuse ``sd`` with ``match``."""
    with pytest.raises(LayerStateError, match=match):
        backends.get(name).from_state_dict(sd, layer_name="fc")
    fresh = _layer(name)
    before = {k: v.clone() for k, v in fresh.state_dict().items() if isinstance(v, torch.Tensor)}
    with pytest.raises(LayerStateError, match=match):
        fresh.load_state_dict(sd)
    after = fresh.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items()), "refused load changed it"


def _condensed_names():
    return [n for n in backends.names() if "indices" in backends.get(n).state_buffers]


@pytest.mark.parametrize("name", _condensed_names())
@pytest.mark.parametrize("shift", [37, 100_000])
def test_indices_out_of_range_are_refused(name, shift):
    sd = _layer(name).state_dict()
    sd["indices"] = sd["indices"] + shift
    _refused_both_ways(name, sd, r"'fc'.*'indices' holds columns .*0 <= indices < 37")


@pytest.mark.parametrize(
    "name", [n for n in backends.names() if "active" in backends.get(n).state_buffers]
)
def test_active_neurons_out_of_range_or_repeated_are_refused(name):  # fmt: skip
    sd = _layer(name).state_dict()
    sd["active"] = sd["active"] + 1000
    _refused_both_ways(name, sd, r"'active' holds neurons .*out_features=23")
    sd = _layer(name).state_dict()
    sd["active"] = sd["active"].clone()
    sd["active"][1] = sd["active"][0]
    _refused_both_ways(name, sd, r"'active' is not strictly ascending")


@pytest.mark.parametrize("name", backends.names())
def test_bias_of_the_wrong_length_is_refused(name):
    sd = _layer(name).state_dict()
    sd["bias"] = sd["bias"][:-1]
    _refused_both_ways(name, sd, r"'bias' has shape \[22\]; allowed: \[23\]")


@pytest.mark.parametrize("name", _condensed_names())
def test_indices_of_the_wrong_shape_or_dtype_are_refused(name):
    sd = _layer(name).state_dict()
    sd["indices"] = sd["indices"][:, :-1]
    _refused_both_ways(name, sd, r"'indices' has shape \[19, 4\]; allowed: \[19, 5\]")
    sd = _layer(name).state_dict()
    sd["indices"] = sd["indices"].float()
    _refused_both_ways(name, sd, r"'indices' has dtype torch.float32; allowed: int16")
    sd = _layer(name).state_dict()
    sd["_extra_state"] = {"in_features": 3, "out_features": 23}  # k=5 > in
    _refused_both_ways(name, sd, r"k=5 per neuron; allowed: 1 <= k <= fan-in 3")


def test_validation_accepts_what_condense_produces_and_int16_indices():
    layer = _layer("naive")
    bufs = {k: getattr(layer, k) for k in layer.state_buffers}
    validate_layer_state(bufs, 37, 23)
    validate_layer_state({**bufs, "indices": bufs["indices"].to(torch.int16)}, 37, 23)
    with pytest.raises(LayerStateError, match=r"in_features='37' is invalid"):
        validate_layer_state(bufs, "37", 23)


@pytest.mark.parametrize("name", backends.names())
def test_truncated_file_is_refused_naming_the_file(name, tmp_path):
    path = tmp_path / "layer.pt"
    torch.save(_layer(name).state_dict(), path)
    good = backends.get(name).load(path, layer_name="fc")
    assert good.out_features == 23
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(LayerStateError, match=rf"{path}: not a readable layer state dict"):
        backends.get(name).load(path)


def test_fuzzed_corrupt_layer_files_are_refused_clearly_and_the_interpreter_lives():
    """Every backend, every kind of corruption; in a subprocess, so a crash is seen as one."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    proc = subprocess.run(
        [sys.executable, str(HERE / "load_fuzz.py"), "--examples", "250"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    died = f"the interpreter died of signal {-proc.returncode}" if proc.returncode < 0 else ""
    assert proc.returncode == 0, died or proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("fuzz ok: 250 examples"), last
    assert last.endswith("kinds: " + ",".join(KINDS)), last
