"""Layer cases and the error bound shared by the backend tests."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import backends

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    """A masked Linear layer in -> out: n_active neurons keep k inputs each, ``extra`` of them
    k + 1 (SRigL's remainder after ablation); x is lead + [in]."""

    name: str
    in_features: int
    out_features: int
    k: int
    n_active: int
    lead: tuple[int, ...]
    extra: int = 0


CASES = [
    Case("odd_sizes_some_ablated", 37, 23, 5, 19, (5,)),
    Case("fan_in_1", 33, 17, 1, 17, (1,)),
    Case("fan_in_equals_in", 19, 11, 19, 11, (3,)),
    Case("all_ablated_but_one", 64, 9, 8, 1, (4,)),
    Case("in_over_32767_int32_indices", 40000, 3, 5, 3, (2,)),
    Case("leading_dims_2x3", 24, 10, 6, 8, (2, 3)),
    Case("batch_70_partial_tiles", 50, 13, 7, 12, (70,)),
    Case("mlp_shape", 768, 96, 77, 96, (37,)),
    Case("remainder_k_or_k_plus_1", 41, 21, 6, 17, (9,), extra=7),
]

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def constant_fan_in_layer(
    case: Case, seed: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weight [out, in], bool mask [out, in], bias [out]) with constant fan-in ``case.k`` over
    ``case.n_active`` randomly chosen neurons (``case.extra`` of them keep k + 1), the other
    neurons ablated."""
    g = torch.Generator().manual_seed(seed)
    out_f, in_f = case.out_features, case.in_features
    weight = torch.randn(out_f, in_f, generator=g).to(dtype)
    bias = torch.randn(out_f, generator=g).to(dtype)
    mask = torch.zeros(out_f, in_f, dtype=torch.bool)
    rows = torch.randperm(out_f, generator=g)[: case.n_active]
    for i, r in enumerate(rows.tolist()):
        mask[r, torch.randperm(in_f, generator=g)[: case.k + (i < case.extra)]] = True
    return weight, mask, bias


def error_bound(
    x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ref, bound): ref = F.linear in float64; bound = c * eps(dtype) * (|W*m| @ |x| + |b|),
    elementwise, with c = 2 * (k + 1): a sum of k products rounded at most k + 1 times, twice
    for margin (the classic bound of recursive summation is k * eps)."""
    eps = torch.finfo(x.dtype).eps
    w64 = weight.double() * mask
    ref = F.linear(x.double(), w64, bias.double())
    mag = F.linear(x.double().abs(), w64.abs(), bias.double().abs())
    return ref, 2 * (k + 1) * eps * mag


def skip_unless_supported(name: str, device: str, dtype: torch.dtype) -> None:
    """Skip, with the backend's own reason, where ``name`` cannot run ``dtype`` on ``device``."""
    ok, why = backends.get(name).supports(device, dtype)
    if not ok:
        pytest.skip(f"{name} on {device}/{dtype}: {why}")


def cpu_layer(
    name: str, seed: int, with_bias: bool = True, **kwargs
) -> tuple[backends.Backend, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(layer, weight, mask, bias)``: backend ``name`` built from ``CASES[0]``'s layer of
    ``seed`` (without its bias unless ``with_bias``; ``kwargs`` go to ``backends.create``); the
    test is skipped where ``name`` does not run float32 on CPU."""
    skip_unless_supported(name, "cpu", torch.float32)
    weight, mask, bias = constant_fan_in_layer(CASES[0], seed)
    layer = backends.create(name, weight, mask, bias if with_bias else None, **kwargs)
    return layer, weight, mask, bias


def run_under_triton_interpreter(script: str, timeout: float) -> subprocess.CompletedProcess:
    """Run ``script`` (``{tests}`` in it replaced by this folder) in a fresh Python from the
    repository root with ``TRITON_INTERPRET=1`` and no GPU (Triton reads the variable when it
    is imported, hence the subprocess); returns the finished process, output captured."""
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    code = script.format(tests=str(Path(__file__).parent))
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
