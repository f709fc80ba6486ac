"""``suite.train`` under torchrun: two gloo processes train exactly like one process.

The real Hydra app is started twice in fresh processes, once by torchrun with two CPU ranks
(DDP, gloo, DistributedSampler, global batch split over the ranks) and once alone, over the same
global batches: the 64-512-512-10 digits MLP on a 256-sample synthetic data set (divisible by
the world size), in float64 so that no top-k near-tie can flip through the rounding of the
gradient average. Every rank dumps its masks and weights after every SRigL update (see
``train_entry.py``).

(The file is not called ``test_distributed.py``: ``tests/srigl`` has one, and pytest's default
import mode needs test file names to be unique across folders without ``__init__.py``.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from scaleout import clean_env, run_checked, train_command

from suite.checkpointing import load_checkpoint
from suite.results import ResultStore

WORLD = 2
TRAIN_SIZE = 256  # divisible by WORLD and by the global batch
GLOBAL_BATCH = 32
EPOCHS = 3  # 8 steps an epoch, 24 in all; t_end = 18
DELTA_T = 3
EXPECTED_UPDATES = [3, 6, 9, 12, 15]

OVERRIDES = [
    "experiment=digits_mlp",
    "trainer=srigl",
    "sparsity=0.9",
    "seed=3",
    "dataset=synthetic",
    "dataset.input_shape=[1,8,8]",
    f"dataset.train_size={TRAIN_SIZE}",
    "dataset.test_size=64",
    f"training.batch_size={GLOBAL_BATCH}",
    "training.eval_batch_size=64",
    f"training.epochs={EPOCHS}",
    f"trainer.delta_t={DELTA_T}",
    "device=cpu",
    "progress=false",
    "hydra/job_logging=disabled",
    "hydra/hydra_logging=disabled",
    "hydra.output_subdir=null",
]


def _train(root: Path, nproc: int) -> str:
    overrides = [
        *OVERRIDES,
        f"results_dir={root / 'runs'}",
        f"checkpoint_dir={root / 'checkpoints'}",
        f"log_dir={root / 'logs'}",
        f"hydra.run.dir={root / 'hydra'}",
    ]
    env = clean_env({"SRIGL_TEST_DTYPE": "float64", "SRIGL_TEST_DUMP_DIR": str(root / "dump")})
    return run_checked(train_command(overrides, nproc), env)


def _dumps(root: Path, rank: int) -> dict[int, dict]:
    out = {}
    for path in sorted((root / "dump").glob(f"rank{rank}_step*.pt")):
        step = int(path.stem.split("_step")[1])
        out[step] = torch.load(path, weights_only=True)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, object]:
    """One torchrun run with two ranks and one single-process run of the same config."""
    base = tmp_path_factory.mktemp("ddp")
    t0 = time.perf_counter()
    ddp_out = _train(base / "ddp", WORLD)
    ddp_seconds = time.perf_counter() - t0
    single_out = _train(base / "single", 1)
    return {
        "ddp": base / "ddp",
        "single": base / "single",
        "ddp_stdout": ddp_out,
        "single_stdout": single_out,
        "ddp_seconds": ddp_seconds,
    }


@pytest.mark.distributed
def test_two_ranks_dump_the_initial_topology_and_every_srigl_update(runs):
    for rank in range(WORLD):
        assert sorted(_dumps(runs["ddp"], rank)) == [0, *EXPECTED_UPDATES]
    assert sorted(_dumps(runs["single"], 0)) == [0, *EXPECTED_UPDATES]
    assert not list((runs["single"] / "dump").glob("rank1_*"))


@pytest.mark.distributed
def test_masks_are_bitwise_identical_on_both_ranks_after_every_update(runs):
    r0, r1 = _dumps(runs["ddp"], 0), _dumps(runs["ddp"], 1)
    for step in r0:
        assert r0[step]["masks"].keys() == r1[step]["masks"].keys()
        for name, mask in r0[step]["masks"].items():
            assert mask.dtype == torch.bool
            assert torch.equal(mask, r1[step]["masks"][name]), (step, name)
            assert torch.equal(r0[step]["weights"][name], r1[step]["weights"][name]), (step, name)


@pytest.mark.distributed
def test_two_ranks_match_a_single_process_over_the_same_global_batches(runs):
    ddp, single = _dumps(runs["ddp"], 0), _dumps(runs["single"], 0)
    changed = 0
    for step, ref in single.items():
        for name, mask in ref["masks"].items():
            assert torch.equal(ddp[step]["masks"][name], mask), (step, name)
            weights = ddp[step]["weights"][name]
            assert weights.dtype == torch.float64
            torch.testing.assert_close(weights, ref["weights"][name], rtol=1e-9, atol=1e-12)
            changed += int(step > 0 and not torch.equal(mask, single[0]["masks"][name]))
    assert changed > 0, "no update changed a mask: the comparison would prove nothing"
    final_ddp = load_checkpoint(next((runs["ddp"] / "checkpoints").glob("*/checkpoint.pt")))
    final_one = load_checkpoint(next((runs["single"] / "checkpoints").glob("*/checkpoint.pt")))
    for name, value in final_one["model"].items():
        torch.testing.assert_close(final_ddp["model"][name], value, rtol=1e-9, atol=1e-12)
    for name, mask in final_one["masks"].items():
        assert torch.equal(final_ddp["masks"][name], mask), name


@pytest.mark.distributed
def test_exactly_one_record_and_one_summary_come_from_two_ranks(runs):
    files = list((runs["ddp"] / "runs").iterdir())
    assert len(files) == 1, files
    records = ResultStore(runs["ddp"] / "runs").read()
    assert len(records) == 1
    metrics = records[0]["metrics"]
    assert metrics["steps"] == EPOCHS * TRAIN_SIZE // GLOBAL_BATCH
    assert [a["step"] for a in metrics["ablation"]] == EXPECTED_UPDATES
    assert runs["ddp_stdout"].count("top-1") == 1, runs["ddp_stdout"]
    single = ResultStore(runs["single"] / "runs").read()[0]
    assert records[0]["run_id"] == single["run_id"]  # world size does not change the experiment
    assert metrics["top1_accuracy"] == pytest.approx(single["metrics"]["top1_accuracy"])
    assert len(list((runs["ddp"] / "checkpoints").glob("*/checkpoint.pt"))) == 1


@pytest.mark.distributed
def test_two_rank_run_stays_within_the_ci_budget(runs):
    print(f"2-process torchrun wall time: {runs['ddp_seconds']:.1f} s")
    assert runs["ddp_seconds"] < 90


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("method", ["set", "rigl"])
def test_random_and_gradient_regrowth_stay_identical_on_both_ranks(tmp_path, method):
    """SET regrows at random (a generator seeded alike on every rank), RigL by the all-reduced
    dense gradient: either way both ranks end every update with the same masks."""
    root = tmp_path / method
    overrides = [
        *(o for o in OVERRIDES if not o.startswith("trainer=")),
        f"trainer={method}",
        f"results_dir={root / 'runs'}",
        f"checkpoint_dir={root / 'checkpoints'}",
        f"log_dir={root / 'logs'}",
        f"hydra.run.dir={root / 'hydra'}",
    ]
    env = clean_env({"SRIGL_TEST_DTYPE": "float64", "SRIGL_TEST_DUMP_DIR": str(root / "dump")})
    run_checked(train_command(overrides, WORLD), env)
    r0, r1 = _dumps(root, 0), _dumps(root, 1)
    assert sorted(r0) == sorted(r1) == [0, *EXPECTED_UPDATES]
    for step in r0:
        for name, mask in r0[step]["masks"].items():
            assert torch.equal(mask, r1[step]["masks"][name]), (method, step, name)
    assert not all(
        torch.equal(r0[EXPECTED_UPDATES[-1]]["masks"][n], m) for n, m in r0[0]["masks"].items()
    ), "the topology never changed"
