"""The leaky ReLU backward: exact values, a gradient through dead units only where asked."""

from __future__ import annotations

import pytest
import torch

from zooscope.networks.architectures import Architecture
from zooscope.networks.parameters import stack_state_dicts
from zooscope.population.forward import population_forward
from zooscope.population.relu_gradient import relu, relu_gradient_slope


def test_relu_is_torchs_outside_the_context_and_leaky_backward_inside() -> None:
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    relu(x).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    x.grad = None
    with relu_gradient_slope(0.1):
        y = relu(x)
        y.sum().backward()
    assert y.tolist() == torch.relu(x).tolist()
    assert x.grad.tolist() == pytest.approx([0.1, 0.1, 0.1, 1.0, 1.0])


def test_the_slope_must_lie_in_zero_one() -> None:
    for slope in (-0.1, 1.0):
        with pytest.raises(ValueError, match="slope"), relu_gradient_slope(slope):
            pass


@pytest.mark.parametrize("family, size", [("cnn_s", 28), ("cnn_digits", 8)])
def test_a_dead_network_gets_a_gradient_before_its_dead_layer_with_a_slope(family: str, size: int) -> None:
    arch = Architecture(family, 1, size)
    torch.manual_seed(0)
    params = stack_state_dicts(arch, [arch.build().state_dict() for _ in range(3)])
    first_conv = next(key for key in params if key.endswith("weight"))
    last_hidden_bias = [key for key in params if key.endswith("bias")][-2]
    # Every unit of the last hidden layer negative on every input: the network outputs its last
    # bias whatever it sees, so torch's ReLU gives the layers before it no gradient.
    params[last_hidden_bias] = torch.full_like(params[last_hidden_bias], -1e3)
    params = {key: value.requires_grad_(True) for key, value in params.items()}
    inputs = torch.randn(20, *arch.input_shape, generator=torch.Generator().manual_seed(1))

    exact = population_forward(arch, params, inputs)
    assert exact.std(dim=1).max().item() == 0.0  # dead: one output for every input
    exact.pow(2).sum().backward()
    assert params[first_conv].grad.abs().max().item() == 0.0

    for value in params.values():
        value.grad = None
    with relu_gradient_slope(0.05):
        leaky = population_forward(arch, params, inputs)
    assert torch.equal(leaky, exact)
    leaky.pow(2).sum().backward()
    assert (params[first_conv].grad.flatten(1).abs().amax(dim=1) > 0).all()
