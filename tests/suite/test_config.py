"""The one compose helper and the lists read from the config tree (experiments, shapes)."""

from __future__ import annotations

import pytest
from hydra.core.global_hydra import GlobalHydra

from suite import config
from suite.data import names as dataset_names


def test_compose_reads_the_named_config_with_overrides():
    cfg = config.compose("train", ["trainer=rigl", "sparsity=0.8"])
    assert cfg.trainer.name == "rigl" and cfg.sparsity == 0.8
    assert config.compose("reproduce", ["profile=quick"]).profile.name == "quick"


def test_compose_leaves_no_global_hydra_state_behind():
    config.compose("train")
    assert not GlobalHydra.instance().is_initialized()


def test_compose_resolve_replaces_interpolations():
    cfg = config.compose("reproduce", ["profile=quick"], resolve=True)
    assert "${" not in str(cfg.store_dir)


def test_experiments_are_the_files_of_the_experiment_group():
    files = sorted(p.stem for p in (config.CONF_DIR / "experiment").glob("*.yaml"))
    assert config.experiment_names() == files and files


def test_paper_experiments_are_those_on_data_not_shipped_with_the_package():
    assert set(config.PAPER_EXPERIMENTS) == {
        e for e in config.experiment_names() if not e.startswith("digits_")
    }
    assert config.experiment_dataset("digits_mlp") == "digits"
    assert config.experiment_dataset("imagenet_vit_b16") == "imagenet"


@pytest.mark.parametrize("name", config.experiment_names())
def test_experiment_dataset_agrees_with_the_composed_config(name):
    cfg = config.compose("train", [f"experiment={name}"])
    assert config.experiment_dataset(name) == cfg.dataset.name


def test_unknown_experiment_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown experiment 'nope'; known: .*digits_mlp"):
        config.experiment_dataset("nope")


def test_dataset_shapes_cover_every_dataset_config():
    assert sorted(config.DATASET_SHAPES) == dataset_names()
    assert config.DATASET_SHAPES["imagenet"] == ((3, 224, 224), 1000)
    assert config.DATASET_SHAPES["digits"] == ((1, 8, 8), 10)
