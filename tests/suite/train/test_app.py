"""``suite.train`` through its real Hydra config, shrunk: configs compose, every model/data
pair trains with SRigL updates and condenses, resume equals an uninterrupted run, NaN loss
stops without a record, and the record holds what the report relies on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import srigl
from suite import models, train
from suite.checkpointing import REQUIRED_KEYS, CheckpointError, load_checkpoint
from suite.config import DATASET_SHAPES, PAPER_EXPERIMENTS, experiment_names
from suite.data import names as dataset_names
from suite.report.frames import METHOD_ORDER
from suite.results import InvalidRecordError, ResultStore, validate_record
from suite.train import compose, load_trained, run, run_id
from suite.train.loop import NonFiniteLossError
from suite.train.optim import OPTIMIZERS, SCHEDULERS

CONF = train.CONF_DIR
EXPERIMENTS = experiment_names()
TRAINER_CONFIGS = sorted(p.stem for p in (CONF / "trainer").glob("[!_]*.yaml"))  # not _base
INPUT_SHAPES = {name: list(shape) for name, (shape, _) in DATASET_SHAPES.items()}
SLOW_SMOKE = {"imagenet_resnet50", "imagenet_vit_b16", "imagenet_mobilenet_v3_large"}
METRIC_KEYS = (
    "top1_accuracy",
    "top5_accuracy",
    "top1_error",
    "top5_error",
    "test_loss",
    "curves",
    "ablation",
    "layers",
    "global_density",
    "params",
    "flops",
    "model_bytes",
    "step_time_s",
    "epochs",
    "steps",
)


# --------------------------------------------------------------------------- configs


def test_the_eight_reference_experiments_exist():
    assert len(PAPER_EXPERIMENTS) == 6  # the six model/dataset pairs of the paper
    assert {"cifar10_resnet18", "imagenet_vit_b16"} <= set(PAPER_EXPERIMENTS)
    assert set(EXPERIMENTS) == {*PAPER_EXPERIMENTS, "digits_mlp", "digits_cnn", "digits_vit"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_to_registered_parts(name):
    cfg = compose([f"experiment={name}"])
    assert cfg.experiment == name
    assert cfg.model.name in models.names() and cfg.dataset.name in dataset_names()
    assert cfg.optimizer.name in OPTIMIZERS.names()
    assert cfg.scheduler.name in SCHEDULERS.names()
    assert cfg.trainer.name in srigl.trainer_names()
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


REFERENCE = {  # SPEC.md section 4
    "cifar10_resnet18": {
        "optimizer.name": "sgd",
        "optimizer.lr": 0.1,
        "optimizer.momentum": 0.9,
        "optimizer.weight_decay": 5e-4,
        "training.batch_size": 128,
        "training.epochs": 250,
        "scheduler.name": "cosine",
        "trainer.distribution": "erk",
        "trainer.delta_t": 100,
    },
    "imagenet_resnet50": {
        "optimizer.name": "sgd",
        "optimizer.nesterov": True,
        "optimizer.lr": 0.2,
        "optimizer.weight_decay": 1e-4,
        "scheduler.name": "step",
        "scheduler.warmup_epochs": 5,
        "scheduler.milestones": [30, 70, 90],
        "scheduler.gamma": 0.1,
        "training.batch_size": 512,
        "training.label_smoothing": 0.1,
        "trainer.delta_t": 800,
        "trainer.grad_accumulation_n": 8,
    },
    "imagenet_mobilenet_v3_large": {
        "optimizer.name": "rmsprop",
        "optimizer.lr": 0.064,
        "training.epochs": 600,
    },
    "imagenet_vit_b16": {
        "optimizer.name": "adamw",
        "optimizer.lr": 3e-3,
        "optimizer.weight_decay": 0.3,
        "scheduler.name": "cosine",
        "scheduler.warmup_epochs": 16,
        "training.label_smoothing": 0.11,
        "training.grad_clip": 1.0,
        "training.batch_size": 512,
        "training.accumulate_batches": 8,  # effective batch 4096
        "trainer.distribution": "uniform",
        "trainer.gamma_sal": 0.95,
        "trainer.delta_t": 100,
        "trainer.grad_accumulation_n": 8,
        "trainer.sparse_attention": True,
    },
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_experiment_carries_the_reference_hyperparameters(name):
    cfg = compose([f"experiment={name}"])
    for key, expected in REFERENCE[name].items():
        value = OmegaConf.select(cfg, key)
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        assert value == expected, (name, key, value)


#: the seven methods of the default profile
PROFILE_METHODS = list(METHOD_ORDER[:7])
#: topology-constrained methods (issue 21), not yet in a profile: N:M runs RigL (label says so)
CONSTRAINED = {"nm_1_4": "nm_1_4_rigl", "nm_1_8": "nm_1_8_rigl", "nm_2_4": "nm_2_4_rigl"}


def test_trainer_configs_are_the_profile_methods_and_the_topology_constrained_ones():
    assert TRAINER_CONFIGS == sorted([*PROFILE_METHODS, *CONSTRAINED, "srigl_fan_in"])
    profile = OmegaConf.load(CONF / "profile" / "default.yaml")
    assert sorted(profile.train.methods) == sorted(PROFILE_METHODS)


@pytest.mark.parametrize("member", TRAINER_CONFIGS)
def test_trainer_config_names_a_registered_trainer_and_labels_it_as_its_file(member):
    cfg = compose([f"trainer={member}"])
    assert cfg.trainer.label == CONSTRAINED.get(member, member)
    assert cfg.trainer.name in srigl.trainer_names()
    assert cfg.trainer.ablation == (member in ("srigl", "srigl_fan_in"))


def test_command_line_overrides_win_over_the_experiment():
    cfg = compose(["experiment=cifar10_resnet18", "optimizer.lr=0.05", "trainer=rigl"])
    assert cfg.optimizer.lr == 0.05 and cfg.trainer.label == "rigl"
    assert cfg.trainer.delta_t == 100  # the experiment's value still applies to the new method


def test_run_id_ignores_paths_device_and_resume_but_not_the_experiment():
    base = compose(["experiment=digits_mlp"])
    moved = compose(
        ["experiment=digits_mlp", "results_dir=/x", "checkpoint_dir=/y", "device=cpu"]
        + ["resume=true", "num_workers=3", "logger=tensorboard", "progress=false"]
    )
    assert run_id(base) == run_id(moved)
    for change in ("seed=1", "sparsity=0.95", "trainer=rigl", "optimizer.lr=0.2"):
        assert run_id(compose(["experiment=digits_mlp", change])) != run_id(base), change


# --------------------------------------------------------------------------- a digits run


@pytest.fixture(scope="module")
def digits_record(tmp_path_factory, shrink):
    """One shrunk SRigL digits run shared by the record and checkpoint tests (read only)."""
    root = tmp_path_factory.mktemp("digits")
    cfg = compose(
        ["experiment=digits_mlp", "trainer=srigl", "sparsity=0.9", "progress=false"]
        + [f"results_dir={root / 'runs'}", f"checkpoint_dir={root / 'ck'}", *shrink()]
    )
    return cfg, run(cfg)


def test_run_writes_one_valid_record_with_the_metrics_others_rely_on(digits_record):
    cfg, record = digits_record
    validate_record(record)
    stored = ResultStore(cfg.results_dir).read(kind="train")
    assert len(stored) == 1 and stored[0]["run_id"] == record["run_id"] == run_id(cfg)
    metrics = record["metrics"]
    assert set(METRIC_KEYS) <= set(metrics)
    conf = record["config"]
    assert conf["experiment"] == "digits_mlp" and conf["sparsity"] == 0.9 and conf["seed"] == 0
    assert conf["trainer"]["label"] == "srigl" and conf["model"]["name"] == "mlp"
    assert conf["dataset"]["name"] == "digits"
    assert metrics["top1_error"] == pytest.approx(100 - metrics["top1_accuracy"])
    assert metrics["top5_accuracy"] >= metrics["top1_accuracy"]
    assert metrics["epochs"] == 2 and metrics["steps"] == 12
    curves = metrics["curves"]
    assert curves["epoch"] == [1, 2]
    assert all(len(curves[k]) == 2 for k in ("train_loss", "test_accuracy", "density"))
    assert [a["step"] for a in metrics["ablation"]] == [2, 4, 6, 8]  # delta_t 2, t_end 9
    assert metrics["global_density"] == pytest.approx(0.1, abs=0.01)
    # ERK at 90% leaves the 512->10 classifier dense (not listed)
    assert set(metrics["layers"]) == {"1.weight", "3.weight"}
    for info in metrics["layers"].values():
        assert set(info) == {"fan_in", "density", "n_active", "n_ablated"}
        assert isinstance(info["fan_in"], int) and info["fan_in"] >= 1  # constant fan-in
    p, f, b = metrics["params"], metrics["flops"], metrics["model_bytes"]
    assert p["dense"] == 64 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    assert p["nonzero"] < p["dense"] and p["condensed"] <= p["dense"]
    assert f["dense"] == 64 * 512 + 512 * 512 + 512 * 10
    assert f["sparse"] == pytest.approx(0.1 * f["dense"], rel=0.05)
    assert b["condensed"] < b["sparse_csr"] < b["dense"]
    assert metrics["step_time_s"] > 0


def test_checkpoint_is_safe_to_load_and_rebuilds_the_trained_model(digits_record):
    cfg, record = digits_record
    path = Path(record["metrics"]["checkpoint"])
    assert path == Path(cfg.checkpoint_dir) / record["run_id"] / "checkpoint.pt"
    raw = torch.load(path, weights_only=True)
    assert set(REQUIRED_KEYS) <= set(raw) and raw["epoch"] == 2
    assert all(m.dtype == torch.bool for m in raw["masks"].values())
    assert isinstance(raw["rng"]["numpy"]["keys"], list)
    assert OmegaConf.create(raw["config_yaml"]).experiment == "digits_mlp"
    model, masks, loaded_cfg = load_trained(path)
    assert loaded_cfg.trainer.label == "srigl"
    weight = dict(model.named_parameters())["3.weight"]
    assert torch.count_nonzero(weight[~masks["3.weight"]]) == 0
    small = srigl.condense(model, masks, backend="naive")
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-5)


def test_truncated_or_foreign_checkpoints_give_an_error_naming_the_file(tmp_path, digits_record):
    _, record = digits_record
    good = Path(record["metrics"]["checkpoint"]).read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": torch.zeros(2)}, foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    for path in (truncated, foreign, garbage, tmp_path / "missing.pt"):
        with pytest.raises(CheckpointError, match=str(path)):
            load_checkpoint(path)


def test_resume_with_a_corrupt_checkpoint_stops_with_a_checkpoint_error(digits_record, tmp_path):
    cfg, record = digits_record
    cfg = cfg.copy()
    cfg.checkpoint_dir = str(tmp_path / "ck")
    cfg.resume = True
    cfg.skip_existing = False  # the run's record exists: resume it anyway, from the corrupt file
    corrupt = tmp_path / "ck" / record["run_id"] / "checkpoint.pt"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=str(corrupt)):
        run(cfg)


class Interrupt(Exception):
    """Raised by a callback to simulate a crash after an epoch."""


def _stop_after(epoch: int):
    def callback(done: int, _curves) -> None:
        if done == epoch:
            raise Interrupt(f"stopped after epoch {done}")

    return callback


def test_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one(train_cfg, shrink):
    args = ("experiment=digits_mlp", "trainer=srigl", "sparsity=0.9", *shrink(epochs=3))
    full = run(train_cfg(*args, subdir="full"))
    broken_cfg = train_cfg(*args, subdir="resumed")
    with pytest.raises(Interrupt):
        run(broken_cfg, callbacks=[_stop_after(1)])
    assert ResultStore(broken_cfg.results_dir).read() == []  # an interrupted run writes none
    resumed = run(train_cfg(*args, "resume=true", subdir="resumed"))
    assert resumed["run_id"] == full["run_id"]
    a = load_checkpoint(full["metrics"]["checkpoint"])
    b = load_checkpoint(resumed["metrics"]["checkpoint"])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["masks"]:
        assert torch.equal(a["masks"][key], b["masks"][key]), key
    fm, rm = full["metrics"], resumed["metrics"]
    for key in ("top1_accuracy", "test_loss", "curves", "ablation", "layers", "steps", "epochs"):
        assert fm[key] == rm[key], key
    assert fm["ablation"] and fm["steps"] == 18


def test_resume_without_a_checkpoint_starts_from_scratch(train_cfg, shrink):
    record = run(train_cfg("experiment=digits_mlp", "trainer=dense", "resume=true", *shrink()))
    assert record["metrics"]["epochs"] == 2


def test_a_run_whose_record_is_in_the_store_is_skipped_unless_skip_existing_is_false(
    train_cfg, shrink
):
    args = ("experiment=digits_mlp", "trainer=dense", *shrink(epochs=1))
    first = run(train_cfg(*args))
    epochs = []
    again = run(train_cfg(*args), callbacks=[lambda e, _c: epochs.append(e)])
    assert epochs == [] and again == first  # skipped: the stored record comes back
    retrained = run(  # its checkpoint exists: overwrite=true starts over (moves it aside)
        train_cfg(*args, "skip_existing=false", "overwrite=true"),
        callbacks=[lambda e, _c: epochs.append(e)],
    )
    assert epochs == [1] and retrained["run_id"] == first["run_id"]
    # skip_existing is not part of the run id: the same run either way
    assert run_id(train_cfg(*args, "skip_existing=false")) == first["run_id"]


def test_an_invalid_file_under_the_run_id_stops_the_run_naming_it(train_cfg, shrink):
    cfg = train_cfg("experiment=digits_mlp", "trainer=dense", *shrink(epochs=1))
    path = ResultStore(cfg.results_dir).path_for({"kind": "train", "run_id": run_id(cfg)})
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(InvalidRecordError, match=str(path)):
        run(cfg)


def test_records_carry_hashes_equal_for_a_rerun_and_different_for_another_seed(train_cfg, shrink):
    args = ("experiment=digits_mlp", "trainer=srigl", "sparsity=0.9", *shrink(epochs=1))
    a = run(train_cfg(*args, subdir="a"))["metrics"]["hashes"]
    b = run(train_cfg(*args, subdir="b"))["metrics"]["hashes"]
    c = run(train_cfg(*args, "seed=1", subdir="c"))["metrics"]["hashes"]
    assert set(a) == {"state", "metrics"} and all(len(h) == 64 for h in a.values())
    assert a == b
    assert a["state"] != c["state"] and a["metrics"] != c["metrics"]


def test_the_state_hash_sees_one_flipped_mask_bit_and_one_changed_weight():
    from suite.train.fingerprint import state_hash

    model = torch.nn.Linear(4, 3)
    masks = {"weight": torch.ones(3, 4, dtype=torch.bool)}
    base = state_hash(model, masks)
    flipped = {"weight": masks["weight"].clone()}
    flipped["weight"][1, 2] = False
    assert state_hash(model, flipped) != base
    with torch.no_grad():
        model.weight[0, 0] = torch.nextafter(model.weight[0, 0], torch.tensor(2.0))
    assert state_hash(model, masks) != base


def test_nan_loss_stops_the_run_with_a_clear_error_and_no_record(train_cfg, shrink, monkeypatch):
    class NanModel(torch.nn.Module):
        def __init__(self, num_classes, input_shape, **_):
            super().__init__()
            self.fc = torch.nn.Linear(64, num_classes)

        def forward(self, x):
            return self.fc(x.flatten(1)) * float("nan")

    monkeypatch.setitem(models.MODELS._entries, "nan_model", NanModel)
    cfg = train_cfg("experiment=digits_mlp", "trainer=dense", "model.name=nan_model", *shrink())
    with pytest.raises(NonFiniteLossError, match="nan at epoch 1, optimizer step 1"):
        run(cfg)
    assert ResultStore(cfg.results_dir).read() == []


def test_gradient_accumulation_equals_one_large_batch(train_cfg):
    common = ("experiment=digits_mlp", "trainer=dense", "training.epochs=1", "optimizer.lr=0.01")
    big = run(train_cfg(*common, "training.batch_size=32", "limit_batches=4", subdir="big"))
    small = run(
        train_cfg(
            *common,
            "training.batch_size=16",
            "training.accumulate_batches=2",
            "limit_batches=8",
            subdir="small",
        )
    )
    assert big["metrics"]["steps"] == small["metrics"]["steps"] == 4
    a = load_checkpoint(big["metrics"]["checkpoint"])["model"]
    b = load_checkpoint(small["metrics"]["checkpoint"])["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


def test_one_trainer_step_per_optimizer_step_under_accumulation(train_cfg, shrink):
    cfg = train_cfg(
        "experiment=digits_mlp", "trainer=srigl", "training.accumulate_batches=3", *shrink()
    )
    record = run(cfg)
    trainer_state = load_checkpoint(record["metrics"]["checkpoint"])["trainer"]
    assert record["metrics"]["steps"] == trainer_state["step"] == 2 * 2  # ceil(6 / 3) a epoch


def test_max_steps_stops_early_without_changing_the_schedule(train_cfg, shrink):
    record = run(train_cfg("experiment=digits_mlp", "trainer=rigl", "max_steps=3", *shrink()))
    assert record["metrics"]["steps"] == 3 and record["metrics"]["epochs"] == 1


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_and_keeps_constant_fan_in(train_cfg, shrink, amp):
    record = run(train_cfg("experiment=digits_mlp", "trainer=srigl", f"amp={amp}", *shrink()))
    metrics = record["metrics"]
    assert metrics["ablation"] and 0 <= metrics["top1_accuracy"] <= 100
    assert all(isinstance(i["fan_in"], int) for i in metrics["layers"].values())


def test_unknown_amp_mode_is_rejected_with_the_allowed_ones(train_cfg, shrink):
    with pytest.raises(ValueError, match="bf16"):
        run(train_cfg("experiment=digits_mlp", "amp=fp8", *shrink()))


@pytest.mark.parametrize(
    ("override", "key"),
    [("training.epochs=0", "training.epochs=0"), ("limit_batches=0", "limit_batches=0")],
)
def test_run_lengths_below_one_are_config_errors_naming_the_key(train_cfg, shrink, override, key):
    # epochs=0 used to write a record of an untrained model; limit_batches=0 failed deep in
    # the lr scheduler without naming the config key
    with pytest.raises(train.ConfigError, match=rf"{key}.*allowed"):
        run(train_cfg("experiment=digits_mlp", *shrink(), override))
    assert not list((Path(train_cfg().results_dir)).glob("**/*.json"))


def test_tensorboard_logger_writes_offline_event_files(train_cfg, shrink):
    cfg = train_cfg("experiment=digits_mlp", "trainer=dense", "logger=tensorboard", *shrink())
    record = run(cfg)
    assert list((Path(cfg.log_dir) / record["run_id"]).glob("events.out.tfevents.*"))


# --------------------------------------------------------------------------- every pair


def _smoke_overrides(experiment: str) -> list[str]:
    dataset = str(compose([f"experiment={experiment}"]).dataset.name)
    return [
        f"experiment={experiment}",
        "dataset=synthetic",
        f"dataset.input_shape={INPUT_SHAPES[dataset]}",
        "dataset.num_classes=5",
        "dataset.train_size=8",
        "dataset.test_size=2",
        "training.batch_size=2",
        "training.eval_batch_size=2",
        "training.accumulate_batches=1",
        "training.epochs=1",
        "max_steps=1",
        "trainer=srigl",
        "trainer.delta_t=1",
        "trainer.grad_accumulation_n=1",
        "num_workers=0",
    ]


@pytest.mark.parametrize(
    "experiment",
    [pytest.param(e, marks=pytest.mark.slow) if e in SLOW_SMOKE else e for e in EXPERIMENTS],
)
def test_every_pair_trains_on_synthetic_data_with_an_srigl_update_then_condenses(
    train_cfg, experiment
):
    record = run(train_cfg(*_smoke_overrides(experiment)))
    metrics = record["metrics"]
    assert metrics["steps"] == 1 and [a["step"] for a in metrics["ablation"]] == [1]
    model, masks, _ = load_trained(metrics["checkpoint"])
    small = srigl.condense(model, masks, backend="naive")
    x = torch.randn(2, *INPUT_SHAPES[str(compose([f"experiment={experiment}"]).dataset.name)])
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- the CLI


def test_command_line_multirun_writes_one_record_per_job(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "suite.train",
        "-m",
        "experiment=digits_cnn",
        "trainer=dense,srigl",
        "training.epochs=1",
        "limit_batches=3",
        f"results_dir={tmp_path / 'runs'}",
        f"checkpoint_dir={tmp_path / 'ck'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        "progress=false",
    ]
    root = train.CONF_DIR.parents[1]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = ResultStore(tmp_path / "runs").read()
    assert sorted(r["config"]["trainer"]["label"] for r in records) == ["dense", "srigl"]
    assert "digits_cnn srigl sparsity=0.9 seed=0: top-1" in done.stdout


# --------------------------------------------------------------------------- accuracy


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["digits_mlp", "digits_cnn"])
@pytest.mark.parametrize("method", ["rigl", "srigl"])
def test_rigl_and_srigl_reach_90_percent_on_digits_at_90_percent_sparsity(
    train_cfg, experiment, method
):
    cfg = train_cfg(f"experiment={experiment}", f"trainer={method}", "sparsity=0.9", "seed=1")
    metrics = run(cfg)["metrics"]
    assert metrics["top1_accuracy"] >= 90.0
    assert metrics["global_density"] == pytest.approx(0.1, abs=0.005)
    assert len(metrics["ablation"]) >= 10  # several topology updates happened
