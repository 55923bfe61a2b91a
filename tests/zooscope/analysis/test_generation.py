"""The latent KDE (shapes, seeding, Scott's rule) and the diversity measures on hand cases."""

from __future__ import annotations

import math

import pytest
import torch

from zooscope.analysis.generation import LatentKDE, mean_pairwise_disagreement, mean_pairwise_l2


def _latents(k: int = 12, t: int = 5, dim: int = 3) -> torch.Tensor:
    return torch.randn(k, t, dim, generator=torch.Generator().manual_seed(0)) * torch.arange(1, dim + 1)


def test_samples_have_the_latent_shape_and_are_seeded() -> None:
    kde = LatentKDE.fit(_latents())
    first, again, other = kde.sample(7, seed=3), kde.sample(7, seed=3), kde.sample(7, seed=4)
    assert first.shape == (7, 5, 3)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_scott_bandwidth_is_per_dimension_std_times_k_to_minus_a_fifth() -> None:
    latents = _latents()
    kde = LatentKDE.fit(latents, multiplier=2.0)
    expected = latents.flatten(1).std(dim=0) * 12 ** (-0.2) * 2.0
    assert torch.allclose(kde.bandwidths, expected)
    assert kde.dim == 15


def test_zero_multiplier_returns_anchors_and_fixed_bandwidth_sets_the_noise() -> None:
    latents = _latents()
    samples = LatentKDE.fit(latents, multiplier=0.0).sample(20, seed=0).flatten(1)
    anchors = latents.flatten(1)
    assert all(any(torch.equal(s, a) for a in anchors) for s in samples)
    one_anchor = torch.zeros(1, 100, 40)
    noisy = LatentKDE.fit(one_anchor, bandwidth=0.5).sample(50, seed=0)
    assert noisy.std().item() == pytest.approx(0.5, rel=0.05)
    with pytest.raises(ValueError):
        LatentKDE.fit(latents, bandwidth="silverman")


def test_log_density_is_highest_at_the_anchors() -> None:
    latents = _latents()
    kde = LatentKDE.fit(latents)
    far = latents[:3] + 10 * kde.bandwidths.reshape(5, 3)
    assert (kde.log_density(latents[:3]) > kde.log_density(far)).all()


def test_diversity_measures_on_hand_cases() -> None:
    flat = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    assert mean_pairwise_l2(flat) == pytest.approx((5 + 0 + 5) / 3)
    assert math.isnan(mean_pairwise_l2(flat[:1]))
    predictions = torch.tensor([[0, 1, 2, 2], [0, 1, 2, 0], [1, 1, 1, 1]])
    # pairs: (0,1) differ on 1/4, (0,2) on 3/4, (1,2) on 3/4
    assert mean_pairwise_disagreement(predictions, 3, block=3) == pytest.approx((0.25 + 0.75 + 0.75) / 3)
    assert math.isnan(mean_pairwise_disagreement(predictions[:1], 3))


def test_spread_moves_centres_away_from_the_mean() -> None:
    latents = _latents()
    mean = latents.flatten(1).mean(0)
    wide = LatentKDE.fit(latents, multiplier=0.0, spread=2.0)
    assert torch.allclose(wide.anchors, mean + 2.0 * (latents.flatten(1) - mean), atol=1e-5)
    assert torch.allclose(LatentKDE.fit(latents, spread=1.0).anchors, latents.flatten(1))
    with pytest.raises(ValueError):
        LatentKDE.fit(latents, spread=-1.0)


def test_each_sample_names_the_anchor_its_kernel_is_centred_on() -> None:
    latents = _latents()
    kde = LatentKDE.fit(latents, bandwidth=1e-3)
    samples, index = kde.sample_from_anchors(9, seed=5)
    assert torch.equal(samples, kde.sample(9, seed=5))  # the same draws as `sample`
    nearest = torch.cdist(samples.flatten(1), latents.flatten(1)).argmin(1)
    assert torch.equal(index, nearest)
