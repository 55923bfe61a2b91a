"""Property prediction: linear probes on embeddings, against the weight-statistics baseline.

A ridge regression on the mean-pooled embeddings of training-split checkpoints, its regulariser
chosen on validation, scored by R^2 on test (docs/method.md §8). The baseline (Unterthiner et al.
2020, "Predicting neural network accuracy from weights") is the same probe on simple statistics
of each layer's weights and biases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from zooscope.errors import ZooscopeError
from zooscope.networks.parameters import StackedParams
from zooscope.population.batching import map_models
from zooscope.progress import ProgressFn, report
from zooscope.weightspace.statistics import weight_statistics_features

if TYPE_CHECKING:
    from zooscope.autoencoder.artefact import TrainedAutoencoder
    from zooscope.zoo.store import Zoo

# Regularisers tried, from almost none to strong; the best on validation wins.
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-4, 4, 17))
DEFAULT_PROPERTIES = ("test_acc", "gen_gap", "epoch")

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class ProbeResult:
    alpha: float  # the regulariser chosen on validation
    r2_val: float
    r2_test: float

    def to_dict(self) -> dict[str, float | None]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        return cls(**{k: (math.nan if v is None else float(v)) for k, v in data.items()})


def _numpy(a: Array) -> np.ndarray:
    return (
        a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float64)
    )


def _r2(y: np.ndarray, prediction: np.ndarray) -> float:
    # R^2 is undefined for a constant target (e.g. one epoch only): say so rather than report 0 or -inf.
    if y.size < 2 or np.allclose(y, y[0]):
        return math.nan
    return float(r2_score(y, prediction))


@dataclass(frozen=True)
class FittedProbe:
    """A probe fitted by `fit_probe`: its scores, and the model, to predict checkpoint by checkpoint."""

    result: ProbeResult
    model: Any  # the standardiser + ridge pipeline chosen on validation

    def predict(self, X: Array) -> np.ndarray:  # noqa: N803 - the usual name of a design matrix
        return self.model.predict(_numpy(X))


def fit_probe(
    X_train: Array,  # noqa: N803 - the usual name of a design matrix
    y_train: Array,
    X_val: Array,  # noqa: N803
    y_val: Array,
    X_test: Array,  # noqa: N803
    y_test: Array,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
) -> FittedProbe:
    """Standardise features, fit ridge for each alpha on train, keep the best on val, score on test."""
    xtr, ytr, xva, yva, xte, yte = map(_numpy, (X_train, y_train, X_val, y_val, X_test, y_test))
    if len(xtr) < 2:
        raise ZooscopeError("a probe needs at least two training checkpoints")
    best: tuple[float, float, Any] | None = None
    for alpha in alphas:
        model = make_pipeline(StandardScaler(), Ridge(alpha=float(alpha))).fit(xtr, ytr)
        score = _r2(yva, model.predict(xva)) if len(yva) else math.nan
        # A NaN validation score (constant target) never beats a real one; the first alpha stands in.
        if best is None or (not math.isnan(score) and (math.isnan(best[1]) or score > best[1])):
            best = (float(alpha), score, model)
    assert best is not None, "alphas must not be empty"
    alpha, r2_val, model = best
    r2_test = _r2(yte, model.predict(xte)) if len(yte) else math.nan
    return FittedProbe(ProbeResult(alpha, r2_val, r2_test), model)


def ridge_probe(
    X_train: Array,  # noqa: N803 - the usual name of a design matrix
    y_train: Array,
    X_val: Array,  # noqa: N803
    y_val: Array,
    X_test: Array,  # noqa: N803
    y_test: Array,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
) -> ProbeResult:
    """The scores of `fit_probe`."""
    return fit_probe(X_train, y_train, X_val, y_val, X_test, y_test, alphas).result


def embeddings(ae: TrainedAutoencoder, params: StackedParams, batch_models: int = 256) -> torch.Tensor:
    """Mean-pooled embeddings [K, L] of stacked checkpoints (the mean over their tokens' latents)."""
    return map_models(lambda p: ae.latents(p).detach().mean(1).cpu(), params, batch_models)


def probe_features(ae: TrainedAutoencoder, params: StackedParams) -> dict[str, torch.Tensor]:
    """What the probes read, by kind: the embeddings, and the weight-statistics baseline."""
    return {
        "embedding": embeddings(ae, params),
        "weight_statistics": weight_statistics_features(ae.architecture, params),
    }


@torch.no_grad()
def predict_properties(
    ae: TrainedAutoencoder,
    zoo: Zoo,
    properties: Sequence[str] = DEFAULT_PROPERTIES,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    progress: ProgressFn | None = None,
) -> dict[str, dict[str, ProbeResult]]:
    """R^2 of ridge probes on embeddings and on weight statistics, with the zoo's train/val/test split."""
    features: dict[str, dict[str, torch.Tensor]] = {"embedding": {}, "weight_statistics": {}}
    targets: dict[str, dict[str, torch.Tensor]] = {}
    for i, split in enumerate(("train", "val", "test")):
        checkpoints = zoo.load_checkpoints(zoo.checkpoints(split=split))
        for kind, values in probe_features(ae, checkpoints.params).items():
            features[kind][split] = values
        missing = [p for p in properties if p not in checkpoints.properties]
        if missing:
            raise ZooscopeError(f"the zoo's checkpoints carry no {', '.join(missing)}")
        targets[split] = {p: torch.as_tensor(checkpoints.properties[p]).double() for p in properties}
        report(progress, (i + 1) / 4, f"encoded {split}")
    results: dict[str, dict[str, ProbeResult]] = {}
    for prop in properties:
        results[prop] = {
            kind: ridge_probe(
                f["train"],
                targets["train"][prop],
                f["val"],
                targets["val"][prop],
                f["test"],
                targets["test"][prop],
                alphas,
            )
            for kind, f in features.items()
        }
    report(progress, 1.0, "probed")
    return results


def properties_to_dict(results: dict[str, dict[str, ProbeResult]]) -> dict[str, dict[str, dict]]:
    return {prop: {kind: r.to_dict() for kind, r in by_kind.items()} for prop, by_kind in results.items()}
