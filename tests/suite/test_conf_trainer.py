"""The Hydra trainer group (suite/conf/trainer): one _base.yaml with every key, each method file
states only what differs, and every key is a srigl.SparseConfig option."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

import srigl
from suite.train import CONF_DIR, compose, group_options
from suite.train.validate import check_run_config

GROUP = CONF_DIR / "trainer"
METHODS = sorted(p.stem for p in GROUP.glob("[!_]*.yaml"))
#: SparseConfig options the run sets (sparsity, seed, total_steps, grad_scaler) or that keep the
#: library's default: a key added to _base.yaml enters every run id, so only these are absent
NOT_IN_BASE = {
    "sparsity",
    "seed",
    "total_steps",
    "grad_scaler",
    "attention_layers",
    "erk_power",
    "check_finite",
    "grow_init",
    "fan_in",
    "n_m",
}
#: topology options a method file may add beyond the base (srigl_fan_in, nm_*)
ADDED_KEYS = ("fan_in", "n_m")
#: method files in the global package: they also set the run's sparsity (N:M: 1 - N/M)
GLOBAL = {"nm_1_4": 0.75, "nm_1_8": 0.875, "nm_2_4": 0.5}


def test_every_base_key_but_name_and_label_is_a_sparse_config_option():
    base = OmegaConf.load(GROUP / "_base.yaml")
    options = {f.name for f in dataclasses.fields(srigl.SparseConfig)}
    assert set(base) - {"name", "label"} == options - NOT_IN_BASE


@pytest.mark.parametrize("method", METHODS)
def test_a_method_file_lists_only_its_differences_from_the_base(method):
    own = OmegaConf.load(GROUP / f"{method}.yaml")
    base = OmegaConf.load(GROUP / "_base.yaml")
    if method in GLOBAL:
        assert list(own.defaults) == ["/trainer/_base@trainer", "_self_"]
        assert set(own) == {"defaults", "trainer", "sparsity"}
        assert own.sparsity == GLOBAL[method] == compose([f"trainer={method}"]).sparsity
        own = own.trainer
    else:
        assert list(own.defaults) == ["_base", "_self_"]
    overrides = {k: own[k] for k in own if k != "defaults"}
    assert {"name", "label"} <= set(overrides)
    added = [k for k in ADDED_KEYS if k in overrides]
    assert not [
        k for k, v in overrides.items() if k not in ("name", "label", *added) and base[k] == v
    ]
    composed = compose([f"trainer={method}"]).trainer
    assert list(composed) == list(base) + added  # every key, in the base's order
    assert all(composed[k] == v for k, v in overrides.items())


def test_an_option_outside_the_base_can_be_added_on_the_command_line():
    cfg = compose(["experiment=digits_mlp", "trainer=rigl", "+trainer.grow_init=small_random"])
    check_run_config(cfg)
    assert group_options(cfg.trainer, drop=("name", "label"))["grow_init"] == "small_random"
    bad = compose(["experiment=digits_mlp", "trainer=rigl", "+trainer.grow_init=ones"])
    with pytest.raises(ValueError, match="grow_init='ones' is invalid"):
        check_run_config(bad)


def test_n_m_and_fan_in_can_be_added_to_any_trainer_on_the_command_line():
    nm = ["+trainer.n_m=[2,4]", "trainer.distribution=uniform", "sparsity=0.5"]
    cfg = compose(["experiment=digits_mlp", "trainer=srigl", *nm])
    check_run_config(cfg)
    assert group_options(cfg.trainer, drop=("name", "label"))["n_m"] == [2, 4]
    erk = compose(["experiment=digits_mlp", "trainer=srigl", "+trainer.n_m=[2,4]", "sparsity=0.5"])
    with pytest.raises(ValueError, match="distribution='erk' is invalid with n_m"):
        check_run_config(erk)
    fan_in = compose(["experiment=digits_mlp", "trainer=rigl", "+trainer.fan_in={*:16}"])
    check_run_config(fan_in)
    bad = compose(["experiment=digits_mlp", "trainer=rigl", "+trainer.fan_in=0"])
    with pytest.raises(ValueError, match="fan_in=0 is invalid"):
        check_run_config(bad)
