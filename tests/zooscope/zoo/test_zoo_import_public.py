"""Importing the public Model Zoos layout: every key layout, both checkpoint names, skips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from public_zoo_layout import expected_test_acc, write_public_zoo

from zooscope.errors import ZooFormatError
from zooscope.networks.architectures import Architecture
from zooscope.zoo.import_public import import_public_zoo
from zooscope.zoo.store import Zoo

ARCHITECTURES = [
    Architecture("cnn_s", 1, 28),  # keys 0,3,6,9,11
    Architecture("cnn_s", 1, 28, dropout_layers=True, activation="tanh"),  # keys 0,4,8,11,14
    Architecture("cnn3", 3, 32, activation="gelu"),  # keys 0,4,8,13,16
]


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_import_round_trip_skips_bad_models(tmp_path: Path, arch: Architecture) -> None:
    source = tmp_path / "public"
    written = write_public_zoo(source, arch)
    result = import_public_zoo(source, tmp_path / "zoo")

    reasons = dict(result.skipped)
    assert set(reasons) == {"model_nan", "model_corrupt", "model_huge", "model_no_params"}
    assert "non-finite" in reasons["model_nan"].lower() or "nan" in reasons["model_nan"].lower()
    assert "threshold" in reasons["model_huge"]
    assert "params.json" in reasons["model_no_params"]

    zoo = Zoo.open(tmp_path / "zoo")
    assert zoo.architecture.family == arch.family
    assert zoo.architecture.activation == arch.activation
    assert zoo.architecture.name == arch.name  # the key layout (with or without dropout modules)
    assert zoo.manifest["dataset"]["name"] == "mnist"  # guessed from params.json
    sources = {m.extra["source"]: m for m in zoo.models}
    assert set(sources) == set(written)

    records = zoo.checkpoints()
    population = zoo.load_population(records)
    for i, record in enumerate(records):
        model = next(m for m in zoo.models if m.model_id == record.model_id)
        original = written[model.extra["source"]][record.epoch]
        for key, value in population.params.items():
            assert torch.equal(value[i], original[key]), (record.model_id, record.epoch, key)
        # result.json lines are matched on training_iteration, not on line order (model_b is reversed)
        assert record.properties["test_acc"] == pytest.approx(expected_test_acc(model.seed, record.epoch))
    assert sorted({r.epoch for r in records}) == [0, 1, 2]


def test_import_keeps_only_the_requested_epochs(tmp_path: Path) -> None:
    write_public_zoo(tmp_path / "public", ARCHITECTURES[0])
    result = import_public_zoo(tmp_path / "public", tmp_path / "zoo", epochs=[2], dataset="fashion_mnist")
    assert {r.epoch for r in result.zoo.checkpoints()} == {2}
    assert result.zoo.manifest["dataset"]["name"] == "fashion_mnist"
    # the poisoned epoch is 2, so the bad models are still skipped
    assert {name for name, _ in result.skipped} >= {"model_nan", "model_corrupt", "model_huge"}


def test_import_of_nothing_usable_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "public" / "empty_model").mkdir(parents=True)
    with pytest.raises(ZooFormatError, match="no model"):
        import_public_zoo(tmp_path / "public", tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists() and not list(tmp_path.glob(".zoo*"))
