"""Gradients through ``fused`` layers (issue 23, item 2): the C++ operator's backward, and the
numba, Triton and direct conv kernels, which have none, never cut the graph."""

from __future__ import annotations

import pytest
import torch
from backend_cases import Case, constant_fan_in_layer, run_under_triton_interpreter
from conv_cases import ConvCase, conv_layer
from torch import nn

import backends
from backends.kernels import ops
from backends.kernels.build import KernelUnavailableError

pytestmark = pytest.mark.skipif(
    not backends.available("fused", "cpu")[0], reason=backends.available("fused", "cpu")[1]
)
needs_cpp = pytest.mark.skipif(not ops.available()[0], reason=f"C++ kernel: {ops.available()[1]}")
RESIDUAL = Case("residual_48x48", 48, 48, 12, 40, (6,))


class Residual(nn.Module):
    """x -> pre (trained) -> h + layer(h): the layer's gradient reaches ``pre`` only through
    the layer's backward and the skip path."""

    def __init__(self, layer: nn.Module, width: int) -> None:
        super().__init__()
        self.pre = nn.Linear(width, width)
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        return h + self.layer(h)


def _pre_grads(backend: str, layer_args, x: torch.Tensor, **kwargs) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    model = Residual(backends.create(backend, *layer_args, **kwargs), x.shape[1])
    model.pre.to(x.device)
    model(x).square().sum().backward()
    return model.pre.weight.grad, model.pre.bias.grad


def _assert_matches_dense(layer_args, x: torch.Tensor) -> None:
    got = _pre_grads("fused", layer_args, x)
    want = _pre_grads("dense", layer_args, x)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-3)


@needs_cpp
def test_fused_cpp_layer_in_a_residual_model_gives_the_dense_gradients():
    layer_args = constant_fan_in_layer(RESIDUAL, 0)
    _assert_matches_dense(layer_args, torch.randn(6, 48))


@needs_cpp
@pytest.mark.parametrize("batch", [1, 3, 70])
def test_fused_cpp_input_gradient_is_the_transposed_condensed_product(batch):
    weight, mask, bias = constant_fan_in_layer(Case("odd", 37, 23, 5, 19, (batch,)), 1)
    layer = backends.create("fused", weight, mask, bias)
    x = torch.randn(batch, 37, requires_grad=True)
    gy = torch.randn(batch, 23)
    layer(x).backward(gy)
    torch.testing.assert_close(x.grad, gy @ (weight * mask), rtol=1e-5, atol=1e-5)
    xt = x.detach().T.contiguous().requires_grad_()
    layer.forward_transposed(xt).backward(gy.T.contiguous())
    torch.testing.assert_close(xt.grad, (gy @ (weight * mask)).T, rtol=1e-5, atol=1e-5)


@needs_cpp
@pytest.mark.parametrize("n,m", [(2, 4), (1, 8)], ids=["2of4", "1of8"])
def test_fused_nm_layer_running_its_nm_variant_gives_the_dense_gradients(n, m):
    """The nm forward variant, then the op's backward (the transposed condensed product, from
    the same blob): the gradients of the dense layer."""
    from backends.kernels import linear_tuner
    from backends.nm import nm_mask

    g = torch.Generator().manual_seed(n * 10 + m)
    weight, bias = torch.randn(48, 48, generator=g), torch.randn(48, generator=g)
    mask = nm_mask((48, 48), n, m, generator=g)
    mask[5] = False  # an ablated neuron
    layer = backends.create("fused", weight, mask, bias)
    assert layer.nm_pattern == (n, m)
    isa = ops.ISAS[int(ops.load().fused_isa())]
    threads = torch.get_num_threads()
    for batch in (1, 6):
        bucket = linear_tuner.bucket_of(batch)
        layer._install(threads, bucket, ops.encode(isa, "nm", parallel=False), ())
        assert layer.variant_for(batch) == f"{isa}/nm/ser"
    x = torch.randn(6, 48, requires_grad=True)
    gy = torch.randn(6, 48)
    layer(x).backward(gy)
    torch.testing.assert_close(x.grad, gy @ (weight * mask), rtol=1e-5, atol=1e-5)
    _assert_matches_dense((weight, mask, bias), torch.randn(6, 48))


@needs_cpp
def test_fused_values_that_require_grad_get_their_gradient():
    weight, mask, bias = constant_fan_in_layer(RESIDUAL, 2)
    layer = backends.create("fused", weight, mask, bias)
    layer.values.requires_grad_()
    x = torch.randn(4, 48, requires_grad=True)
    layer(x).sum().backward()
    w = (weight * mask).requires_grad_()
    (x.detach() @ w.T + bias).sum().backward()
    rows = layer.active[:, None]
    torch.testing.assert_close(layer.values.grad, w.grad[rows, layer.indices.long()])


def test_numba_fallback_in_a_residual_model_gives_the_dense_gradients(monkeypatch):
    pytest.importorskip("numba")

    def no_compiler():
        raise KernelUnavailableError("no C++ compiler found (simulated)")

    monkeypatch.setattr(ops, "load", no_compiler)
    layer_args = constant_fan_in_layer(RESIDUAL, 3)
    assert backends.create("fused", *layer_args)._numba is not None
    _assert_matches_dense(layer_args, torch.randn(6, 48))


def test_fused_conv_in_a_residual_model_gives_the_dense_gradients():
    ok, why = backends.supports("fused", "cpu", torch.float32, op="conv2d")
    if not ok:
        pytest.skip(why)
    case = ConvCase("residual", 6, 6, 3, padding=1, h=7, w=7)
    weight, mask, bias = conv_layer(case, 4)

    def grads(name: str) -> torch.Tensor:
        torch.manual_seed(0)
        pre = nn.Conv2d(6, 6, 1)
        layer = backends.create(name, weight, mask, bias, padding=1)
        h = pre(torch.randn(2, 6, 7, 7))
        (h + layer(h)).square().sum().backward()
        return pre.weight.grad

    torch.testing.assert_close(grads("fused"), grads("dense"), rtol=1e-4, atol=1e-3)


@needs_cpp
def test_fused_backward_traces_under_torch_compile_as_one_op():
    weight, mask, bias = constant_fan_in_layer(RESIDUAL, 5)
    layer = backends.create("fused", weight, mask, bias)
    x = torch.randn(4, 48, requires_grad=True)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    compiled(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(4, 48) @ (weight * mask), rtol=1e-5, atol=1e-5)


def test_triton_layer_in_a_residual_model_gives_the_dense_gradients():
    pytest.importorskip("triton")
    script = """
import sys
sys.path.insert(0, {tests!r})
import torch
import backends
from backend_cases import Case, constant_fan_in_layer
from test_fused_gradients import RESIDUAL, _pre_grads
args = constant_fan_in_layer(RESIDUAL, 6)
x = torch.randn(6, 48)
for got, want in zip(_pre_grads("fused_triton", args, x), _pre_grads("dense", args, x)):
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)
print("ok")
"""
    out = run_under_triton_interpreter(script, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.gpu
def test_fused_on_cuda_in_a_residual_model_gives_the_dense_gradients():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU; none on this machine")
    args = [t.cuda() for t in constant_fan_in_layer(RESIDUAL, 7)]
    x = torch.randn(6, 48, device="cuda")
    got, want = _pre_grads("fused", args, x), _pre_grads("dense", args, x)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-3)
