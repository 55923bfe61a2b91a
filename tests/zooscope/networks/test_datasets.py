"""Data set loading: digits' seeded split, local loaders on tiny files in the real formats, queries."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat
from sklearn.datasets import load_digits

from zooscope.errors import DatasetNotFoundError
from zooscope.networks.datasets import (
    DATASETS,
    EUROSAT_CLASSES,
    ImageDataset,
    QuerySampler,
    load_dataset,
    read_cifar_batch,
    stratified_split,
)


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_dataset("digits")


def pixel_rows(dataset: ImageDataset, scale: float) -> list[tuple[int, ...]]:
    """Every image of every split back in integer pixel units, one tuple per image."""
    rows = []
    for split in (dataset.train, dataset.val, dataset.test):
        pixels = torch.round(dataset.unnormalise(split.x) * scale).to(torch.int64)
        rows += [tuple(r) for r in pixels.reshape(len(split), -1).tolist()]
    return rows


def random_images(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# ---- digits and splitting --------------------------------------------------------------------------


def test_digits_split_is_a_partition_of_the_whole_set(digits: ImageDataset) -> None:
    original = Counter(tuple(r) for r in load_digits().images.reshape(-1, 64).astype(np.int64).tolist())
    assert Counter(pixel_rows(digits, scale=16.0)) == original
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797


def test_digits_split_fractions_and_strata(digits: ImageDataset) -> None:
    total = 1797
    assert abs(len(digits.train) / total - 0.6) < 0.01
    assert abs(len(digits.val) / total - 0.1) < 0.01
    assert abs(len(digits.test) / total - 0.3) < 0.01
    overall = torch.bincount(torch.as_tensor(load_digits().target), minlength=10).double() / total
    for split in (digits.train, digits.val, digits.test):
        share = torch.bincount(split.y, minlength=10).double() / len(split)
        assert torch.allclose(share, overall, atol=0.02)


def test_digits_is_deterministic_per_seed(digits: ImageDataset) -> None:
    again = load_dataset("digits", seed=0)
    assert torch.equal(again.train.x, digits.train.x) and torch.equal(again.test.y, digits.test.y)
    other = load_dataset("digits", seed=1)
    assert not torch.equal(other.test.y, digits.test.y)


def test_digits_is_normalised_with_train_statistics(digits: ImageDataset) -> None:
    assert digits.train.x.dtype == torch.float32 and digits.train.y.dtype == torch.int64
    assert abs(digits.train.x.mean().item()) < 1e-4
    assert abs(digits.train.x.std(unbiased=False).item() - 1.0) < 1e-4
    # Other splits use the train statistics, so they are close to, but not exactly, standardised.
    assert abs(digits.test.x.mean().item()) < 0.1
    assert digits.input_shape == (1, 8, 8) and digits.n_classes == 10
    described = digits.describe()
    assert described["sizes"] == {
        "train": len(digits.train),
        "val": len(digits.val),
        "test": len(digits.test),
    }
    assert described["mean"] == list(digits.mean) and described["input_shape"] == [1, 8, 8]


def test_resize_gives_the_requested_shape() -> None:
    resized = load_dataset("digits", resize=28)
    assert resized.input_shape == (1, 28, 28)
    assert resized.test.x.shape[1:] == (1, 28, 28)
    assert resized.describe()["resize"] == 28


def test_stratified_split_is_disjoint_and_complete() -> None:
    labels = torch.tensor([0] * 7 + [1] * 13 + [2] * 3)
    parts = stratified_split(labels, (0.6, 0.1, 0.3), seed=3)
    together = torch.cat(parts)
    assert sorted(together.tolist()) == list(range(len(labels)))
    assert torch.equal(labels[parts[2]].bincount(minlength=3), torch.tensor([2, 4, 1]))


def test_unknown_data_set_names_the_known_ones() -> None:
    with pytest.raises(DatasetNotFoundError, match="cifar10"):
        load_dataset("imagenet")
    assert "digits" in DATASETS


# ---- MNIST and Fashion-MNIST -----------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx_set(
    folder: Path, compress: bool, n_train: int = 100, n_test: int = 20
) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": random_images((n_train, 28, 28), seed=1),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": random_images((n_test, 28, 28), seed=2),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    for name, array in arrays.items():
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        else:
            (folder / name).write_bytes(idx_bytes(array))
    return arrays


@pytest.mark.parametrize(
    ("name", "subfolder", "compress"),
    [("mnist", "MNIST/raw", False), ("fashion_mnist", "FashionMNIST/raw", True), ("mnist", "", True)],
)
def test_idx_loaders_read_the_standard_files(
    tmp_path: Path, name: str, subfolder: str, compress: bool
) -> None:
    arrays = write_idx_set(tmp_path / subfolder, compress)
    dataset = load_dataset(name, tmp_path)
    assert dataset.input_shape == (1, 28, 28)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (90, 10, 20)
    test_pixels = torch.round(dataset.unnormalise(dataset.test.x) * 255).to(torch.uint8)
    assert torch.equal(test_pixels[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert torch.equal(dataset.test.y, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    # Val is carved from train: together they hold exactly the train file's labels.
    carved = torch.cat([dataset.train.y, dataset.val.y]).bincount(minlength=10)
    assert torch.equal(carved, torch.full((10,), 10))


def test_missing_idx_files_are_named_with_the_folders_searched(tmp_path: Path) -> None:
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("mnist", tmp_path)
    message = str(error.value)
    for expected in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte.gz", str(tmp_path / "MNIST" / "raw")):
        assert expected in message


def test_default_root_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOOSCOPE_DATA_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetNotFoundError, match="elsewhere"):
        load_dataset("fashion_mnist")
    write_idx_set(tmp_path / "elsewhere" / "FashionMNIST", compress=False)
    assert len(load_dataset("fashion_mnist").test) == 20


def test_truncated_idx_file_is_reported(tmp_path: Path) -> None:
    write_idx_set(tmp_path, compress=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DatasetNotFoundError, match="truncated"):
        load_dataset("mnist", tmp_path)


# ---- SVHN ------------------------------------------------------------------------------------------


def test_svhn_reads_mat_files_and_maps_label_ten_to_zero(tmp_path: Path) -> None:
    folder = tmp_path / "SVHN"
    folder.mkdir()
    train_x, test_x = random_images((32, 32, 3, 40), seed=3), random_images((32, 32, 3, 12), seed=4)
    train_y = (np.arange(40) % 10 + 1).reshape(-1, 1)  # SVHN labels run 1..10
    test_y = (np.arange(12) % 10 + 1).reshape(-1, 1)
    savemat(folder / "train_32x32.mat", {"X": train_x, "y": train_y})
    savemat(folder / "test_32x32.mat", {"X": test_x, "y": test_y})
    dataset = load_dataset("svhn", tmp_path)
    assert dataset.input_shape == (3, 32, 32)
    assert (len(dataset.train) + len(dataset.val), len(dataset.test)) == (40, 12)
    assert torch.equal(dataset.test.y, torch.from_numpy(test_y.reshape(-1) % 10))
    first = torch.round(dataset.unnormalise(dataset.test.x[:1]) * 255).to(torch.uint8)[0]
    assert torch.equal(first, torch.from_numpy(test_x[:, :, :, 0]).permute(2, 0, 1))


# ---- CIFAR-10 --------------------------------------------------------------------------------------


def write_cifar(folder: Path, per_batch: int = 10) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    written = {}
    for index, name in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
        data = random_images((per_batch, 3072), seed=10 + index)
        labels = [(i + index) % 10 for i in range(per_batch)]
        if name == "test_batch":  # a Python 3 pickle with str keys
            content = pickle.dumps({"data": data, "labels": labels}, protocol=4)
        else:  # bytes keys and protocol 2, as the original Python 2 files
            content = pickle.dumps({b"batch_label": b"x", b"data": data, b"labels": labels}, protocol=2)
        (folder / name).write_bytes(content)
        written[name] = data
    return written


def test_cifar10_reads_pickled_batches(tmp_path: Path) -> None:
    written = write_cifar(tmp_path / "cifar-10-batches-py")
    dataset = load_dataset("cifar10", tmp_path)
    assert dataset.input_shape == (3, 32, 32)
    assert (len(dataset.train) + len(dataset.val), len(dataset.test)) == (50, 10)
    pixels = torch.round(dataset.unnormalise(dataset.test.x) * 255).to(torch.uint8)
    assert torch.equal(pixels.reshape(10, -1), torch.from_numpy(written["test_batch"]))


class CreatesFile:
    def __init__(self, path: Path, via_shell: bool) -> None:
        self.path, self.via_shell = str(path), via_shell

    def __reduce__(self):
        if self.via_shell:
            return (os.system, (f"touch {self.path}",))
        return (open, (self.path, "w"))


@pytest.mark.parametrize("via_shell", [True, False], ids=["os.system", "builtins.open"])
def test_malicious_cifar_pickle_is_refused_without_side_effect(tmp_path: Path, via_shell: bool) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py")
    marker = tmp_path / "pwned"
    evil = {b"data": CreatesFile(marker, via_shell), b"labels": [0]}
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DatasetNotFoundError, match="refused global"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


def test_cifar_batch_with_wrong_contents_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetNotFoundError, match="3072"):
        read_cifar_batch(path)


# ---- EuroSAT ---------------------------------------------------------------------------------------


def write_eurosat(folder: Path, per_class: int = 4) -> None:
    for index, cls in enumerate(EUROSAT_CLASSES):
        (folder / cls).mkdir(parents=True)
        for i in range(per_class):
            colour = (index * 25, 255 - index * 25, i * 60)
            Image.new("RGB", (64, 64), colour).save(folder / cls / f"{cls}_{i}.jpg", quality=95)


@pytest.mark.parametrize("layout", ["EuroSAT/2750", ""])
def test_eurosat_reads_class_folders_of_jpegs(tmp_path: Path, layout: str) -> None:
    write_eurosat(tmp_path / layout)
    dataset = load_dataset("eurosat", tmp_path, resize=32)
    assert dataset.input_shape == (3, 32, 32) and dataset.n_classes == 10
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (20, 10, 10)
    assert torch.equal(dataset.test.y.bincount(minlength=10), torch.ones(10, dtype=torch.int64))
    # Each class was written in its own colour: the red channel tells the class back.
    red = dataset.unnormalise(dataset.test.x)[:, 0].mean(dim=(1, 2)) * 255
    assert torch.allclose(red, dataset.test.y.double().float() * 25, atol=4)


def test_eurosat_missing_names_the_class_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="HerbaceousVegetation") as error:
        load_dataset("eurosat", tmp_path)
    assert str(tmp_path / "EuroSAT" / "2750") in str(error.value)


# ---- queries ---------------------------------------------------------------------------------------


def test_train_queries_are_fresh_train_inputs(digits: ImageDataset) -> None:
    sampler = QuerySampler(digits, n=32)
    generator = torch.Generator().manual_seed(0)
    first, second = sampler.sample(generator), sampler.sample(generator)
    assert first.shape == (32, 1, 8, 8)
    assert not torch.equal(first, second)
    rows = {tuple(r) for r in digits.train.x.reshape(len(digits.train), -1).tolist()}
    assert all(tuple(r) in rows for r in first.reshape(32, -1).tolist())
    again = sampler.sample(torch.Generator().manual_seed(0))
    assert torch.equal(again, first)


def test_uniform_queries_fill_the_data_range_evenly(digits: ImageDataset) -> None:
    queries = QuerySampler(digits, n=4096, source="uniform").sample(torch.Generator().manual_seed(0))
    assert queries.shape == (4096, 1, 8, 8)
    low, high = float(digits.train.x.min()), float(digits.train.x.max())
    assert queries.min() >= low and queries.max() <= high
    # Uniform on [low, high]: mean at the middle, variance (high - low)^2 / 12, every decile as full.
    assert float(queries.mean()) == pytest.approx((low + high) / 2, abs=0.01 * (high - low))
    assert float(queries.var()) == pytest.approx((high - low) ** 2 / 12, rel=0.02)
    deciles = torch.histc(queries, bins=10, min=low, max=high) / queries.numel()
    assert torch.allclose(deciles, torch.full((10,), 0.1), atol=0.005)


def test_noise_queries_of_recorded_configs_are_the_uniform_ones(digits: ImageDataset) -> None:
    noise = QuerySampler(digits, n=64, source="noise")
    assert noise.source == "uniform"
    uniform = QuerySampler(digits, n=64, source="uniform")
    draw = noise.sample(torch.Generator().manual_seed(3))
    assert torch.equal(draw, uniform.sample(torch.Generator().manual_seed(3)))


def test_gaussian_queries_have_the_train_split_moments_per_channel(
    tmp_path: Path, digits: ImageDataset
) -> None:
    queries = QuerySampler(digits, n=4096, source="gaussian").sample(torch.Generator().manual_seed(1))
    assert queries.shape == (4096, 1, 8, 8)
    # The train split is standardised per channel, so its moments are 0 and 1 (dataset normalisation).
    assert float(queries.mean()) == pytest.approx(float(digits.train.x.mean()), abs=0.01)
    assert float(queries.std()) == pytest.approx(float(digits.train.x.std()), rel=0.01)
    assert float(queries.max()) > float(digits.train.x.max())  # unbounded, unlike the uniform source
    # Per channel on an RGB set whose channels differ: each channel gets its own mean and spread.
    write_cifar(tmp_path / "cifar-10-batches-py")
    rgb = load_dataset("cifar10", tmp_path)
    tinted = torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1)
    scaled = torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1)
    rgb.train.x = rgb.train.x * scaled + tinted
    draw = QuerySampler(rgb, n=8192, source="gaussian").sample(torch.Generator().manual_seed(2))
    channels = draw.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(channels.mean(dim=1), tinted.flatten(), atol=0.05)
    train = rgb.train.x.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(channels.std(dim=1), train.std(dim=1), rtol=0.02)


def test_queries_from_another_data_set_take_this_input_shape(tmp_path: Path, digits: ImageDataset) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py")
    sampler = QuerySampler(digits, n=300, source="dataset:cifar10", root=tmp_path)
    queries = sampler.sample(torch.Generator().manual_seed(0))  # more than the 40 train images
    assert queries.shape == (300, 1, 8, 8)
    # CIFAR pixels are 0..255 random, digits mostly dark: in digits' units their mean sits well above 0.
    assert queries.mean() > 0.3


@pytest.mark.parametrize("source", ["test", "dataset:", "dataset:imagenet"])
def test_unknown_query_sources_are_refused(digits: ImageDataset, source: str) -> None:
    with pytest.raises((ValueError, DatasetNotFoundError)):
        QuerySampler(digits, source=source)
