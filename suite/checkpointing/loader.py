"""The suite's one checkpoint-to-model loader: a trained model and its masks from a file.

Used by the bench (``checkpoint=``) and by training (:func:`load_trained`, re-exported as
``suite.train.load_trained``).

Two formats are accepted, both read with ``torch.load(weights_only=True)`` (untrusted input):

- a ``suite.train`` checkpoint (keys ``model``, ``masks``, ``config_yaml``, ...): the model is
  rebuilt from ``config_yaml``'s ``model`` section through ``suite.models``;
- a plain ``{"state_dict": ..., "masks": ...}`` file (or ``{"model": ..., "masks": ...}``
  without config): the model name comes from the ``model=<name>`` override.

The number of classes and the input shape come from the overrides, else from the config's
data set (built once to read them), else from the state dict's last Linear layer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from backends.registry import UnknownNameError
from srigl.condense import unwrap_name
from suite.checkpointing.files import CheckpointError, read_torch_file

__all__ = ["CheckpointError", "LoadedModel", "load_for_bench", "load_trained"]


@dataclass
class LoadedModel:
    """A rebuilt model with its trained weights and masks."""

    name: str
    model: nn.Module
    masks: dict[str, torch.Tensor]
    input_shape: tuple[int, ...]
    num_classes: int
    source: str
    options: dict[str, Any] = field(default_factory=dict)
    config_yaml: str | None = None


def _read(path: Path) -> Mapping[str, Any]:
    return read_torch_file(path, map_location="cpu")


def _parts(path: Path, raw: Mapping[str, Any]) -> tuple[Mapping, Mapping, str | None]:
    """(state dict, masks, config_yaml or None) of either accepted format."""
    state = raw.get("model", raw.get("state_dict"))
    masks = raw.get("masks")
    if not isinstance(state, Mapping) or not isinstance(masks, Mapping):
        raise CheckpointError(
            f"{path}: expected keys 'model' (or 'state_dict') and 'masks' holding dicts; "
            f"found keys {sorted(map(str, raw))}"
        )
    cfg = raw.get("config_yaml")
    return state, masks, cfg if isinstance(cfg, str) else None


def _shape_from_checkpoint(raw: Mapping[str, Any]) -> tuple[tuple[int, ...], int] | None:
    """Input shape and classes that a ``suite.train`` checkpoint records itself, or None."""
    shape, classes = raw.get("input_shape"), raw.get("num_classes")
    if shape is None or classes is None:
        return None
    return tuple(int(s) for s in shape), int(classes)


def _shape_from_dataset(cfg: Any) -> tuple[tuple[int, ...], int] | None:
    """Input shape and classes of the config's data set, known without reading its data
    (:func:`suite.data.sample_shape`), or None (no data set, or one not registered)."""
    ds = cfg.get("dataset") if cfg is not None else None
    if ds is None or "name" not in ds:
        return None
    from omegaconf import OmegaConf

    opts = OmegaConf.to_container(ds, resolve=True)
    if "input_shape" in opts and "num_classes" in opts:
        return tuple(int(s) for s in opts["input_shape"]), int(opts["num_classes"])
    from suite.data import sample_shape

    name = opts.pop("name")
    try:
        shape, classes = sample_shape(name, **opts)
    except UnknownNameError:
        return None
    return tuple(int(s) for s in shape), int(classes)


def _model_choice(
    path: Path, cfg: Any, model: str | None, model_options: Mapping[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    """The model name and builder options: the arguments where given, else the config's
    ``model`` section (its options only when the name is the config's own)."""
    cfg_model: dict[str, Any] = {}
    if cfg is not None and cfg.get("model") is not None:
        from omegaconf import OmegaConf

        cfg_model = dict(OmegaConf.to_container(cfg.model, resolve=True))
    cfg_name = cfg_model.pop("name", None)
    name = model or cfg_name
    if not name:
        raise CheckpointError(
            f"{path}: holds no config_yaml naming the model; pass model=<name> "
            "(one of suite.models.names())"
        )
    same = not model or model == cfg_name
    return name, dict(model_options) if model_options else (cfg_model if same else {})


def _input_spec(
    path: Path,
    found: tuple[tuple[int, ...], int] | None,
    state: Mapping[str, torch.Tensor],
    input_shape: Sequence[int] | None,
    num_classes: int | None,
) -> tuple[tuple[int, ...], int]:
    """``(input_shape, num_classes)``: the arguments where given, else what the checkpoint or
    its data set says (``found``), else the classes from the last 2-D weight of ``state``."""
    if input_shape is None and found is not None:
        input_shape = found[0]
    if num_classes is None and found is not None:
        num_classes = found[1]
    if input_shape is None:
        raise CheckpointError(
            f"{path}: cannot tell the model's input shape; pass input_shape=[C,H,W] (or [F])"
        )
    if num_classes is None:
        last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
        if not last:
            raise CheckpointError(f"{path}: cannot tell the number of classes; pass num_classes")
        num_classes = int(last[-1].shape[0])
    return tuple(int(s) for s in input_shape), int(num_classes)


def load_for_bench(
    path: str | os.PathLike,
    model: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
) -> LoadedModel:
    """Rebuild the model stored in ``path`` with its weights and masks.

    Args:
        path: a ``suite.train`` checkpoint or a ``{"state_dict", "masks"}`` file.
        model: model name in ``suite.models`` (overrides the checkpoint's config).
        model_options: builder options (overrides the config's ``model`` section).
        num_classes, input_shape: override what the config says (input_shape without batch).

    Raises:
        CheckpointError: the file is missing, truncated, foreign, lacks keys, or its weights do
            not fit the rebuilt model; the message names the file.
    """
    from suite.models import create_model

    path = Path(path)
    raw = _read(path)
    state, masks, cfg_yaml = _parts(path, raw)
    cfg = None
    if cfg_yaml is not None:
        from omegaconf import OmegaConf

        cfg = OmegaConf.create(cfg_yaml)
    name, options = _model_choice(path, cfg, model, model_options)
    clean = {unwrap_name(str(k)): v for k, v in state.items()}
    found = _shape_from_checkpoint(raw) or _shape_from_dataset(cfg)
    input_shape, num_classes = _input_spec(path, found, clean, input_shape, num_classes)
    net = create_model(
        name, num_classes=int(num_classes), input_shape=tuple(input_shape), **options
    )
    try:
        net.load_state_dict(clean, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: its weights do not fit model {name!r} with options {options}: {first}"
        ) from exc
    masks_clean = {unwrap_name(str(k)): torch.as_tensor(v).bool() for k, v in masks.items()}
    return LoadedModel(
        name=name,
        model=net.eval(),
        masks=masks_clean,
        input_shape=tuple(int(s) for s in input_shape),
        num_classes=int(num_classes),
        source=str(path),
        options=options,
        config_yaml=cfg_yaml,
    )


def load_trained(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, torch.Tensor], Any]:
    """Rebuild a model trained by ``suite.train`` from its checkpoint (no data needed).

    Returns:
        ``(model, masks, cfg)``: the model in eval mode on ``device`` with the trained weights
        (masked positions are zero), the masks {param name: bool tensor} and the run's config
        (an OmegaConf ``DictConfig``).

    Raises:
        CheckpointError: the file is missing, truncated, foreign or holds no ``config_yaml``
            (the message names it).
    """
    from omegaconf import OmegaConf

    loaded = load_for_bench(path)
    if loaded.config_yaml is None:
        raise CheckpointError(f"{path}: holds no config_yaml; not a suite.train checkpoint")
    masks = {n: m.to(device) for n, m in loaded.masks.items()}
    return loaded.model.to(device).eval(), masks, OmegaConf.create(loaded.config_yaml)
