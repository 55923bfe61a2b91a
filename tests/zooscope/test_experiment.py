"""The ablation's bookkeeping: which epochs count for timings, the cost ratio, the config table."""

from __future__ import annotations

import pytest

from zooscope.autoencoder.config import TrainingConfig
from zooscope.experiment import (
    ABLATIONS,
    _best_model_note,
    _best_test_gap,
    _timings,
    _training_config,
    step_cost_ratio,
)


def test_behavioural_timings_count_only_epochs_with_behaviour() -> None:
    log = [
        {"seconds": 10.0, "seconds_per_step": 0.1, "beta": 1.0},  # warm-up: no behavioural term yet
        {"seconds": 20.0, "seconds_per_step": 0.2, "beta": 0.5},
        {"seconds": 30.0, "seconds_per_step": 0.4, "beta": 0.1},
    ]
    behavioural = _timings(log, behavioural=True)
    assert behavioural["seconds_per_epoch"] == pytest.approx(20.0)
    assert behavioural["seconds_per_step"] == pytest.approx(0.3)  # median of 0.2 and 0.4
    assert _timings(log, behavioural=False)["seconds_per_step"] == pytest.approx(0.2)
    behaviour_only = [{"seconds": 5.0, "seconds_per_step": 0.3, "beta": 0.0}]
    assert _timings(behaviour_only, behavioural=True)["seconds_per_step"] == pytest.approx(0.3)


def test_step_cost_ratio_needs_both_runs() -> None:
    configs = {
        "structure": {"timings": {"seconds_per_step": 0.2}},
        "csb": {"timings": {"seconds_per_step": 0.5}},
    }
    assert step_cost_ratio(configs) == pytest.approx(2.5)
    assert step_cost_ratio({"csb": configs["csb"]}) is None


def test_configurations_set_the_paper_weights() -> None:
    base = TrainingConfig.cpu()
    structure = _training_config(base, ABLATIONS["structure"], epochs=3, seed=7, device="cpu")
    behaviour = _training_config(base, ABLATIONS["behaviour"], epochs=None, seed=7, device="cpu")
    csb = _training_config(base, ABLATIONS["csb"], epochs=3, seed=7, device="cpu")
    noise = _training_config(base, ABLATIONS["csb_noise"], epochs=3, seed=7, device="cpu")
    assert (structure.gamma, structure.beta, structure.epochs, structure.seed) == (0.05, 1.0, 3, 7)
    assert (behaviour.beta, behaviour.beta_warmup_epochs, behaviour.epochs) == (0.0, 0, base.epochs)
    assert (csb.beta, csb.beta_warmup_epochs) == (0.1, base.beta_warmup_epochs)
    assert noise.query_source == "noise" and csb.query_source == "train"
    # Only csb_stats adds the fourth term; every other configuration is method.md's loss.
    stats = _training_config(base, ABLATIONS["csb_stats"], epochs=3, seed=7, device="cpu")
    assert (stats.gamma, stats.beta, stats.beta_warmup_epochs) == (0.05, 0.1, base.beta_warmup_epochs)
    assert stats.statistics_weight > 0
    assert structure.statistics_weight == behaviour.statistics_weight == csb.statistics_weight == 0.0


def test_the_results_page_says_when_the_best_zoo_model_is_not_in_the_test_split() -> None:
    result = {"best_zoo_accuracy": 0.9833, "evaluation": {"original_accuracy": {"max": 0.9777}}}
    (note,) = [line for line in _best_model_note(result) if line]
    assert "98.3 %" in note and "97.8 %" in note and "-0.6 points" in note and "0 on" in note
    # Best model in the test split: a copy can reach it, nothing to explain.
    result["evaluation"]["original_accuracy"]["max"] = 0.9833
    assert _best_model_note(result) == []


def test_the_best_reconstruction_is_also_measured_against_the_best_test_original() -> None:
    evaluation = {"original_accuracy": {"max": 0.9777}, "reconstructed_accuracy": {"max": 0.9796}}
    assert _best_test_gap(evaluation) == pytest.approx(0.19)
    evaluation["reconstructed_accuracy"]["max"] = 0.9777  # an exact copy of the best test original
    assert _best_test_gap(evaluation) == pytest.approx(0.0)
    evaluation["original_accuracy"]["max"] = None  # an empty test split
    assert _best_test_gap(evaluation) is None
