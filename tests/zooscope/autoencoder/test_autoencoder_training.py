"""A few training steps on a tiny checkpoint set: the loss goes down, the log is written, resume continues
exactly where a run stopped, and the collapse guard reports constant-class reconstructions."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from zooscope.autoencoder.artefact import TRAINING_LOG, TRAINING_STATE, TrainedAutoencoder
from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
from zooscope.autoencoder.training import (
    _collapse_warning,
    _latent_collapse_warning,
    _Run,
    train_on_checkpoints,
)
from zooscope.errors import ArtefactError

AE = AutoencoderConfig.tiny()
# Tiny but real: contrast, structure and behaviour all active; a high learning rate so that a
# handful of steps visibly lowers the loss.
TC = dataclasses.replace(
    TrainingConfig.tiny(), lr=3e-3, beta=0.5, gamma=0.05, n_queries=16, batch_size=8, checkpoint_every=2
)


def _weights(ae: TrainedAutoencoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in ae.model.state_dict().items()}


def test_training_lowers_the_loss_and_writes_the_log(tmp_path: Path, checkpoint_sets, digits) -> None:
    train, val = checkpoint_sets
    messages: list[str] = []
    progress: list[float] = []
    tc = dataclasses.replace(TC, epochs=6)
    ae = train_on_checkpoints(
        train, val, digits, AE, tc, tmp_path, log=messages.append, progress=lambda f, m: progress.append(f)
    )
    log = [json.loads(line) for line in (tmp_path / TRAINING_LOG).read_text().splitlines()]
    assert [e["epoch"] for e in log] == list(range(1, 7))
    assert log[-1]["loss"] < log[0]["loss"]
    assert log[-1]["structural"] < log[0]["structural"]
    for key in (
        "contrastive",
        "behavioural",
        "val_agreement",
        "val_structural",
        "seconds",
        "seconds_per_step",
    ):
        assert log[-1][key] is not None, key
    assert 0.0 <= log[-1]["val_agreement"] <= 1.0
    assert set(log[0]["normalisers"]) == {"contrastive", "structural", "behavioural", "statistics"}
    assert log[-1]["statistics"] is None and log[0]["normalisers"]["statistics"] is None  # off by default
    assert progress[-1] == 1.0 and progress == sorted(progress)
    assert any(m.startswith("epoch 6/6") for m in messages)
    assert ae.training_log == log
    assert (tmp_path / TRAINING_STATE).exists()


def test_structure_only_skips_the_behavioural_loss(tmp_path: Path, checkpoint_sets, digits) -> None:
    train, val = checkpoint_sets
    tc = dataclasses.replace(TC, beta=1.0, epochs=1)
    train_on_checkpoints(train, val, digits, AE, tc, tmp_path)
    entry = json.loads((tmp_path / TRAINING_LOG).read_text().splitlines()[0])
    assert entry["behavioural"] is None
    assert entry["normalisers"]["behavioural"] is None


def test_warm_up_starts_structure_only_then_adds_behaviour(tmp_path: Path, checkpoint_sets, digits) -> None:
    train, val = checkpoint_sets
    tc = dataclasses.replace(TC, beta=0.1, beta_warmup_epochs=2, epochs=3)
    ae = train_on_checkpoints(train, val, digits, AE, tc, tmp_path)
    betas = [e["beta"] for e in ae.training_log]
    assert betas[0] < 1.0 and betas[0] > betas[1] > betas[2] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("views", "drawn"),
    [("function_preserving", [True, True]), ("random", [True, False]), ("none", [True])],
)
def test_each_step_draws_the_contrastive_views_it_is_configured_with(
    monkeypatch: pytest.MonkeyPatch, checkpoint_sets, digits, views: str, drawn: list[bool]
) -> None:
    # The views ablation (docs/method.md §9.3): the decoded view always keeps the function; the
    # second, the contrastive term's other view, breaks it under "random"; "none" draws one view.
    train, _ = checkpoint_sets
    run = _Run(train, None, digits, AE, TC.with_overrides(contrastive_views=views))
    draws: list[bool] = []
    draw = run.permutations.random

    def recording(*args: Any, preserve_function: bool = True, **kwargs: Any) -> torch.Tensor:
        draws.append(preserve_function)
        return draw(*args, preserve_function=preserve_function, **kwargs)

    monkeypatch.setattr(run.permutations, "random", recording)
    values = run.train_step(next(run.batches()))
    assert draws == drawn
    assert math.isnan(values["contrastive"]) == (views == "none")


def test_resume_continues_exactly_where_the_run_stopped(tmp_path: Path, checkpoint_sets, digits) -> None:
    train, val = checkpoint_sets
    straight = train_on_checkpoints(train, val, digits, AE, dataclasses.replace(TC, epochs=4), tmp_path / "a")

    train_on_checkpoints(train, val, digits, AE, dataclasses.replace(TC, epochs=2), tmp_path / "b")
    resumed = train_on_checkpoints(
        train, val, digits, AE, dataclasses.replace(TC, epochs=4), tmp_path / "b", resume=True
    )
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert [e["epoch"] for e in resumed.training_log] == [1, 2, 3, 4]
    assert resumed.training_log[3]["loss"] == pytest.approx(straight.training_log[3]["loss"], rel=1e-5)


def test_the_later_behavioural_loss_takes_over_at_its_epoch_with_a_fresh_normaliser(
    tmp_path: Path, checkpoint_sets, digits
) -> None:
    train, val = checkpoint_sets
    switched = dataclasses.replace(TC, epochs=4, later_behavioural_loss="kl", later_behavioural_loss_epoch=2)
    log = train_on_checkpoints(train, val, digits, AE, switched, tmp_path / "a").training_log
    assert [e["behavioural_loss"] for e in log] == ["mse", "mse", "kl", "kl"]
    normalisers = [e["normalisers"]["behavioural"] for e in log]
    # Set by mse's first value, then rescaled once at the switch.
    assert normalisers[0] == normalisers[1] != normalisers[2] == normalisers[3]
    plain = train_on_checkpoints(train, val, digits, AE, dataclasses.replace(TC, epochs=4), tmp_path / "b")
    assert plain.training_log[1]["loss"] == pytest.approx(log[1]["loss"], rel=1e-6)  # the same until then
    assert plain.training_log[2]["normalisers"]["behavioural"] == normalisers[0]

    # Stopped at the switch and resumed: the same run.
    train_on_checkpoints(train, val, digits, AE, dataclasses.replace(switched, epochs=2), tmp_path / "c")
    resumed = train_on_checkpoints(train, val, digits, AE, switched, tmp_path / "c", resume=True)
    a, b = _weights(resumed), _weights(TrainedAutoencoder.load(tmp_path / "a"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert resumed.training_log[3]["normalisers"] == log[3]["normalisers"]


def test_at_the_switch_the_behavioural_term_keeps_its_value(
    monkeypatch: pytest.MonkeyPatch, checkpoint_sets, digits
) -> None:
    train, _ = checkpoint_sets
    tc = dataclasses.replace(TC, later_behavioural_loss="mse_scaled", later_behavioural_loss_epoch=1)
    run = _Run(train, None, digits, AE, tc)
    for batch in run.batches():  # the first epoch, under mse
        run.train_step(batch)
    calls: list[tuple[str, float]] = []
    forward = run.behavioural.forward

    def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
        value = forward(*args, **kwargs)
        calls.append((run.behavioural.kind, float(value.detach())))
        return value

    monkeypatch.setattr(run.behavioural, "forward", recording)
    before = run.composite.normaliser("behavioural")
    run.train_step(next(run.batches()))  # the first step under mse_scaled
    (new_kind, new_value), (old_kind, old_value) = calls
    assert (new_kind, old_kind) == ("mse_scaled", "mse")
    # new / n_new == old / n_old: the term's normalised value is what it would have been under mse
    assert run.composite.normaliser("behavioural") == pytest.approx(before * new_value / old_value, rel=1e-5)
    assert run.behavioural.kind == "mse_scaled"
    calls.clear()
    run.train_step(next(run.batches()))
    assert [kind for kind, _ in calls] == ["mse_scaled"]  # once only


def test_resume_refuses_a_different_model_size(tmp_path: Path, checkpoint_sets, digits) -> None:
    train, val = checkpoint_sets
    train_on_checkpoints(train, val, digits, AE, dataclasses.replace(TC, epochs=1), tmp_path)
    bigger = dataclasses.replace(AE, d_model=32)
    with pytest.raises(ArtefactError, match="different autoencoder config"):
        train_on_checkpoints(train, val, digits, bigger, TC, tmp_path, resume=True)


def _zero_decoder(run: _Run) -> None:
    # A decoder that outputs zeros rebuilds every network with zero weights: logits all 0, so every
    # reconstruction predicts class 0 on every input, the collapse of docs/method.md §9.
    with torch.no_grad():
        run.model.token_out.weight.zero_()
        run.model.token_out.bias.zero_()


def test_collapse_guard_flags_constant_reconstructions_loudly(checkpoint_sets, digits) -> None:
    train, val = checkpoint_sets
    run = _Run(train, val, digits, AE, TC)
    _zero_decoder(run)
    collapsed = run.validation()
    assert collapsed["val_constant_fraction"] == 1.0
    assert collapsed["val_original_constant_fraction"] < 1.0
    assert collapsed["collapse"]
    assert "COLLAPSE" in _collapse_warning({"epoch": 3, **collapsed})
    # The advice names the cause: the behavioural loss only where the epoch had one.
    assert "behavioural loss fell" in _collapse_warning({"epoch": 3, "beta": 0.1, **collapsed})
    structure_only = _collapse_warning({"epoch": 3, "beta": 1.0, **collapsed})
    assert "no behavioural term" in structure_only and "behavioural loss fell" not in structure_only


def test_collapse_guard_ignores_originals_that_are_constant_themselves(checkpoint_sets, digits) -> None:
    # Failed originals that predict one class are rebuilt as such: that is fidelity, not collapse.
    train, val = checkpoint_sets
    dead = dataclasses.replace(val, params={k: torch.zeros_like(v) for k, v in val.params.items()})
    run = _Run(train, dead, digits, AE, TC)
    _zero_decoder(run)
    result = run.validation()
    assert result["val_constant_fraction"] == result["val_original_constant_fraction"] == 1.0
    assert result["val_agreement"] == 1.0
    assert not result["collapse"]


def test_decoding_both_views_trains_with_behaviour_on_both(tmp_path: Path, checkpoint_sets, digits) -> None:
    train, val = checkpoint_sets
    tc = dataclasses.replace(TC, epochs=1, decode_both_views=True)
    entry = train_on_checkpoints(train, val, digits, AE, tc, tmp_path).training_log[0]
    assert entry["behavioural"] is not None and entry["contrastive"] is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_mixed_precision_run_matches_the_cpu_losses_roughly(
    tmp_path: Path, checkpoint_sets, digits
) -> None:
    train, val = checkpoint_sets
    tc = dataclasses.replace(TC, epochs=2, device="cuda", amp=True)
    gpu = train_on_checkpoints(train, val, digits, AE, tc, tmp_path / "gpu")
    cpu = train_on_checkpoints(
        train, val, digits, AE, dataclasses.replace(tc, device="cpu"), tmp_path / "cpu"
    )
    assert gpu.device.type == "cuda"
    # Same seed, same batches and views: bf16 autocast moves the losses a little, not a lot.
    assert gpu.training_log[0]["loss"] == pytest.approx(cpu.training_log[0]["loss"], rel=0.1)
    loaded = TrainedAutoencoder.load(tmp_path / "gpu", device="cuda")
    assert loaded.latents(val.params).device.type == "cuda"


def test_a_per_model_latent_trains_saves_and_reloads(tmp_path: Path, checkpoint_sets, digits) -> None:
    train, val = checkpoint_sets
    ae_config = dataclasses.replace(AE, latent_tokens=2)
    ae = train_on_checkpoints(train, val, digits, ae_config, dataclasses.replace(TC, epochs=3), tmp_path)
    assert ae.training_log[-1]["loss"] < ae.training_log[0]["loss"]
    latents = ae.latents(val.params)
    assert latents.shape == (6, 2, AE.latent_dim)
    loaded = TrainedAutoencoder.load(tmp_path)
    assert loaded.config.latent_tokens == 2
    assert torch.equal(loaded.latents(val.params), latents)
    decoded = loaded.decode_latents(latents)
    assert {k: v.shape for k, v in decoded.items()} == {k: v.shape for k, v in val.params.items()}


def test_latent_collapse_is_flagged_when_every_checkpoint_encodes_alike(checkpoint_sets, digits) -> None:
    train, val = checkpoint_sets
    relu = dataclasses.replace(AE, latent_activation="relu")
    run = _Run(train, val, digits, relu, TC)
    assert not run.validation()["latent_collapse"]  # a fresh encoder tells checkpoints apart
    with torch.no_grad():  # every ReLU unit dead: the latent map's output is negative for any input
        run.model.to_latent.weight.zero_()
        run.model.to_latent.bias.fill_(-1.0)
    collapsed = run.validation()
    assert collapsed["latent_collapse"] and collapsed["val_latent_spread"] == 0.0
    assert "LATENT COLLAPSE" in _latent_collapse_warning({"epoch": 2, **collapsed})


def test_training_steps_run_with_the_heap_retained_and_it_is_released_after(
    tmp_path: Path, checkpoint_sets, digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step allocates the same large activations: inside retained_heap their pages stay
    mapped between steps (zooscope/heap.py); validation and whatever follows run with glibc's own
    limits again."""
    from zooscope import heap

    depths: list[int] = []
    step = _Run.train_step

    def recording_step(self: _Run, batch: torch.Tensor) -> dict[str, float]:
        depths.append(heap._depth)
        return step(self, batch)

    monkeypatch.setattr(_Run, "train_step", recording_step)
    train, val = checkpoint_sets
    train_on_checkpoints(train, val, digits, AE, dataclasses.replace(TC, epochs=2), tmp_path)
    assert depths and all(depth >= 1 for depth in depths) == heap.is_supported()
    assert heap._depth == 0
