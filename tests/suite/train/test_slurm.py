"""SLURM through Hydra's submitit launcher: the ``slurm`` launcher config, the sbatch script it
yields, torch.distributed set-up from a SLURM task's environment, and a real multirun through
the ``local`` submitit launcher (pickling and launching of the job function, no cluster)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from scaleout import clean_env, run_checked

from suite.config import compose
from suite.results import ResultStore
from suite.train import distributed

SLURM_OVERRIDES = [
    "hydra/launcher=slurm",
    "hydra.launcher.nodes=2",
    "hydra.launcher.gpus_per_node=8",
    "hydra.launcher.timeout_min=720",
    "hydra.launcher.partition=gpu",
    "hydra.launcher.account=sparse-lab",
]


def _compose_with_hydra(overrides: list[str], tmp_path: Path) -> DictConfig:
    sweep = f"hydra.sweep.dir={tmp_path / 'sweep'}"
    return compose("train", [*overrides, sweep], return_hydra_config=True)


def test_slurm_launcher_runs_one_task_per_gpu_with_the_cluster_settings(tmp_path):
    launcher = _compose_with_hydra(SLURM_OVERRIDES, tmp_path).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 8
    assert (launcher.nodes, launcher.timeout_min) == (2, 720)
    assert (launcher.partition, launcher.account) == ("gpu", "sparse-lab")


def test_slurm_launcher_defaults_to_one_four_gpu_node_with_four_tasks(tmp_path):
    launcher = _compose_with_hydra(["hydra/launcher=slurm"], tmp_path).hydra.launcher
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (1, 4, 4)


def test_slurm_launcher_writes_an_sbatch_script_with_one_task_per_gpu(tmp_path, monkeypatch):
    """The real launcher builds submitit's SlurmExecutor; we stop where it would call sbatch."""
    import submitit
    from submitit.slurm.slurm import SlurmExecutor

    cfg = _compose_with_hydra(SLURM_OVERRIDES, tmp_path)
    launcher_cfg = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    launcher_cfg["submitit_folder"] = str(tmp_path / "submitit")
    launcher_cfg["name"] = "srigl-train"
    launcher = instantiate(OmegaConf.create(launcher_cfg))
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # "srun exists"
    scripts: list[str] = []

    def fake_map_array(self, fn, *args):
        scripts.append(self._executor._make_submission_file_text("COMMAND", "uid"))
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    assert launcher.launch([["trainer=srigl", "seed=1"]], initial_job_idx=0) == []
    (script,) = scripts
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", script, flags=re.M))
    assert flags["nodes"] == "2"
    assert flags["ntasks-per-node"] == "8"
    assert flags["gpus-per-node"] == "8"
    assert flags["partition"] == "gpu"
    assert flags["account"] == "sparse-lab"
    assert flags["time"] == "720"
    assert "srun" in script and "COMMAND" in script


def _fake_slurm_task(monkeypatch, rank: int, ntasks: int, nodes: int) -> None:
    """The environment srun gives task ``rank`` of ``ntasks`` spread evenly over ``nodes``."""
    per_node = ntasks // nodes
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                 "MASTER_PORT"):  # fmt: skip
        monkeypatch.setenv(name, "unset")  # registered, so that the undo removes export()'s
        monkeypatch.delenv(name)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NTASKS", str(ntasks))
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", str(nodes))
    monkeypatch.setenv("SLURM_NODEID", str(rank // per_node))
    monkeypatch.setenv("SLURM_JOB_NODELIST", f"gpu[17-{16 + nodes}]")
    monkeypatch.setenv("SLURM_PROCID", str(rank))
    monkeypatch.setenv("SLURM_LOCALID", str(rank % per_node))


def test_a_slurm_task_sets_up_torch_distributed_from_its_environment(monkeypatch):
    _fake_slurm_task(monkeypatch, rank=5, ntasks=8, nodes=2)
    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: calls.append(kw))
    ctx = distributed.setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.local_rank) == (5, 8, 1)
    assert calls == [{"backend": "gloo"}]
    assert os.environ["MASTER_ADDR"] == "gpu17"  # the job's first node, the same on every task
    assert os.environ["RANK"] == "5" and os.environ["WORLD_SIZE"] == "8"
    assert 20000 <= int(os.environ["MASTER_PORT"]) <= 60000  # derived from the job id
    assert not ctx.is_main


def test_a_single_task_slurm_job_stays_one_process(monkeypatch):
    _fake_slurm_task(monkeypatch, rank=0, ntasks=1, nodes=1)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: 1 / 0)
    ctx = distributed.setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.distributed) == (0, 1, False)
    assert "RANK" not in os.environ


# --------------------------------------------------------------------------- a real multirun


@pytest.fixture(scope="module")
def local_multirun(tmp_path_factory) -> Path:
    """``python -m suite.train -m hydra/launcher=local``: one job of two tasks (two CPU ranks).

    (One job keeps this under a minute on two shared cores; tests/suite/train/test_app.py sweeps
    several jobs through Hydra's basic launcher.)"""
    root = tmp_path_factory.mktemp("submitit")
    cmd = [
        sys.executable,
        "-m",
        "suite.train",
        "-m",
        "hydra/launcher=local",
        "hydra.launcher.tasks_per_node=2",
        "experiment=digits_mlp",
        "trainer=srigl",
        "training.epochs=1",
        "limit_batches=4",
        "training.batch_size=32",
        "trainer.delta_t=2",
        "device=cpu",
        "progress=false",
        f"results_dir={root / 'runs'}",
        f"checkpoint_dir={root / 'checkpoints'}",
        f"log_dir={root / 'logs'}",
        f"hydra.sweep.dir={root / 'multirun'}",
    ]
    run_checked(cmd, clean_env(), timeout=400)
    return root


@pytest.mark.distributed
def test_local_submitit_multirun_writes_one_record_per_job(local_multirun):
    records = ResultStore(local_multirun / "runs").read()
    assert [r["config"]["trainer"]["label"] for r in records] == ["srigl"]
    srigl_record = records[0]
    assert srigl_record["metrics"]["steps"] == 4
    assert [a["step"] for a in srigl_record["metrics"]["ablation"]] == [2]


@pytest.mark.distributed
def test_each_local_submitit_task_is_a_rank_and_only_rank_zero_reports(local_multirun):
    logs = sorted((local_multirun / "multirun" / ".submitit").glob("*/*_log.out"))
    by_task: dict[str, list[str]] = {"0": [], "1": []}
    for log in logs:
        task = log.name.split("_")[-2]
        by_task[task].append(log.read_text())
    assert len(by_task["0"]) == len(by_task["1"]) == 1, [p.name for p in logs]
    assert all(text.count("top-1") == 1 for text in by_task["0"])
    assert not any("top-1" in text for text in by_task["1"])  # rank 1: RANK=1 was exported
    assert all("Job completed successfully" in text for text in by_task["1"])
