"""suite.checkpointing.loader: what the bench's checkpoint loader reads besides the file."""

from __future__ import annotations

from omegaconf import OmegaConf

import suite.data
from suite.checkpointing import loader


def test_the_input_shape_of_a_config_data_set_is_known_without_reading_its_data(monkeypatch):
    def no_reading(*args, **kwargs):
        raise AssertionError("the data set was built to read its shape")

    monkeypatch.setattr(suite.data, "create_dataset", no_reading)
    cfg = OmegaConf.create({"dataset": {"name": "digits", "seed": 3}})
    assert loader._shape_from_dataset(cfg) == ((1, 8, 8), 10)


def test_a_config_without_a_known_data_set_gives_no_shape():
    assert loader._shape_from_dataset(None) is None
    assert loader._shape_from_dataset(OmegaConf.create({"dataset": {"name": "nope"}})) is None
