"""experiment=digits_vit (profile=transformer, issue 22): the small ViT on digits composes with
the reference ViT recipe made small, trains a few steps of SRigL on the real data, and SRigL's
neuron ablation switches neurons off in its attention and MLP layers."""

from __future__ import annotations

from fnmatch import fnmatch

from omegaconf import OmegaConf

from suite.reproduce.sweep import compose as compose_reproduce
from suite.reproduce.sweep import expected_jobs
from suite.train import compose, run

#: the sparse layers of each of the ViT's blocks: attention projections and MLP linears
BLOCK_LAYERS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def test_digits_vit_is_the_reference_vit_recipe_made_small():
    cfg = compose(["experiment=digits_vit", "trainer=srigl"])
    assert cfg.model.name == "vit_digits" and cfg.dataset.name == "digits"
    assert cfg.optimizer.name == "adamw" and cfg.scheduler.name == "cosine"
    assert cfg.scheduler.warmup_epochs > 0
    assert cfg.training.label_smoothing > 0 and cfg.training.grad_clip == 1.0
    assert cfg.trainer.distribution == "uniform" and cfg.trainer.gamma_sal == 0.95
    assert cfg.trainer.sparse_attention and cfg.trainer.ablation
    assert cfg.trainer.dense_first_layer  # the 2x2 patch conv: fan-in 4 (see the yaml)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_the_transformer_profile_is_65_jobs():
    cfg = compose_reproduce(["profile=transformer"])
    assert expected_jobs(cfg) == 5 * (1 + 3 * 4)  # dense once per seed, 3 methods x 4 sparsities
    assert list(cfg.profile.train.experiments) == ["digits_vit"]


def test_digits_vit_trains_a_few_srigl_steps_and_ablates_neurons(train_cfg):
    record = run(
        train_cfg(
            "experiment=digits_vit",
            "trainer=srigl",
            "sparsity=0.9",
            "training.epochs=1",
            "limit_batches=6",
            "trainer.delta_t=2",
        )
    )
    metrics = record["metrics"]
    assert metrics["steps"] == 6 and [a["step"] for a in metrics["ablation"]] == [2]  # t_end 4
    layers = metrics["layers"]
    assert "patch_embed.proj.weight" not in layers  # dense_first_layer
    sparse = [name for name in layers if name != "head.weight"]
    assert all(any(fnmatch(n, f"blocks.*.{b}.weight") for b in BLOCK_LAYERS) for n in sparse)
    assert len(sparse) == 2 * len(BLOCK_LAYERS)  # 2 blocks, every projection sparse
    assert sum(layers[n]["n_ablated"] for n in sparse) > 0
    assert layers["head.weight"]["n_ablated"] == 0  # the classifier is never ablated
    assert 0.085 < metrics["global_density"] < 0.105
