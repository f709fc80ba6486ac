"""GPU check for a lent GPU machine: GPU tests, kernel timings and a short AMP training run.

The machine has its own Python (torch, Triton, numba, pandas) but no Hydra, no omegaconf, maybe
no torchvision, and no network, so this script runs the project from its source tree (no
install) and imports nothing of the Hydra harness::

    PYTHONPATH=. python scripts/gpu_check.py --out results/gpu_check.md        # make gpu-check
    python scripts/gpu_check.py --device cpu --steps 3 --shapes small --out x.md   # CI smoke

It prints (and writes to ``--out``) four markdown tables:

1. environment: versions, device, which optional modules are there;
2. GPU tests: ``pytest -m gpu tests/backends tests/srigl`` when pytest exists and the device is
   CUDA (those folders need no Hydra);
3. kernels: the ``fused`` backend (Triton on CUDA, numba on CPU) against ``dense`` and ``csr``
   at batch 1 and 256 for the ViT-B/16 MLP shapes 768->3072 and 3072->768 at 90% and 99%
   sparsity (constant fan-in masks), median microseconds and speed-ups, each output checked
   against ``F.linear(x, weight * mask, bias)``;
4. training: ``--steps`` optimizer steps of CIFAR ResNet-18 on synthetic 3x32x32 data with
   the dense and the SRigL trainer under AMP (bf16 autocast; fp16 with a GradScaler), step
   time, throughput, topology updates, realised density and the constant fan-in check.

Sections that would overrun ``--budget-s`` seconds are skipped (and say so).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from the source tree, installed or not
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

#: [in_features, out_features] of the layers timed, per ``--shapes`` value
SHAPES: dict[str, list[tuple[int, int]]] = {
    "vit": [(768, 3072), (3072, 768)],
    "small": [(128, 256), (256, 128)],
}
KERNEL_BACKENDS = ("dense", "fused", "csr")
AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


class GpuCheckError(ValueError):
    """A bad command-line value; the message names it and the allowed values."""


# --------------------------------------------------------------------------- tables


@dataclass
class Table:
    """A titled markdown table."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        """The table as GitHub markdown, with its title as a level-3 heading."""
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


#: distribution names of the modules whose versions the environment table lists
DISTRIBUTIONS = {
    "triton": "triton",
    "numba": "numba",
    "pandas": "pandas",
    "pytest": "pytest",
    "torchvision": "torchvision",
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
}


def _version(module: str) -> str:
    """The installed version of ``module`` ("absent" if it cannot be imported), without
    importing it (importing triton or numba alone takes seconds)."""
    from importlib import metadata

    try:
        if importlib.util.find_spec(module) is None:
            return "absent"
    except (ImportError, ValueError):
        return "absent"
    try:
        return metadata.version(DISTRIBUTIONS.get(module, module))
    except metadata.PackageNotFoundError:
        return "present"


def environment(device: torch.device) -> Table:
    """Python, torch, CUDA, GPU, and the optional modules this project uses."""
    rows = [
        ["python", platform.python_version()],
        ["torch", torch.__version__],
        ["device", str(device)],
        ["cpu threads", str(torch.get_num_threads())],
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        rows += [
            ["gpu", f"{props.name}, {props.total_memory / 2**30:.0f} GiB"],
            ["cuda (torch build)", str(torch.version.cuda)],
        ]
    for module in DISTRIBUTIONS:
        rows.append([module, _version(module)])
    return Table("Environment", ["item", "value"], rows)


# --------------------------------------------------------------------------- GPU tests


def gpu_tests(device: torch.device, timeout_s: float) -> Table:
    """Run ``pytest -m gpu`` over the folders that need no Hydra; one row with the outcome."""
    header = ["command", "outcome", "seconds"]
    if device.type != "cuda":
        return Table("GPU tests", header, [["-", "skipped: the device is not CUDA", "0"]])
    if importlib.util.find_spec("pytest") is None:
        return Table("GPU tests", header, [["-", "skipped: pytest is not installed", "0"]])
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        "-q",
        "-o",
        "addopts=",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        "tests/backends",
        "tests/srigl",
    ]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
        )
        lines = [ln for ln in done.stdout.strip().splitlines() if ln.strip()]
        outcome = f"exit {done.returncode}: {lines[-1] if lines else done.stderr[-300:]}"
        failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
        if failed:
            outcome += " / " + "; ".join(failed[:5])
    except subprocess.TimeoutExpired:
        outcome = f"timed out after {timeout_s:.0f} s"
    seconds = f"{time.perf_counter() - t0:.1f}"
    return Table(
        "GPU tests", header, [["pytest -m gpu tests/backends tests/srigl", outcome, seconds]]
    )


# --------------------------------------------------------------------------- kernels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_us(fn: Callable[[], object], device: torch.device, min_run_time: float) -> float:
    """Median wall time of ``fn()`` in microseconds (the suite's one timer; torch.utils.benchmark
    synchronises CUDA), after one warm-up call."""
    from suite.bench.timing import measure

    fn()
    _sync(device)
    return measure(fn, torch.get_num_threads(), min_run_time).median_s * 1e6


def constant_fan_in_layer(
    in_features: int, out_features: int, sparsity: float, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random Linear layer with a constant fan-in mask.

    Returns:
        (weight [out, in] dtype, mask bool [out, in] with k = floor(B / out) per row
        (srigl.masks.constant_fan_in_mask), bias [out] dtype), all on ``device``.
    """
    from srigl.masks import constant_fan_in_mask

    gen = torch.Generator().manual_seed(in_features * 7 + out_features)
    mask = constant_fan_in_mask((out_features, in_features), sparsity, gen)
    k = int(mask[0].sum())
    weight = torch.randn(out_features, in_features, generator=gen) / math.sqrt(k)
    bias = torch.randn(out_features, generator=gen) * 0.1
    return (
        (weight * mask).to(device, dtype),
        mask.to(device),
        bias.to(device, dtype),
    )


def kernels(
    device: torch.device,
    shapes: Sequence[tuple[int, int]],
    sparsities: Sequence[float],
    batches: Sequence[int],
    dtypes: Sequence[torch.dtype],
    min_run_time: float,
) -> Table:
    """Median time of each backend per (shape, sparsity, batch, dtype), speed-ups vs dense
    and vs CSR from the same run, and the largest error against the masked dense layer."""
    import backends

    header = ["in->out", "sparsity", "batch", "dtype", "backend", "median us", "x dense",
              "x csr", "max rel err"]  # fmt: skip
    rows: list[list[str]] = []
    for (fin, fout), sparsity, dtype in (
        (s, p, d) for s in shapes for p in sparsities for d in dtypes
    ):
        weight, mask, bias = constant_fan_in_layer(fin, fout, sparsity, device, dtype)
        layers: dict[str, object] = {}
        for name in KERNEL_BACKENDS:
            try:
                ok, why = backends.get(name).supports(device, dtype)
                layers[name] = backends.create(name, weight, mask, bias) if ok else why
            except Exception as exc:  # report any backend failure in the table
                layers[name] = f"{type(exc).__name__}: {exc}"[:120]
        for batch in batches:
            x = torch.randn(batch, fin, device=device, dtype=dtype)
            with torch.no_grad():
                want = F.linear(x.float(), (weight * mask).float(), bias.float())
                times: dict[str, float] = {}
                results: dict[str, list[str]] = {}
                for name, layer in layers.items():
                    if isinstance(layer, str):
                        results[name] = ["n/a", "", "", f"unavailable: {layer}"]
                        continue
                    try:
                        got = layer(x).float()
                        err = float((got - want).abs().max() / want.abs().max().clamp(min=1e-12))
                        times[name] = _median_us(lambda f=layer, x=x: f(x), device, min_run_time)
                        results[name] = [f"{times[name]:.1f}", "", "", f"{err:.1e}"]
                    except Exception as exc:
                        results[name] = ["n/a", "", "", f"{type(exc).__name__}: {exc}"[:120]]
            for name, cells in results.items():
                if name in times:
                    for col, ref in ((1, "dense"), (2, "csr")):
                        if ref in times:
                            cells[col] = f"{times[ref] / times[name]:.2f}"
                dt = str(dtype).replace("torch.", "")
                rows.append([f"{fin}->{fout}", f"{sparsity:.2f}", str(batch), dt, name, *cells])
    note = (
        "Constant fan-in masks; `fused` is the Triton kernel on CUDA and the numba kernel on "
        "CPU; speed-ups are dense or CSR time over the backend's time, from the same run."
    )
    return Table("Kernels: fused vs dense vs CSR", header, rows, note)


# --------------------------------------------------------------------------- training


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNet18(nn.Module):
    """ResNet-18 for 3x32x32 inputs (3x3 stride-1 stem, no max-pool), the same layers and
    parameter names as ``suite.models``' ``resnet18_cifar`` (torchvision's body): for machines
    without torchvision. ``width`` is the stem's channels (64 in ResNet-18; smaller for CPU
    smoke runs). Input [B, 3, 32, 32] -> logits [B, num_classes]."""

    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        c_in = width
        for i in range(1, 5):
            c_out = width * 2 ** (i - 1)
            stride = 1 if i == 1 else 2
            layer = nn.Sequential(_BasicBlock(c_in, c_out, stride), _BasicBlock(c_out, c_out, 1))
            setattr(self, f"layer{i}", layer)
            c_in = c_out
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet18_cifar(num_classes: int = 10, width: int = 64) -> tuple[nn.Module, str]:
    """The project's ``resnet18_cifar`` if torchvision is there (and ``width`` is 64), else
    :class:`CifarResNet18`.

    Returns:
        (model, where it came from).
    """
    if width == 64 and _version("torchvision") != "absent":
        from suite.models import create_model

        return create_model("resnet18_cifar", num_classes, (3, 32, 32)), "suite.models"
    why = "no torchvision" if width == 64 else f"width {width}"
    return CifarResNet18(num_classes, width), f"gpu_check.py ({why})"


def train_resnet18(
    device: torch.device,
    method: str,
    amp: str,
    steps: int,
    batch: int,
    sparsity: float = 0.9,
    width: int = 64,
) -> list[str]:
    """``steps`` SGD steps of CIFAR ResNet-18 on synthetic data under autocast ``amp``.

    Returns:
        One table row: method, amp, model source, steps, ms per step (steps after the first
        few), images/s, topology updates, global density, final loss, constant fan-in check.
    """
    import srigl

    torch.manual_seed(0)
    model, source = resnet18_cifar(10, width)
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    dtype = AMP_DTYPES[amp]
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
    delta_t = max(1, steps // 6)
    trainer = srigl.create_trainer(
        method, model, opt, sparsity=sparsity, distribution="erk", total_steps=steps,
        delta_t=delta_t, grad_scaler=scaler, seed=0,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    data = [
        (torch.randn(batch, 3, 32, 32, generator=gen).to(device),
         torch.randint(0, 10, (batch,), generator=gen).to(device))
        for _ in range(4)
    ]  # fmt: skip
    warmup = min(5, max(0, steps - 1))
    loss_value = float("nan")
    t_start = 0.0
    for i in range(steps):
        if i == warmup:
            _sync(device)
            t_start = time.perf_counter()
        x, y = data[i % len(data)]
        with torch.autocast(device_type=device.type, dtype=dtype):
            loss = F.cross_entropy(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        trainer.step()
        opt.zero_grad(set_to_none=True)
        if i == steps - 1:
            loss_value = float(loss.detach())
    _sync(device)
    timed = steps - warmup
    ms = (time.perf_counter() - t_start) * 1e3 / max(timed, 1)
    stats = trainer.stats()
    layers = stats["layers"]
    check = "n/a (dense)" if not layers else "ok"
    if layers:
        try:  # the trainer's own invariants: fan-in k or k + 1, every layer's budget
            trainer.check_masks()
        except ValueError as err:
            check = f"FAILED ({err})"
    return [
        method, amp, source, str(steps), f"{ms:.1f}", f"{batch * 1e3 / ms:.0f}",
        str(stats["updates"]), f"{stats['global_density']:.4f}", f"{loss_value:.3f}", check,
    ]  # fmt: skip


def training(
    device: torch.device, amps: Sequence[str], steps: int, batch: int, width: int = 64
) -> Table:
    """The training table: dense and SRigL (90%, ERK) under each AMP mode."""
    header = ["method", "amp", "model", "steps", "ms/step", "img/s", "updates", "density",
              "final loss", "constant fan-in"]  # fmt: skip
    rows = []
    for amp in amps:
        for method in ("dense", "srigl"):
            try:
                rows.append(train_resnet18(device, method, amp, steps, batch, width=width))
            except Exception as exc:
                rows.append([method, amp, "-", str(steps), "n/a", "", "", "", "",
                             f"{type(exc).__name__}: {exc}"[:160]])  # fmt: skip
    note = f"ResNet-18 (CIFAR), synthetic 3x32x32 data, batch {batch}, SGD; SRigL at 90% (ERK)."
    return Table("Training: ResNet-18 with AMP", header, rows, note)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (default cuda)")
    p.add_argument("--shapes", default="vit", choices=sorted(SHAPES))
    p.add_argument("--sparsities", default="0.9,0.99")
    p.add_argument("--batches", default="1,256")
    p.add_argument("--amp", default=None, help="comma list of bf16,fp16 (cuda: both; cpu: bf16)")
    p.add_argument("--steps", type=int, default=300, help="training steps per run")
    p.add_argument("--train-batch", type=int, default=None, help="default 128 (cuda), 4 (cpu)")
    p.add_argument("--width", type=int, default=64, help="ResNet stem width (64: ResNet-18)")
    p.add_argument("--min-run-time", type=float, default=None, help="seconds per timing")
    p.add_argument("--budget-s", type=float, default=230.0, help="skip sections past this")
    p.add_argument("--out", default="results/gpu_check.md", help="markdown file to write")
    return p.parse_args(argv)


def _device(name: str) -> torch.device:
    """``--device`` as a ``torch.device`` (the suite's one device parser; ``GpuCheckError``)."""
    from suite.runtime import DeviceError, parse_device

    try:
        return parse_device(name, allowed=("cuda", "cpu"))
    except DeviceError as exc:
        raise GpuCheckError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run every section, print the tables, write them to ``--out``; 0 unless a check failed."""
    args = parse_args(argv)
    device = _device(args.device)
    cuda = device.type == "cuda"
    amps = (args.amp or ("bf16,fp16" if cuda else "bf16")).split(",")
    bad = [a for a in amps if a not in AMP_DTYPES]
    if bad:
        raise GpuCheckError(f"--amp {bad} not supported; allowed: {sorted(AMP_DTYPES)}")
    sparsities = [float(s) for s in args.sparsities.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    dtypes = [torch.float32, torch.bfloat16] if cuda else [torch.float32]
    min_run_time = args.min_run_time if args.min_run_time is not None else (0.2 if cuda else 0.02)
    train_batch = args.train_batch or (128 if cuda else 4)

    t0 = time.perf_counter()
    sections: list[tuple[str, Callable[[], Table]]] = [
        ("environment", lambda: environment(device)),
        ("gpu tests", lambda: gpu_tests(device, timeout_s=max(30.0, args.budget_s / 2))),
        (
            "kernels",
            lambda: kernels(device, SHAPES[args.shapes], sparsities, batches, dtypes, min_run_time),
        ),  # fmt: skip
        ("training", lambda: training(device, amps, args.steps, train_batch, args.width)),
    ]
    tables: list[Table] = []
    for name, build in sections:
        spent = time.perf_counter() - t0
        if spent > args.budget_s:
            tables.append(Table(name, ["status"], [[f"skipped: {spent:.0f} s > budget"]]))
            continue
        t = time.perf_counter()
        table = build()
        table.title += f" ({time.perf_counter() - t:.1f} s)"
        tables.append(table)
        print(table.markdown(), flush=True)
    total = time.perf_counter() - t0
    text = f"## GPU check ({device}, {total:.0f} s)\n\n" + "\n".join(t.markdown() for t in tables)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"total {total:.1f} s; written to {out}")
    failed = any("FAILED" in cell for t in tables for row in t.rows for cell in row)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
