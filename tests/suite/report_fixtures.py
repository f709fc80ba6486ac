"""Synthetic result records for the report and reproduce tests (built with make_record)."""

from __future__ import annotations

import json
import random

from suite.results import ResultStore, make_record

EXPERIMENTS = ("digits_mlp", "digits_cnn")
SPARSE_METHODS = ("static", "set", "rigl", "srigl", "srigl_no_ablation")
SPARSITIES = (0.9, 0.99)
SEEDS = (0, 1, 2)


def train_config(experiment: str, method: str, sparsity: float, seed: int, **extra) -> dict:
    """A train config shaped like suite.train's (only the keys the report reads)."""
    model, dataset = {
        "digits_mlp": ("mlp", "digits"),
        "digits_cnn": ("small_cnn", "digits"),
        "digits_vit": ("vit_digits", "digits"),
    }[experiment]
    return {
        "experiment": experiment,
        "sparsity": sparsity,
        "seed": seed,
        "trainer": {"label": method, "name": method, "ablation": method == "srigl"},
        "model": {"name": model},
        "dataset": {"name": dataset},
        **extra,
    }


def train_metrics(top1: float, method: str, n_updates: int = 4) -> dict:
    """Train metrics with curves, ablation counts, params/FLOPs/bytes."""
    ablation = (
        [
            {"step": 100 * (i + 1), "n_ablated": (10 * (i + 1) if method == "srigl" else 0)}
            for i in range(n_updates)
        ]
        if method.startswith("srigl")
        else []
    )
    return {
        "top1_accuracy": top1,
        "top5_accuracy": min(100.0, top1 + 2.0),
        "top1_error": 100.0 - top1,
        "test_loss": 0.3,
        "curves": {
            "epoch": [1, 2],
            "train_loss": [1.0, 0.5],
            "test_accuracy": [80.0, top1],
            "density": [0.1, 0.1],
        },
        "ablation": ablation,
        "layers": [],
        "global_density": 0.1,
        "params": {"dense": 300_000, "nonzero": 30_000, "condensed": 45_000},
        "flops": {"dense": 600_000, "sparse": 60_000, "condensed": 60_000},
        "model_bytes": {"dense": 1_200_000, "sparse": 120_000, "condensed": 150_000},
        "step_time_s": 0.01,
    }


def make_train_records(rng_seed: int = 0) -> list[dict]:
    """A grid of train records: 2 experiments x (dense + 5 methods x 2 sparsities) x 3 seeds,
    with random accuracies, plus one duplicate of a seed (created later, different value)."""
    rng = random.Random(rng_seed)
    records = []
    for exp in EXPERIMENTS:
        for seed in SEEDS:
            records.append(
                make_record(
                    "train",
                    train_config(exp, "dense", 0.9, seed),  # dense carries the grid's sparsity
                    train_metrics(round(rng.uniform(95, 98), 3), "dense"),
                )
            )
            for method in SPARSE_METHODS:
                for sp in SPARSITIES:
                    top1 = round(rng.uniform(70, 97), 3)
                    records.append(
                        make_record(
                            "train",
                            train_config(exp, method, sp, seed),
                            train_metrics(top1, method),
                        )
                    )
    for rec in records:
        rec["created"] = "2026-11-27T01:00:00+00:00"
    return records


def bench_row(backend: str, sparsity: float, batch: int, median_s: float, **kw) -> dict:
    row = dict(
        backend=backend,
        in_features=3072,
        out_features=768,
        sparsity=sparsity,
        batch=batch,
        dtype="float32",
        threads=2,
        mode="kernel",
        median_s=median_s,
        iqr_s=median_s / 50,
        dense_median_s=2e-4 if batch == 1 else 4e-3,
    )
    row.update(kw)
    return row


def paired_row(
    backend: str, sparsity: float, batch: int, speedup: float, low: float, high: float, **kw
) -> dict:
    """A paired row: its speed-up and interval over dense (times consistent with them)."""
    dense = 2e-4
    return bench_row(
        backend,
        sparsity,
        batch,
        dense / speedup,
        dense_median_s=dense,
        speedup=speedup,
        speedup_ci_low=low,
        speedup_ci_high=high,
        n_pairs=20,
        **kw,
    )


def whole_model_row(median_s: float = 0.01, dense_median_s: float = 0.03, **kw) -> dict:
    """One whole-model measurement (a condensed ViT-B/16 vs dense, batch 1)."""
    row = dict(
        model="vit_b16",
        backend="fused",
        batch=1,
        sparsity=0.9,
        dtype="float32",
        threads=2,
        device="cpu",
        median_s=median_s,
        dense_median_s=dense_median_s,
    )
    row.update(kw)
    return row


def make_bench_record() -> dict:
    rows = []
    for sp in (0.9, 0.99):
        for batch in (1, 256):
            base = 2e-4 if batch == 1 else 4e-3
            rows.append(bench_row("dense", sp, batch, base))
            rows.append(bench_row("csr", sp, batch, base / 2))
            rows.append(bench_row("fused", sp, batch, base / (4 if sp == 0.9 else 16)))
    whole = [whole_model_row()]
    skipped = {"fused_triton": "no CUDA here"}
    return make_record(
        "bench",
        {"profile": {"name": "quick"}},
        {"rows": rows, "whole_model": whole, "skipped": skipped},
    )


def write_store(root, records) -> ResultStore:
    store = ResultStore(root)
    for rec in records:
        store.write(rec)
    return store


def write_small_store(root) -> ResultStore:
    """A store of two digits_mlp SRigL train records (seeds 0, 1): enough for a report."""
    recs = [
        make_record(
            "train", train_config("digits_mlp", "srigl", 0.9, s), train_metrics(90.0 + s, "srigl")
        )
        for s in (0, 1)
    ]
    return write_store(root, recs)


def side_record(kind: str, machine: str, created: str, rows: list, config: dict) -> dict:
    """A record of a bench side runner (vs-probe, under-load) as its CLI writes one."""
    return {
        "kind": kind,
        "created": created,
        "rows": rows,
        "git": {"commit": "abcdef0123", "dirty": False},
        "host": {
            "asv_name": machine,
            "load_start": {"load_avg_1m": 0.5},
            "load_end": {"load_avg_1m": 0.7},
        },
        "config": config,
    }


def write_json(folder, name: str, record: dict) -> None:
    """``record`` as ``folder/name`` (the folder made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(record))
