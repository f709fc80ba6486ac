"""The issue-13 closing table: whole condensed models vs the dense eval model and the BN-folded
dense model, every model/dataset pair, measured in one process.

    .venv/bin/python scripts/measure_whole_model.py [--threads 2] [--sparsity 0.9]
        [--experiments cifar10_resnet18,...] [--backends fused,structured,csr,...]
        [--batches 1,32] [--min-run-time 2] [--rounds 3] [--structured] [--json out.json]
        [--per-layer] [--retune]

For every experiment (default: the six pairs of the paper) the model is built at its input size
with the masks of the experiment's own SRigL set-up (``suite.bench.whole_model.experiment_model``),
condensed with each backend (Linear, Conv2d with BatchNorm folded, attention), checked against
the masked dense model, and timed in alternation with the dense eval model and the BN-folded
dense model (``bench_whole_model``). Prints a Markdown table: median ms of each, speed-up vs
dense eval and vs BN-folded dense (median and from the fastest calls), the issue's target for
``fused`` at batch 1, and the 1-minute load average before and after each model (a load above
the core count marks a busy machine: take closing numbers with nothing else running).
``--retune`` first deletes this machine's tuner caches (conv and fused linear), so that the
kernel variants are chosen again on the quiet machine. ``--per-layer`` adds, for ``fused`` at
batch 1, each condensed conv's time against the folded dense conv (the fastest block of the
suite's timer, about 0.2 s each, same input), to see where a model's time goes.

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
    """Fused conv vs BN-folded dense conv per layer, batch 1 (fastest block of the timer)."""
    import srigl
    from srigl.condense_conv import fold_batchnorm
    from suite.bench.timing import measure
    from suite.bench.whole_model import masked_dense

    dense = fold_batchnorm(masked_dense(setup.model, setup.masks))
    small = srigl.condense(masked_dense(setup.model, setup.masks), setup.masks, backend="fused")
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

    def best(fn) -> float:  # the suite's one timer; the fastest block
        return measure(fn, threads, 0.2).min_s

    lines = [
        f"\n{setup.experiment}: per conv, fused vs BN-folded dense, batch 1, {threads} threads",
        "| layer | shape | k / fan-in | dense us | fused us | x |",
        "|---|---|---|---:|---:|---:|",
    ]
    with torch.no_grad():
        for name, x in inputs.items():
            conv, cond = dense.get_submodule(name), small.get_submodule(name)
            if not hasattr(cond, "values"):
                continue
            td = best(lambda conv=conv, x=x: conv(x))
            tf = best(lambda cond=cond, x=x: cond(x))
            shape = (
                f"{conv.in_channels}->{conv.out_channels} {conv.kernel_size[0]}x"
                f"{conv.kernel_size[1]} s{conv.stride[0]} g{conv.groups} @{x.shape[-1]}"
            )
            lines.append(
                f"| {name} | {shape} | {cond.k}/{cond.in_features} | {td * 1e6:.0f} | "
                f"{tf * 1e6:.0f} | {td / tf:.2f} |"
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


def main() -> None:
    from suite.bench.whole_model import EXPERIMENTS, bench_whole_model, experiment_model
    from suite.runtime import set_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--experiments", default=",".join(EXPERIMENTS))
    parser.add_argument("--backends", default="fused,structured,csr,naive,dense")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--min-run-time", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
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
    logging.basicConfig(level=logging.WARNING)
    set_threads(args.threads, grad=False)
    if args.retune:
        _forget_tuning(args.threads)

    rows: list[dict] = []
    skipped: dict[str, str] = {}
    extra: list[str] = []
    print(
        "| experiment | backend | batch | dense ms | BN-folded ms | condensed ms | vs dense | "
        "vs folded | vs dense (min) | target | load before/after |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for experiment in args.experiments.split(","):
        before = _load()
        setup = experiment_model(experiment, args.sparsity, seed=0)
        results = bench_whole_model(
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
            rounds=args.rounds,
            skipped=skipped,
            experiment=experiment,
        )
        after = _load()
        for r in results:
            speed = r["dense_median_s"] / r["median_s"]
            target = (
                TARGETS.get(experiment) if r["backend"] == "fused" and r["batch"] == 1 else None
            )
            verdict = (
                "" if target is None else f">= {target} {'met' if speed >= target else 'MISSED'}"
            )
            print(
                f"| {experiment} | {r['backend']} | {r['batch']} | {r['dense_median_s'] * 1e3:.2f} "
                f"| {r['folded_median_s'] * 1e3:.2f} | {r['median_s'] * 1e3:.2f} | {speed:.2f} | "
                f"{r['folded_median_s'] / r['median_s']:.2f} | "
                f"{r['dense_min_s'] / r['min_s']:.2f} | {verdict} | {before}/{after} |",
                flush=True,
            )
        rows += results
        if args.per_layer:
            extra += _per_layer(setup, args.threads)
    if extra:
        print("\n".join(extra))
    if skipped:
        print("\nskipped:", json.dumps(skipped, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": rows, "skipped": skipped, "threads": args.threads}, fh, indent=1)


if __name__ == "__main__":
    main()
