"""The embedding map: its PCA against numpy's SVD and scikit-learn's PCA on known cases, and on a
tiny zoo: every checkpoint placed, the stored projection placing them again, later points
(reconstructions, generated models, anchors) on the same axes, and the probes' predictions."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import r2_score

from zooscope.analysis.embedding_map import (
    EmbeddingMap,
    Projection,
    build_embedding_map,
    generation_on_map,
    reconstructions_on_map,
)
from zooscope.analysis.generation import generate
from zooscope.analysis.probing import embeddings, predict_properties
from zooscope.autoencoder.artefact import TrainedAutoencoder
from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
from zooscope.autoencoder.training import train_autoencoder
from zooscope.errors import ZooscopeError
from zooscope.zoo.grid import ZooConfig
from zooscope.zoo.store import Zoo, build_zoo


def _plane(n: int = 200, dim: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points mean + a*u + b*v, a and b centred and uncorrelated with std(a) = 3 > std(b) = 1:
    (points, [u, v], [a, b])."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, 2, generator=generator, dtype=torch.float64))
    raw = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    columns, _ = torch.linalg.qr(raw - raw.mean(0))  # orthonormal, and still centred
    ab = columns * torch.tensor([3.0, 1.0]) * math.sqrt(n - 1)
    mean = torch.arange(dim, dtype=torch.float64)
    return mean + ab @ basis.T, basis.T, ab


def test_a_plane_is_found_exactly() -> None:
    points, axes, ab = _plane()
    projection = Projection.fit(points)
    signs = torch.sign((projection.components * axes).sum(1))  # PCA fixes axes up to sign
    assert torch.allclose(projection.components, signs[:, None] * axes, atol=1e-10)
    assert torch.allclose(projection.project(points), ab * signs, atol=1e-10)
    assert sum(projection.explained_variance_ratio) == pytest.approx(1.0)
    assert projection.explained_variance.tolist() == pytest.approx([9.0, 1.0])


def test_components_and_variances_are_numpys_svd_and_sklearns_pca() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 10)) @ rng.normal(size=(10, 10)) + 5.0
    projection = Projection.fit(torch.from_numpy(x))
    _, singular, vh = np.linalg.svd(x - x.mean(0), full_matrices=False)
    reference = PCA(n_components=2).fit(x)
    for mine, theirs, sklearns in zip(
        projection.components.numpy(), vh[:2], reference.components_, strict=True
    ):
        assert abs(mine @ theirs) == pytest.approx(1.0)  # the same axis, whatever its sign
        assert abs(mine @ sklearns) == pytest.approx(1.0)
    assert projection.explained_variance.numpy() == pytest.approx(singular[:2] ** 2 / 79)
    assert projection.explained_variance.numpy() == pytest.approx(reference.explained_variance_)
    assert projection.explained_variance_ratio == pytest.approx(reference.explained_variance_ratio_.tolist())
    signs = np.sign(np.sum(projection.components.numpy() * reference.components_, axis=1))
    assert projection.project(torch.from_numpy(x)).numpy() == pytest.approx(reference.transform(x) * signs)


def test_the_same_embeddings_give_the_same_picture_not_a_mirrored_one() -> None:
    points, _, _ = _plane(seed=1)
    first = Projection.fit(points)
    shuffled = Projection.fit(points[torch.randperm(len(points), generator=torch.Generator().manual_seed(0))])
    negated = Projection.fit(-points)  # the SVD of -x has the same axes, with any signs
    assert torch.allclose(first.components, shuffled.components, atol=1e-10)
    assert torch.allclose(first.components, negated.components, atol=1e-10)
    for component in first.components:
        assert component[component.abs().argmax()] > 0


def test_a_stored_projection_places_points_as_the_fitted_one() -> None:
    points, _, _ = _plane(seed=2)
    projection = Projection.fit(points)
    stored = Projection.from_dict(json.loads(json.dumps(projection.to_dict())))
    later = points[:5] * 1.5  # points the projection was not fitted on
    assert torch.equal(stored.project(later), projection.project(later))


def test_degenerate_embeddings_are_refused_or_say_the_variance_is_undefined() -> None:
    with pytest.raises(ZooscopeError, match="at least 2 checkpoints"):
        Projection.fit(torch.ones(1, 4))
    same = Projection.fit(torch.ones(3, 4))
    assert all(math.isnan(r) for r in same.explained_variance_ratio)
    assert same.to_dict()["explained_variance_ratio"] == [None, None]  # strict JSON: no NaN


# ---- on a tiny zoo, with a real (tiny) autoencoder --------------------------------------------


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return build_zoo(
        ZooConfig.tiny(epochs=2, checkpoint_epochs=(1, 2)), tmp_path_factory.mktemp("zoo") / "zoo"
    )


@pytest.fixture(scope="module")
def ae(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> TrainedAutoencoder:
    out: Path = tmp_path_factory.mktemp("ae")
    train_autoencoder(
        zoo, AutoencoderConfig.tiny(), replace(TrainingConfig.tiny(), epochs=1, device="cpu"), out
    )
    return TrainedAutoencoder.load(out)


@pytest.fixture(scope="module")
def zoo_map(ae: TrainedAutoencoder, zoo: Zoo) -> EmbeddingMap:
    return build_embedding_map(ae, zoo)


def test_every_checkpoint_is_on_the_map_and_the_stored_projection_places_it_again(
    ae: TrainedAutoencoder, zoo: Zoo, zoo_map: EmbeddingMap
) -> None:
    records = zoo.checkpoints()
    by_name = {p.checkpoint: p for p in zoo_map.points}
    assert sorted(by_name) == sorted(f"{r.model_id}@{r.epoch}" for r in records)
    assert {p.split for p in zoo_map.points} == {"train", "val", "test"}
    assert {p.init for p in zoo_map.points} == {"kaiming_uniform", "kaiming_normal"}
    assert {p.epoch for p in zoo_map.points} == {1, 2}
    for record in records:
        point = by_name[f"{record.model_id}@{record.epoch}"]
        assert point.test_acc == pytest.approx(record.properties["test_acc"])

    stored = EmbeddingMap.from_dict(json.loads(json.dumps(zoo_map.to_dict())))
    assert stored.points == zoo_map.points
    again = stored.projection.project(embeddings(ae, zoo.load_checkpoints(records).params))
    expected = torch.tensor([[by_name[f"{r.model_id}@{r.epoch}"].x, by_name[f"{r.model_id}@{r.epoch}"].y]
                             for r in records], dtype=torch.float64)  # fmt: skip
    assert torch.allclose(again, expected, atol=1e-5)
    ratio = stored.projection.explained_variance_ratio
    assert ratio[0] >= ratio[1] > 0 and sum(ratio) <= 1 + 1e-9


def test_the_prediction_is_the_probes_of_predict_properties_checkpoint_by_checkpoint(
    ae: TrainedAutoencoder, zoo: Zoo, zoo_map: EmbeddingMap
) -> None:
    prediction = zoo_map.prediction
    assert prediction is not None and (prediction.property, prediction.split) == ("test_acc", "test")
    test = zoo.checkpoints(split="test")
    assert prediction.checkpoints == [f"{r.model_id}@{r.epoch}" for r in test]
    assert prediction.true == pytest.approx([r.properties["test_acc"] for r in test])
    reference = predict_properties(ae, zoo, properties=("test_acc",))["test_acc"]
    for kind in ("embedding", "weight_statistics"):
        assert prediction.probes[kind] == reference[kind]
        # the stored per-checkpoint predictions are the ones the R^2 was computed from
        assert r2_score(prediction.true, prediction.predicted[kind]) == pytest.approx(reference[kind].r2_test)
    stored = zoo_map.to_dict()["prediction"]
    assert set(stored["items"][0]) == {"checkpoint", "true", "embedding", "weight_statistics"}


def test_reconstructions_and_generated_models_land_on_the_same_axes(
    ae: TrainedAutoencoder, zoo: Zoo, zoo_map: EmbeddingMap
) -> None:
    records = zoo.checkpoints(split="test")[:3]
    params = zoo.load_checkpoints(records).params
    names = [f"{r.model_id}@{r.epoch}" for r in records]
    by_name = {p.checkpoint: p for p in zoo_map.points}
    # An original "reconstructed" as itself sits on its own map point, both ends of its link.
    placed = reconstructions_on_map(ae, zoo_map.projection, params, params, names)
    for item in placed:
        point = by_name[item["checkpoint_id"]]
        assert item["original"] == item["reconstruction"]
        assert item["original"] == pytest.approx({"x": point.x, "y": point.y}, abs=1e-5)

    result = generate(ae, zoo, n_samples=4, accuracy_threshold=0.0, seed=0)
    placed = generation_on_map(ae, zoo_map.projection, result, ids=["a", "b", "c", "d"])
    anchors = placed["anchors"]
    assert (
        len(anchors) == result.anchors["count"]
        and [a["checkpoint"] for a in anchors] == result.anchors["checkpoints"]
    )
    for anchor in anchors:  # anchors are zoo checkpoints: the map already shows them there
        point = by_name[anchor["checkpoint"]]
        assert (anchor["x"], anchor["y"]) == pytest.approx((point.x, point.y), abs=1e-5)
    assert [g["checkpoint_id"] for g in placed["generated"]] == ["a", "b", "c", "d"]
    assert [g["anchor"] for g in placed["generated"]] == result.anchor_of
    assert all(0 <= g["anchor"] < len(anchors) for g in placed["generated"])
    assert all(math.isfinite(g["x"]) and math.isfinite(g["y"]) for g in placed["generated"])
