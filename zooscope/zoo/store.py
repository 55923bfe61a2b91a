"""Our zoo format on disk (docs/zoo-format.md), building a zoo, and reading one back.

A zoo folder holds `manifest.json` (what made it), `models.json` (one row per model, with its
split), `metrics.json` (per model and epoch) and one safetensors file per kept checkpoint,
`checkpoints/<model_id>/epoch_<EEE>.safetensors`. `Zoo.load_checkpoints` turns checkpoint
records into the stacked tensors the autoencoder trains on.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file

from zooscope.errors import ZooFormatError
from zooscope.networks.architectures import INIT_TYPES, Architecture, activation_codes
from zooscope.networks.checkpoints import save_checkpoint
from zooscope.networks.parameters import FlatLayout, StackedParams
from zooscope.progress import ProgressFn, report, scaled
from zooscope.version import code_version
from zooscope.zoo.grid import SPLITS, ZooConfig
from zooscope.zoo.training import METRIC_NAMES, TrainedModels, train_models

if TYPE_CHECKING:
    from zooscope.networks.datasets import ImageDataset

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODELS_FILE = "models.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
# Numeric properties every checkpoint carries; `init` is a category, given as its index in
# INIT_TYPES in CheckpointSet.properties (-1 where the init is not one of ours).
NUMERIC_PROPERTIES = (
    "test_acc",
    "train_acc",
    "val_acc",
    "test_loss",
    "train_loss",
    "val_loss",
    "gen_gap",
    "epoch",
    "lr",
    "wd",
    "seed",
)


@dataclass(frozen=True)
class ModelRecord:
    """One model of a zoo: its hyperparameters, split and fate."""

    model_id: str
    init: str
    lr: float
    wd: float
    seed: int
    split: str
    checkpoint_epochs: tuple[int, ...]
    diverged: bool = False
    diverged_epoch: int | None = None
    diverged_reason: str | None = None
    # the model's own activation where its zoo mixes them (an import); None: the zoo architecture's
    activation: str | None = None
    # anything else known about the model (replicate index, dropout, source folder of an import)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["checkpoint_epochs"] = list(self.checkpoint_epochs)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelRecord:
        return cls(
            model_id=str(data["model_id"]),
            init=str(data["init"]),
            lr=float(data["lr"]),
            wd=float(data["wd"]),
            seed=int(data["seed"]),
            split=str(data["split"]),
            checkpoint_epochs=tuple(int(e) for e in data["checkpoint_epochs"]),
            diverged=bool(data.get("diverged", False)),
            diverged_epoch=data.get("diverged_epoch"),
            diverged_reason=data.get("diverged_reason"),
            activation=data.get("activation"),
            extra=dict(data.get("extra") or {}),
        )


@dataclass(frozen=True)
class CheckpointRecord:
    """One kept checkpoint (a model at an epoch) and what is known about it."""

    model_id: str
    epoch: int
    path: Path
    split: str
    # test_acc, train_acc, val_acc, losses, gen_gap = train_acc - test_acc, epoch, init, lr, wd, seed
    properties: dict[str, Any] = field(compare=False, hash=False)


@dataclass
class CheckpointSet:
    """Checkpoints of one architecture as stacked tensors, with their records and numeric
    properties: what `Zoo.load_checkpoints` returns and the autoencoder trains on."""

    arch: Architecture
    params: StackedParams  # {key: [K, *shape]}
    properties: dict[str, torch.Tensor]  # {name: [K]}, see NUMERIC_PROPERTIES
    records: list[CheckpointRecord]
    # [K] indices into ACTIVATION_NAMES where the checkpoints mix activations (pass them to
    # population_forward's `activations`); None: every checkpoint runs with arch.activation
    activations: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.records)


class Zoo:
    """A zoo folder, opened and checked. Read-only: `build_zoo` and the importer write zoos."""

    def __init__(
        self, root: Path, manifest: dict[str, Any], models: list[ModelRecord], metrics: dict[str, Any]
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.models = models
        self._metrics = metrics
        self.architecture = Architecture.from_dict(manifest["architecture"])

    @property
    def path(self) -> Path:
        return self.root

    @classmethod
    def open(cls, path: Path | str) -> Zoo:
        """Read and check a zoo folder; ZooFormatError says what is missing or inconsistent."""
        root = Path(path)
        if not root.is_dir():
            raise ZooFormatError(f"{root} is not a folder; a zoo is a folder with {MANIFEST_FILE} in it")
        manifest = _read_json(root, MANIFEST_FILE)
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ZooFormatError(
                f"{root / MANIFEST_FILE}: format_version {version!r}, this zooscope reads {FORMAT_VERSION}"
            )
        for key in ("architecture", "checkpoint_epochs", "dataset"):
            if key not in manifest:
                raise ZooFormatError(f"{root / MANIFEST_FILE} has no {key!r} entry")
        try:
            Architecture.from_dict(manifest["architecture"])
        except Exception as error:
            raise ZooFormatError(f"{root / MANIFEST_FILE}: bad architecture: {error}") from error
        rows = _read_json(root, MODELS_FILE).get("models")
        if not isinstance(rows, list):
            raise ZooFormatError(f"{root / MODELS_FILE} has no 'models' list")
        try:
            models = [ModelRecord.from_dict(row) for row in rows]
        except (KeyError, TypeError, ValueError) as error:
            raise ZooFormatError(f"{root / MODELS_FILE}: a model row is incomplete ({error!r})") from error
        metrics = _read_json(root, METRICS_FILE).get("models")
        if not isinstance(metrics, dict):
            raise ZooFormatError(f"{root / METRICS_FILE} has no 'models' table")
        zoo = cls(root, manifest, models, metrics)
        zoo._check_consistency()
        return zoo

    def _check_consistency(self) -> None:
        ids = [m.model_id for m in self.models]
        if len(set(ids)) != len(ids):
            raise ZooFormatError(f"{self.root / MODELS_FILE} lists a model id twice")
        for model in self.models:
            if model.split not in SPLITS:
                raise ZooFormatError(f"model {model.model_id}: split {model.split!r} is not one of {SPLITS}")
            if model.model_id not in self._metrics:
                raise ZooFormatError(f"{self.root / METRICS_FILE} has no metrics for model {model.model_id}")
            for epoch in model.checkpoint_epochs:
                path = self.checkpoint_path(model.model_id, epoch)
                if not path.is_file():
                    raise ZooFormatError(
                        f"missing checkpoint {path.relative_to(self.root)} listed for model {model.model_id}"
                    )

    # ---- reading --------------------------------------------------------------------------------
    def checkpoint_path(self, model_id: str, epoch: int) -> Path:
        return self.root / checkpoint_relative_path(model_id, epoch)

    def activation_of(self, model: ModelRecord) -> str:
        """The activation `model` runs with: its own where recorded, else the architecture's."""
        return model.activation or self.architecture.activation

    @property
    def mixed_activations(self) -> bool:
        """Whether the models of this zoo do not all share one activation."""
        return len({self.activation_of(m) for m in self.models}) > 1

    def metrics(self, model_id: str) -> dict[str, list[float | None]]:
        """{"epochs": [...], "test_acc": [...], ...} of one model (None where not measured)."""
        return self._metrics[model_id]

    def checkpoints(
        self, split: str | None = None, epochs: Iterable[int] | None = None
    ) -> list[CheckpointRecord]:
        """Every kept checkpoint, optionally of one split and of some epochs; model order, then epoch."""
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        wanted = set(epochs) if epochs is not None else None
        records = []
        for model in self.models:
            if split is not None and model.split != split:
                continue
            for epoch in model.checkpoint_epochs:
                if wanted is None or epoch in wanted:
                    records.append(self._record(model, epoch))
        return records

    def _record(self, model: ModelRecord, epoch: int) -> CheckpointRecord:
        metrics = self._metrics[model.model_id]
        column = metrics["epochs"].index(epoch) if epoch in metrics["epochs"] else None

        def value(name: str) -> float:
            if column is None or name not in metrics or metrics[name][column] is None:
                return math.nan
            return float(metrics[name][column])

        properties: dict[str, Any] = {name: value(name) for name in METRIC_NAMES}
        properties.update(
            gen_gap=properties["train_acc"] - properties["test_acc"],
            epoch=epoch,
            init=model.init,
            lr=model.lr,
            wd=model.wd,
            seed=model.seed,
        )
        return CheckpointRecord(
            model.model_id, epoch, self.checkpoint_path(model.model_id, epoch), model.split, properties
        )

    def load_checkpoints(self, records: Sequence[CheckpointRecord]) -> CheckpointSet:
        """The checkpoints of `records` stacked: params {key: [K, ...]} and properties {name: [K]}."""
        layout = FlatLayout.of(self.architecture)
        if not records:
            params = {
                key: torch.zeros(0, *shape) for key, shape in zip(layout.keys, layout.shapes, strict=True)
            }
        else:
            state_dicts = [self._load(record.path, layout) for record in records]
            params = {key: torch.stack([sd[key] for sd in state_dicts]) for key in layout.keys}
        properties = {
            name: torch.tensor([float(r.properties[name]) for r in records], dtype=torch.float64)
            for name in NUMERIC_PROPERTIES
        }
        properties["init"] = torch.tensor(
            [
                INIT_TYPES.index(r.properties["init"]) if r.properties["init"] in INIT_TYPES else -1
                for r in records
            ]
        )
        activations = None
        if self.mixed_activations:
            by_id = {m.model_id: self.activation_of(m) for m in self.models}
            activations = activation_codes(by_id[r.model_id] for r in records)
        return CheckpointSet(self.architecture, params, properties, list(records), activations)

    def _load(self, path: Path, layout: FlatLayout) -> dict[str, torch.Tensor]:
        try:
            state = load_file(str(path))
        except Exception as error:  # safetensors raises its own error types
            raise ZooFormatError(f"cannot read checkpoint {path}: {error}") from error
        for key, shape in zip(layout.keys, layout.shapes, strict=True):
            if key not in state or tuple(state[key].shape) != shape:
                raise ZooFormatError(
                    f"checkpoint {path} does not hold {key} {list(shape)} of {self.architecture.name}"
                )
        return state

    def dataset(self, root: Path | str | None = None) -> ImageDataset:
        """The data set this zoo was trained on, reloaded as the manifest describes it."""
        from zooscope.networks.datasets import load_dataset

        description = self.manifest["dataset"]
        name = description.get("name")
        if not name:
            raise ZooFormatError(
                f"the zoo at {self.root} does not record its data set name (an import without --dataset?)"
            )
        return load_dataset(
            name, root, resize=description.get("resize"), seed=int(description.get("seed") or 0)
        )

    def summary(self) -> dict[str, Any]:
        from zooscope.zoo.summary import summarise

        return summarise(self).to_dict()

    def __repr__(self) -> str:
        return f"Zoo({str(self.root)!r}, {self.architecture.name}, {len(self.models)} models)"


# ---- writing ------------------------------------------------------------------------------------


def build_zoo(
    config: ZooConfig,
    out_dir: Path | str,
    progress: ProgressFn | None = None,
    *,
    dataset: ImageDataset | None = None,
    data_root: Path | str | None = None,
    device: str = "cpu",
) -> Zoo:
    """Train the zoo `config` describes and write it to `out_dir` (which must be new or empty)."""
    from zooscope.networks.datasets import load_dataset

    out = Path(out_dir)
    _check_writable(out)
    if dataset is None:
        dataset = load_dataset(config.dataset, data_root, resize=config.resize, seed=config.seed)
    report(progress, 0.0, f"training {config.n_models} models")
    trained = train_models(config, dataset, scaled(progress, 0.0, 0.95), device=device)
    splits = assign_splits(trained.n_models, config.split_fractions, config.seed)
    models = [
        ModelRecord(
            model_id=spec.model_id,
            init=spec.init,
            lr=spec.lr,
            wd=spec.wd,
            seed=spec.seed,
            split=split,
            checkpoint_epochs=config.checkpoint_epochs,
            diverged=trained.diverged_epoch[i] is not None,
            diverged_epoch=trained.diverged_epoch[i],
            diverged_reason=trained.diverged_reason[i],
            extra={"replicate": spec.replicate, "index": spec.index}
            | ({} if spec.init_seed is None else {"init_seed": spec.init_seed}),
        )
        for i, (spec, split) in enumerate(zip(trained.specs, splits, strict=True))
    ]
    manifest = new_manifest(
        architecture=config.architecture,
        dataset=dataset.describe(),
        checkpoint_epochs=config.checkpoint_epochs,
        split_fractions=config.split_fractions,
        seed=config.seed,
        config=config.to_dict(),
        source={"kind": "built", "train_seconds": round(trained.wall_seconds, 2)},
    )
    report(progress, 0.95, "writing checkpoints")
    with ZooWriter(out, config.architecture.name) as writer:
        for epoch, params in trained.checkpoints.items():
            for i, spec in enumerate(trained.specs):
                writer.add_checkpoint(spec.model_id, epoch, {key: value[i] for key, value in params.items()})
        writer.finish(manifest, models, metrics_table(trained))
    report(progress, 1.0, f"wrote {len(models)} models to {out}")
    return Zoo.open(out)


def assign_splits(n_models: int, fractions: Sequence[float], seed: int) -> list[str]:
    """A seeded split BY MODEL: every checkpoint of a model lands on the model's side.

    No split with a positive fraction is left empty when there are models enough for every such
    split (10 models at 0.8/0.05/0.15 give 7/1/2, not 8/0/2): an empty split takes one model from
    the largest one."""
    n_train = round(fractions[0] * n_models)
    n_val = min(round(fractions[1] * n_models), n_models - n_train)
    counts = [n_train, n_val, n_models - n_train - n_val]
    if n_models >= sum(1 for f in fractions if f > 0):
        for i, fraction in enumerate(fractions):
            if fraction > 0 and counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    labels = ["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2]
    # a stream of its own, so changing the grid's other random draws never moves the split
    order = np.random.default_rng([seed, 0x5B11]).permutation(n_models)
    out = [""] * n_models
    for label, model_index in zip(labels, order, strict=True):
        out[model_index] = label
    return out


def new_manifest(
    *,
    architecture: Architecture,
    dataset: dict[str, Any],
    checkpoint_epochs: Sequence[int],
    split_fractions: Sequence[float],
    seed: int,
    config: dict[str, Any] | None,
    source: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "architecture": architecture.to_dict(),
        "architecture_name": architecture.name,
        "dataset": dataset,
        "config": config,
        "seed": seed,
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "checkpoint_epochs": list(checkpoint_epochs),
        "split_fractions": list(split_fractions),
        "metric_names": list(METRIC_NAMES),
        "source": source,
    }


class ZooWriter:
    """Writes a zoo all or nothing: files go to a hidden sibling folder, renamed into place by
    `finish`; if the writer is left by an exception, the sibling is removed.

    Checkpoints are written as they come, so an import never holds a whole zoo in memory.
    """

    def __init__(self, out: Path, architecture_name: str) -> None:
        _check_writable(out)
        self.out = out
        self.architecture_name = architecture_name
        self.staging = out.parent / f".{out.name}.partial"
        if self.staging.exists():
            shutil.rmtree(self.staging)  # left by an interrupted write of this very zoo
        self.staging.mkdir(parents=True)

    def __enter__(self) -> ZooWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.abort()

    def abort(self) -> None:
        """Remove what was written, unless finish() already moved it into place."""
        if self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)

    def add_checkpoint(self, model_id: str, epoch: int, state_dict: Mapping[str, torch.Tensor]) -> None:
        path = self.staging / checkpoint_relative_path(model_id, epoch)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"model_id": model_id, "epoch": str(epoch), "architecture": self.architecture_name}
        save_checkpoint({k: v.contiguous() for k, v in state_dict.items()}, path, metadata)

    def finish(
        self,
        manifest: dict[str, Any],
        models: Sequence[ModelRecord],
        metrics: dict[str, dict[str, list[float | None]]],
    ) -> None:
        _write_json(self.staging / MODELS_FILE, {"models": [m.to_dict() for m in models]})
        _write_json(self.staging / METRICS_FILE, {"metric_names": list(METRIC_NAMES), "models": metrics})
        _write_json(self.staging / MANIFEST_FILE, manifest)
        _check_writable(self.out)
        if self.out.exists():
            self.out.rmdir()  # empty (checked above); a rename cannot replace a folder everywhere
        os.replace(self.staging, self.out)


def checkpoint_relative_path(model_id: str, epoch: int) -> Path:
    return Path(CHECKPOINT_DIR) / model_id / f"epoch_{epoch:03d}.safetensors"


def metrics_table(trained: TrainedModels) -> dict[str, dict[str, list[float | None]]]:
    epochs = list(range(trained.config.epochs + 1))
    table = {}
    for i, spec in enumerate(trained.specs):
        row: dict[str, list[float | None]] = {"epochs": epochs}  # type: ignore[dict-item]
        for name in METRIC_NAMES:
            row[name] = [json_number(v) for v in trained.metrics[name][i].tolist()]
        table[spec.model_id] = row
    return table


def json_number(value: float | None) -> float | None:
    # JSON has no NaN; a metric that could not be measured is null
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _check_writable(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ZooFormatError(f"{out} already exists and is not an empty folder; choose a new output folder")


def _read_json(root: Path, name: str) -> dict[str, Any]:
    path = root / name
    if not path.is_file():
        raise ZooFormatError(f"{path} is missing: {root} is not a complete zoo folder")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ZooFormatError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ZooFormatError(f"{path} should hold a JSON object")
    return data


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, allow_nan=False))
