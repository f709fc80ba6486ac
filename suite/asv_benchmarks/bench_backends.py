"""Layer speed of every GEMM backend: ViT-B/16 MLP and ResNet-50 classifier shapes.

``time_forward`` is asv's own timing of one forward call; ``track_ratio_vs_dense`` times the
backend and the masked dense layer in the same process, interleaved, and returns
backend / dense (lower is better, so asv flags an increase as a regression; robust to a busy
machine because both sides see the same load).
"""

from __future__ import annotations

from typing import Any

from suite.runtime import set_threads

from ._common import (
    THREADS,
    asv_setting,
    backend_names,
    build_backend,
    constant_fan_in_layer,
)

# name -> (in_features, out_features)
SHAPES: dict[str, tuple[int, int]] = {
    "vit_b16_fc1_768x3072": (768, 3072),
    "vit_b16_fc2_3072x768": (3072, 768),
    "resnet50_fc_2048x1000": (2048, 1000),
}
SPARSITIES = (0.9, 0.99)
BATCHES = (1, 256)
BASELINE = "dense"


def _layer_and_input(
    backend: str, shape: str, sparsity: float, batch: int
) -> tuple[Any, Any, tuple[Any, Any, Any]]:
    """Build ``backend`` for the layer ``shape`` at ``sparsity`` and an input [batch, in]."""
    import torch

    in_f, out_f = SHAPES[shape]
    weight, mask, bias = constant_fan_in_layer(in_f, out_f, sparsity)
    layer = build_backend(backend, weight, mask, bias, layer_name=shape)
    x = torch.randn(batch, in_f, generator=torch.Generator().manual_seed(1))
    layer(x)  # first call: compiles where a backend compiles, allocates caches
    return layer, x, (weight, mask, bias)


def _setup_vs_dense(
    bench: Any, backend: str, shape: str, sparsity: float, batch: int, tune: bool = False
) -> None:
    """The setup of a ratio benchmark: ``bench.layer`` (``backend``, autotuned for ``batch``
    with ``tune``), its input ``bench.x``, the masked dense baseline ``bench.dense`` (called
    once) and ``bench.min_run_time``."""
    set_threads(THREADS, grad=False)
    bench.layer, bench.x, (weight, mask, bias) = _layer_and_input(backend, shape, sparsity, batch)
    if tune:
        import backends

        backends.tune(bench.layer, batches=[batch])
    bench.dense = build_backend(BASELINE, weight, mask, bias, layer_name=shape)
    bench.dense(bench.x)
    bench.min_run_time = float(asv_setting("ratio_min_run_time", 0.2))


class LayerForward:
    """Seconds per forward call of one condensed layer, fp32, CPU, 2 threads."""

    params = (backend_names(), list(SHAPES), list(SPARSITIES), list(BATCHES))
    param_names = ["backend", "shape", "sparsity", "batch"]
    version = "1"
    processes = 1
    # 84 parameter sets: few samples each keep a full commit run within ~5 min on 2 cores
    # (LayerRatio is the robust regression signal; this is the absolute time).
    repeat = (2, 6, 0.5)
    warmup_time = 0.02
    min_run_count = 2
    sample_time = 0.02
    timeout = 300

    def setup(self, backend: str, shape: str, sparsity: float, batch: int) -> None:
        set_threads(THREADS, grad=False)
        self.layer, self.x, _ = _layer_and_input(backend, shape, sparsity, batch)

    def time_forward(self, backend: str, shape: str, sparsity: float, batch: int) -> None:
        self.layer(self.x)


class LayerRatio:
    """Forward time of the backend divided by the masked dense layer's, same process."""

    params = ([b for b in backend_names() if b != BASELINE], *LayerForward.params[1:])
    param_names = LayerForward.param_names
    version = "3"  # 3: paired ABBA ratio (2: fastest block; 1: fastest single call)
    processes = 1
    repeat = 1
    number = 1
    timeout = 300

    def setup(self, backend: str, shape: str, sparsity: float, batch: int) -> None:
        _setup_vs_dense(self, backend, shape, sparsity, batch)

    def track_ratio_vs_dense(self, backend: str, shape: str, sparsity: float, batch: int) -> float:
        return best_time_ratio(self.layer, self.dense, self.x, self.min_run_time)

    track_ratio_vs_dense.unit = "ratio"


def best_time_ratio(
    layer: Any, baseline: Any, x: Any, min_run_time: float, rounds: int = 10
) -> float:
    """``layer(x)`` time over ``baseline(x)`` time with the suite's one protocol
    (:func:`backends.timing.paired_ratio`: ABBA blocks in one process, the geometric mean of the
    per-pair ratios), i.e. 1 / speed-up: asv flags increases, so the tracked ratio is the one
    that should go down. Returns a float > 0 (below 1: ``layer`` is faster).
    """
    from backends.timing import paired_ratio

    ratio = paired_ratio(
        lambda: layer(x),
        lambda: baseline(x),
        pairs=rounds,
        block_seconds=min_run_time / (2 * rounds),
        threads=THREADS,
    )
    return 1.0 / ratio.speedup


class FusedRatio:
    """The ``fused`` CPU kernel over the masked dense layer, same process, ViT-B/16 MLP shapes
    at the issue-10 grid (80-99%, batch 1 and 256), after the autotuner picked its variant
    (the setup tunes; the tuning cache makes later runs skip the timing)."""

    params = (
        ["vit_b16_fc1_768x3072", "vit_b16_fc2_3072x768"],
        [0.8, 0.9, 0.95, 0.99],
        [1, 256],
    )
    param_names = ["shape", "sparsity", "batch"]
    version = "3"  # 3: paired ABBA ratio (2: fastest block; 1: fastest single call)
    processes = 1
    repeat = 1
    number = 1
    timeout = 300

    def setup(self, shape: str, sparsity: float, batch: int) -> None:
        _setup_vs_dense(self, "fused", shape, sparsity, batch, tune=True)

    def track_ratio_fused_vs_dense(self, shape: str, sparsity: float, batch: int) -> float:
        return best_time_ratio(self.layer, self.dense, self.x, self.min_run_time)

    track_ratio_fused_vs_dense.unit = "ratio"
