"""Importing the public Model Zoos layout: every key layout, both checkpoint names, skips, and a
held-out zoo as real ones are (both CNN-s layouts, mixed activations, broken models)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from public_zoo_layout import (
    HELDOUT_NAN,
    HELDOUT_TRUNCATED,
    expected_test_acc,
    write_heldout_zoo,
    write_public_zoo,
)

from zooscope.autoencoder.losses import BehaviouralLoss
from zooscope.errors import ZooFormatError
from zooscope.networks.architectures import (
    ACTIVATION_NAMES,
    Architecture,
    canonical_architecture,
    canonical_state_dict,
)
from zooscope.population.forward import module_forward, population_forward
from zooscope.weightspace.tokens import TokenLayout
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
    # stored in the canonical layout (without dropout modules), whichever layout came in
    assert zoo.architecture.name == canonical_architecture(arch).name == arch.name.removesuffix("-dropout")
    assert {m.extra["key_layout"] for m in zoo.models} == {arch.name}
    assert zoo.manifest["dataset"]["name"] == "mnist"  # guessed from params.json
    sources = {m.extra["source"]: m for m in zoo.models}
    assert set(sources) == set(written)

    records = zoo.checkpoints()
    checkpoint_set = zoo.load_checkpoints(records)
    for i, record in enumerate(records):
        model = next(m for m in zoo.models if m.model_id == record.model_id)
        original = canonical_state_dict(written[model.extra["source"]][record.epoch], arch)
        for key, value in checkpoint_set.params.items():
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


def test_a_held_out_zoo_as_real_zoos_are_imports_every_good_model(tmp_path: Path) -> None:
    written = write_heldout_zoo(tmp_path / "public")
    result = import_public_zoo(tmp_path / "public", tmp_path / "zoo")

    reasons = dict(result.skipped)
    assert set(reasons) == {HELDOUT_TRUNCATED, HELDOUT_NAN}
    assert "checkpoint_000002" in reasons[HELDOUT_TRUNCATED]
    assert "nan" in reasons[HELDOUT_NAN].lower() or "non-finite" in reasons[HELDOUT_NAN].lower()
    zoo = Zoo.open(tmp_path / "zoo")
    assert len(zoo.models) == 10 and len(zoo.checkpoints()) == 30
    assert zoo.manifest["source"]["skipped"] == [list(s) for s in result.skipped]
    # both key layouts in one zoo, stored in the canonical one
    assert zoo.architecture.name == "cnn_s-1x28x28"
    assert zoo.manifest["source"]["key_layouts"] == ["cnn_s-1x28x28", "cnn_s-1x28x28-dropout"]
    assert {m.extra["key_layout"] for m in zoo.models} == {"cnn_s-1x28x28", "cnn_s-1x28x28-dropout"}
    # every model keeps its own activation; the manifest says the zoo mixes them
    assert zoo.mixed_activations and zoo.manifest["mixed_activations"] is True
    assert zoo.manifest["activations"] == {"gelu": 3, "relu": 1, "sigmoid": 3, "tanh": 3}
    by_source = {m.extra["source"]: m for m in zoo.models}
    assert set(by_source) == set(written)
    for name, (arch, _) in written.items():
        assert by_source[name].activation == arch.activation
    # a split by model with every split non-empty
    splits = [m.split for m in zoo.models]
    assert {s: splits.count(s) for s in ("train", "val", "test")} == {"train": 7, "val": 1, "test": 2}

    records = zoo.checkpoints()
    checkpoints = zoo.load_checkpoints(records)
    assert checkpoints.activations is not None
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    logits = population_forward(zoo.architecture, checkpoints.params, x, activations=checkpoints.activations)
    loss = BehaviouralLoss(zoo.architecture, TokenLayout.of(zoo.architecture))
    targets = loss.targets(checkpoints.params, x, checkpoints.activations)
    for i, record in enumerate(records):
        model = next(m for m in zoo.models if m.model_id == record.model_id)
        arch, by_epoch = written[model.extra["source"]]
        assert ACTIVATION_NAMES[int(checkpoints.activations[i])] == arch.activation
        original = by_epoch[record.epoch]  # as written: its own layout and activation
        for key, value in canonical_state_dict(original, arch).items():
            assert torch.equal(checkpoints.params[key][i], value), (record.model_id, key)
        expected = module_forward(arch, original, x)
        torch.testing.assert_close(logits[i], expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(targets[i], expected, atol=1e-5, rtol=1e-5)


def test_a_zoo_with_one_activation_does_not_say_it_mixes(tmp_path: Path) -> None:
    write_public_zoo(tmp_path / "public", ARCHITECTURES[1])
    zoo = import_public_zoo(tmp_path / "public", tmp_path / "zoo").zoo
    assert not zoo.mixed_activations and zoo.manifest["mixed_activations"] is False
    assert zoo.load_checkpoints(zoo.checkpoints()).activations is None
    assert {m.split for m in zoo.models} == {"train", "val", "test"}  # 3 models, one per split
