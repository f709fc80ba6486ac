"""Data sets behind one registry: ``digits``, ``cifar10``, ``imagenet``, ``synthetic``.

::

    from suite.data import DATASETS, create_dataset
    bundle = create_dataset("digits", seed=0)   # DataBundle(train, test, input_shape, ...)

Every factory takes keyword arguments (the ``dataset`` config group minus ``name``) and returns
a :class:`DataBundle`. A new data set is one ``@DATASETS.register("name")`` function here (or in
a module that imports this one). Missing data raises :class:`DatasetNotFoundError` saying where
the loader looked and how to get the data.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from backends.registry import Registry

DATASETS: Registry = Registry("dataset")
#: name -> ``shape(**options) -> (input_shape, num_classes)``: a data set's sample shape from its
#: config alone, without reading data (the bench builds models of experiments it has no data of)
SHAPES: dict[str, Callable[..., tuple[tuple[int, ...], int]]] = {}

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetNotFoundError(FileNotFoundError):
    """The data of a data set is not where the config says; the message says how to get it."""


@dataclass
class DataBundle:
    """A data set ready for training.

    Attributes:
        train: training split; items are ``(x, y)`` with x float32 of ``input_shape``, y int64.
        test: evaluation split, same item format.
        input_shape: shape of one input, e.g. ``(1, 8, 8)`` or ``(3, 224, 224)``.
        num_classes: number of classes.
    """

    train: Dataset
    test: Dataset
    input_shape: tuple[int, ...]
    num_classes: int


def create_dataset(name: str, **kwargs) -> DataBundle:
    """Build the data set registered as ``name`` (``UnknownNameError`` lists the known ones)."""
    return DATASETS.create(name, **kwargs)


def names() -> list[str]:
    """Every registered data set name, sorted."""
    return DATASETS.names()


def sample_shape(name: str, /, **options: Any) -> tuple[tuple[int, ...], int]:
    """``(input_shape, num_classes)`` of data set ``name`` with config ``options`` (its
    ``dataset`` group minus ``name``), known without reading any data.

    Raises:
        UnknownNameError: ``name`` is not a registered data set (the known ones listed).
    """
    DATASETS.get(name)  # an unknown name: the registry's error, listing the known ones
    return SHAPES[name](**options)


def _shape(name: str, shape: Callable[..., tuple[tuple[int, ...], int]]) -> Callable:
    """Decorator: record ``shape`` as data set ``name``'s :data:`SHAPES` entry."""

    def decorator(factory: Callable) -> Callable:
        SHAPES[name] = shape
        return factory

    return decorator


# --------------------------------------------------------------------------- digits


@DATASETS.register("digits")
@_shape("digits", lambda **_: ((1, 8, 8), 10))
def digits(
    seed: int = 0,
    test_fraction: float = 0.2,
    root: str | None = None,
    val_fraction: float = 0.0,
    **_: object,
) -> DataBundle:
    """scikit-learn's 8x8 digits (1797 images, 10 classes; ships with scikit-learn, offline).

    The split is a stratified shuffle fixed by ``seed``; pixels are standardised per position
    with the training split's mean and standard deviation. Inputs are float32 [1, 8, 8].

    ``val_fraction`` > 0 is for tuning hyperparameters: that fraction of the training split
    (stratified, fixed by ``seed``) is held out and returned as the bundle's ``test`` split,
    the rest as ``train``; the test split proper is never read (``+dataset.val_fraction=0.2``
    on the command line; 0, the default, trains on the whole training split).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"digits: test_fraction {test_fraction!r} must be in (0, 1)")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"digits: val_fraction {val_fraction!r} must be in [0, 1)")
    data = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        data.data.astype(np.float32),
        data.target.astype(np.int64),
        test_size=test_fraction,
        random_state=seed,
        stratify=data.target,
    )
    if val_fraction > 0.0:  # the held-out part of the training split replaces the test split
        x_tr, x_te, y_tr, y_te = train_test_split(
            x_tr, y_tr, test_size=val_fraction, random_state=seed, stratify=y_tr
        )
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std < 1e-6] = 1.0

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        x = ((x - mean) / std).reshape(-1, 1, 8, 8)
        return TensorDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))

    return DataBundle(tensors(x_tr, y_tr), tensors(x_te, y_te), (1, 8, 8), 10)


# --------------------------------------------------------------------------- synthetic


@DATASETS.register("synthetic")
@_shape(
    "synthetic",
    lambda input_shape=(3, 32, 32), num_classes=10, **_: (
        tuple(int(s) for s in input_shape),
        int(num_classes),
    ),
)
def synthetic(
    seed: int = 0,
    input_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    train_size: int = 64,
    test_size: int = 32,
    root: str | None = None,
    **_: object,
) -> DataBundle:
    """Random standard-normal inputs float32 [*input_shape] with uniform random labels, seeded.

    For smoke tests of any model at its real input shape without data on disk.
    """
    shape = tuple(int(s) for s in input_shape)
    if num_classes < 1 or train_size < 1 or test_size < 1 or not shape:
        raise ValueError(
            f"synthetic: need num_classes, train_size, test_size >= 1 and a non-empty "
            f"input_shape; got {num_classes}, {train_size}, {test_size}, {shape}"
        )
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> TensorDataset:
        x = torch.randn((n, *shape), generator=gen)
        y = torch.randint(0, num_classes, (n,), generator=gen)
        return TensorDataset(x, y)

    return DataBundle(split(train_size), split(test_size), shape, int(num_classes))


# --------------------------------------------------------------------------- cifar10


@DATASETS.register("cifar10")
@_shape("cifar10", lambda **_: ((3, 32, 32), 10))
def cifar10(root: str | None = None, augment: bool = True, **_: object) -> DataBundle:
    """CIFAR-10 in torchvision's on-disk format under ``root/cifar-10-batches-py``.

    Training transform: random crop 32 with padding 4, horizontal flip, normalise; test:
    normalise. Inputs are float32 [3, 32, 32]. Nothing is downloaded.
    """
    from torchvision import datasets, transforms

    root_path = _need_root("cifar10", root)
    folder = root_path / datasets.CIFAR10.base_folder
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"cifar10: no CIFAR-10 data at {folder} (dataset.root={root!r}). Get it with "
            f"`python -c \"import torchvision; torchvision.datasets.CIFAR10('{root_path}', "
            f'download=True)"` on a machine with internet (or copy the extracted '
            f"cifar-10-batches-py folder there), then set dataset.root={root_path}"
        )
    norm = transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)
    train_tf = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    train_tf = (train_tf if augment else []) + [transforms.ToTensor(), norm]
    test_tf = transforms.Compose([transforms.ToTensor(), norm])
    try:
        train = datasets.CIFAR10(
            str(root_path), train=True, transform=transforms.Compose(train_tf), download=False
        )
        test = datasets.CIFAR10(str(root_path), train=False, transform=test_tf, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted."
        raise DatasetNotFoundError(
            f"cifar10: the files under {folder} are missing or fail their md5 check ({exc}). "
            "Re-extract cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html"
        ) from exc
    return DataBundle(train, test, (3, 32, 32), 10)


# --------------------------------------------------------------------------- imagenet


@DATASETS.register("imagenet")
@_shape("imagenet", lambda image_size=224, **_: ((3, int(image_size), int(image_size)), 1000))
def imagenet(
    root: str | None = None, image_size: int = 224, resize: int = 256, **_: object
) -> DataBundle:
    """ImageNet (or any ImageFolder data set) with ``root/train/<class>/*`` and ``root/val/...``.

    Training: RandomResizedCrop(image_size) + horizontal flip + normalise; evaluation:
    Resize(resize) + CenterCrop(image_size) + normalise. Inputs float32 [3, size, size].
    """
    from torchvision import datasets, transforms

    root_path = _need_root("imagenet", root)
    splits = {s: root_path / s for s in ("train", "val")}
    missing = [str(p) for p in splits.values() if not p.is_dir()]
    if missing:
        raise DatasetNotFoundError(
            f"imagenet: missing folder(s) {missing} (dataset.root={root!r}). Download ILSVRC2012 "
            "from https://image-net.org (an account is needed), extract it as "
            "root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG (e.g. with the "
            "valprep.sh script for val), then set dataset.root"
        )
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            norm,
        ]
    )
    test_tf = transforms.Compose(
        [transforms.Resize(resize), transforms.CenterCrop(image_size), transforms.ToTensor(), norm]
    )
    train = datasets.ImageFolder(str(splits["train"]), transform=train_tf)
    test = datasets.ImageFolder(str(splits["val"]), transform=test_tf)
    if train.classes != test.classes:
        raise ValueError(
            f"imagenet: train has {len(train.classes)} classes, val has {len(test.classes)}; "
            "both folders need the same class sub-folders"
        )
    return DataBundle(train, test, (3, image_size, image_size), len(train.classes))


def _need_root(name: str, root: str | None) -> Path:
    if root is None or str(root) == "":
        env = os.environ.get("SRIGL_DATA")
        if not env:
            raise DatasetNotFoundError(
                f"{name}: no data root given; set dataset.root=/path/to/data (or the "
                "SRIGL_DATA environment variable)"
            )
        return Path(env).expanduser()
    return Path(str(root)).expanduser()


# --------------------------------------------------------------------------- loaders


class TensorBatches:
    """Batches of an in-memory ``TensorDataset`` by slicing, much cheaper than a DataLoader.

    The order comes from ``sampler`` (:class:`GlobalBatchSampler` or :class:`ShardSampler`);
    each item is ``(x [b, ...], y [b])``.
    """

    def __init__(self, dataset: TensorDataset, batch_size: int, sampler) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampler = sampler

    def __len__(self) -> int:
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield tuple(t[idx] for t in self.dataset.tensors)


class GlobalBatchSampler:
    """Training order that does not depend on the number of ranks.

    Each epoch shuffles all ``n`` indices with a generator seeded by ``seed + epoch`` and cuts
    the permutation into global batches of ``batch_size * world_size``; rank ``r`` takes the
    ``r``-th contiguous slice of each. So the union of the ranks' micro-batches equals the
    one-process batch, and DDP (which averages gradients) follows the one-process run. The
    last, partial global batch is split as evenly as possible; if it has fewer items than
    there are ranks it is dropped (every rank must see the same number of batches).
    """

    def __init__(
        self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of ``epoch`` (call before iterating)."""
        self.epoch = epoch

    def _parts(self) -> list[tuple[int, int]]:
        """(start, stop) of this rank's slice of every global batch, in permutation order."""
        glob = self.batch_size * self.world_size
        parts = []
        for start in range(0, self.n, glob):
            size = min(glob, self.n - start)
            if size < self.world_size:
                break
            bounds = np.linspace(0, size, self.world_size + 1).round().astype(int)
            if size == glob:
                bounds = np.arange(self.world_size + 1) * self.batch_size
            parts.append((start + int(bounds[self.rank]), start + int(bounds[self.rank + 1])))
        return parts

    def batches(self) -> int:
        """Micro-batches per epoch on this rank (the same on every rank)."""
        return len(self._parts())

    def __len__(self) -> int:
        return sum(b - a for a, b in self._parts())

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=gen).tolist()
        for a, b in self._parts():
            yield from order[a:b]


class ShardSampler:
    """Indices ``rank, rank + world, ...`` of a data set of ``n`` items: every item is seen by
    exactly one rank (no padding, unlike ``DistributedSampler``), in order. For evaluation."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, n, world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do: evaluation order does not depend on the epoch."""


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
):
    """An iterable of ``(x, y)`` batches of one rank's share of ``dataset``.

    Training order is a :class:`GlobalBatchSampler`: shuffled from ``seed`` and the epoch
    (call ``loader.sampler.set_epoch(e)``), so a resumed run sees the same batches as an
    uninterrupted one, and N ranks together see the one-process batches; evaluation uses
    :class:`ShardSampler`. ``batch_size`` is per rank. In-memory tensor
    data sets are sliced directly (:class:`TensorBatches`); others use a ``DataLoader``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if train:
        sampler = GlobalBatchSampler(len(dataset), batch_size, rank, world_size, seed)
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
    if isinstance(dataset, TensorDataset) and num_workers == 0:
        return TensorBatches(dataset, batch_size, sampler)
    from torch.utils.data import DataLoader

    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=gen,
    )
