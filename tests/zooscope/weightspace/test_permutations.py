"""Neuron permutations: function preserved, weights moved, each model its own draw, invertible."""

from __future__ import annotations

import pytest
import torch

from zooscope.networks.architectures import Architecture
from zooscope.networks.parameters import FlatLayout, StackedParams
from zooscope.population.forward import population_forward
from zooscope.weightspace.permutations import (
    PermutationIndex,
    inverse_index,
    permute_flat,
    random_permutation,
)

FAMILIES = [
    Architecture("cnn_s", 1, 28),
    Architecture("cnn_s", 3, 28),
    Architecture("cnn_s", 1, 28, dropout_layers=True),
    Architecture("cnn3", 3, 32),
    Architecture("cnn_digits", 1, 8),
    Architecture("cnn_digits", 1, 8, batchnorm=True, activation="tanh"),
]
DIGITS_BN = FAMILIES[-1]


def trained_looking_params(arch: Architecture, k: int, seed: int) -> StackedParams:
    """Random weights at a trained network's scale (fan-in scaled, so logits stay O(1) and a
    1e-5 tolerance is meaningful), with distinct biases and BatchNorm statistics everywhere."""
    generator = torch.Generator().manual_seed(seed)
    params: StackedParams = {}
    for key, shape in zip(FlatLayout.of(arch).keys, FlatLayout.of(arch).shapes, strict=True):
        values = torch.randn(k, *shape, generator=generator)
        if key.endswith("running_var"):
            values = 0.5 + torch.rand(k, *shape, generator=generator)
        elif key.endswith("weight") and len(shape) > 1:
            fan_in = values[0, 0].numel()
            values = values / fan_in**0.5
        else:
            values = values * 0.3 + (1.0 if key.endswith("weight") else 0.0)  # BatchNorm scale near 1
        params[key] = values
    return params


def hidden_keys(arch: Architecture) -> list[str]:
    """Every parameter that some permutation moves: all but the last layer's bias."""
    layers = arch.parameter_layers()
    keys = [key for key in FlatLayout.of(arch).keys]
    return [key for key in keys if key != layers[-1].bias_key]


@pytest.mark.parametrize("arch", FAMILIES, ids=lambda a: a.name)
def test_permuted_models_compute_the_same_function(arch: Architecture) -> None:
    params = trained_looking_params(arch, 3, seed=0)
    permuted = random_permutation(arch, params, torch.Generator().manual_seed(1))
    inputs = torch.randn(4, *arch.input_shape, generator=torch.Generator().manual_seed(2))
    original = population_forward(arch, params, inputs)
    after = population_forward(arch, permuted, inputs)
    assert original.abs().max() > 0.1  # the comparison is not between two near-zero tensors
    torch.testing.assert_close(after, original, atol=1e-5, rtol=0)
    for key in hidden_keys(arch):
        for model in range(3):
            assert not torch.equal(permuted[key][model], params[key][model]), (key, model)
    last = arch.parameter_layers()[-1].bias_key
    assert torch.equal(permuted[last], params[last])  # classes are never permuted


def test_batchnorm_follows_its_conv_channels() -> None:
    params = trained_looking_params(DIGITS_BN, 2, seed=3)
    permuted = random_permutation(DIGITS_BN, params, torch.Generator().manual_seed(4))
    for conv, bn in (("module_list.0", "module_list.1"), ("module_list.4", "module_list.5")):
        # Bias values are distinct, so they reveal which old channel each new channel is.
        old, new = params[f"{conv}.bias"], permuted[f"{conv}.bias"]
        source = (new.unsqueeze(2) == old.unsqueeze(1)).float().argmax(dim=2)
        assert not torch.equal(source, torch.arange(8).expand(2, -1))
        for field in ("weight", "bias", "running_mean", "running_var"):
            moved = torch.gather(params[f"{bn}.{field}"], 1, source)
            assert torch.equal(permuted[f"{bn}.{field}"], moved), field


def test_flattened_channel_moves_a_block_of_columns() -> None:
    arch = Architecture("cnn3", 3, 32)
    groups = {group.producer: group for group in PermutationIndex.of(arch).groups}
    assert [g.channels for g in groups.values()] == [16, 32, 15, 20]
    assert groups["module_list.8"].consumer == "module_list.13"
    assert groups["module_list.8"].block == 4  # 15 channels of 2x2 flattened into 60 inputs
    params = trained_looking_params(arch, 1, seed=5)
    permuted = random_permutation(arch, params, torch.Generator().manual_seed(6))
    old_bias, new_bias = params["module_list.8.bias"][0], permuted["module_list.8.bias"][0]
    source = [int((old_bias == value).nonzero()) for value in new_bias]
    old_columns = params["module_list.13.weight"][0].reshape(20, 15, 4)
    new_columns = permuted["module_list.13.weight"][0].reshape(20, 15, 4)
    # Rows of the linear layer are permuted too (it is hidden), so compare as sets of rows.
    expected = old_columns[:, source].reshape(20, 60)
    assert torch.equal(new_columns.reshape(20, 60).sort(dim=0).values, expected.sort(dim=0).values)


def test_each_model_and_each_draw_get_their_own_permutation() -> None:
    arch = FAMILIES[0]
    index = PermutationIndex.of(arch)
    generator = torch.Generator().manual_seed(7)
    first, second = index.random(4, generator), index.random(4, generator)
    assert not torch.equal(first, second)
    assert all(not torch.equal(first[0], first[i]) for i in range(1, 4))
    again = index.random(4, torch.Generator().manual_seed(7))
    assert torch.equal(again, first)  # seeded: reproducible


@pytest.mark.parametrize("arch", FAMILIES, ids=lambda a: a.name)
def test_index_is_a_permutation_and_its_inverse_undoes_it(arch: Architecture) -> None:
    index = PermutationIndex.of(arch)
    gather = index.random(5, torch.Generator().manual_seed(8))
    assert gather.shape == (5, index.size) and gather.dtype == torch.long
    assert torch.equal(gather.sort(dim=1).values, torch.arange(index.size).expand(5, -1))
    flat = torch.randn(5, index.size)
    permuted = permute_flat(flat, gather)
    assert not torch.equal(permuted, flat)
    assert torch.equal(permute_flat(permuted, inverse_index(gather)), flat)
    assert torch.equal(permute_flat(flat, index.identity(5)), flat)


def test_non_float_entries_pass_through_and_gradients_flow() -> None:
    params = trained_looking_params(DIGITS_BN, 2, seed=9)
    params["module_list.1.num_batches_tracked"] = torch.tensor([3, 4])
    leaf = {
        key: value.requires_grad_(True) if value.is_floating_point() else value
        for key, value in params.items()
    }
    permuted = random_permutation(DIGITS_BN, leaf, torch.Generator().manual_seed(10))
    assert torch.equal(permuted["module_list.1.num_batches_tracked"], torch.tensor([3, 4]))
    sum(value.sum() for key, value in permuted.items() if value.is_floating_point()).backward()
    assert all(torch.all(value.grad == 1) for value in leaf.values() if value.is_floating_point())


def test_shape_mismatch_is_rejected() -> None:
    index = PermutationIndex.of(FAMILIES[0])
    with pytest.raises(ValueError, match="shape"):
        permute_flat(torch.zeros(2, index.size), index.random(3, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("arch", FAMILIES, ids=lambda a: a.name)
def test_the_function_breaking_draw_moves_the_same_rows_and_changes_the_outputs(arch: Architecture) -> None:
    # The views ablation's "random" views (TrainingConfig.contrastive_views): the same draw as the
    # function-preserving one, without the next layers' input columns, so the function changes.
    index = PermutationIndex.of(arch)
    layout = index.flat_layout
    params = trained_looking_params(arch, 3, seed=11)
    flat = layout.flatten(params)
    keeping = index.random(3, torch.Generator().manual_seed(12))
    breaking = index.random(3, torch.Generator().manual_seed(12), preserve_function=False)
    assert torch.equal(breaking.sort(dim=1).values, torch.arange(index.size).expand(3, -1))
    # Biases have no input columns: both draws move them alike, so the two are one draw.
    for layer in arch.parameter_layers():
        if layer.bias_key in layout.keys:
            span = layout.slice_of(layer.bias_key)
            assert torch.equal(keeping[:, span], breaking[:, span])
    inputs = torch.randn(16, *arch.input_shape, generator=torch.Generator().manual_seed(13))
    original = population_forward(arch, params, inputs)
    kept = population_forward(arch, layout.unflatten(permute_flat(flat, keeping)), inputs)
    broken = population_forward(arch, layout.unflatten(permute_flat(flat, breaking)), inputs)
    torch.testing.assert_close(kept, original, atol=1e-5, rtol=0)
    changed = (broken - original).abs().amax(dim=(1, 2))
    assert bool((changed > 1e-2).all()), changed  # every model computes something else
