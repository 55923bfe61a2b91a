"""The optional fourth term (beyond docs/method.md): the embedding must carry layer weight statistics."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from zooscope.autoencoder.artefact import TRAINING_LOG, TrainedAutoencoder
from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
from zooscope.autoencoder.layer_statistics import LayerStatisticsLoss, layer_statistics
from zooscope.autoencoder.losses import CompositeLoss
from zooscope.autoencoder.training import train_on_checkpoints
from zooscope.errors import ArtefactError
from zooscope.networks.architectures import Architecture
from zooscope.networks.parameters import FlatLayout
from zooscope.weightspace.permutations import PermutationIndex, permute_flat
from zooscope.weightspace.statistics import weight_statistics_features

ARCH = Architecture("cnn_digits", 1, 8)  # the checkpoint_sets fixture's
AE = AutoencoderConfig.tiny()
TC = dataclasses.replace(
    TrainingConfig.tiny(), lr=3e-3, beta=0.5, gamma=0.05, n_queries=16, batch_size=8, statistics_weight=0.5
)


def test_statistics_are_the_probe_features_and_their_logs_and_ignore_permutations(checkpoint_sets) -> None:
    train, _ = checkpoint_sets
    statistics = layer_statistics(ARCH, train.params)
    plain = weight_statistics_features(ARCH, train.params)
    assert statistics.shape == (24, 2 * plain.shape[1])
    assert torch.equal(statistics[:, : plain.shape[1]], plain)
    assert torch.allclose(statistics[:, plain.shape[1] :], plain.abs().clamp_min(1e-6).log())
    # A function-preserving permutation keeps every layer's statistics: any view has the same targets.
    flat = FlatLayout.of(ARCH).flatten(train.params)
    permuted = permute_flat(flat, PermutationIndex.of(ARCH).random(24, torch.Generator().manual_seed(0)))
    assert not torch.equal(permuted, flat)
    assert torch.allclose(
        layer_statistics(ARCH, FlatLayout.of(ARCH).unflatten(permuted)), statistics, atol=1e-5
    )


def test_targets_are_standardised_on_the_training_split_and_a_silent_head_costs_one(checkpoint_sets) -> None:
    train, val = checkpoint_sets
    loss = LayerStatisticsLoss(ARCH, latent_dim=4, train_params=train.params)
    targets = loss.targets(train.params)
    varying = layer_statistics(ARCH, train.params).std(0) > 1e-6
    assert torch.allclose(targets.mean(0), torch.zeros(targets.shape[1]), atol=1e-4)
    assert torch.allclose(
        targets[:, varying].std(0, unbiased=False), torch.ones(int(varying.sum())), atol=1e-3
    )
    # A head that always says 0 predicts the training mean: its MSE is the mean variance, 1 per
    # varying statistic and 0 per constant one.
    with torch.no_grad():
        loss.head.weight.zero_()
        loss.head.bias.zero_()
    value = loss(torch.randn(24, 4), train.params)
    assert value.item() == pytest.approx(float(varying.float().mean()), rel=1e-3)
    # The statistics describe the input: no gradient reaches them, only the head and the embedding.
    embedding = torch.randn(6, 4, requires_grad=True)
    loss(embedding, val.params).backward()
    assert embedding.grad is not None and loss.head.weight.grad is not None


def test_composite_adds_the_fourth_term_outside_the_papers_formula() -> None:
    gamma, beta, delta = 0.05, 0.1, 0.5
    composite = CompositeLoss(gamma, beta, delta)
    with pytest.raises(ValueError, match="statistics"):
        composite(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0))
    assert set(composite.normalisers().values()) == {None}  # a refused call sets no normaliser
    first = composite(torch.tensor(4.0), torch.tensor(0.5), torch.tensor(0.02), statistics=torch.tensor(3.0))
    assert first.item() == pytest.approx(1.0 + delta)  # every term starts at 1
    second = composite(
        torch.tensor(4.0), torch.tensor(0.5), torch.tensor(0.02), statistics=torch.tensor(1.5)
    ).item()
    assert second == pytest.approx(1.0 + delta * 0.5)
    assert composite.normalisers()["statistics"] == pytest.approx(3.0)
    # delta 0 is docs/method.md's loss: the fourth term is neither needed nor counted.
    assert CompositeLoss(gamma, beta)(
        torch.tensor(4.0), torch.tensor(0.5), torch.tensor(0.02), statistics=torch.tensor(9.0)
    ).item() == pytest.approx(1.0)


def test_training_with_the_term_logs_it_resumes_and_saves_no_head(
    tmp_path: Path, checkpoint_sets, digits
) -> None:
    train, val = checkpoint_sets
    straight = train_on_checkpoints(train, val, digits, AE, dataclasses.replace(TC, epochs=4), tmp_path / "a")
    log = [json.loads(line) for line in (tmp_path / "a" / TRAINING_LOG).read_text().splitlines()]
    assert all(entry["statistics"] is not None for entry in log)
    assert log[0]["normalisers"]["statistics"] > 0
    # The term reaches the encoder: the same seed without it trains other weights.
    without = train_on_checkpoints(
        train, val, digits, AE, dataclasses.replace(TC, epochs=4, statistics_weight=0.0), tmp_path / "c"
    )
    encoder = "encoder.layers.0.linear1.weight"
    assert not torch.allclose(straight.model.state_dict()[encoder], without.model.state_dict()[encoder])

    train_on_checkpoints(train, val, digits, AE, dataclasses.replace(TC, epochs=2), tmp_path / "b")
    resumed = train_on_checkpoints(
        train, val, digits, AE, dataclasses.replace(TC, epochs=4), tmp_path / "b", resume=True
    )
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    loaded = TrainedAutoencoder.load(tmp_path / "a")
    assert not any("head" in key and "projection" not in key for key in loaded.model.state_dict())
    assert loaded.training_config.statistics_weight == 0.5


def test_a_scheduled_weight_fades_epoch_by_epoch_and_is_recorded(
    tmp_path: Path, checkpoint_sets, digits
) -> None:
    train, val = checkpoint_sets
    tc = dataclasses.replace(TC, epochs=3, beta_warmup_epochs=0, statistics_weight_final=0.1)
    ae = train_on_checkpoints(train, val, digits, AE, tc, tmp_path)
    deltas = [entry["delta"] for entry in ae.training_log]
    assert 0.5 > deltas[0] > deltas[1] > deltas[2] > 0.1  # each epoch's mean over its steps
    assert TrainedAutoencoder.load(tmp_path).training_config.statistics_weight_final == 0.1


def test_resume_refuses_a_checkpoint_made_without_the_term(tmp_path: Path, checkpoint_sets, digits) -> None:
    train, val = checkpoint_sets
    without = dataclasses.replace(TC, statistics_weight=0.0, epochs=1)
    train_on_checkpoints(train, val, digits, AE, without, tmp_path)
    with pytest.raises(ArtefactError, match="layer-statistics"):
        train_on_checkpoints(train, val, digits, AE, dataclasses.replace(TC, epochs=2), tmp_path, resume=True)


def test_a_negative_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="statistics_weight"):
        TrainingConfig(statistics_weight=-0.1)
