"""Models of the harness: every registered model builds and runs on its input shape; the
digits models keep k >= 1 under constant fan-in in every job of the reproduce grid."""

from __future__ import annotations

import functools

import pytest
import torch
from omegaconf import OmegaConf

import srigl
from backends.registry import UnknownNameError
from suite import models
from suite.config import CONF_DIR as CONF
from suite.config import experiment_names
from suite.models import create_model
from suite.train import compose, group_options

EXPERIMENTS = experiment_names()


@functools.cache
def _experiment_of(model_name: str):
    """The first experiment config using ``model_name`` (None if there is none)."""
    for name in EXPERIMENTS:
        cfg = compose([f"experiment={name}"])
        if cfg.model.name == model_name:
            return cfg
    return None


def _input_shape(cfg) -> tuple[int, ...]:
    """The input shape of an experiment's data set, known without reading data."""
    shapes = {"digits": (1, 8, 8), "cifar10": (3, 32, 32)}
    if cfg.dataset.name == "imagenet":
        return (3, int(cfg.dataset.image_size), int(cfg.dataset.image_size))
    return shapes[str(cfg.dataset.name)]


def test_every_registered_model_has_a_config_and_every_config_a_model():
    assert sorted(p.stem for p in (CONF / "model").glob("*.yaml")) == models.names()


@pytest.mark.parametrize("name", models.names())
def test_every_model_is_used_by_an_experiment(name):
    assert _experiment_of(name) is not None, f"no experiment/ config uses model {name!r}"


@pytest.mark.parametrize("name", models.names())
def test_model_builds_from_its_config_and_maps_its_input_to_logits(name):
    cfg = _experiment_of(name)
    shape = _input_shape(cfg)
    torch.manual_seed(0)
    model = create_model(name, 7, shape, **group_options(cfg.model)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_unknown_model_error_lists_the_known_names():
    with pytest.raises(UnknownNameError, match="small_cnn"):
        create_model("resnet-typo", 10, (3, 32, 32))


def test_mlp_default_widths_are_64_512_512_10_on_digits():
    model = create_model("mlp", 10, (1, 8, 8))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 512), (512, 512), (512, 10)]


def test_resnet18_cifar_has_a_3x3_stride_1_stem_and_no_max_pool():
    model = create_model("resnet18_cifar", 10, (3, 32, 32))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)


def test_wrn22_2_has_18_residual_convs_and_the_wide_channel_counts():
    model = create_model("wrn22_2", 10, (3, 32, 32))
    convs = [
        m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    assert len(convs) == 1 + 18  # stem + 3 groups x 3 blocks x 2 convs
    assert model.fc.in_features == 128  # 64 * width 2


def test_wide_resnet_rejects_a_depth_that_is_not_6n_plus_4():
    with pytest.raises(ValueError, match="6n\\+4"):
        create_model("wrn22_2", 10, (3, 32, 32), depth=21)


def test_vit_b16_rejects_an_image_size_that_is_not_a_multiple_of_16():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        create_model("vit_b16", 10, (3, 30, 30))


def _grid():
    """(experiment, method, sparsity) of the train grids of the default and transformer
    profiles (their own grids; extra grids aside)."""
    for name in ("default", "transformer"):
        profile = OmegaConf.load(CONF / "profile" / f"{name}.yaml").train
        for experiment in profile.experiments:
            for method in profile.methods:
                for sparsity in profile.sparsities:
                    yield str(experiment), str(method), float(sparsity)


@pytest.mark.parametrize("experiment", sorted({e for e, _, _ in _grid()}))
def test_every_job_of_the_reproduce_grid_keeps_at_least_one_weight_per_active_neuron(experiment):
    jobs = [(m, s) for e, m, s in _grid() if e == experiment]
    for method, sparsity in jobs:
        cfg = compose([f"experiment={experiment}", f"trainer={method}", f"sparsity={sparsity}"])
        shape = _input_shape(cfg)
        torch.manual_seed(0)
        model = create_model(str(cfg.model.name), 10, shape, **group_options(cfg.model))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = srigl.create_trainer(
            str(cfg.trainer.name),
            model,
            opt,
            sparsity=sparsity,
            total_steps=1000,
            seed=0,
            **group_options(cfg.trainer, drop=("name", "label")),
        )
        for layer, info in trainer.stats()["layers"].items():
            assert info["n_active"] >= 1, (experiment, method, sparsity, layer)
            rows = trainer.masks[layer].reshape(trainer.masks[layer].shape[0], -1).sum(1)
            if cfg.trainer.constant_fan_in:
                assert int(rows.min()) >= 1, (experiment, method, sparsity, layer, info)
        trainer.remove()
