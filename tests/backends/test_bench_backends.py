"""pytest-benchmark entries for the main cases (slow: ``make test`` leaves them out).

Run: ``.venv/bin/python -m pytest tests/backends/test_bench_backends.py -m slow
--benchmark-only``. The ratio table with the dense baseline measured in the same run comes from
``scripts/measure_fused.py`` (and ``python -m suite.bench``).
"""

from __future__ import annotations

import pytest
import torch

import backends
from srigl.masks import constant_fan_in_mask

pytestmark = pytest.mark.slow

SHAPES = [(768, 3072), (3072, 768)]  # ViT-B/16 MLP, in -> out
MAIN = ["dense", "structured", "csr", "compiled", "fused"]


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("batch", [1, 256])
@pytest.mark.parametrize("sparsity", [0.9, 0.99])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", MAIN)
def test_bench_backend_forward(benchmark, name, shape, sparsity, batch):
    ok, why = backends.available(name, "cpu")
    if not ok:
        pytest.skip(why)
    in_f, out_f = shape
    weight, bias = torch.randn(out_f, in_f) / in_f**0.5, torch.randn(out_f)
    mask = constant_fan_in_mask((out_f, in_f), sparsity, torch.Generator().manual_seed(0))
    layer = backends.create(name, weight, mask, bias)
    x = torch.randn(batch, in_f)
    with torch.no_grad():
        torch.testing.assert_close(
            layer(x), torch.nn.functional.linear(x, weight * mask, bias), rtol=1e-4, atol=1e-4
        )
        benchmark.extra_info.update(backend=name, sparsity=sparsity, batch=batch, threads=2)
        benchmark(layer, x)


@pytest.mark.parametrize("sparsity", [0.9])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_bench_fused_forward_transposed_kernel_only(benchmark, shape, sparsity):
    in_f, out_f = shape
    weight, bias = torch.randn(out_f, in_f), torch.randn(out_f)
    layer = backends.create(
        "fused",
        weight,
        constant_fan_in_mask((out_f, in_f), sparsity, torch.Generator().manual_seed(0)),
        bias,
    )
    xt = torch.randn(in_f, 256)
    benchmark.extra_info.update(backend="fused", mode="kernel", batch=256, threads=2)
    benchmark(layer.forward_transposed, xt)


NM_PATTERNS = [(2, 4), (1, 4), (1, 8)]


@pytest.mark.parametrize("batch", [1, 256])
@pytest.mark.parametrize("mask_kind", ["nm", "constant_fan_in"])
@pytest.mark.parametrize("pattern", NM_PATTERNS, ids=[f"{n}of{m}" for n, m in NM_PATTERNS])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_bench_fused_nm_vs_constant_fan_in(benchmark, shape, pattern, mask_kind, batch):
    """The fused layer of an N:M mask and of a random constant fan-in mask at the same sparsity
    (1 - N/M), each with the variant the tuner picks (``extra_info["variant"]``); compare with
    ``--benchmark-group-by=param:shape,param:pattern,param:batch``."""
    from backends.nm import nm_mask

    n, m = pattern
    in_f, out_f = shape
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(out_f, in_f) / in_f**0.5, torch.randn(out_f)
    if mask_kind == "nm":
        mask = nm_mask((out_f, in_f), n, m, generator=g)
    else:
        mask = constant_fan_in_mask((out_f, in_f), 1 - n / m, g)
    layer = backends.create("fused", weight, mask, bias)
    assert (layer.nm_pattern is not None) == (mask_kind == "nm")
    x = torch.randn(batch, in_f)
    with torch.no_grad():
        torch.testing.assert_close(
            layer(x), torch.nn.functional.linear(x, weight * mask, bias), rtol=1e-4, atol=1e-4
        )
        benchmark.extra_info.update(
            backend="fused",
            mask=mask_kind,
            n_m=f"{n}:{m}",
            batch=batch,
            threads=2,
            variant=layer.variant_for(batch),
        )
        benchmark(layer, x)
