"""Models behind one registry.

::

    from suite.models import create_model
    model = create_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))

Every factory is called as ``factory(num_classes=..., input_shape=..., **options)`` where
``input_shape`` is one sample's shape (e.g. ``(3, 32, 32)``) and the options come from the
``model`` config group. A new model is one ``@MODELS.register("name")`` function.
ImageNet-size models use torchvision's builders with ``weights=None`` (no download).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from backends.registry import Registry

MODELS: Registry = Registry("model")


def create_model(
    name: str, num_classes: int, input_shape: Sequence[int], **options: object
) -> nn.Module:
    """Build model ``name`` for inputs of shape [B, *input_shape] and ``num_classes`` logits.

    Raises:
        UnknownNameError: ``name`` is not registered (a ValueError listing the known names).
    """
    return MODELS.create(
        name, num_classes=int(num_classes), input_shape=tuple(input_shape), **options
    )


def names() -> list[str]:
    """Every registered model name, sorted."""
    return MODELS.names()


# --------------------------------------------------------------------------- digits models


@MODELS.register("mlp")
def mlp(
    num_classes: int, input_shape: Sequence[int], hidden: Sequence[int] = (512, 512)
) -> nn.Module:
    """Flatten + Linear/ReLU stack: prod(input_shape) -> *hidden -> num_classes.

    The default on digits is 64-512-512-10, wide enough that every layer keeps a fan-in
    k >= 1 under constant fan-in at 99% sparsity with ERK.
    """
    widths = [math.prod(input_shape), *[int(h) for h in hidden], num_classes]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@MODELS.register("small_cnn")
def small_cnn(
    num_classes: int,
    input_shape: Sequence[int],
    channels: Sequence[int] = (16, 32),
    hidden: int = 128,
) -> nn.Module:
    """Two 3x3 conv/ReLU layers, 2x2 max-pool, then Linear -> ReLU -> Linear.

    Input [B, C, H, W] (digits: [B, 1, 8, 8]). The default widths (16, 32 channels, 128
    hidden) keep k >= 1 in every layer under constant fan-in at 99% sparsity with ERK
    (k = 1, 1, 4, 11) while a digits run stays around a second on a CPU.
    """
    c_in, h, w = (int(s) for s in input_shape)
    c1, c2 = (int(c) for c in channels)
    return nn.Sequential(
        nn.Conv2d(c_in, c1, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * (h // 2) * (w // 2), int(hidden)),
        nn.ReLU(),
        nn.Linear(int(hidden), num_classes),
    )


# --------------------------------------------------------------------------- CIFAR models


@MODELS.register("resnet18_cifar")
def resnet18_cifar(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """ResNet-18 for 32x32 inputs: 3x3 stride-1 stem, no max-pool (torchvision body)."""
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(int(input_shape[0]), 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


class _WideBasic(nn.Module):
    """Pre-activation wide residual block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 + shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
            if stride != 1 or c_in != c_out
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(torch.relu(self.bn2(out))))
        return out + skip


class WideResNet(nn.Module):
    """Wide ResNet (Zagoruyko & Komodakis) for 32x32 inputs: WRN-depth-width.

    depth = 6n + 4; three groups of n blocks with 16*width, 32*width, 64*width channels.
    Input [B, C, 32, 32] -> logits [B, num_classes].
    """

    def __init__(
        self, depth: int, width: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n+4 (10, 16, 22, 28, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        c_in = widths[0]
        for group, c_out in enumerate(widths[1:]):
            for i in range(n):
                stride = 2 if (group > 0 and i == 0) else 1
                blocks.append(_WideBasic(c_in, c_out, stride, dropout))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.conv1(x))
        out = self.pool(torch.relu(self.bn(out))).flatten(1)
        return self.fc(out)


@MODELS.register("wrn22_2")
def wrn22_2(
    num_classes: int, input_shape: Sequence[int], depth: int = 22, width: int = 2, dropout=0.0
) -> nn.Module:
    """Wide ResNet-22-2 (about 1.1M parameters) for CIFAR-size inputs."""
    return WideResNet(depth, width, num_classes, int(input_shape[0]), float(dropout))


# --------------------------------------------------------------------------- ImageNet models


@MODELS.register("resnet50")
def resnet50(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """torchvision ResNet-50 (weights=None), inputs [B, 3, H, W] (224 in the paper)."""
    from torchvision.models import resnet50 as build

    return build(weights=None, num_classes=num_classes)


@MODELS.register("mobilenet_v3_large")
def mobilenet_v3_large(num_classes: int, input_shape: Sequence[int], dropout=0.2) -> nn.Module:
    """torchvision MobileNetV3-Large (weights=None), inputs [B, 3, H, W]."""
    from torchvision.models import mobilenet_v3_large as build

    return build(weights=None, num_classes=num_classes, dropout=float(dropout))


@MODELS.register("mobilenet_v3_small")
def mobilenet_v3_small(num_classes: int, input_shape: Sequence[int], dropout=0.2) -> nn.Module:
    """torchvision MobileNetV3-Small (weights=None), inputs [B, 3, H, W]."""
    from torchvision.models import mobilenet_v3_small as build

    return build(weights=None, num_classes=num_classes, dropout=float(dropout))


@MODELS.register("vit_b16")
def vit_b16(
    num_classes: int,
    input_shape: Sequence[int],
    image_size: int | None = None,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
) -> nn.Module:
    """torchvision ViT-B/16 (weights=None); ``image_size`` defaults to the input's height.

    Inputs [B, 3, S, S] with S divisible by 16.
    """
    from torchvision.models import vit_b_16

    size = int(image_size) if image_size is not None else int(input_shape[-1])
    if size % 16 != 0:
        raise ValueError(f"vit_b16: image_size {size} must be a multiple of the patch size 16")
    return vit_b_16(
        weights=None,
        num_classes=num_classes,
        image_size=size,
        dropout=float(dropout),
        attention_dropout=float(attention_dropout),
    )


# --------------------------------------------------------------------------- digits transformer


@MODELS.register("vit_digits")
def vit_digits(
    num_classes: int,
    input_shape: Sequence[int],
    patch_size: int = 2,
    embed_dim: int = 128,
    depth: int = 2,
    num_heads: int = 4,
    mlp_ratio: float = 2.0,
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """A small timm ``VisionTransformer`` for 8x8 digits: 2x2 patches of the raw input.

    Inputs [B, C, H, W] (digits: [B, 1, 8, 8] -> 16 patch tokens and a class token), logits
    [B, num_classes]. The sparse-eligible weights are the patch-embedding conv
    (``patch_embed.proj``, fan-in C * patch_size**2: 4 on digits), every block's attention
    projections (``attn.qkv``, ``attn.proj``: fan-in ``embed_dim``) and MLP linears
    (``mlp.fc1``: fan-in ``embed_dim``, ``mlp.fc2``: ``embed_dim * mlp_ratio``) and the
    ``head``. ``embed_dim`` 128 is a choice (a small model), not a bound: every sparse layer
    gets k >= 1 at any width under the equal budgets (:mod:`srigl.budgets`).
    """
    from timm.models.vision_transformer import VisionTransformer

    c_in, h, w = (int(s) for s in input_shape)
    patch = int(patch_size)
    if h % patch or w % patch:
        raise ValueError(
            f"vit_digits: patch_size {patch} must divide the input's height and width "
            f"({h}x{w}); allowed: a common divisor of {h} and {w}"
        )
    return VisionTransformer(
        img_size=(h, w),
        patch_size=patch,
        in_chans=c_in,
        num_classes=num_classes,
        embed_dim=int(embed_dim),
        depth=int(depth),
        num_heads=int(num_heads),
        mlp_ratio=float(mlp_ratio),
        drop_path_rate=float(drop_path_rate),
    )
