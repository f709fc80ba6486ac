"""Training: the cost of a topology update and of a training step, and digits accuracy.

- ``TopologyUpdate``: one optimizer step of torchvision's ResNet-50 (``weights=None``, 90%,
  ERK) with a fake dense gradient (a surrogate loss ``sum(p * g)`` whose backward is cheap but
  goes through the trainer's gradient hooks like a real one), with and without a topology
  update in ``trainer.step()``.
- ``TrainingStep``: one full step (forward, backward, optimizer, trainer) of the digits MLP
  64-512-512-10, batch 128.
- ``DigitsAccuracy``: top-1 ERROR (%) after training the embedded default ``digits_mlp`` with
  ``suite.train`` for the profile's ``asv.train_epochs`` epochs (lower is better).
"""

from __future__ import annotations

import tempfile
from typing import Any

from suite.runtime import set_threads

from ._common import THREADS, asv_setting, require

UPDATE_TRAINERS = ("rigl", "srigl")
STEP_TRAINERS = ("dense", "rigl", "srigl")
ACCURACY_METHODS = ("dense", "rigl", "srigl")
ACCURACY_SPARSITIES = (0.9, 0.99)
NEVER = 10**9  # a delta_t no benchmark reaches: trainer.step() never updates


def _trainer(name: str, model: Any, optimizer: Any, sparsity: float, delta_t: int) -> Any:
    srigl = require("srigl", "create_trainer", "trainer_names")
    if name not in srigl.trainer_names():
        raise NotImplementedError(f"trainer {name!r} not registered: {srigl.trainer_names()}")
    return srigl.create_trainer(
        name,
        model,
        optimizer,
        sparsity=sparsity,
        distribution="erk",
        total_steps=10 * NEVER,
        delta_t=delta_t,
    )


class TopologyUpdate:
    """Seconds per ResNet-50 step (fake gradient + SGD + ``trainer.step()``), 2 threads."""

    params = (list(UPDATE_TRAINERS), [False, True])
    param_names = ["trainer", "update"]
    version = "1"
    processes = 1
    number = 1
    repeat = (1, 3, 5.0)
    warmup_time = 0.0
    min_run_count = 1
    timeout = 300

    def setup(self, trainer: str, update: bool) -> None:
        import torch
        from torchvision.models import resnet50

        set_threads(THREADS, grad=True)
        torch.manual_seed(0)
        self.model = resnet50(weights=None)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.trainer = _trainer(trainer, self.model, self.optimizer, 0.9, 1 if update else NEVER)
        gen = torch.Generator().manual_seed(1)
        self.fake = [(p, torch.randn(p.shape, generator=gen)) for p in self.model.parameters()]

    def time_step(self, trainer: str, update: bool) -> None:
        surrogate = sum((p * g).sum() for p, g in self.fake)
        surrogate.backward()
        self.optimizer.step()
        self.trainer.step()
        self.optimizer.zero_grad()


class TrainingStep:
    """Seconds per training step of the digits MLP 64-512-512-10 at 90%, batch 128."""

    params = (list(STEP_TRAINERS),)
    param_names = ["trainer"]
    version = "1"
    processes = 1
    repeat = (3, 10, 1.0)
    warmup_time = 0.05
    timeout = 120

    def setup(self, trainer: str) -> None:
        import torch
        from torch import nn

        set_threads(THREADS, grad=True)
        torch.manual_seed(0)
        self.model = nn.Sequential(
            nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.trainer = _trainer(trainer, self.model, self.optimizer, 0.9, NEVER)
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(128, 64, generator=gen)
        self.y = torch.randint(0, 10, (128,), generator=gen)
        self.loss = nn.CrossEntropyLoss()

    def time_step(self, trainer: str) -> None:
        self.loss(self.model(self.x), self.y).backward()
        self.optimizer.step()
        self.trainer.step()
        self.optimizer.zero_grad()


def train_digits(method: str, sparsity: float, epochs: int, workdir: str) -> float:
    """Train ``experiment=digits_mlp`` with ``suite.train`` and return its top-1 error (%).

    Raises:
        NotImplementedError: ``suite.train`` (compose/run) does not exist at this commit.
    """
    train = require("suite.train", "compose", "run")
    cfg = train.compose(
        [
            "experiment=digits_mlp",
            f"trainer={method}",
            f"sparsity={sparsity}",
            "seed=0",
            f"training.epochs={epochs}",
            "device=cpu",
            f"results_dir={workdir}/runs",
            f"checkpoint_dir={workdir}/checkpoints",
        ]
    )
    record = train.run(cfg)
    return float(record["metrics"]["top1_error"])


class DigitsAccuracy:
    """Top-1 error (%) on the digits test split after brief training (lower is better).

    ``dense`` ignores the sparsity: it is trained once and reported at both sparsities, as the
    reference line of each.
    """

    params = (list(ACCURACY_METHODS), list(ACCURACY_SPARSITIES))
    param_names = ["method", "sparsity"]
    version = "1"
    timeout = 900

    def setup_cache(self) -> dict[str, Any]:
        set_threads(THREADS, grad=True)
        epochs = int(asv_setting("train_epochs", 10))
        errors: dict[str, Any] = {}
        first = ACCURACY_SPARSITIES[0]
        try:
            with tempfile.TemporaryDirectory(prefix="srigl-asv-") as workdir:
                for method in ACCURACY_METHODS:
                    for sparsity in ACCURACY_SPARSITIES:
                        key = f"{method}@{sparsity}"
                        if method == "dense" and sparsity != first:
                            errors[key] = errors[f"{method}@{first}"]
                        else:
                            errors[key] = train_digits(method, sparsity, epochs, workdir)
        except NotImplementedError as err:  # an older commit: every combination is skipped
            return {"skip": str(err)}
        return errors

    def setup(self, errors: dict[str, Any], method: str, sparsity: float) -> None:
        if "skip" in errors:
            raise NotImplementedError(errors["skip"])

    def track_top1_error(self, errors: dict[str, Any], method: str, sparsity: float) -> float:
        return errors[f"{method}@{sparsity}"]

    track_top1_error.unit = "%"
