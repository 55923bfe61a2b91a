"""Config round trips and the structure-first warm-up schedule."""

from __future__ import annotations

import dataclasses
import json

import pytest

from zooscope.autoencoder.config import (
    LEGACY_AUTOENCODER,
    LEGACY_TRAINING,
    AutoencoderConfig,
    TrainingConfig,
)


@pytest.mark.parametrize("name", ["cpu", "paper", "tiny"])
def test_presets_round_trip_through_json(name: str) -> None:
    ae = AutoencoderConfig.preset(name)
    assert AutoencoderConfig.from_dict(json.loads(json.dumps(ae.to_dict()))) == ae
    tc = TrainingConfig.preset(name)
    assert TrainingConfig.from_dict(json.loads(json.dumps(tc.to_dict()))) == tc


def test_unknown_keys_are_ignored_and_bad_values_refused() -> None:
    assert TrainingConfig.from_dict({"gamma": 0.2, "future_option": 1}).gamma == 0.2
    with pytest.raises(ValueError):
        TrainingConfig(beta=1.5)
    with pytest.raises(ValueError):
        TrainingConfig(behavioural_loss="cross_entropy")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AutoencoderConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError):
        AutoencoderConfig.preset("huge")


def test_beta_warms_up_linearly_from_one_to_the_target() -> None:
    tc = TrainingConfig(beta=0.1, beta_warmup_epochs=10)
    assert tc.beta_at(0) == 1.0
    assert tc.beta_at(5) == pytest.approx(0.55)
    assert tc.beta_at(10) == pytest.approx(0.1)
    assert tc.beta_at(50) == pytest.approx(0.1)
    assert TrainingConfig(beta=0.3, beta_warmup_epochs=0).beta_at(0) == 0.3


def test_the_statistics_weight_stays_constant_or_moves_linearly_after_the_warm_up() -> None:
    constant = TrainingConfig(statistics_weight=1.0, statistics_weight_final=None, epochs=80)
    assert constant.statistics_weight_at(60) == 1.0
    tc = TrainingConfig(statistics_weight=1.0, statistics_weight_final=0.2, beta_warmup_epochs=20, epochs=60)
    assert tc.statistics_weight_at(0) == 1.0
    assert tc.statistics_weight_at(20) == 1.0  # untouched through the warm-up
    assert tc.statistics_weight_at(40) == pytest.approx(0.6)
    assert tc.statistics_weight_at(60) == pytest.approx(0.2)
    assert tc.statistics_weight_at(75) == pytest.approx(0.2)  # past the last epoch: the final value
    with pytest.raises(ValueError, match="statistics_weight_final"):
        TrainingConfig(statistics_weight=1.0, statistics_weight_final=-0.1)
    with pytest.raises(ValueError, match="statistics_weight > 0"):
        TrainingConfig(statistics_weight=0.0, statistics_weight_final=0.1)


def test_cpu_recipe_standardises_tokens_and_paper_recipe_stays_the_papers() -> None:
    cpu, paper = TrainingConfig.cpu(), TrainingConfig.paper()
    assert (cpu.token_normalisation, cpu.batch_size, cpu.lr_schedule) == ("tensor", 16, "cosine")
    # The cpu recipe adds the layer-statistics term; the paper's recipe never does.
    assert cpu.statistics_weight == 1.0 and paper.statistics_weight == 0.0
    # ... and lets it fade to a tenth by the last epoch (docs/tuning.md, "The fourth term fades").
    assert cpu.statistics_weight_at(cpu.epochs) == pytest.approx(0.1)
    assert paper.statistics_weight_final is None
    assert cpu.epochs == 80  # docs/tuning.md: at 60 the C+S+B agreement was still climbing
    assert cpu.behavioural_loss == "mse" and cpu.beta_warmup_epochs > 0
    # The paper's recipe: raw weights, batch 64, lr 1e-5, no scheduler, softmax MSE.
    assert (paper.token_normalisation, paper.batch_size, paper.lr, paper.lr_schedule) == (
        "none",
        64,
        1e-5,
        "none",
    )
    assert paper.behavioural_loss == "mse"
    with pytest.raises(ValueError, match="token_normalisation"):
        TrainingConfig(token_normalisation="model")
    with pytest.raises(ValueError, match="behavioural_loss"):
        TrainingConfig(behavioural_loss="huber")
    with pytest.raises(ValueError, match="structural_loss"):
        TrainingConfig(structural_loss="l1")  # type: ignore[arg-type]
    for slope in (-0.1, 1.0):
        with pytest.raises(ValueError, match="behavioural_relu_gradient_slope"):
            TrainingConfig(behavioural_relu_gradient_slope=slope)


def test_cpu_autoencoder_has_a_relu_latent_and_old_artefacts_read_back_as_they_ran() -> None:
    cpu = AutoencoderConfig.cpu()
    assert (cpu.latent_dim, cpu.latent_activation) == (64, "relu")
    assert AutoencoderConfig.paper().latent_activation == "none"  # the paper's linear latent
    # An artefact written before latent_activation existed recorded only the sizes: it ran with
    # a linear latent, and must read back that way.
    recorded = {k: v for k, v in cpu.to_dict().items() if k != "latent_activation"}
    assert AutoencoderConfig.from_dict(recorded).latent_activation == "none"


def test_the_field_defaults_are_the_cpu_preset() -> None:
    assert AutoencoderConfig() == AutoencoderConfig.cpu()
    assert TrainingConfig() == TrainingConfig.cpu()


def test_every_field_has_the_value_configs_recorded_without_it_ran_with() -> None:
    assert set(LEGACY_AUTOENCODER) == {f.name for f in dataclasses.fields(AutoencoderConfig)}
    assert set(LEGACY_TRAINING) == {f.name for f in dataclasses.fields(TrainingConfig)}


def test_a_config_recorded_without_the_newer_keys_reads_back_with_the_legacy_values() -> None:
    # An artefact of the first recipe: it recorded its sizes and optimiser, and none of the keys
    # added since (latent activation, contrastive input, the fourth term, token normalisation,
    # the schedule). It must read back as it ran: linear latent, raw tokens, no fourth term.
    newer = {"latent_activation", "contrast_on", "encoder_final_norm"}
    recorded_ae = {k: v for k, v in LEGACY_AUTOENCODER.items() if k not in newer}
    ae = AutoencoderConfig.from_dict(json.loads(json.dumps(recorded_ae)))
    assert (ae.latent_dim, ae.latent_activation, ae.contrast_on) == (32, "none", "flatten")
    assert ae != AutoencoderConfig()
    newer = {"statistics_weight", "statistics_weight_final", "token_normalisation", "lr_schedule"}
    recorded = {k: v for k, v in LEGACY_TRAINING.items() if k not in newer}
    tc = TrainingConfig.from_dict(json.loads(json.dumps(recorded)))
    assert (tc.statistics_weight, tc.statistics_weight_final) == (0.0, None)
    assert (tc.token_normalisation, tc.lr_schedule, tc.lr, tc.batch_size) == ("none", "none", 1e-4, 64)
    # Keys it did record win over the legacy values.
    assert TrainingConfig.from_dict({"epochs": 7}).epochs == 7


# What each preset changes from the first recipe (LEGACY_*): the presets are what the docs' numbers
# were measured with, so any change to them shows here.
PRESET_CHANGES = {
    "cpu": (
        {"latent_dim": 64, "latent_activation": "relu"},
        {"statistics_weight": 1.0, "statistics_weight_final": 0.1, "token_normalisation": "tensor",
         "lr": 1e-3, "batch_size": 16, "epochs": 80, "lr_schedule": "cosine"},
    ),
    "paper": (
        {"d_model": 256, "n_heads": 8, "n_encoder_layers": 8, "n_decoder_layers": 8, "d_ff": 2048,
         "latent_dim": 64},
        {"beta_warmup_epochs": 0, "n_queries": 256, "lr": 1e-5, "epochs": 500, "validate_every": 10,
         "checkpoint_every": 25},
    ),
    "compress": (
        {"latent_dim": 8},
        {"statistics_weight": 1.0, "statistics_weight_final": 0.1, "token_normalisation": "tensor",
         "lr": 1e-3, "batch_size": 16, "epochs": 30, "beta_warmup_epochs": 8, "n_queries": 512,
         "lr_schedule": "cosine"},
    ),
    "compress_cnn_s": (
        {"latent_dim": 16},
        {"token_normalisation": "tensor", "lr": 1e-3, "batch_size": 16, "epochs": 80, "lr_schedule": "cosine",
         "structural_loss": "relative"},
    ),
    "tiny": (
        {"d_model": 16, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 32,
         "latent_dim": 4},
        {"beta_warmup_epochs": 0, "n_queries": 16, "batch_size": 8, "epochs": 2, "val_inputs": 64,
         "checkpoint_every": 1},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(PRESET_CHANGES))
def test_each_preset_is_the_first_recipe_with_its_own_changes(name: str) -> None:
    ae_changes, training_changes = PRESET_CHANGES[name]
    assert AutoencoderConfig.preset(name) == AutoencoderConfig(**{**LEGACY_AUTOENCODER, **ae_changes})
    assert TrainingConfig.preset(name) == TrainingConfig(**{**LEGACY_TRAINING, **training_changes})


def test_overrides_change_only_what_is_given_by_their_public_names() -> None:
    from zooscope.autoencoder.config import (
        AUTOENCODER_PRESETS,
        DEFAULT_AUTOENCODER_PRESET,
        TRAINING_OVERRIDES,
    )

    assert DEFAULT_AUTOENCODER_PRESET in AUTOENCODER_PRESETS
    assert set(TRAINING_OVERRIDES.values()) <= {f.name for f in dataclasses.fields(TrainingConfig)}
    cpu = TrainingConfig.cpu()
    assert cpu.with_overrides() == cpu == cpu.with_overrides(gamma=None, learning_rate=None)
    changed = cpu.with_overrides({"learning_rate": 0.01, "queries": 8}, warmup_epochs=0, epochs=None)
    assert (changed.lr, changed.n_queries, changed.beta_warmup_epochs) == (0.01, 8, 0)
    assert changed.epochs == cpu.epochs  # None: the preset's
    with pytest.raises(ValueError, match="lr"):
        cpu.with_overrides(lr=0.01)  # the field's name is not an override's
    with pytest.raises(ValueError, match="beta"):
        cpu.with_overrides(beta=2.0)  # the config's own checks still run


def test_turning_the_fourth_term_off_drops_its_schedule() -> None:
    cpu = TrainingConfig.cpu()
    assert cpu.statistics_weight_final is not None
    off = cpu.with_overrides(statistics_weight=0.0)
    assert (off.statistics_weight, off.statistics_weight_final) == (0.0, None)
    kept = cpu.with_overrides(statistics_weight=2.0)
    assert kept.statistics_weight_final == cpu.statistics_weight_final


def test_no_contrastive_views_means_no_contrastive_term() -> None:
    cpu = TrainingConfig.cpu()
    assert cpu.contrastive_views == "function_preserving" and cpu.gamma > 0
    off = cpu.with_overrides(contrastive_views="none")
    assert (off.contrastive_views, off.gamma) == ("none", 0.0)
    with pytest.raises(ValueError, match="gamma must be 0"):
        cpu.with_overrides(contrastive_views="none", gamma=0.05)  # both given: they contradict
    assert cpu.with_overrides(contrastive_views="random").gamma == cpu.gamma
    with pytest.raises(ValueError, match="contrastive_views"):
        cpu.with_overrides(contrastive_views="shuffled")
    # Decoding the function-breaking view would compare it with a function it no longer computes.
    with pytest.raises(ValueError, match="decode_both_views"):
        dataclasses.replace(cpu, contrastive_views="random", decode_both_views=True)


def test_the_behavioural_loss_form_changes_at_the_later_epoch() -> None:
    tc = TrainingConfig(later_behavioural_loss="mse_scaled", later_behavioural_loss_epoch=30)
    forms = [tc.behavioural_loss_at(e) for e in (0, 29.99, 30, 79)]
    assert forms == ["mse", "mse", "mse_scaled", "mse_scaled"]
    assert TrainingConfig().behavioural_loss_at(79) == "mse"
    with pytest.raises(ValueError, match="later_behavioural_loss must be one of"):
        TrainingConfig(later_behavioural_loss="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="later_behavioural_loss_epoch must be at least 1"):
        TrainingConfig(later_behavioural_loss="kl")
