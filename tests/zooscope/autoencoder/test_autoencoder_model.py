"""Shapes of the autoencoder, and attention across one model's tokens (never across the batch)."""

from __future__ import annotations

import pytest
import torch

from zooscope.autoencoder.config import AutoencoderConfig
from zooscope.autoencoder.model import WeightAutoencoder

CONFIG = AutoencoderConfig.tiny()
T, W = 7, 5


def _positions() -> torch.Tensor:
    # Two layers of 4 and 3 channels: (global, layer, channel).
    return torch.tensor([[i, 0 if i < 4 else 1, i if i < 4 else i - 4] for i in range(T)])


def _model() -> WeightAutoencoder:
    torch.manual_seed(0)
    return WeightAutoencoder(CONFIG, token_width=W, n_tokens=T).eval()


def test_shapes_of_every_output() -> None:
    model = _model()
    tokens = torch.randn(3, T, W)
    reconstruction, latents, projection = model(tokens, _positions())
    assert reconstruction.shape == (3, T, W)
    assert latents.shape == (3, T, CONFIG.latent_dim)
    assert projection.shape == (3, CONFIG.projection_dim)
    assert model.encode_tokens(tokens, _positions()).shape == (3, T, CONFIG.latent_dim)
    assert model.decode(latents, _positions()).shape == (3, T, W)
    embedding = model.embed(tokens, _positions())
    assert torch.allclose(embedding, latents.mean(dim=1), atol=1e-6)


def test_a_model_output_ignores_the_other_models_of_the_batch() -> None:
    # The public code's transformer attends across the batch; ours must not.
    model = _model()
    tokens = torch.randn(4, T, W)
    changed = tokens.clone()
    changed[1:] = torch.randn(3, T, W) * 10
    out, latents, _ = model(tokens, _positions())
    out_changed, latents_changed, _ = model(changed, _positions())
    assert torch.allclose(out[0], out_changed[0], atol=1e-5)
    assert torch.allclose(latents[0], latents_changed[0], atol=1e-5)
    assert not torch.allclose(out[1], out_changed[1], atol=1e-3)
    # Alone in its batch, model 0 gets the same output too.
    alone = model(tokens[:1], _positions())[0]
    assert torch.allclose(out[0], alone[0], atol=1e-5)


def test_attention_runs_across_tokens_of_one_model() -> None:
    # Changing one token of a model changes the latents of its OTHER tokens: information flows
    # between the tokens of one model (a per-token MLP would not do that).
    model = _model()
    tokens = torch.randn(1, T, W)
    changed = tokens.clone()
    changed[0, 0] += 5.0
    latents = model.encode_tokens(tokens, _positions())
    latents_changed = model.encode_tokens(changed, _positions())
    assert not torch.allclose(latents[0, 1:], latents_changed[0, 1:], atol=1e-4)


def test_positions_change_the_encoding() -> None:
    model = _model()
    tokens = torch.randn(2, T, W)
    shuffled = _positions().clone()
    shuffled[:, 2] = shuffled[:, 2].flip(0)
    assert not torch.allclose(
        model.encode_tokens(tokens, _positions()), model.encode_tokens(tokens, shuffled)
    )


def test_positions_outside_the_tables_are_refused() -> None:
    model = _model()
    too_far = _positions().clone()
    too_far[0, 1] = CONFIG.max_positions[1]
    with pytest.raises(ValueError, match="position tables"):
        model.check_positions(too_far)
    model.check_positions(_positions())


def test_paper_preset_has_the_paper_size_at_cnn3_width() -> None:
    # docs/method.md §3: about 21.5 M parameters at CNN3 (93 tokens x 289).
    model = WeightAutoencoder(AutoencoderConfig.paper(), token_width=289, n_tokens=93)
    assert 20.5e6 < model.n_parameters < 22.5e6


def test_a_mean_contrast_head_reads_the_embedding_that_probes_read() -> None:
    from dataclasses import replace

    torch.manual_seed(0)
    model = WeightAutoencoder(replace(CONFIG, contrast_on="mean"), token_width=W, n_tokens=T).eval()
    tokens = torch.randn(3, T, W)
    _, latents, projection = model(tokens, _positions())
    assert model.projection.net[0].in_features == CONFIG.latent_dim  # not T * latent_dim
    # The projection is a function of the mean-pooled embedding alone: tokens with the same
    # embedding project the same, whatever the per-token latents.
    embedding = model.embed(tokens, _positions())
    assert torch.allclose(projection, model.projection(embedding.unsqueeze(1)), atol=1e-6)
    shuffled = latents[:, torch.randperm(T)]
    assert torch.allclose(model.project(shuffled), projection, atol=1e-6)
    assert not torch.allclose(_model().project(shuffled), _model().project(latents), atol=1e-4)


def test_an_unknown_contrast_input_is_refused() -> None:
    with pytest.raises(ValueError, match="contrast_on"):
        AutoencoderConfig(contrast_on="tokens")


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_a_latent_activation_keeps_the_parameter_names_and_bounds_the_latents(activation: str) -> None:
    from dataclasses import replace

    torch.manual_seed(0)
    model = WeightAutoencoder(replace(CONFIG, latent_activation=activation), token_width=W, n_tokens=T)
    assert model.state_dict().keys() == _model().state_dict().keys()  # old artefacts still load
    latents = model.encode_tokens(torch.randn(3, T, W), _positions())
    assert bool((latents >= 0).all()) and bool((latents > 0).any())
    with pytest.raises(ValueError, match="latent_activation"):
        AutoencoderConfig(latent_activation="tanh")


def test_the_encoders_final_norm_can_be_left_out() -> None:
    from dataclasses import replace

    torch.manual_seed(0)
    plain = WeightAutoencoder(replace(CONFIG, encoder_final_norm=False), token_width=W, n_tokens=T)
    assert plain.encoder.norm is None and plain.decoder.norm is not None  # the decoder keeps its own
    normed = WeightAutoencoder(CONFIG, token_width=W, n_tokens=T)
    # otherwise the same parameters: an artefact of either kind loads into its own configuration
    assert set(normed.state_dict()) - set(plain.state_dict()) == {"encoder.norm.weight", "encoder.norm.bias"}
    latents = plain.encode_tokens(torch.randn(3, T, W), _positions())
    assert latents.shape == (3, T, CONFIG.latent_dim) and bool(torch.isfinite(latents).all())
    stored = {**CONFIG.to_dict(), "encoder_final_norm": False}
    assert AutoencoderConfig.from_dict(stored).encoder_final_norm is False
    assert AutoencoderConfig.from_dict({"d_model": CONFIG.d_model}).encoder_final_norm  # older artefacts


def _per_model(latent_tokens: int = 3) -> WeightAutoencoder:
    torch.manual_seed(0)
    config = AutoencoderConfig(**{**CONFIG.to_dict(), "latent_tokens": latent_tokens})
    return WeightAutoencoder(config, token_width=W, n_tokens=T).eval()


def test_a_per_model_latent_has_its_own_size_whatever_the_token_count() -> None:
    model = _per_model(latent_tokens=3)
    tokens = torch.randn(4, T, W)
    reconstruction, latents, projection = model(tokens, _positions())
    assert latents.shape == (4, 3, CONFIG.latent_dim)
    assert reconstruction.shape == (4, T, W)
    assert projection.shape == (4, CONFIG.projection_dim)
    assert model.config.latent_shape(T) == (3, CONFIG.latent_dim)
    assert torch.allclose(model.embed(tokens, _positions()), latents.mean(dim=1), atol=1e-6)
    # Every weight token reaches the latent, and the latent alone decides the reconstruction.
    changed = tokens.clone()
    changed[:, T - 1] += 5.0
    assert not torch.allclose(model.encode_tokens(changed, _positions()), latents, atol=1e-4)
    assert torch.equal(model.decode(latents, _positions()), reconstruction)


def test_a_per_model_latent_ignores_the_other_models_of_the_batch() -> None:
    model = _per_model()
    tokens = torch.randn(4, T, W)
    changed = tokens.clone()
    changed[1:] = torch.randn(3, T, W) * 10
    out, latents, _ = model(tokens, _positions())
    out_changed, latents_changed, _ = model(changed, _positions())
    assert torch.allclose(out[0], out_changed[0], atol=1e-5)
    assert torch.allclose(latents[0], latents_changed[0], atol=1e-5)
    assert not torch.allclose(out[1], out_changed[1], atol=1e-3)


def test_a_negative_latent_token_count_is_refused() -> None:
    with pytest.raises(ValueError, match="latent_tokens"):
        AutoencoderConfig(latent_tokens=-1)
