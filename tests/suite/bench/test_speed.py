"""pytest-benchmark entries for the main layer cases (slow; ``make test-all`` or
``pytest tests/suite/test_bench_speed.py -m slow --benchmark-group-by=group``).

Each group is one (shape, sparsity, batch) case; its members are every backend available on
the CPU plus ``F.linear`` on the masked dense weight, so pytest-benchmark's table compares them
directly. Threads: 2 for torch and numba (the issue's setting). Outputs are checked against
``F.linear`` before timing.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import backends
from srigl.masks import constant_fan_in_mask
from suite.bench.timing import check_linear
from suite.runtime import set_threads

pytestmark = pytest.mark.slow

SHAPES = [(768, 3072), (3072, 768)]  # ViT-B/16 MLP, [in, out]
SPARSITIES = [0.9, 0.99]
BATCHES = [1, 256]
BACKENDS = ["F.linear"] + [n for n in backends.names() if backends.available(n, "cpu")[0]]


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    before = torch.get_num_threads()
    set_threads(2)
    yield
    set_threads(before)


def _case(shape, sparsity, batch):
    in_f, out_f = shape
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f)
    b = torch.randn(out_f, generator=gen) * 0.1
    mask = constant_fan_in_mask((out_f, in_f), sparsity, gen)
    x = torch.randn(batch, in_f, generator=gen)
    return w, mask, b, x


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_speed(benchmark, backend, shape, sparsity, batch):
    w, mask, b, x = _case(shape, sparsity, batch)
    masked = w * mask
    if backend == "F.linear":
        fn = lambda: F.linear(x, masked, b)  # noqa: E731
    else:
        layer = backends.create(backend, w, mask, b, layer_name=f"{shape[0]}->{shape[1]}")
        fn = lambda: layer(x)  # noqa: E731
    with torch.no_grad():
        check_linear(fn(), x, masked, b, backend)
    benchmark.group = f"{shape[0]}->{shape[1]} sparsity={sparsity} batch={batch}"
    benchmark.extra_info.update(
        {"backend": backend, "sparsity": sparsity, "batch": batch, "threads": 2}
    )
    with torch.no_grad():
        benchmark.pedantic(fn, rounds=20, iterations=1, warmup_rounds=2)
