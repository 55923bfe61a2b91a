"""Convert a zoo in the public Model Zoos layout (docs/method.md §10) into our zoo format.

The source is a folder with one sub-folder per trained model, each holding `params.json`,
`result.json` (JSON lines, one per epoch) and `checkpoint_000050/checkpoints` (older zoos:
`checkpoint_50/checkpoints`). Every model that cannot be used is skipped and listed with the
reason: unreadable files, unknown architecture, NaN or runaway weights.

Public zoos are not uniform. CNN-s checkpoints come with and without dropout modules (keys
0,4,8,11,14 or 0,3,6,9,11): both are converted to the canonical layout (without dropout modules,
networks.architectures.canonical_state_dict) and share one zoo; each model's source layout is
kept in its record. Models of one zoo may differ in `model::nlin`: every model is kept with its
own activation (ModelRecord.activation), the manifest says the zoo mixes activations, and
`Zoo.load_checkpoints` hands the per-checkpoint activations to population_forward.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zooscope.errors import ZooFormatError, ZooscopeError
from zooscope.networks.architectures import (
    ACTIVATIONS,
    Architecture,
    canonical_architecture,
    canonical_state_dict,
    detect_architecture,
    same_function_family,
)
from zooscope.networks.checkpoints import load_checkpoint
from zooscope.networks.datasets import DATASETS
from zooscope.progress import ProgressFn, report
from zooscope.zoo.grid import DEFAULT_DIVERGENCE_THRESHOLD, DEFAULT_SPLIT_FRACTIONS
from zooscope.zoo.store import (
    METRIC_NAMES,
    ModelRecord,
    Zoo,
    ZooWriter,
    assign_splits,
    json_number,
    new_manifest,
)

CHECKPOINT_FOLDER = re.compile(r"^checkpoint_(\d+)$")
CHECKPOINT_FILE = "checkpoints"
# Substrings of a public zoo's dataset path -> our data set names; the first match wins, so the
# longer names come before the names they contain.
_DATASET_HINTS = (("fashion", "fashion_mnist"), ("mnist", "mnist"), ("svhn", "svhn"), ("cifar", "cifar10"))


@dataclass
class ImportResult:
    zoo: Zoo
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source folder, reason)


@dataclass
class _Model:
    """One source model that passed every check, with its checkpoints still in memory."""

    folder: str
    params: dict[str, Any]
    architecture: Architecture  # canonical (canonical_architecture), with the model's activation
    source_layout: str  # the architecture name of the key layout the checkpoints came in
    checkpoints: dict[int, dict[str, torch.Tensor]]  # in the canonical layout
    metrics: dict[str, list[float | None]]


@dataclass
class _Accepted:
    """A model written to the new zoo: what models.json and metrics.json need of it."""

    model_id: str
    folder: str
    params: dict[str, Any]
    epochs: tuple[int, ...]
    metrics: dict[str, list[float | None]]
    activation: str
    source_layout: str


class _Skip(Exception):
    """Why one source model cannot be imported."""


def import_public_zoo(
    src: Path | str,
    out_dir: Path | str,
    *,
    epochs: Iterable[int] | None = None,
    progress: ProgressFn | None = None,
    dataset: str | None = None,
    weight_threshold: float = DEFAULT_DIVERGENCE_THRESHOLD,
    split_fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
) -> ImportResult:
    """Import the models under `src` into a new zoo at `out_dir`.

    `epochs` keeps only those checkpoint epochs (default: every checkpoint found); `dataset`
    names the data set when the source does not tell (it is guessed from params.json
    otherwise). Models are split 80/5/15 BY MODEL with `seed` (no split left empty when there
    are 3 models or more). Checkpoints of either CNN-s key layout are stored in the canonical
    one; models keep their own activation.
    """
    source = Path(src)
    if not source.is_dir():
        raise ZooFormatError(f"{source} is not a folder; a public zoo is a folder of model folders")
    folders = sorted(p for p in source.iterdir() if p.is_dir())
    if not folders:
        raise ZooFormatError(f"{source} holds no model folders")
    wanted = set(epochs) if epochs is not None else None
    out = Path(out_dir)
    skipped: list[tuple[str, str]] = []
    accepted: list[_Accepted] = []
    zoo_arch: Architecture | None = None
    dataset_name = dataset

    writer: ZooWriter | None = None
    try:
        for i, folder in enumerate(folders):
            report(progress, i / len(folders), f"reading {folder.name}")
            try:
                model = _read_model(folder, wanted, weight_threshold)
                if zoo_arch is None:
                    zoo_arch = model.architecture
                    writer = ZooWriter(out, zoo_arch.name)
                elif not same_function_family(model.architecture, zoo_arch):
                    raise _Skip(
                        f"architecture {model.architecture.name} differs from the zoo's {zoo_arch.name}"
                    )
            except _Skip as reason:
                skipped.append((folder.name, str(reason)))
                continue
            assert writer is not None
            model_id = f"m{len(accepted):05d}"
            for epoch, state_dict in model.checkpoints.items():
                writer.add_checkpoint(model_id, epoch, state_dict)
            accepted.append(
                _Accepted(
                    model_id,
                    folder.name,
                    model.params,
                    tuple(model.checkpoints),
                    model.metrics,
                    model.architecture.activation,
                    model.source_layout,
                )
            )
            dataset_name = dataset_name or _guess_dataset(model.params)
        if writer is None or zoo_arch is None:
            listing = "; ".join(f"{name}: {reason}" for name, reason in skipped[:5])
            raise ZooFormatError(f"no model under {source} could be imported ({listing})")
        splits = assign_splits(len(accepted), split_fractions, seed)
        counts = Counter(model.activation for model in accepted)
        # the zoo's architecture carries the commonest activation (the first seen on a tie)
        zoo_arch = zoo_arch.with_activation(counts.most_common(1)[0][0])
        mixed = len(counts) > 1
        models = [_model_record(model, split) for model, split in zip(accepted, splits, strict=True)]
        manifest = new_manifest(
            architecture=zoo_arch,
            dataset={"name": dataset_name},
            checkpoint_epochs=sorted({e for model in accepted for e in model.epochs}),
            split_fractions=split_fractions,
            seed=seed,
            config=None,
            source={
                "kind": "imported",
                "path": str(source.resolve()),
                "weight_threshold": weight_threshold,
                "skipped": [list(s) for s in skipped],
                "key_layouts": sorted({model.source_layout for model in accepted}),
            },
        )
        # per-model activations are in models.json; the manifest says that there are several
        manifest["mixed_activations"] = mixed
        manifest["activations"] = dict(sorted(counts.items()))
        writer.finish(manifest, models, {model.model_id: model.metrics for model in accepted})
    finally:
        if writer is not None:
            writer.abort()  # a no-op once finish() has moved the zoo into place
    report(progress, 1.0, f"imported {len(accepted)} models, skipped {len(skipped)}")
    return ImportResult(Zoo.open(out), skipped)


def _read_model(folder: Path, wanted: set[int] | None, weight_threshold: float) -> _Model:
    params = _read_params(folder)
    activation = str(params.get("model::nlin", "relu")).lower()
    if activation not in ACTIVATIONS:
        raise _Skip(f"activation {activation!r} is not supported (known: {', '.join(ACTIVATIONS)})")
    found = _checkpoint_folders(folder)
    epochs = sorted(e for e in found if wanted is None or e in wanted)
    if not epochs:
        have = ", ".join(str(e) for e in sorted(found)) or "none"
        raise _Skip(f"no checkpoint for the requested epochs (has: {have})")
    checkpoints: dict[int, dict[str, torch.Tensor]] = {}
    architecture: Architecture | None = None  # the layout as found
    for epoch in epochs:
        path = found[epoch] / CHECKPOINT_FILE
        try:
            # load_checkpoint reads torch files with weights_only=True and rejects NaN/inf
            state_dict = load_checkpoint(path)
            arch = detect_architecture(state_dict, activation)
        except ZooscopeError as error:
            raise _Skip(f"{found[epoch].name}: {error}") from error
        largest = max(
            float(v.abs().max()) for v in state_dict.values() if v.is_floating_point() and v.numel()
        )
        if largest > weight_threshold:
            raise _Skip(
                f"{found[epoch].name}: max |w| {largest:.3g} above the threshold {weight_threshold:g}"
            )
        if architecture is not None and arch != architecture:
            raise _Skip(
                f"{found[epoch].name}: architecture {arch.name} differs from the model's other checkpoints"
            )
        architecture = arch
        floats = {k: v.to(torch.float32) for k, v in state_dict.items() if v.is_floating_point()}
        checkpoints[epoch] = canonical_state_dict(floats, arch)
    assert architecture is not None
    # the dropout rate is a per-model training setting (models.json extra.dropout), not layout
    canonical = canonical_architecture(architecture)
    return _Model(folder.name, params, canonical, architecture.name, checkpoints, _read_metrics(folder))


def _read_params(folder: Path) -> dict[str, Any]:
    path = folder / "params.json"
    try:
        params = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise _Skip("no params.json") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _Skip(f"params.json is not valid JSON ({error})") from error
    if not isinstance(params, dict):
        raise _Skip("params.json does not hold an object")
    return params


def _checkpoint_folders(folder: Path) -> dict[int, Path]:
    """{epoch: folder} for both the 6-digit and the older unpadded checkpoint folder names."""
    found: dict[int, Path] = {}
    for child in folder.iterdir():
        match = CHECKPOINT_FOLDER.match(child.name)
        if match and (child / CHECKPOINT_FILE).is_file():
            found[int(match.group(1))] = child
    return found


def _read_metrics(folder: Path) -> dict[str, list[float | None]]:
    """Per-epoch metrics from result.json, keyed by training_iteration (lines may be out of order)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    path = folder / "result.json"
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
                by_epoch[int(row["training_iteration"])] = row
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a torn or foreign line: its epoch just has no metrics
    epochs = sorted(by_epoch)
    table: dict[str, list[float | None]] = {"epochs": epochs}  # type: ignore[dict-item]
    for name in METRIC_NAMES:
        table[name] = [json_number(_number(by_epoch[e].get(name))) for e in epochs]
    return table


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _model_record(model: _Accepted, split: str) -> ModelRecord:
    params = model.params

    def number(key: str, default: float = math.nan) -> float:
        value = _number(params.get(key))
        return default if value is None else value

    return ModelRecord(
        model_id=model.model_id,
        init=str(params.get("model::init_type", "unknown")),
        lr=number("optim::lr"),
        wd=number("optim::wd", 0.0),
        seed=int(number("seed", -1)),
        split=split,
        checkpoint_epochs=model.epochs,
        activation=model.activation,
        extra={
            "source": model.folder,
            "model_type": params.get("model::type"),
            "dropout": number("model::dropout", 0.0),
            "key_layout": model.source_layout,
        },
    )


def _guess_dataset(params: dict[str, Any]) -> str | None:
    text = " ".join(str(v).lower() for k, v in params.items() if k.startswith("dataset"))
    for hint, name in _DATASET_HINTS:
        if hint in text and name in DATASETS:
            return name
    return None
