"""The weight space as a picture: every checkpoint of a zoo placed on a 2-D PCA of its embeddings,
and the probes' predicted against true test accuracy beside it.

The projection (the embeddings' mean and two principal axes) is kept with the map, so points
computed later land on the same axes: a reconstruct job's originals and reconstructions, a
generate job's models and the anchors they were sampled around. PCA rather than UMAP or t-SNE:
it is linear, so a later point is placed by the same formula as the zoo's own, and its axes
have a meaning (the variance each explains).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from zooscope.analysis.evaluation import checkpoint_name, json_safe
from zooscope.analysis.probing import DEFAULT_ALPHAS, ProbeResult, embeddings, fit_probe, probe_features
from zooscope.errors import ArtefactError, ZooscopeError
from zooscope.progress import ProgressFn, report
from zooscope.version import code_version
from zooscope.zoo.grid import SPLITS

if TYPE_CHECKING:
    from zooscope.analysis.generation import GenerationReport
    from zooscope.autoencoder.artefact import TrainedAutoencoder
    from zooscope.networks.parameters import StackedParams
    from zooscope.zoo.store import Zoo

MAP_COMPONENTS = 2
PREDICTED_PROPERTY = "test_acc"
PREDICTION_SPLIT = "test"
REPORT_VERSION = 1


@dataclass(frozen=True)
class Projection:
    """A PCA of embeddings: x -> (x - mean) @ components.T.

    Each component's sign is fixed (its largest entry in magnitude is positive), so fitting the
    same embeddings again draws the same picture, not a mirrored one.
    """

    mean: torch.Tensor  # [L]
    components: torch.Tensor  # [C, L], orthonormal rows, by decreasing variance
    explained_variance: torch.Tensor  # [C]: the variance of the embeddings along each component
    total_variance: float  # the sum of the variances of all L dimensions

    @classmethod
    def fit(cls, embeddings: torch.Tensor, n_components: int = MAP_COMPONENTS) -> Projection:
        x = embeddings.detach().cpu().double()
        if x.ndim != 2 or min(x.shape) < n_components:
            raise ZooscopeError(
                f"a {n_components}-D map needs at least {n_components} checkpoints with embeddings of "
                f"at least {n_components} dimensions, got {tuple(x.shape)}"
            )
        mean = x.mean(0)
        centred = x - mean
        _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
        components = vh[:n_components]
        largest = components.abs().argmax(1, keepdim=True)
        components = components * components.gather(1, largest).sign()
        dof = max(1, x.shape[0] - 1)
        return cls(
            mean=mean,
            components=components,
            explained_variance=singular[:n_components] ** 2 / dof,
            total_variance=float((centred**2).sum() / dof),
        )

    @property
    def explained_variance_ratio(self) -> list[float]:
        """The share of the total variance along each component (NaN if the embeddings are all equal)."""
        if self.total_variance <= 0:
            return [math.nan] * len(self.explained_variance)
        return [float(v) / self.total_variance for v in self.explained_variance]

    def project(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[K, L] embeddings -> [K, C] map coordinates."""
        return (embeddings.detach().cpu().double() - self.mean) @ self.components.T

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "method": "pca",
                "mean": self.mean.tolist(),
                "components": self.components.tolist(),
                "explained_variance": self.explained_variance.tolist(),
                "explained_variance_ratio": self.explained_variance_ratio,
                "total_variance": self.total_variance,
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Projection:
        if data.get("method") != "pca":
            raise ArtefactError(f"projection method {data.get('method')!r} is not pca")
        return cls(
            mean=torch.tensor(data["mean"], dtype=torch.float64),
            components=torch.tensor(data["components"], dtype=torch.float64),
            explained_variance=torch.tensor(data["explained_variance"], dtype=torch.float64),
            total_variance=float(data["total_variance"]),
        )


@dataclass(frozen=True)
class MapPoint:
    """One zoo checkpoint on the map, with what the dashboard filters and colours by."""

    checkpoint: str  # model_id@epoch, as reports name zoo checkpoints
    model_id: str
    epoch: int
    split: str
    init: str
    lr: float
    wd: float
    seed: int
    test_acc: float | None
    x: float
    y: float


@dataclass
class PropertyPrediction:
    """Predicted against true values of one property on one split, for each probe's features."""

    property: str
    split: str
    probes: dict[str, ProbeResult]  # by feature kind: "embedding", "weight_statistics"
    checkpoints: list[str]
    true: list[float]
    predicted: dict[str, list[float]]  # by feature kind, aligned with `checkpoints`

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "property": self.property,
                "split": self.split,
                "probes": {kind: probe.to_dict() for kind, probe in self.probes.items()},
                "items": [
                    {"checkpoint": name, "true": value, **{k: v[i] for k, v in self.predicted.items()}}
                    for i, (name, value) in enumerate(zip(self.checkpoints, self.true, strict=True))
                ],
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PropertyPrediction:
        kinds = list(data["probes"])
        items = data["items"]
        return cls(
            property=data["property"],
            split=data["split"],
            probes={kind: ProbeResult.from_dict(probe) for kind, probe in data["probes"].items()},
            checkpoints=[item["checkpoint"] for item in items],
            true=[_nan_if_none(item["true"]) for item in items],
            predicted={kind: [_nan_if_none(item[kind]) for item in items] for kind in kinds},
        )


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


@dataclass
class EmbeddingMap:
    projection: Projection
    points: list[MapPoint]
    prediction: PropertyPrediction | None  # None when the zoo's splits cannot train a probe
    metadata: dict[str, Any] = field(default_factory=dict)

    def coordinates(self) -> torch.Tensor:
        """[K, 2] the points' coordinates, in the order of `points`."""
        return torch.tensor([[p.x, p.y] for p in self.points], dtype=torch.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "code_version": code_version(),
            "metadata": self.metadata,
            "projection": self.projection.to_dict(),
            "points": [json_safe(asdict(p)) for p in self.points],
            "prediction": self.prediction.to_dict() if self.prediction is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbeddingMap:
        if data.get("version") != REPORT_VERSION:
            raise ArtefactError(f"embedding map version {data.get('version')!r} is not {REPORT_VERSION}")
        prediction = data.get("prediction")
        return cls(
            projection=Projection.from_dict(data["projection"]),
            points=[MapPoint(**point) for point in data["points"]],
            prediction=PropertyPrediction.from_dict(prediction) if prediction else None,
            metadata=data.get("metadata", {}),
        )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


@torch.no_grad()
def build_embedding_map(
    ae: TrainedAutoencoder,
    zoo: Zoo,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    progress: ProgressFn | None = None,
) -> EmbeddingMap:
    """Every checkpoint of `zoo` on the PCA of its embeddings, and the test split's predicted
    test accuracy from the embedding and from the weight statistics (probes fitted on train,
    chosen on val, as `probing.predict_properties` fits them)."""
    features: dict[str, dict[str, torch.Tensor]] = {}
    targets: dict[str, torch.Tensor] = {}
    records: dict[str, list[Any]] = {}
    for i, split in enumerate(SPLITS):
        records[split] = zoo.checkpoints(split=split)
        if records[split]:  # an imported zoo may leave a split empty
            checkpoints = zoo.load_checkpoints(records[split])
            features[split] = probe_features(ae, checkpoints.params)
            targets[split] = checkpoints.properties[PREDICTED_PROPERTY].double()
        report(progress, 0.9 * (i + 1) / len(SPLITS), f"encoded the {split} split")
    present = [split for split in SPLITS if split in features]
    if not present:
        raise ZooscopeError(f"the zoo at {zoo.path} has no checkpoints to map")
    projection = Projection.fit(torch.cat([features[s]["embedding"] for s in present]))
    points = []
    for split in present:
        xy = projection.project(features[split]["embedding"])
        for record, (x, y) in zip(records[split], xy.tolist(), strict=True):
            p = record.properties
            points.append(
                MapPoint(
                    checkpoint=checkpoint_name(record),
                    model_id=record.model_id,
                    epoch=int(record.epoch),
                    split=split,
                    init=str(p["init"]),
                    lr=float(p["lr"]),
                    wd=float(p["wd"]),
                    seed=int(p["seed"]),
                    test_acc=_finite_or_none(float(p["test_acc"])),
                    x=x,
                    y=y,
                )
            )
    prediction = None
    if len(records["train"]) >= 2 and records[PREDICTION_SPLIT]:
        prediction = _predict(features, targets, records, alphas)
    report(progress, 1.0, f"mapped {len(points)} checkpoints")
    metadata = {
        "architecture": zoo.architecture.to_dict(),
        "dataset": zoo.manifest.get("dataset", {}).get("name"),
        "n_checkpoints": len(points),
        "embedding_dim": int(projection.mean.numel()),
    }
    return EmbeddingMap(projection, points, prediction, metadata)


def _predict(
    features: dict[str, dict[str, torch.Tensor]],
    targets: dict[str, torch.Tensor],
    records: dict[str, list[Any]],
    alphas: Sequence[float],
) -> PropertyPrediction:
    probes: dict[str, ProbeResult] = {}
    predicted: dict[str, list[float]] = {}
    for kind, train in features["train"].items():
        # Without a validation split the probe keeps the first regulariser (fit_probe).
        val = features["val"][kind] if "val" in features else train[:0]
        fitted = fit_probe(
            train,
            targets["train"],
            val,
            targets["val"] if "val" in features else targets["train"][:0],
            features[PREDICTION_SPLIT][kind],
            targets[PREDICTION_SPLIT],
            alphas,
        )
        probes[kind] = fitted.result
        predicted[kind] = [float(v) for v in fitted.predict(features[PREDICTION_SPLIT][kind])]
    return PropertyPrediction(
        property=PREDICTED_PROPERTY,
        split=PREDICTION_SPLIT,
        probes=probes,
        checkpoints=[checkpoint_name(r) for r in records[PREDICTION_SPLIT]],
        true=[float(v) for v in targets[PREDICTION_SPLIT]],
        predicted=predicted,
    )


def _xy(row: Sequence[float]) -> dict[str, float]:
    return {"x": float(row[0]), "y": float(row[1])}


@torch.no_grad()
def reconstructions_on_map(
    ae: TrainedAutoencoder,
    projection: Projection,
    originals: StackedParams,
    reconstructions: StackedParams,
    ids: Sequence[str],
) -> list[dict[str, Any]]:
    """Each original and its reconstruction, embedded and placed on a map's axes."""
    before = projection.project(embeddings(ae, originals)).tolist()
    after = projection.project(embeddings(ae, reconstructions)).tolist()
    return [
        {"checkpoint_id": i, "original": _xy(o), "reconstruction": _xy(r)}
        for i, o, r in zip(ids, before, after, strict=True)
    ]


@torch.no_grad()
def generation_on_map(
    ae: TrainedAutoencoder,
    projection: Projection,
    result: GenerationReport,
    ids: Sequence[str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """A generation's anchors and generated models placed on a map's axes; each generated model
    names the anchor its kernel was centred on. `ids`: the generated models' checkpoint ids."""
    anchors = result.anchor_set
    if anchors is None or result.params is None:
        raise ZooscopeError("this generation report holds no anchors or weights to place on a map")
    # An anchor's embedding is the mean of the latents the KDE was fitted on.
    anchor_xy = projection.project(anchors.latents.mean(1)).tolist()
    generated_xy = projection.project(embeddings(ae, result.params)).tolist()
    names = anchors.checkpoints or [None] * len(anchor_xy)
    return {
        "anchors": [
            {"checkpoint": name, "accuracy": float(acc), **_xy(xy)}
            for name, acc, xy in zip(names, anchors.accuracies.tolist(), anchor_xy, strict=True)
        ],
        "generated": [
            {
                **({"checkpoint_id": ids[i]} if ids is not None else {}),
                "accuracy": result.accuracies[i],
                "anchor": result.anchor_of[i] if result.anchor_of else None,
                **_xy(xy),
            }
            for i, xy in enumerate(generated_xy)
        ],
    }
