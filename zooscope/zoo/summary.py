"""What a zoo looks like at a glance: accuracy by epoch and by hyperparameter, divergences."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zooscope.zoo.store import Zoo


@dataclass(frozen=True)
class Distribution:
    """Summary statistics of one set of accuracies (NaN-free; `count` says how many)."""

    count: int
    mean: float
    std: float
    min: float
    median: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Distribution:
        finite = sorted(v for v in values if v is not None and math.isfinite(v))
        if not finite:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        n = len(finite)
        mean = sum(finite) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in finite) / n)
        middle = n // 2
        median = finite[middle] if n % 2 else (finite[middle - 1] + finite[middle]) / 2
        return cls(n, mean, std, finite[0], median, finite[-1])


@dataclass(frozen=True)
class ZooSummary:
    architecture: str
    dataset: str | None
    n_models: int
    n_checkpoints: int
    models_per_split: dict[str, int]
    n_diverged: int
    diverged_reasons: dict[str, int]
    # test accuracy over models, for each kept epoch
    test_acc_by_epoch: dict[int, Distribution]
    # test accuracy at the last kept epoch, grouped by each hyperparameter's values
    test_acc_by_hyperparameter: dict[str, dict[str, Distribution]]
    last_epoch: int | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["test_acc_by_epoch"] = {str(k): _clean(asdict(v)) for k, v in self.test_acc_by_epoch.items()}
        data["test_acc_by_hyperparameter"] = {
            name: {value: _clean(asdict(d)) for value, d in groups.items()}
            for name, groups in self.test_acc_by_hyperparameter.items()
        }
        return data


def summarise(zoo: Zoo) -> ZooSummary:
    records = zoo.checkpoints()
    by_epoch: dict[int, list[float]] = defaultdict(list)
    for record in records:
        by_epoch[record.epoch].append(record.properties["test_acc"])
    last_epoch = max(by_epoch) if by_epoch else None
    by_hyper: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in ("init", "lr", "wd")}
    for record in records:
        if record.epoch != last_epoch:
            continue
        for name in by_hyper:
            by_hyper[name][_label(record.properties[name])].append(record.properties["test_acc"])
    splits: dict[str, int] = defaultdict(int)
    reasons: dict[str, int] = defaultdict(int)
    for model in zoo.models:
        splits[model.split] += 1
        if model.diverged:
            reasons[model.diverged_reason or "unknown"] += 1
    return ZooSummary(
        architecture=zoo.architecture.name,
        dataset=zoo.manifest.get("dataset", {}).get("name"),
        n_models=len(zoo.models),
        n_checkpoints=len(records),
        models_per_split=dict(splits),
        n_diverged=sum(reasons.values()),
        diverged_reasons=dict(reasons),
        test_acc_by_epoch={epoch: Distribution.of(v) for epoch, v in sorted(by_epoch.items())},
        test_acc_by_hyperparameter={
            name: {value: Distribution.of(v) for value, v in sorted(groups.items(), key=_value_order)}
            for name, groups in by_hyper.items()
        },
        last_epoch=last_epoch,
    )


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _value_order(item: tuple[str, Any]) -> tuple[int, float | str]:
    # numbers in numeric order, names in alphabetical order
    try:
        return (0, float(item[0]))
    except ValueError:
        return (1, item[0])


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    # JSON (and the service's database) has no NaN
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}
