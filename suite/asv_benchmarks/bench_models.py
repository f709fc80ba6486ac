"""Whole-model condensed inference: speed and peak memory, per backend.

The model is a ViT with ViT-B/16 widths (hidden 768, MLP 3072, 12 heads, patch 16) on a
64x64 image (16 patches + class token), ``asv.vit_layers`` encoder blocks of the profile
(default 2), masked by an SRigL trainer at 90% (uniform, constant fan-in) and condensed with
``srigl.condense(model, masks, backend)``. ``setup_cache`` builds and saves each condensed
copy once; ``dense`` is the masked dense copy, the reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from suite.runtime import set_threads

from ._common import THREADS, asv_setting, backend_names, require

SPARSITY = 0.9
IMAGE_SIZE = 64
BATCH = 1


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


def condensed_models(num_layers: int, out_dir: Path) -> dict[str, str]:
    """Mask a ViT with SRigL at 90% and save ``torch.save(condense(model, masks, b))`` per
    available backend ``b`` under ``out_dir``.

    Returns:
        ``{backend: file path}``, or ``{backend: "unavailable: ..."}`` / ``"error: ..."``.
    """
    import torch

    srigl = require("srigl", "create_trainer", "condense")
    backends = require("backends", "available")
    with torch.no_grad():
        model = build_vit(num_layers)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = srigl.create_trainer(
            "srigl", model, optimizer, sparsity=SPARSITY, distribution="uniform", total_steps=100
        )
        masks = {k: v.clone() for k, v in trainer.masks.items()}
        saved: dict[str, str] = {}
        for name in backend_names():
            ok, why = backends.available(name, "cpu")
            if not ok:
                saved[name] = f"unavailable: {why}"
                continue
            try:
                small = srigl.condense(model, masks, backend=name).eval()
            except Exception as err:  # recorded, re-raised by the benchmark as a failure
                saved[name] = f"error: {type(err).__name__}: {err}"
                continue
            path = out_dir / f"vit_{name}.pt"
            torch.save(small, path)
            saved[name] = str(path)
    return saved


class _CondensedViT:
    """Shared by the two classes below: one ``setup_cache`` (same function, same cache)."""

    params = (backend_names(),)
    param_names = ["backend"]
    version = "1"
    processes = 1
    timeout = 600

    def setup_cache(self) -> dict[str, str]:
        set_threads(THREADS, grad=False)
        try:
            return condensed_models(int(asv_setting("vit_layers", 2)), Path.cwd())
        except NotImplementedError as err:  # an older commit without the srigl API
            return {name: f"unavailable: {err}" for name in backend_names()}

    def setup(self, saved: dict[str, str], backend: str) -> None:
        import torch

        set_threads(THREADS, grad=False)
        entry = saved.get(backend, "unavailable: not registered when the cache was built")
        if entry.startswith("unavailable:"):
            raise NotImplementedError(entry)
        if entry.startswith("error:"):
            raise RuntimeError(f"condensing with {backend!r} failed: {entry}")
        self.path = entry
        self.x = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)

    def load(self) -> Any:
        """The condensed model saved by ``setup_cache`` (our own pickled module)."""
        import torch

        return torch.load(self.path, weights_only=False)


class WholeModelForward(_CondensedViT):
    """Seconds per forward of the condensed ViT, batch 1, fp32, 2 threads."""

    repeat = (2, 6, 0.5)
    warmup_time = 0.02
    min_run_count = 2

    def setup(self, saved: dict[str, str], backend: str) -> None:
        super().setup(saved, backend)
        self.model = self.load()
        self.model(self.x)

    def time_forward(self, saved: dict[str, str], backend: str) -> None:
        self.model(self.x)


class WholeModelMemory(_CondensedViT):
    """Peak resident memory of loading the saved condensed ViT and running one forward."""

    def peakmem_load_and_run(self, saved: dict[str, str], backend: str) -> None:
        self.load()(self.x)
