"""Data sets of the harness: digits, synthetic, the real CIFAR-10 and ImageFolder loaders on
small files written in their real formats, missing-data errors, and the batch loaders."""

from __future__ import annotations

import hashlib
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from backends.registry import UnknownNameError
from suite import data
from suite.data import (
    SHAPES,
    DatasetNotFoundError,
    create_dataset,
    make_loader,
    names,
    sample_shape,
)

CONF = Path(data.__file__).resolve().parent / "conf"


def test_every_registered_dataset_has_a_config_and_every_config_a_dataset():
    configs = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))
    assert configs == data.names()


def test_unknown_dataset_error_lists_the_known_names():
    with pytest.raises(UnknownNameError, match="digits"):
        create_dataset("mnist-typo")


# --------------------------------------------------------------------------- digits


def test_digits_gives_standardised_1x8x8_images_of_ten_classes():
    bundle = create_dataset("digits", seed=0)
    x, y = bundle.train.tensors
    assert bundle.input_shape == (1, 8, 8) and bundle.num_classes == 10
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(bundle.train) + len(bundle.test) == 1797
    flat = x.reshape(len(x), -1)
    used = flat.std(0) > 0
    assert torch.allclose(flat.mean(0), torch.zeros(64), atol=1e-4)
    assert torch.allclose(flat.std(0, unbiased=False)[used], torch.ones(int(used.sum())), atol=1e-3)
    assert set(y.tolist()) == set(range(10))


def test_digits_split_is_fixed_by_the_seed():
    a, b, c = (create_dataset("digits", seed=s) for s in (0, 0, 1))
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    assert not torch.equal(a.test.tensors[1], c.test.tensors[1])


def test_digits_rejects_a_test_fraction_outside_zero_one():
    with pytest.raises(ValueError, match="test_fraction"):
        create_dataset("digits", test_fraction=1.5)


def test_digits_val_fraction_holds_out_part_of_the_training_split_and_never_the_test_split():
    full = create_dataset("digits", seed=0)
    tuning = create_dataset("digits", seed=0, val_fraction=0.2)
    assert len(tuning.train) + len(tuning.test) == len(full.train)  # the test split unread
    assert len(tuning.test) == math.ceil(0.2 * len(full.train))  # scikit-learn rounds up
    labels = torch.cat([tuning.train.tensors[1], tuning.test.tensors[1]])
    assert torch.equal(labels.bincount(), full.train.tensors[1].bincount())


def test_digits_rejects_a_val_fraction_outside_zero_one():
    with pytest.raises(ValueError, match=r"val_fraction 1\.0 must be in \[0, 1\)"):
        create_dataset("digits", val_fraction=1.0)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_has_the_configured_shape_classes_and_sizes_and_is_seeded():
    a = create_dataset(
        "synthetic", seed=3, input_shape=[3, 16, 16], num_classes=7, train_size=5, test_size=4
    )
    b = create_dataset(
        "synthetic", seed=3, input_shape=[3, 16, 16], num_classes=7, train_size=5, test_size=4
    )
    assert a.input_shape == (3, 16, 16) and a.num_classes == 7
    assert a.train.tensors[0].shape == (5, 3, 16, 16) and len(a.test) == 4
    assert int(a.train.tensors[1].max()) < 7
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])


def test_synthetic_rejects_zero_classes():
    with pytest.raises(ValueError, match="num_classes"):
        create_dataset("synthetic", num_classes=0)


# --------------------------------------------------------------------------- CIFAR-10


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    """A CIFAR-10 folder in the real pickled-batch format (5 + 1 batches of 4 images), with
    torchvision's expected md5 sums patched to these files' own sums (the check stays on)."""
    from torchvision.datasets import CIFAR10

    folder = tmp_path / CIFAR10.base_folder
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            "data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, 4)],
            "batch_label": name,
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, fh, protocol=2)
    sums = {n: _md5(folder / n) for n in names}
    monkeypatch.setattr(CIFAR10, "train_list", [[n, sums[n]] for n in names[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", sums["test_batch"]]])
    monkeypatch.setattr(
        CIFAR10,
        "meta",
        {"filename": "batches.meta", "key": "label_names", "md5": _md5(folder / "batches.meta")},
    )
    return tmp_path


def test_cifar10_loads_the_real_on_disk_format_with_augmentation_and_normalisation(tiny_cifar):
    bundle = create_dataset("cifar10", root=str(tiny_cifar))
    assert bundle.input_shape == (3, 32, 32) and bundle.num_classes == 10
    assert len(bundle.train) == 20 and len(bundle.test) == 4
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    xt, _ = bundle.test[0]
    assert float(xt.abs().max()) > 1.0  # normalised, not in [0, 1]
    torch.manual_seed(0)
    views = {tuple(bundle.train[0][0].flatten()[:50].tolist()) for _ in range(8)}
    assert len(views) > 1  # random crop / flip change the training view
    assert torch.equal(bundle.test[0][0], bundle.test[0][0])  # evaluation is deterministic


def test_cifar10_files_failing_their_md5_check_give_a_clear_error(tiny_cifar):
    with open(tiny_cifar / "cifar-10-batches-py" / "data_batch_3", "ab") as fh:
        fh.write(b"corrupt")
    with pytest.raises(DatasetNotFoundError, match="md5"):
        create_dataset("cifar10", root=str(tiny_cifar))


def test_cifar10_missing_data_error_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        create_dataset("cifar10", root=str(tmp_path / "nowhere"))
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    assert "download=True" in message and "dataset.root" in message


def test_dataset_without_any_root_names_the_config_key(monkeypatch):
    monkeypatch.delenv("SRIGL_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match="dataset.root"):
        create_dataset("cifar10", root=None)


# --------------------------------------------------------------------------- ImageFolder


@pytest.fixture
def tiny_imagenet(tmp_path):
    """root/train/<class>/*.png and root/val/<class>/*.jpg with two classes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, ext in (("train", "png"), ("val", "jpg")):
        for cls in ("n01440764", "n01443537"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"img{i}.{ext}")
    return tmp_path


def test_imagenet_reads_an_image_folder_with_train_and_eval_transforms(tiny_imagenet):
    bundle = create_dataset("imagenet", root=str(tiny_imagenet), image_size=32, resize=36)
    assert bundle.input_shape == (3, 32, 32) and bundle.num_classes == 2
    assert len(bundle.train) == 4 and len(bundle.test) == 4
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and y in (0, 1)
    assert bundle.test[3][0].shape == (3, 32, 32) and bundle.test[3][1] == 1


def test_imagenet_missing_folders_error_names_them_and_how_to_get_the_data(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        create_dataset("imagenet", root=str(tmp_path))
    assert str(tmp_path / "val") in str(info.value) and "image-net.org" in str(info.value)


# --------------------------------------------------------------------------- loaders


def _tensor_data(n: int = 10) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n))


def test_training_order_is_a_fixed_shuffle_per_epoch_seed():
    loader = make_loader(_tensor_data(), 4, train=True, seed=1)

    def order(epoch):
        loader.sampler.set_epoch(epoch)
        return torch.cat([y for _, y in loader]).tolist()

    first = order(0)
    assert sorted(first) == list(range(10)) and first != list(range(10))
    assert order(0) == first and order(1) != first
    assert len(loader) == 3


@pytest.mark.parametrize("n", [10, 11, 12])
def test_ranks_together_see_exactly_the_one_process_batches(n):
    single = make_loader(_tensor_data(n), 4, train=True, seed=5)
    ranks = [
        make_loader(_tensor_data(n), 2, train=True, seed=5, rank=r, world_size=2) for r in (0, 1)
    ]
    for loader in (single, *ranks):
        loader.sampler.set_epoch(2)
    one = [y.tolist() for _, y in single]
    two = [[y.tolist() for _, y in loader] for loader in ranks]
    assert len(two[0]) == len(two[1]) == len(ranks[0])
    joined = [a + b for a, b in zip(*two)]
    if n % 4 == 1:  # a last global batch smaller than the world size is dropped
        assert joined == one[:-1]
    else:
        assert joined == one


def test_evaluation_shards_see_every_item_once():
    test = [make_loader(_tensor_data(7), 3, train=False, rank=r, world_size=2) for r in (0, 1)]
    seen = [torch.cat([y for _, y in loader]).tolist() for loader in test]
    assert sorted(seen[0] + seen[1]) == list(range(7))


def test_non_tensor_data_sets_go_through_a_dataloader_with_the_same_order():
    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.tensor([float(i)]), i

    fast = make_loader(_tensor_data(), 4, train=True, seed=2)
    slow = make_loader(Items(), 4, train=True, seed=2)
    fast.sampler.set_epoch(3)
    slow.sampler.set_epoch(3)
    assert torch.cat([y for _, y in fast]).tolist() == torch.cat([y for _, y in slow]).tolist()


def test_batch_size_below_one_is_rejected():
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(_tensor_data(), 0, train=True)


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_sample_shape_matches_the_built_data_set(name):
    bundle = create_dataset(name, seed=0)
    assert sample_shape(name) == (tuple(bundle.input_shape), bundle.num_classes)


def test_sample_shape_follows_the_config_options():
    assert sample_shape("imagenet", image_size=160) == ((3, 160, 160), 1000)
    assert sample_shape("synthetic", input_shape=[2, 5], num_classes=3) == ((2, 5), 3)


def test_every_registered_data_set_has_a_sample_shape():
    assert sorted(SHAPES) == names()
