"""The typed train schema matches train.yaml key for key, and types what Hydra composes."""

from __future__ import annotations

import dataclasses

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from suite.config import CONF_DIR, compose
from suite.schema import TrainingSettings, TrainSettings

GROUPS = {"dataset", "model", "trainer", "optimizer", "scheduler"}


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_key_of_train_yaml_is_typed_and_every_field_is_in_train_yaml():
    yaml = OmegaConf.load(CONF_DIR / "train.yaml")
    keys = set(yaml) - {"defaults", "hydra"}
    assert _fields(TrainSettings) == keys | GROUPS
    assert _fields(TrainingSettings) == set(yaml.training)


def test_the_composed_config_is_typed_and_keeps_the_yaml_values():
    cfg = compose("train", ["sparsity=1", "threads=2"])
    assert OmegaConf.get_type(cfg) is TrainSettings
    assert cfg.sparsity == 1.0 and isinstance(cfg.sparsity, float)
    assert cfg.training.accumulate_batches == 1 and cfg.device == "auto"  # train.yaml values


@pytest.mark.parametrize("override", ["training.epochs=many", "checkpoint=perhaps", "nokey=1"])
def test_a_bad_type_or_key_fails_while_composing(override):
    with pytest.raises(ConfigCompositionException):
        compose("train", [override])
