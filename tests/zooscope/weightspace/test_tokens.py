"""Tokens: exact round trips, the paper's sizes, chunking, positions and gradients."""

from __future__ import annotations

import json
import math

import pytest
import torch

from zooscope.errors import ArchitectureMismatchError
from zooscope.networks.architectures import Architecture, reference_state_dict
from zooscope.networks.parameters import FlatLayout, StackedParams
from zooscope.weightspace.tokens import TokenLayout

CNN_S_1 = Architecture("cnn_s", 1, 28)
CNN_S_3 = Architecture("cnn_s", 3, 28)
CNN_S_DROPOUT = Architecture("cnn_s", 1, 28, dropout_layers=True)
CNN3 = Architecture("cnn3", 3, 32)
DIGITS = Architecture("cnn_digits", 1, 8)
DIGITS_BN = Architecture("cnn_digits", 1, 8, batchnorm=True)
FAMILIES = [CNN_S_1, CNN_S_3, CNN_S_DROPOUT, CNN3, DIGITS, DIGITS_BN]


def random_params(arch: Architecture, k: int, seed: int) -> StackedParams:
    """K models with distinct random values everywhere, so a misplaced value cannot go unseen."""
    layout = FlatLayout.of(arch)
    generator = torch.Generator().manual_seed(seed)
    return layout.unflatten(torch.randn(k, layout.size, generator=generator))


def bn_keys(arch: Architecture) -> set[str]:
    return {
        key
        for layer in arch.parameter_layers()
        if layer.kind == "batchnorm"
        for key in (layer.weight_key, layer.bias_key, *layer.buffer_keys)
    }


@pytest.mark.parametrize("include_batchnorm", [True, False])
@pytest.mark.parametrize("arch", FAMILIES, ids=lambda a: a.name)
def test_round_trip_is_exact(arch: Architecture, include_batchnorm: bool) -> None:
    layout = TokenLayout.of(arch, include_batchnorm=include_batchnorm)
    params = random_params(arch, 3, seed=0)
    tokens = layout.tokenize(params)
    assert tokens.shape == (3, layout.n_tokens, layout.width)
    assert torch.all(tokens[:, ~layout.mask] == 0)
    back = layout.detokenize(tokens, reference=params)
    assert set(back) == set(params)
    for key in params:
        assert torch.equal(back[key], params[key]), key


def test_batchnorm_left_out_comes_from_the_reference() -> None:
    included = TokenLayout.of(DIGITS_BN, include_batchnorm=True)
    left_out = TokenLayout.of(DIGITS_BN, include_batchnorm=False)
    assert included.n_tokens == left_out.n_tokens + 16  # two BatchNorm layers of 8 channels
    assert left_out.n_real == FlatLayout.of(DIGITS_BN).size - 4 * 16
    params, reference = random_params(DIGITS_BN, 2, seed=1), random_params(DIGITS_BN, 1, seed=2)
    back = left_out.detokenize(left_out.tokenize(params), reference=reference)
    for key in params:
        expected = reference[key].expand_as(params[key]) if key in bn_keys(DIGITS_BN) else params[key]
        assert torch.equal(back[key], expected), key
    with pytest.raises(ValueError, match="reference"):
        left_out.detokenize(left_out.tokenize(params))
    # With everything tokenized no reference is needed.
    full = included.detokenize(included.tokenize(params))
    assert all(torch.equal(full[key], params[key]) for key in params)


@pytest.mark.parametrize(
    ("arch", "n_parameters", "n_tokens", "width"),
    [
        (CNN_S_1, 2464, 48, 201),
        (CNN_S_3, 2864, 48, 201),
        (CNN_S_DROPOUT, 2464, 48, 201),
        (CNN3, 10853, 93, 289),
        (DIGITS, 1042, 42, 33),
        (DIGITS_BN, 1106, 58, 33),
    ],
    ids=lambda v: v.name if isinstance(v, Architecture) else str(v),
)
def test_sizes_match_the_paper(arch: Architecture, n_parameters: int, n_tokens: int, width: int) -> None:
    layout = TokenLayout.of(arch)
    assert FlatLayout.of(arch).size == n_parameters
    assert (layout.n_tokens, layout.width) == (n_tokens, width)
    assert layout.mask.shape == (n_tokens, width)
    assert layout.n_real == int(layout.mask.sum()) == n_parameters
    assert layout.n_layers == len(arch.parameter_layers())


def test_token_holds_weight_row_then_bias() -> None:
    layout = TokenLayout.of(CNN_S_1)
    params = random_params(CNN_S_1, 2, seed=3)
    tokens = layout.tokenize(params)
    # Layer 1 (module_list.3, conv 6@5x5 over 8 channels) starts after the 8 tokens of layer 0.
    weight, bias = params["module_list.3.weight"], params["module_list.3.bias"]
    expected = torch.cat([weight[:, 4].reshape(2, -1), bias[:, 4:5]], dim=1)
    assert torch.equal(tokens[:, 8 + 4, : expected.shape[1]], expected)
    assert expected.shape[1] == 201
    # Layer 0 (conv 8@5x5 over 1 channel): 25 weights and a bias, then padding.
    row = torch.cat(
        [params["module_list.0.weight"][:, 7].reshape(2, -1), params["module_list.0.bias"][:, 7:8]], 1
    )
    assert torch.equal(tokens[:, 7, :26], row)
    assert torch.all(tokens[:, 7, 26:] == 0)
    assert layout.mask[7].sum() == 26


def test_batchnorm_token_holds_weight_bias_and_statistics() -> None:
    layout = TokenLayout.of(DIGITS_BN)
    params = random_params(DIGITS_BN, 1, seed=4)
    tokens = layout.tokenize(params)
    first_bn_token = 8  # after conv module_list.0's 8 channels
    for channel in range(8):
        expected = torch.stack(
            [
                params[f"module_list.1.{f}"][0, channel]
                for f in ("weight", "bias", "running_mean", "running_var")
            ]
        )
        assert torch.equal(tokens[0, first_bn_token + channel, :4], expected)
    assert torch.equal(
        layout.positions[first_bn_token : first_bn_token + 8, 1], torch.ones(8, dtype=torch.long)
    )


@pytest.mark.parametrize("width", [64, 7, 3])
def test_fixed_width_chunks_rows_and_still_round_trips(width: int) -> None:
    layout = TokenLayout.of(CNN3, width=width)
    rows = _row_lengths(CNN3)
    expected_tokens = sum(out * math.ceil(length / width) for out, length in rows)
    assert (layout.n_tokens, layout.width) == (expected_tokens, width)
    params = random_params(CNN3, 2, seed=5)
    back = layout.detokenize(layout.tokenize(params))
    assert all(torch.equal(back[key], params[key]) for key in params)
    # Chunks of one channel are consecutive and share layer and channel index; the last chunk
    # carries the remainder of the row.
    chunks = math.ceil(289 / width)
    third = layout.layers[2]
    assert third.chunks_per_row == chunks
    block = layout.positions[third.first_token : third.first_token + chunks]
    assert torch.all(block[:, 1] == 2) and torch.all(block[:, 2] == 0)
    assert layout.positions[third.first_token + chunks, 2] == 1
    real_in_row = layout.mask[third.first_token : third.first_token + chunks].sum()
    assert real_in_row == 289
    assert layout.mask[third.first_token + chunks - 1].sum() == 289 - (chunks - 1) * width


def test_fixed_width_chunks_batchnorm_tokens() -> None:
    layout = TokenLayout.of(DIGITS_BN, width=3)
    params = random_params(DIGITS_BN, 2, seed=6)
    back = layout.detokenize(layout.tokenize(params))
    assert all(torch.equal(back[key], params[key]) for key in params)


def test_wider_fixed_width_pads() -> None:
    layout = TokenLayout.of(CNN_S_1, width=256)
    assert (layout.n_tokens, layout.width) == (48, 256)
    assert layout.mask[:, 201:].sum() == 0


@pytest.mark.parametrize("arch", [CNN_S_1, CNN3, DIGITS_BN], ids=lambda a: a.name)
def test_positions(arch: Architecture) -> None:
    layout = TokenLayout.of(arch)
    positions = layout.positions
    assert positions.dtype == torch.long and positions.shape == (layout.n_tokens, 3)
    assert torch.equal(positions[:, 0], torch.arange(layout.n_tokens))
    start = 0
    for index, layer in enumerate(arch.parameter_layers()):
        n = layer.out_channels
        assert torch.all(positions[start : start + n, 1] == index)
        assert torch.equal(positions[start : start + n, 2], torch.arange(n))
        start += n
    assert start == layout.n_tokens


def test_layer_index_counts_tokenized_layers_only() -> None:
    layout = TokenLayout.of(DIGITS_BN, include_batchnorm=False)
    assert layout.n_layers == 4
    assert torch.equal(layout.positions[:, 1].unique(), torch.arange(4))


def test_gradients_flow_through_detokenize() -> None:
    layout = TokenLayout.of(DIGITS_BN)
    params = random_params(DIGITS_BN, 2, seed=7)
    weights = random_params(DIGITS_BN, 2, seed=8)
    tokens = layout.tokenize(params).requires_grad_(True)
    rebuilt = layout.detokenize(tokens)
    loss = sum((rebuilt[key] * weights[key]).sum() for key in rebuilt)
    loss.backward()
    # d loss / d token slot = the weight of the parameter it holds; padding gets no gradient.
    assert torch.equal(tokens.grad, layout.tokenize(weights))
    assert torch.all(tokens.grad[:, ~layout.mask] == 0)


def test_gradients_skip_the_reference_values() -> None:
    layout = TokenLayout.of(DIGITS_BN, include_batchnorm=False)
    params = random_params(DIGITS_BN, 2, seed=9)
    reference = {key: value.clone().requires_grad_(True) for key, value in params.items()}
    tokens = layout.tokenize(params).requires_grad_(True)
    rebuilt = layout.detokenize(tokens, reference=reference)
    sum(value.sum() for value in rebuilt.values()).backward()
    assert torch.equal(tokens.grad, layout.mask.expand_as(tokens).float())
    for key in bn_keys(DIGITS_BN):
        assert torch.all(reference[key].grad == 1)


@pytest.mark.parametrize("include_batchnorm", [True, False])
def test_state_dict_round_trip_loads_strictly(include_batchnorm: bool) -> None:
    layout = TokenLayout.of(DIGITS_BN, include_batchnorm=include_batchnorm)
    torch.manual_seed(0)
    module = DIGITS_BN.build()
    with torch.no_grad():
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)
    sd = module.state_dict()
    tokens = layout.tokenize_state_dict(sd)
    assert tokens.shape == (layout.n_tokens, layout.width)
    reference_sd = sd if not include_batchnorm else None
    back = layout.detokenize_to_state_dict(tokens, reference_sd)
    fresh = DIGITS_BN.build()
    fresh.load_state_dict(back, strict=True)
    for key, value in sd.items():
        assert torch.equal(back[key], value), key
    # Separate storage per tensor (safetensors refuses shared memory).
    pointers = {value.untyped_storage().data_ptr() for value in back.values()}
    assert len(pointers) == len(back)


def test_real_values_are_the_parameters() -> None:
    layout = TokenLayout.of(CNN_S_3, width=50)
    params = random_params(CNN_S_3, 3, seed=10)
    real = layout.real_values(layout.tokenize(params))
    flat = FlatLayout.of(CNN_S_3).flatten(params)
    assert real.shape == (3, flat.shape[1])
    assert torch.equal(real.sort(dim=1).values, flat.sort(dim=1).values)
    assert layout.real_values(layout.tokenize(params)[0]).shape == (flat.shape[1],)


def test_to_dict_describes_the_layout() -> None:
    layout = TokenLayout.of(CNN3)
    description = json.loads(json.dumps(layout.to_dict()))
    assert description["n_tokens"] == 93 and description["width"] == 289
    assert Architecture.from_dict(description["architecture"]) == CNN3
    assert [layer["n_tokens"] for layer in description["layers"]] == [16, 32, 15, 20, 10]


def test_layouts_are_cached_and_bad_inputs_rejected() -> None:
    assert TokenLayout.of(CNN3) is TokenLayout.of(CNN3, None, True)
    assert TokenLayout.of(CNN3, width=64) is not TokenLayout.of(CNN3)
    with pytest.raises(ValueError):
        TokenLayout.of(CNN3, width=0)
    layout = TokenLayout.of(CNN_S_1)
    with pytest.raises(ValueError, match="expected tokens"):
        layout.detokenize(torch.zeros(1, 48, 200))
    params = random_params(CNN_S_1, 1, seed=11)
    del params["module_list.0.bias"]
    with pytest.raises(ArchitectureMismatchError):
        layout.tokenize(params)
    with pytest.raises(ArchitectureMismatchError):
        layout.tokenize_state_dict(reference_state_dict(CNN3))


def _row_lengths(arch: Architecture) -> list[tuple[int, int]]:
    """(channels, values per channel) of each layer, from the reference shapes alone."""
    sd = reference_state_dict(arch)
    out = []
    for layer in arch.parameter_layers():
        weight = sd[layer.weight_key]
        out.append((weight.shape[0], weight[0].numel() + 1))
    return out


@pytest.mark.parametrize("arch", FAMILIES, ids=lambda a: a.name)
def test_tensor_of_slot_names_the_state_dict_tensor_of_every_real_value(arch: Architecture) -> None:
    layout = TokenLayout.of(arch)
    flat = layout.flat_layout
    # every tensor filled with its own index: tokenizing shows where each value came from
    params = {
        key: torch.full((1, *shape), float(i))
        for i, (key, shape) in enumerate(zip(flat.keys, flat.shapes, strict=True))
    }
    owner = layout.tensor_of_slot
    assert owner.shape == (layout.n_tokens, layout.width)
    assert torch.equal(layout.tokenize(params)[0][layout.mask], owner[layout.mask].float())
    assert bool((owner[~layout.mask] == -1).all())
