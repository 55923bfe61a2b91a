"""The sensitivity analysis: the Jacobian-vector product predicts the change a tiny perturbation
makes, the error direction at its own norm is the reconstruction, and where the prediction stops
holding follows from the relative errors by one rule."""

from __future__ import annotations

import json
import math

import pytest
import torch

from zooscope.analysis.evaluation import accuracy, agreement
from zooscope.analysis.sensitivity import (
    SensitivityReport,
    breakdown_norm,
    perturbation_sensitivity,
    perturbed_values,
)
from zooscope.networks.architectures import Architecture, activation_codes
from zooscope.networks.parameters import FlatLayout, StackedParams, stack_state_dicts
from zooscope.population.forward import population_forward

ARCH = Architecture("cnn_digits", 1, 8)


def models(k: int, seed: int) -> StackedParams:
    torch.manual_seed(seed)
    return stack_state_dicts(ARCH, [ARCH.build().state_dict() for _ in range(k)])


def moved(params: StackedParams, norms: torch.Tensor, seed: int) -> StackedParams:
    """Each model moved by a random vector of the given L2 norm."""
    layout = FlatLayout.of(ARCH)
    flat = layout.flatten(params)
    step = torch.randn(flat.shape, generator=torch.Generator().manual_seed(seed))
    return layout.unflatten(flat + step / step.norm(dim=1, keepdim=True) * norms[:, None])


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(48, *ARCH.input_shape, generator=generator), torch.randint(
        10, (48,), generator=generator
    )


def test_the_first_order_prediction_matches_the_change_of_a_tiny_perturbation(inputs) -> None:
    x, y = inputs
    originals = models(3, seed=1)
    report = perturbation_sensitivity(
        ARCH, originals, moved(originals, torch.full((3,), 0.5), seed=2), x, y, norms=(1e-6, 1e-5, 30.0)
    )
    for direction in ("random", "error"):
        tiny = report.directions[direction][0]
        assert tiny["measured_change"] > 0
        # A ReLU network's logits are piecewise linear in its weights: at 1e-6 no unit changes side,
        # so the prediction is exact up to float64 rounding.
        assert tiny["relative_error"] < 1e-6
        assert tiny["predicted_change"] == pytest.approx(tiny["measured_change"], rel=1e-6)
        assert report.directions[direction][1]["measured_change"] == pytest.approx(
            10 * tiny["measured_change"], rel=1e-4
        )
        assert tiny["agreement"] == 1.0
        # Far beyond the weights' own norm the network is another one: the account no longer holds.
        far = report.directions[direction][-1]
        assert far["relative_error"] > report.tolerance
        assert report.breakdown[direction] == 30.0


def test_at_its_own_error_norm_the_error_direction_is_the_reconstruction(inputs) -> None:
    x, y = inputs
    originals = models(4, seed=3)
    norms = torch.tensor([0.5, 1.0, 2.0, 4.0])
    reconstructions = moved(originals, norms, seed=4)
    report = perturbation_sensitivity(ARCH, originals, reconstructions, x, y, norms=(0.1,))
    logits_o = population_forward(ARCH, originals, x)
    logits_r = population_forward(ARCH, reconstructions, x)
    own = report.own_error
    assert own["accuracy"] == pytest.approx(float(accuracy(logits_r, y).mean()))
    assert own["agreement"] == pytest.approx(float(agreement(logits_o, logits_r).mean()))
    assert own["measured_change"] == pytest.approx(
        float((logits_r - logits_o).double().norm(dim=-1).pow(2).mean().sqrt()), rel=1e-5
    )
    assert report.error_norm["min"] == pytest.approx(0.5) and report.error_norm["max"] == pytest.approx(4.0)
    assert report.original_accuracy["mean"] == pytest.approx(float(accuracy(logits_o, y).mean()))
    assert (report.n_checkpoints, report.n_inputs, report.n_perturbed) == (4, 48, ARCH.n_parameters)


def test_the_report_reads_back_from_its_json(inputs) -> None:
    x, y = inputs
    originals = models(2, seed=5)
    report = perturbation_sensitivity(
        ARCH, originals, moved(originals, torch.ones(2), 6), x, y, norms=(0.1, 1.0)
    )
    again = SensitivityReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report


def test_batchnorm_statistics_are_not_perturbed() -> None:
    arch = Architecture("cnn_digits", 1, 8, batchnorm=True)
    mask = perturbed_values(arch)
    layout = FlatLayout.of(arch)
    statistics = [key for key in layout.keys if "running" in key]
    assert statistics and not any(mask[layout.slice_of(key)].any() for key in statistics)
    assert int(mask.sum()) == layout.size - sum(
        layout.slice_of(k).stop - layout.slice_of(k).start for k in statistics
    )


NORMS = (0.001, 0.01, 0.1, 1.0, 10.0)


@pytest.mark.parametrize(
    ("errors", "breakdown"),
    [
        ((0.0, 0.01, 0.05, 0.09, 0.1), None),  # within the tolerance up to the largest norm
        ((0.0, 0.01, 0.2, 0.5, 0.9), 0.1),  # past it from 0.1 on
        ((0.0, 0.3, 0.05, 0.5, 0.9), 1.0),  # a miss at 0.01 that comes back under does not count
        ((0.2, 0.3, 0.4, 0.5, 0.9), 0.001),  # misses everywhere: the smallest norm
        ((0.0, 0.01, 0.05, None, 0.05), None),  # unmeasured in between, holding at the largest
        ((0.0, 0.01, 0.05, 0.05, None), 10.0),  # unmeasured at the largest counts as a miss
    ],
)
def test_the_breakdown_norm_is_where_the_prediction_stops_coming_back(errors, breakdown) -> None:
    assert breakdown_norm(NORMS, errors, tolerance=0.1) == breakdown


def test_the_breakdown_moves_out_as_the_tolerance_grows() -> None:
    errors = (0.001, 0.02, 0.15, 0.4, 0.9)
    found = [breakdown_norm(NORMS, errors, tolerance) for tolerance in (0.01, 0.1, 0.5, 1.0)]
    assert found == [0.01, 0.1, 10.0, None]
    ordered = [math.inf if norm is None else norm for norm in found]
    assert ordered == sorted(ordered)


def test_a_grid_that_does_not_increase_is_refused(inputs) -> None:
    with pytest.raises(ValueError, match="increase"):
        breakdown_norm((0.1, 0.1, 1.0), (0.0, 0.0, 0.0))
    x, y = inputs
    originals = models(1, seed=7)
    with pytest.raises(ValueError, match="increase"):
        perturbation_sensitivity(ARCH, originals, originals, x, y, norms=(1.0, 0.1))


def test_a_zoo_that_mixes_activations_runs_each_model_with_its_own(inputs) -> None:
    x, y = inputs
    originals = models(3, seed=8)
    reconstructions = moved(originals, torch.ones(3), seed=9)
    codes = activation_codes(["relu", "tanh", "relu"])
    report = perturbation_sensitivity(ARCH, originals, reconstructions, x, y, norms=(0.1,), activations=codes)
    logits_o = population_forward(ARCH, originals, x, activations=codes)
    logits_r = population_forward(ARCH, reconstructions, x, activations=codes)
    assert report.original_accuracy["mean"] == pytest.approx(float(accuracy(logits_o, y).mean()))
    assert report.own_error["agreement"] == pytest.approx(float(agreement(logits_o, logits_r).mean()))
    # All with ReLU instead: a different function, so different outputs somewhere.
    plain = perturbation_sensitivity(ARCH, originals, reconstructions, x, y, norms=(0.1,))
    assert plain.own_error["measured_change"] != pytest.approx(report.own_error["measured_change"])
