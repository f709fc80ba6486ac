"""The issue-13 closing table: whole condensed models vs the dense eval model and the BN-folded
dense model, every model/dataset pair, measured in one process.

    .venv/bin/python scripts/measure_whole_model.py [--threads 2] [--sparsity 0.9]
        [--experiments cifar10_resnet18,...] [--backends fused,structured,csr,...]
        [--batches 1,32] [--min-run-time 2] [--pairs 10] [--structured] [--json out.json]
        [--per-layer] [--retune]

For every experiment (default: the six pairs of the paper) the model is built at its input size
with the masks of the experiment's own SRigL set-up (``suite.bench.whole_model.experiment_model``),
condensed with each backend (Linear, Conv2d with BatchNorm folded, attention), checked against
the masked dense model, and timed in alternation with the dense eval model and the BN-folded
dense model in ABBA rounds (``bench_whole_model``: paired speed-ups with 95% intervals). Prints
the report's one whole-model table (:func:`suite.report.whole_model.whole_model_speedups`), the
issue's targets for ``fused`` at batch 1 (met: the interval's low end reaches the target;
missed: its high end stays below; else undecided), and the 1-minute load average before and
after each model (a load above the core count marks a busy machine: take closing numbers with
nothing else running).
``--retune`` first deletes this machine's tuner caches (conv and fused linear), so that the
kernel variants are chosen again on the quiet machine. ``--per-layer`` adds, for ``fused`` at
batch 1, each condensed conv's paired speed-up over the folded dense conv (the one timer's
protocol, about 0.2 s each, same input), to see where a model's time goes.

The same measurement runs through the bench app (records in the result store):
``python -m suite.bench whole_model=true threads=2 whole_model_options.batches=[1,32]``.
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from suite.runtime import thread_policy

# fused vs dense eval, batch 1, 2 threads, 90% (issue 13)
TARGETS = {
    "imagenet_resnet50": 2.0,
    "cifar10_resnet18": 2.0,
    "cifar10_wrn22": 2.0,
    "imagenet_mobilenet_v3_large": 1.3,
    "imagenet_vit_b16": 3.0,
}


def _load() -> str:
    load = thread_policy()["load_avg_1m"]
    return "n/a" if load is None else f"{load:.1f}"


def _per_layer(setup, threads: int) -> list[str]:
    """Fused conv vs BN-folded dense conv per layer, batch 1: paired speed-ups (the one timer)."""
    import srigl
    from backends.timing import paired_ratio
    from srigl.condense_conv import fold_batchnorm
    from suite.bench.whole_model import masked_dense
    from suite.report.speed import speedup_cell

    dense = fold_batchnorm(masked_dense(setup.model, setup.masks))
    small = srigl.condense(
        masked_dense(setup.model, setup.masks), setup.masks, backend="fused", fuse_epilogues=True
    )
    inputs: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: inputs.__setitem__(n, i[0].detach()))
        for n, m in dense.named_modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    with torch.no_grad():
        dense(torch.randn(1, *setup.input_shape))
    for h in hooks:
        h.remove()

    lines = [
        f"\n{setup.experiment}: per conv, fused vs BN-folded dense, batch 1, {threads} threads",
        "| layer | shape | k / fan-in | dense us | fused us | speed-up [95% CI] |",
        "|---|---|---|---:|---:|---:|",
    ]
    with torch.no_grad():
        for name, x in inputs.items():
            conv, cond = dense.get_submodule(name), small.get_submodule(name)
            if not hasattr(cond, "values"):
                continue
            pair = paired_ratio(
                lambda cond=cond, x=x: cond(x),
                lambda conv=conv, x=x: conv(x),
                pairs=10,
                block_seconds=0.02,
                threads=threads,
            )
            td, tf = sorted(pair.baseline_s)[5], sorted(pair.candidate_s)[5]
            shape = (
                f"{conv.in_channels}->{conv.out_channels} {conv.kernel_size[0]}x"
                f"{conv.kernel_size[1]} s{conv.stride[0]} g{conv.groups} @{x.shape[-1]}"
            )
            lines.append(
                f"| {name} | {shape} | {cond.k}/{cond.in_features} | {td * 1e6:.0f} | "
                f"{tf * 1e6:.0f} | {speedup_cell(pair.speedup, pair.ci_low, pair.ci_high)} |"
            )
    return lines


def _forget_tuning(threads: int) -> None:
    """Delete the tuner cache files of this machine and thread count (conv and fused linear)."""
    from backends.fused_conv import conv_ops
    from backends.kernels import conv_tuner as _conv_tuner

    paths = [_conv_tuner.cache_path(int(conv_ops().conv_isa()), threads)]
    _conv_tuner.forget_memory()
    try:
        from backends.kernels import linear_tuner as tuner
    except ImportError:
        tuner = None
    if tuner is not None:
        paths.append(tuner.cache_path(threads))
        tuner.forget_memory()
    for path in paths:
        if path.exists():
            path.unlink()
            print(f"removed tuner cache {path}")


def _targets(rows: list[dict]) -> list[str]:
    """The issue-13 targets of ``fused`` at batch 1, judged by the paired interval."""
    lines = [
        "\n| experiment | fused vs dense, batch 1 [95% CI] | target | verdict |",
        "|---|---|---|---|",
    ]
    for r in rows:
        target = TARGETS.get(r["experiment"])
        if r["backend"] != "fused" or r["batch"] != 1 or target is None:
            continue
        low, high = r["speedup_ci_low"], r["speedup_ci_high"]
        verdict = "met" if low >= target else ("MISSED" if high < target else "undecided")
        cell = f"{r['speedup']:.2f} [{low:.2f}, {high:.2f}]"
        lines.append(f"| {r['experiment']} | {cell} | >= {target} | {verdict} |")
    return lines


def main() -> None:
    import pandas as pd

    from suite import machine
    from suite.bench.whole_model import EXPERIMENTS, bench_whole_model, experiment_model
    from suite.report.render import markdown_table
    from suite.report.speed import machine_label
    from suite.report.whole_model import whole_model_speedups
    from suite.runtime import set_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--experiments", default=",".join(EXPERIMENTS))
    parser.add_argument("--backends", default="fused,structured,csr,naive,dense")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--min-run-time", type=float, default=2.0)
    parser.add_argument("--pairs", type=int, default=10, help="ABBA rounds per measurement (>= 2)")
    parser.add_argument("--structured", action="store_true")
    parser.add_argument("--json", default=None, help="also write the result dicts here")
    parser.add_argument("--per-layer", action="store_true")
    parser.add_argument(
        "--retune",
        action="store_true",
        help="drop this machine's conv and fused-linear tuner caches first (choices made on a "
        "busy machine are cached too)",
    )
    args = parser.parse_args()
    if args.pairs < 2:
        parser.error(f"--pairs {args.pairs} is invalid; allowed: an integer >= 2")
    logging.basicConfig(level=logging.WARNING)
    set_threads(args.threads, grad=False)
    if args.retune:
        _forget_tuning(args.threads)

    rows: list[dict] = []
    skipped: dict[str, str] = {}
    extra: list[str] = []
    loads = ["| experiment | load before | load after |", "|---|---|---|"]
    for experiment in args.experiments.split(","):
        before = _load()
        setup = experiment_model(experiment, args.sparsity, seed=0)
        rows += bench_whole_model(
            setup.model_name,
            setup.model,
            setup.masks,
            setup.input_shape,
            [int(b) for b in args.batches.split(",")],
            args.backends.split(","),
            structured=args.structured,
            sparsity=args.sparsity,
            threads=args.threads,
            min_run_time=args.min_run_time,
            device=torch.device("cpu"),
            dtype=torch.float32,
            rounds=args.pairs,
            skipped=skipped,
            experiment=experiment,
        )
        loads.append(f"| {experiment} | {before} | {_load()} |")
        print(f"measured {experiment}", flush=True)
        if args.per_layer:
            extra += _per_layer(setup, args.threads)
    label = machine_label(machine.identity())  # the report's name of this machine class
    print(markdown_table(whole_model_speedups(pd.DataFrame(rows).assign(machine=label))))
    print("\n".join(_targets(rows)))
    print("\n" + "\n".join(loads))
    if extra:
        print("\n".join(extra))
    if skipped:
        print("\nskipped:", json.dumps(skipped, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": rows, "skipped": skipped, "threads": args.threads}, fh, indent=1)


if __name__ == "__main__":
    main()
