"""Token standardisation (per layer, per tensor): exact statistics, round trip, storage, use in training."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from zooscope.autoencoder.artefact import CONFIG, TrainedAutoencoder
from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
from zooscope.autoencoder.normalisation import TokenNormaliser
from zooscope.autoencoder.training import train_on_checkpoints
from zooscope.networks.architectures import Architecture
from zooscope.networks.parameters import stack_state_dicts
from zooscope.weightspace.tokens import TokenLayout

ARCH = Architecture("cnn_digits", 1, 8)
ARCH_BN = Architecture("cnn_digits", 1, 8, batchnorm=True)


@dataclass
class _CheckpointSet:
    arch: Architecture
    params: dict[str, torch.Tensor]


def _scaled_population(k: int, seed: int, scale: float) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    params = stack_state_dicts(ARCH, [ARCH.build().state_dict() for _ in range(k)])
    return {key: value * scale for key, value in params.items()}


def test_fit_gives_each_layers_mean_and_std_over_its_real_values() -> None:
    layout = TokenLayout.of(ARCH)
    params = _scaled_population(5, 0, 3.0)
    normaliser = TokenNormaliser.fit(layout, layout.tokenize(params))
    for layer in layout.layers:
        values = torch.cat([params[layer.key + ".weight"].flatten(1), params[layer.key + ".bias"]], 1)
        assert normaliser.mean[layer.layer_index].item() == pytest.approx(values.mean().item(), abs=1e-6)
        assert normaliser.std[layer.layer_index].item() == pytest.approx(
            values.std(unbiased=False).item(), rel=1e-5
        )


def test_normalised_tokens_are_standard_per_layer_and_padding_stays_zero() -> None:
    layout = TokenLayout.of(ARCH)
    tokens = layout.tokenize(_scaled_population(6, 1, 5.0))
    z = TokenNormaliser.fit(layout, tokens).normalise(tokens)
    assert bool((z[:, ~layout.mask] == 0).all())
    for layer in range(layout.n_layers):
        slots = layout.mask & (layout.positions[:, 1] == layer).unsqueeze(1)
        assert z[:, slots].mean().item() == pytest.approx(0.0, abs=1e-5)
        assert z[:, slots].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


def test_tensor_kind_gives_each_state_dict_tensor_its_own_mean_and_std() -> None:
    # Biases at a tenth of their weights' scale: per layer they would be squeezed near zero.
    layout = TokenLayout.of(ARCH)
    params = _scaled_population(6, 4, 3.0)
    for key in params:
        if key.endswith(".bias"):
            params[key] = params[key] * 0.1 + 0.5
    tokens = layout.tokenize(params)
    normaliser = TokenNormaliser.fit(layout, tokens, kind="tensor")
    z = normaliser.normalise(tokens)
    for index, key in enumerate(layout.flat_layout.keys):
        values = params[key].flatten(1)
        assert normaliser.mean[index].item() == pytest.approx(values.mean().item(), abs=1e-6)
        assert normaliser.std[index].item() == pytest.approx(values.std(unbiased=False).item(), rel=1e-5)
        slots = layout.tensor_of_slot == index
        assert z[:, slots].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    assert bool((z[:, ~layout.mask] == 0).all())
    assert torch.allclose(normaliser.denormalise(z), tokens, atol=1e-6, rtol=0)
    restored = TokenNormaliser.from_dict(layout, json.loads(json.dumps(normaliser.to_dict())))
    assert restored.kind == "tensor" and torch.equal(restored.normalise(tokens), z)
    with pytest.raises(ValueError, match="means and stds"):  # per-layer statistics for a tensor kind
        TokenNormaliser(layout, torch.zeros(layout.n_layers), torch.ones(layout.n_layers), kind="tensor")


@pytest.mark.parametrize("include_batchnorm", [True, False])
def test_tensor_kind_with_batchnorm_in_or_out_of_the_tokens(include_batchnorm: bool) -> None:
    layout = TokenLayout.of(ARCH_BN, include_batchnorm=include_batchnorm)
    torch.manual_seed(5)
    params = stack_state_dicts(ARCH_BN, [ARCH_BN.build().state_dict() for _ in range(4)])
    params = {key: value + torch.randn_like(value) for key, value in params.items()}
    tokens = layout.tokenize(params)
    normaliser = TokenNormaliser.fit(layout, tokens, kind="tensor")
    assert bool(torch.isfinite(normaliser.mean).all() and (normaliser.std > 0).all())
    assert torch.allclose(normaliser.denormalise(normaliser.normalise(tokens)), tokens, atol=1e-5, rtol=0)
    running_var = layout.flat_layout.keys.index("module_list.1.running_var")
    assert bool((layout.tensor_of_slot == running_var).any()) == include_batchnorm


def test_round_trip_is_exact_to_float_precision_and_identity_is_exact() -> None:
    layout = TokenLayout.of(ARCH)
    tokens = layout.tokenize(_scaled_population(4, 2, 2.0))
    normaliser = TokenNormaliser.fit(layout, tokens)
    assert torch.allclose(normaliser.denormalise(normaliser.normalise(tokens)), tokens, atol=1e-6, rtol=0)
    identity = TokenNormaliser.identity(layout)
    assert torch.equal(identity.normalise(tokens), tokens)
    assert torch.equal(identity.denormalise(tokens), tokens)


def test_to_dict_and_from_dict_restore_the_same_function() -> None:
    layout = TokenLayout.of(ARCH)
    tokens = layout.tokenize(_scaled_population(4, 3, 1.5))
    normaliser = TokenNormaliser.fit(layout, tokens)
    restored = TokenNormaliser.from_dict(layout, json.loads(json.dumps(normaliser.to_dict())))
    assert torch.equal(restored.normalise(tokens), normaliser.normalise(tokens))
    assert TokenNormaliser.from_dict(layout, None).is_identity


def test_bad_statistics_are_refused() -> None:
    layout = TokenLayout.of(ARCH)
    with pytest.raises(ValueError, match="means and stds"):
        TokenNormaliser(layout, torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="positive"):
        TokenNormaliser(layout, torch.zeros(layout.n_layers), torch.zeros(layout.n_layers))


def test_training_fits_on_the_train_split_only_and_the_artefact_keeps_it(tmp_path: Path, digits) -> None:
    # Train and val checkpoint_sets at very different scales: a normaliser that saw val would differ.
    train = _CheckpointSet(ARCH, _scaled_population(12, 0, 1.0))
    val = _CheckpointSet(ARCH, _scaled_population(4, 1, 10.0))
    tc = replace(TrainingConfig.tiny(), epochs=1, token_normalisation="layer", device="cpu")
    ae = train_on_checkpoints(train, val, digits, AutoencoderConfig.tiny(), tc, tmp_path)
    layout = ae.token_layout
    expected = TokenNormaliser.fit(layout, layout.tokenize(train.params))
    assert torch.equal(ae.normaliser.mean, expected.mean) and torch.equal(ae.normaliser.std, expected.std)

    loaded = TrainedAutoencoder.load(tmp_path)
    assert torch.equal(loaded.normaliser.std, expected.std)
    # The public calls speak real weights: the reconstruction is de-standardised.
    assert torch.allclose(loaded.reconstruct_tokens(val.params), ae.reconstruct_tokens(val.params))
    raw = ae.model.decode(
        ae.model.encode_tokens(expected.normalise(layout.tokenize(val.params)), ae.positions), ae.positions
    )
    assert torch.allclose(ae.reconstruct_tokens(val.params), expected.denormalise(raw), atol=1e-5)


def test_an_artefact_without_a_normaliser_loads_as_identity(tmp_path: Path, checkpoint_sets, digits) -> None:
    train, val = checkpoint_sets
    tc = replace(TrainingConfig.tiny(), epochs=1, device="cpu")
    train_on_checkpoints(train, val, digits, AutoencoderConfig.tiny(), tc, tmp_path)
    meta = json.loads((tmp_path / CONFIG).read_text())
    meta.pop("token_normaliser")  # as written before normalisation existed
    (tmp_path / CONFIG).write_text(json.dumps(meta))
    loaded = TrainedAutoencoder.load(tmp_path)
    assert loaded.normaliser.is_identity
    tokens = loaded.tokens(val.params)
    raw = loaded.model.decode(loaded.model.encode_tokens(tokens, loaded.positions), loaded.positions)
    assert torch.allclose(loaded.reconstruct_tokens(val.params), raw, atol=1e-6)
