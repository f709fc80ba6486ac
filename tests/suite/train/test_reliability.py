"""The training harness refuses bad configs up front, never overwrites a checkpoint by
accident, prints user errors as one line, and writes files colleagues can read."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from suite.checkpointing import CheckpointExistsError, checkpoint_path
from suite.results import atomic_write_bytes
from suite.train import run, run_id

ROOT = Path(__file__).resolve().parents[3]


def _no_data(monkeypatch):
    """Fail if the run reaches the data set: the config must be refused before it."""
    import suite.train.app as app

    def boom(*args, **kwargs):
        raise AssertionError("the data set was loaded before the config was checked")

    monkeypatch.setattr(app, "create_dataset", boom)


@pytest.mark.parametrize(
    "override,match",
    [
        ("training.grad_clip=-1", r"training.grad_clip=-1.0 is invalid; allowed: a number > 0"),
        ("training.grad_clip=0", r"training.grad_clip=0.0 is invalid"),
        ("training.label_smoothing=1.5", r"training.label_smoothing=1.5 is invalid"),
        ("training.batch_size=0", r"training.batch_size=0 is invalid"),
        ("max_steps=0", r"max_steps=0 is invalid"),
        ("optimizer.lr=-0.1", r"optimizer.lr=-0.1 is invalid; allowed: a number > 0"),
        ("optimizer.momentum=1.5", r"optimizer.momentum=1.5 is invalid"),
        ("trainer.gamma_sal=nan", r"gamma_sal=nan is not finite"),
        ("trainer.delta_t=0", r"delta_t=0 is invalid"),
        ("+trainer.dense_layer=[fc]", r"unknown options \['dense_layer'\]"),
    ],
)
def test_bad_training_values_are_refused_before_data_or_compute(
    train_cfg, shrink, monkeypatch, override, match
):
    _no_data(monkeypatch)
    with pytest.raises(ValueError, match=match):
        run(train_cfg("experiment=digits_mlp", *shrink(), override))


@pytest.mark.parametrize(
    "override,key",
    [
        ("training.accumulate_batches=x", "training.accumulate_batches"),
        ("sparsity=abc", "sparsity"),
        ("resume=maybe", "resume"),
        ("seed=1.5", "seed"),
        ("threads=two", "threads"),
        ("typo_key=1", "typo_key"),
    ],
)
def test_a_bad_key_or_type_is_a_hydra_error_while_composing(train_cfg, override, key):
    # the typed schema (suite.schema) refuses it before run() is even called
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match=re.escape(override)):
        train_cfg("experiment=digits_mlp", override)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("seed", "x", r"^seed: Value 'x' of type 'str' could not be converted to Integer$"),
        ("typo", 1, r"^typo: Key 'typo' not in 'TrainSettings'$"),
    ],
)
def test_a_config_built_without_hydra_is_checked_against_the_schema_too(
    train_cfg, monkeypatch, key, value, match
):
    from omegaconf import OmegaConf

    _no_data(monkeypatch)
    plain = OmegaConf.to_container(train_cfg("experiment=digits_mlp"))
    plain[key] = value
    with pytest.raises(ValueError, match=match):
        run(OmegaConf.create(plain))


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_outside_what_every_rng_takes_is_refused_up_front(
    train_cfg, shrink, monkeypatch, seed
):
    # issue 23 item 6: seed=-1 passed the validator and failed inside scikit-learn
    _no_data(monkeypatch)
    with pytest.raises(ValueError, match=rf"seed={seed}\b.*allowed: an integer in \[0, 2\*\*32\)"):
        run(train_cfg("experiment=digits_mlp", *shrink(), f"seed={seed}"))


@pytest.mark.parametrize("key", ["results_dir", "checkpoint_dir"])
def test_an_output_folder_that_is_a_file_is_refused_before_training(
    train_cfg, shrink, monkeypatch, tmp_path, key
):
    # issue 23 item 6: found after training, with a raw traceback
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    _no_data(monkeypatch)
    for value in (blocker, blocker / "runs"):
        with pytest.raises(ValueError, match=rf"^{key}={value} is not a writable folder: .*a-file"):
            run(train_cfg("experiment=digits_mlp", *shrink(), f"{key}={value}"))


@pytest.mark.parametrize("key", ["results_dir", "checkpoint_dir"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_training(
    train_cfg, shrink, monkeypatch, key
):
    _no_data(monkeypatch)  # /proc refuses new files even to root
    with pytest.raises(ValueError, match=rf"^{key}=/proc/self/srigl-out is not a writable folder"):
        run(train_cfg("experiment=digits_mlp", *shrink(), f"{key}=/proc/self/srigl-out"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_results_dir_is_refused_before_training(
    train_cfg, shrink, monkeypatch, tmp_path
):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    _no_data(monkeypatch)
    with pytest.raises(ValueError, match=r"results_dir=.*locked.* is not a writable folder"):
        run(train_cfg("experiment=digits_mlp", *shrink(), f"results_dir={locked}"))


def test_no_checkpoint_means_checkpoint_dir_is_not_checked(train_cfg, shrink, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    args = ("experiment=digits_mlp", *shrink(epochs=1), "checkpoint=false")
    record = run(train_cfg(*args, f"checkpoint_dir={blocker}"))
    assert "checkpoint" not in record["metrics"]


def test_an_existing_checkpoint_is_never_overwritten_without_resume(train_cfg, shrink, monkeypatch):
    args = ("experiment=digits_mlp", "trainer=srigl", *shrink(epochs=1))
    first = run(train_cfg(*args, "skip_existing=false"))
    path = Path(first["metrics"]["checkpoint"])
    saved = path.read_bytes()
    _no_data(monkeypatch)  # refused before any data or compute
    with pytest.raises(CheckpointExistsError, match=r"exists .*pass resume=true .*overwrite=true"):
        run(train_cfg(*args, "skip_existing=false"))
    assert path.read_bytes() == saved
    monkeypatch.undo()
    again = run(train_cfg(*args, "skip_existing=false", "overwrite=true"))
    moved = sorted(path.parent.glob("checkpoint.pt.replaced-*"))
    assert len(moved) == 1 and moved[0].read_bytes() == saved  # the old one, kept aside
    assert path.is_file() and again["run_id"] == first["run_id"]
    assert run_id(train_cfg(*args, "overwrite=true")) == first["run_id"]


def test_resume_refuses_a_checkpoint_whose_masks_break_the_invariants(train_cfg, shrink):
    from srigl.errors import StateDictError
    from suite.checkpointing import load_checkpoint, save_checkpoint

    args = ("experiment=digits_mlp", "trainer=srigl", *shrink(epochs=2))
    cfg = train_cfg(*args)
    path = checkpoint_path(cfg.checkpoint_dir, run_id(cfg))

    class Stop(Exception):
        pass

    def stop(epoch, _curves):
        raise Stop

    with pytest.raises(Stop):  # interrupted after epoch 1: a checkpoint to resume from
        run(cfg, callbacks=[stop])
    state = load_checkpoint(path)
    name = sorted(state["trainer"]["masks"])[0]
    mask = state["trainer"]["masks"][name]
    mask[0] = True  # one neuron gets its whole fan-in
    save_checkpoint(path, state)
    with pytest.raises(StateDictError, match=rf"mask '{name}'.*constant fan-in"):
        run(train_cfg(*args, "resume=true"))


def _cli(*overrides, full_error=False):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "suite.train", *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_cli_prints_a_config_error_as_one_line_and_exits_non_zero(tmp_path):
    args = ("experiment=digits_mlp", "training.grad_clip=-1", f"results_dir={tmp_path}",
            f"checkpoint_dir={tmp_path}", "hydra.run.dir=" + str(tmp_path / "h"))  # fmt: skip
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("ConfigError: training.grad_clip=-1.0 is invalid"), proc.stderr
    assert "Traceback" not in proc.stderr
    full = _cli(*args, full_error=True)
    assert full.returncode != 0 and "Traceback" in full.stderr


def test_records_and_checkpoints_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "r.json", b"{}")
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o002)
        path = atomic_write_bytes(tmp_path / "c.pt", b"x")
        assert path.stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


def _torch_load_calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "load" and getattr(node.func.value, "id", None) == "torch":
                yield node


def test_every_torch_load_in_the_project_uses_weights_only_true():
    bad = []
    for folder in ("srigl", "backends", "suite", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for call in _torch_load_calls(path):
                kw = {k.arg: k.value for k in call.keywords}
                value = kw.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    bad.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert not bad, f"torch.load without weights_only=True: {bad}"
