"""Whole-model condensed inference: speed, peak memory and the condensed/dense time ratio.

Two models, masked by an SRigL trainer at 90% (constant fan-in) and condensed with
``srigl.condense(model, masks, backend)`` (Linear, Conv2d with BatchNorm folded, attention):

- ``vit``: a ViT with ViT-B/16 widths (hidden 768, MLP 3072, 12 heads, patch 16) on a 64x64
  image (16 patches + class token), ``asv.vit_layers`` encoder blocks of the profile (default
  2), uniform distribution (the paper's ViT set-up);
- ``resnet18_cifar``: the CIFAR ResNet-18 of ``suite.models`` on 32x32 inputs, ERK (the paper's
  CIFAR set-up).

``setup_cache`` builds each model once, saves its state dict and masks, and every condensed
copy's state dict (plain tensors: loaded with ``weights_only=True``); ``setup`` rebuilds the
condensed model with ``srigl.load_condensed``. ``WholeModelRatio`` tracks the condensed time
over the masked dense eval model's time in the same process (lower is better).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from suite.runtime import set_threads

from ._common import THREADS, asv_setting, backend_names, require
from .bench_backends import best_time_ratio

SPARSITY = 0.9
IMAGE_SIZE = 64
BATCH = 1
MODELS = ("vit", "resnet18_cifar")


def build_vit(num_layers: int) -> Any:
    """A ViT-B/16-wide ``torchvision`` VisionTransformer on 64x64 inputs (seeded, eval mode)."""
    import torch
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=IMAGE_SIZE,
        patch_size=16,
        num_layers=num_layers,
        num_heads=12,
        hidden_dim=768,
        mlp_dim=3072,
        num_classes=1000,
    )
    return model.eval()


def build_cnn() -> Any:
    """The CIFAR ResNet-18 of ``suite.models`` (seeded, eval mode), 10 classes."""
    import torch

    models = require("suite.models", "create_model")
    torch.manual_seed(0)
    return models.create_model("resnet18_cifar", 10, (3, 32, 32)).eval()


def build(model: str) -> tuple[Any, tuple[int, ...], str]:
    """(model in eval mode, one input's shape, SRigL distribution) of ``model``."""
    if model == "vit":
        return build_vit(int(asv_setting("vit_layers", 2))), (3, IMAGE_SIZE, IMAGE_SIZE), "uniform"
    if model == "resnet18_cifar":
        return build_cnn(), (3, 32, 32), "erk"
    raise ValueError(f"unknown benchmark model {model!r}; allowed: {MODELS}")


def condensed_models(out_dir: Path) -> dict[str, str]:
    """Mask each model with SRigL at 90%; save ``{state, masks}`` as ``<model>.pt`` and the
    state dict of ``condense(model, masks, b)`` as ``<model>_<b>.pt`` per available backend.

    Returns:
        ``{"<model>/<backend>": file path}``, or ``"unavailable: ..."`` / ``"error: ..."``;
        ``{"<model>": path of the masked model}``.
    """
    import torch

    srigl = require("srigl", "create_trainer", "condense")
    backends = require("backends", "available")
    saved: dict[str, str] = {}
    for model_name in MODELS:
        with torch.no_grad():
            model, _, distribution = build(model_name)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            trainer = srigl.create_trainer(
                "srigl",
                model,
                optimizer,
                sparsity=SPARSITY,
                distribution=distribution,
                total_steps=1000,
            )
            masks = {k: v.clone() for k, v in trainer.masks.items()}
            base = out_dir / f"{model_name}.pt"
            torch.save({"state": model.state_dict(), "masks": masks}, base)
            saved[model_name] = str(base)
            for name in backend_names():
                key = f"{model_name}/{name}"
                ok, why = backends.available(name, "cpu")
                if not ok:
                    saved[key] = f"unavailable: {why}"
                    continue
                try:
                    small = srigl.condense(model, masks, backend=name).eval()
                except Exception as err:  # recorded, re-raised by the benchmark as a failure
                    saved[key] = f"error: {type(err).__name__}: {err}"
                    continue
                path = out_dir / f"{model_name}_{name}.pt"
                torch.save(small.state_dict(), path)
                saved[key] = str(path)
    return saved


class _CondensedModel:
    """Shared set-up: one ``setup_cache`` (same function, same cache) and the loaders."""

    params = (backend_names(),)
    param_names = ["backend"]
    version = "1"
    processes = 1
    timeout = 600
    model_name = "vit"

    def setup_cache(self) -> dict[str, str]:
        set_threads(THREADS, grad=False)
        try:
            return condensed_models(Path.cwd())
        except NotImplementedError as err:  # an older commit without the srigl API
            return {
                f"{m}/{name}": f"unavailable: {err}" for m in MODELS for name in backend_names()
            }

    def _entry(self, saved: dict[str, str], model: str, backend: str) -> str:
        entry = saved.get(f"{model}/{backend}", "unavailable: not registered at cache time")
        if entry.startswith("unavailable:"):
            raise NotImplementedError(entry)
        if entry.startswith("error:"):
            raise RuntimeError(f"condensing {model} with {backend!r} failed: {entry}")
        return entry

    def load(self, saved: dict[str, str], model: str, backend: str) -> Any:
        """The condensed model from its saved state dict (``weights_only=True`` loads)."""
        import torch

        srigl = require("srigl", "load_condensed")
        path = self._entry(saved, model, backend)
        base = torch.load(saved[model], weights_only=True)
        skeleton, _, _ = build(model)
        return srigl.load_condensed(skeleton, base["masks"], path, backend=backend).eval()

    def dense(self, saved: dict[str, str], model: str) -> Any:
        """The masked dense eval model (the reference), from the saved state and masks."""
        import torch

        base = torch.load(saved[model], weights_only=True)
        dense, shape, _ = build(model)
        dense.load_state_dict(base["state"])
        params = dict(dense.named_parameters())
        with torch.no_grad():
            for name, mask in base["masks"].items():
                params[name].mul_(mask.to(params[name].dtype))
        return dense.eval(), shape

    def setup(self, saved: dict[str, str], backend: str) -> None:
        import torch

        set_threads(THREADS, grad=False)
        self.path = self._entry(saved, self.model_name, backend)
        _, shape, _ = build(self.model_name)
        self.x = torch.randn(BATCH, *shape)


class WholeModelForward(_CondensedModel):
    """Seconds per forward of the condensed ViT, batch 1, fp32, 2 threads."""

    repeat = (2, 6, 0.5)
    warmup_time = 0.02
    min_run_count = 2

    def setup(self, saved: dict[str, str], backend: str) -> None:
        super().setup(saved, backend)
        self.model = self.load(saved, self.model_name, backend)
        self.model(self.x)

    def time_forward(self, saved: dict[str, str], backend: str) -> None:
        self.model(self.x)


class WholeModelMemory(_CondensedModel):
    """Peak resident memory of loading the saved condensed ViT and running one forward."""

    def setup(self, saved: dict[str, str], backend: str) -> None:
        super().setup(saved, backend)
        self.saved, self.backend = saved, backend

    def peakmem_load_and_run(self, saved: dict[str, str], backend: str) -> None:
        self.load(saved, self.model_name, backend)(self.x)


class WholeModelRatio(_CondensedModel):
    """Forward time of the condensed model over the masked dense eval model's, batch 1, same
    process (the one paired ABBA protocol); for the ViT and a CNN (ResNet-18, CIFAR)."""

    params = (list(MODELS), [b for b in backend_names() if b != "dense"])
    param_names = ["model", "backend"]
    version = "2"  # 2: paired ABBA ratio (1: fastest blocks)
    repeat = 1
    number = 1

    def setup(self, saved: dict[str, str], model: str, backend: str) -> None:
        import torch

        set_threads(THREADS, grad=False)
        self.small = self.load(saved, model, backend)
        self.reference, shape = self.dense(saved, model)
        self.x = torch.randn(BATCH, *shape)
        with torch.no_grad():
            self.small(self.x)
            self.reference(self.x)
        self.min_run_time = float(asv_setting("ratio_min_run_time", 0.2))

    def track_ratio_vs_dense(self, saved: dict[str, str], model: str, backend: str) -> float:
        import torch

        with torch.no_grad():
            return best_time_ratio(self.small, self.reference, self.x, self.min_run_time)

    track_ratio_vs_dense.unit = "ratio"
