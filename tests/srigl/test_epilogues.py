"""srigl.epilogues: the ReLU / residual add after a condensed conv fused into that layer, on the
patterns a model writes them with, and left alone wherever moving them could change a value."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from test_condense import fan_in_masks, masked_copy, randomise_biases
from test_condense_conv import randomise_bn, tv_resnet18
from torch import fx, nn

import backends
import srigl
from srigl.condense import load_condensed
from srigl.epilogues import fuse_epilogues

pytestmark = pytest.mark.skipif(
    not backends.supports("fused", "cpu", torch.float32, op="conv2d")[0],
    reason="the fused conv backend cannot run here (no C++ toolchain)",
)


class Block(nn.Module):
    """A residual block written the ways models write it: ``mode`` picks the ReLU and add."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        if self.mode == "functional":
            out = F.relu(self.bn1(self.conv1(x)))
            return torch.relu(x + self.conv2(out))  # the conv on the right of the add
        if self.mode == "method":
            out = self.bn1(self.conv1(x)).relu_()
            out = torch.add(self.conv2(out), x)
            return out.relu()
        if self.mode == "iadd":  # fx records x += y as x + y (x is a new tensor here)
            out = self.relu(self.bn1(self.conv1(x)))
            x = x.clone()
            x += self.conv2(out)
            return x
        if self.mode == "used_twice":  # conv1's output feeds the ReLU and the add: not fused
            a = self.conv1(x)
            return self.relu(a) + a + self.conv2(x) * 2.0
        if self.mode == "scalar_add":
            return self.relu(self.conv1(x) + 1.0) + self.conv2(x)
        if self.mode == "size_add":  # another node that is a number, not a tensor
            return torch.relu(self.conv1(x) + x.size(1))
        if self.mode == "in_place_between":  # moving conv1 to the add would read relu_'d x
            y = self.conv1(x)
            z = self.relu(x)  # inplace=True: writes into x
            return y + z
        if self.mode == "train_branch":  # a GraphModule would freeze this branch
            y = F.relu(self.conv1(x))
            return F.dropout(y, 0.5, self.training)
        raise AssertionError(self.mode)


def _condensed(model: nn.Module, **kw) -> tuple[nn.Module, nn.Module]:
    randomise_biases(model)
    randomise_bn(model).eval()
    masks = fan_in_masks(model)
    kw.setdefault("fuse_epilogues", True)
    return masked_copy(model, masks), srigl.condense(model, masks, backend="fused", **kw)


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("functional", {"conv1": "relu", "conv2": "add+relu"}),
        ("method", {"conv1": "relu", "conv2": "add+relu"}),
        ("iadd", {"conv1": "relu", "conv2": "add"}),
        ("used_twice", {}),
        ("scalar_add", {"conv2": "add"}),  # conv1 + 1.0: a constant, not fused
        ("size_add", {"conv1": "add+relu"}),
        ("in_place_between", {}),
        ("train_branch", {}),
    ],
)
def test_fusion_takes_exactly_the_safe_patterns_and_keeps_the_values(mode, expected):
    torch.manual_seed(0)
    block = Block(mode)
    ref, small = _condensed(block)
    assert small.condense_report.epilogues == expected
    assert isinstance(small, fx.GraphModule) == bool(expected)
    # modules forward does not call (bn1 in some modes) keep their state in the GraphModule
    plain = srigl.condense(block, fan_in_masks(block), backend="fused", fuse_epilogues=False)
    assert set(small.state_dict()) == set(plain.state_dict())
    x = torch.randn(2, 8, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(small(x.clone()), ref(x.clone()), rtol=1e-4, atol=1e-4)
        for name, what in expected.items():
            assert small.get_submodule(name).epilogue_relu == what.endswith("relu")


def test_a_resnet_fuses_every_relu_and_skip_add_and_keeps_its_state_dict(tmp_path):
    model = tv_resnet18()
    ref, small = _condensed(model)
    plain = srigl.condense(model.eval(), fan_in_masks(model), backend="fused", fuse_epilogues=False)
    report = small.condense_report
    assert isinstance(small, fx.GraphModule) and type(plain) is type(model)
    assert report.epilogues["conv1"] == "relu"
    for block in ("layer1.0", "layer2.0", "layer4.1"):  # with and without a downsample
        assert report.epilogues[f"{block}.conv1"] == "relu"
        assert report.epilogues[f"{block}.conv2"] == "add+relu"
    assert sum(v == "add+relu" for v in report.epilogues.values()) == 8  # every block
    assert small.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = ref(x)
        torch.testing.assert_close(small(x), want, rtol=1e-4, atol=1e-4)
        # saved as a state dict and rebuilt; pickled whole; deep-copied
        path = tmp_path / "small.pt"
        torch.save(small.state_dict(), path)
        again = load_condensed(tv_resnet18(), fan_in_masks(model), path, fuse_epilogues=True)
        assert isinstance(again, fx.GraphModule)
        torch.testing.assert_close(again(x), want, rtol=1e-4, atol=1e-4)
        buf = io.BytesIO()
        torch.save(small, buf)
        buf.seek(0)
        pickled = torch.load(buf, weights_only=False)
        torch.testing.assert_close(pickled(x), want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(copy.deepcopy(small)(x), want, rtol=1e-4, atol=1e-4)
        one = x[:1].clone()  # batch 1: the 1x1 convs may run as the fused linear's epilogue
        torch.testing.assert_close(small(one), ref(one), rtol=1e-4, atol=1e-4)


def test_gradients_flow_through_a_fused_epilogue():
    """With a gradient needed the layer runs its differentiable form and the epilogue in
    Python: the same gradients as the unfused model's."""
    torch.manual_seed(0)
    model = Block("functional")
    _, small = _condensed(model)
    _, plain = _condensed(copy.deepcopy(model), fuse_epilogues=False)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    small(x).square().sum().backward()
    want = x.grad.clone()
    x.grad = None
    plain(x).square().sum().backward()
    torch.testing.assert_close(want, x.grad, rtol=1e-4, atol=1e-4)


def test_untraceable_models_and_other_backends_are_left_as_they_are():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return F.relu(y) if y.sum() > 0 else y  # data-dependent: does not trace

    model = Branchy().eval()
    small = srigl.condense(model, fan_in_masks(model), backend="fused", fuse_epilogues=True)
    assert type(small) is Branchy and small.condense_report.epilogues == {}
    block = Block("functional").eval()
    for backend in ("naive", "dense"):  # their kernels do not apply an epilogue
        other = srigl.condense(block, fan_in_masks(block), backend=backend, fuse_epilogues=True)
        assert type(other) is Block and other.condense_report.epilogues == {}
    default = srigl.condense(block, fan_in_masks(block), backend="fused")  # opt in only
    assert type(default) is Block and default.condense_report.epilogues == {}
    gm, fused = fuse_epilogues(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    assert fused == {} and isinstance(gm, nn.Sequential)


def test_a_hooked_relu_is_not_fused():
    torch.manual_seed(0)
    model = Block("iadd")
    seen = []
    model.relu.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    ref, small = _condensed(model)
    assert small.condense_report.epilogues == {"conv2": "add"}
    with torch.no_grad():
        small(torch.randn(1, 8, 5, 5))
    assert seen
