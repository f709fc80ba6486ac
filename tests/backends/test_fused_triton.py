"""The Triton kernel: under the interpreter on CPU (a subprocess, since TRITON_INTERPRET is read
when the kernel module is imported) and compiled on a GPU when there is one."""

from __future__ import annotations

import importlib.util
import os
import textwrap

import pytest
import torch
from backend_cases import (
    CASES,
    DTYPES,
    constant_fan_in_layer,
    error_bound,
    run_under_triton_interpreter,
)

import backends

INTERPRETED = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    import backends
    from backend_cases import CASES, constant_fan_in_layer, error_bound
    ok, why = backends.available("fused_triton", "cpu")
    assert ok, why
    for case in CASES:
        if case.in_features * case.out_features > 10**5 and case.k > 8:
            continue  # the interpreter is slow: small layers only
        weight, mask, bias = constant_fan_in_layer(case, 0)
        layer = backends.create("fused_triton", weight, mask, bias)
        x = torch.randn(*case.lead, case.in_features)
        ref, bound = error_bound(x, weight, mask, bias, case.k)
        err = (layer(x).double() - ref).abs()
        assert bool((err <= bound).all()), (case.name, err.max().item())
        print("ok", case.name)
    """
)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_kernel_matches_reference_under_the_interpreter_on_cpu():
    proc = run_under_triton_interpreter(INTERPRETED, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok ") >= 6, proc.stdout


def test_triton_backend_on_cpu_without_the_interpreter_says_why():
    if os.environ.get("TRITON_INTERPRET"):
        pytest.skip("TRITON_INTERPRET is set in this process")
    ok, why = backends.available("fused_triton", "cpu")
    assert not ok and "TRITON_INTERPRET=1" in why


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["fused", "fused_triton", "compiled"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_gpu_kernels_match_reference_on_cuda(case, name, dtype):
    weight, mask, bias = constant_fan_in_layer(case, 0, dtype)
    layer = backends.create(name, weight.cuda(), mask.cuda(), bias.cuda())
    x = torch.randn(*case.lead, case.in_features).to(dtype)
    y = layer(x.cuda()).cpu()
    ref, bound = error_bound(x, weight, mask, bias, case.k)
    assert bool(((y.double() - ref).abs() <= bound).all())
