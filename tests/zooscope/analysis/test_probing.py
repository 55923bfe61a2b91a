"""Ridge probes pick their regulariser on validation; weight statistics have the documented shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zooscope.analysis.probing import ProbeResult, ridge_probe
from zooscope.networks.architectures import Architecture
from zooscope.networks.parameters import stack_state_dicts
from zooscope.weightspace.statistics import weight_statistics_features


def _split(rng: np.random.Generator, n: int, w: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, len(w)))
    return x, x @ w + noise * rng.normal(size=n)


def test_noiseless_linear_target_picks_the_weakest_regulariser() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=5)
    train, val, test = (_split(rng, n, w, 0.0) for n in (50, 20, 20))
    result = ridge_probe(*train, *val, *test, alphas=(1e-3, 10.0, 1e3))
    assert result.alpha == 1e-3
    assert result.r2_test > 0.999


def test_few_samples_many_noisy_features_pick_a_strong_regulariser() -> None:
    rng = np.random.default_rng(1)
    w = np.zeros(40)
    w[0] = 1.0  # one informative feature among 40, 30 training samples, heavy noise
    train, val, test = (_split(rng, n, w, 1.0) for n in (30, 200, 200))
    alphas = (1e-4, 1.0, 30.0, 1e3)
    result = ridge_probe(*train, *val, *test, alphas=alphas)
    # The chosen alpha is the arg-max of validation R^2 over the grid, and it is not the weakest one.
    scores = [ridge_probe(*train, *val, *test, alphas=(a,)).r2_val for a in alphas]
    assert result.alpha == alphas[int(np.argmax(scores))]
    assert result.alpha > 1e-4 and result.r2_val == pytest.approx(max(scores))


def test_constant_target_gives_undefined_r2_not_a_crash() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 3))
    result = ridge_probe(x, np.ones(10), x, np.ones(10), x, np.ones(10))
    assert math.isnan(result.r2_val) and math.isnan(result.r2_test)
    assert ProbeResult.from_dict(result.to_dict()).alpha == result.alpha
    assert result.to_dict()["r2_test"] is None


def test_weight_statistics_features_shape_and_values() -> None:
    arch = Architecture("cnn_digits", 1, 8)
    generator = torch.Generator().manual_seed(0)
    sds = []
    for _ in range(3):
        module = arch.build()
        for p in module.parameters():
            torch.nn.init.normal_(p, generator=generator)
        sds.append(module.state_dict())
    params = stack_state_dicts(arch, sds)
    features = weight_statistics_features(arch, params)
    layers = arch.parameter_layers()
    assert features.shape == (3, 2 * 7 * len(layers))
    w = params[layers[0].weight_key].flatten(1)
    b = params[layers[0].bias_key].flatten(1)
    # layout: [mean, std, q0, q25, q50, q75, q100] of weights, then of biases, layer by layer
    assert torch.allclose(features[:, 0], w.mean(1))
    assert torch.allclose(features[:, 1], w.std(1, unbiased=False))
    assert torch.allclose(features[:, 2], w.min(1).values)
    assert torch.allclose(features[:, 6], w.max(1).values)
    assert torch.allclose(features[:, 7], b.mean(1))
