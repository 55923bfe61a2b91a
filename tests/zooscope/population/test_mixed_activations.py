"""population_forward with one activation per model (zoos that mix `model::nlin`)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import zooscope.population.forward as population
from zooscope.networks.architectures import Architecture, activation_codes, initialise
from zooscope.networks.parameters import stack_state_dicts
from zooscope.population.forward import module_forward, population_forward

ACTIVATIONS = ["tanh", "relu", "gelu", "sigmoid", "relu", "tanh"]


def _models(arch: Architecture, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in ACTIVATIONS:
        module = arch.build()
        initialise(module, "kaiming_uniform", generator)
        out.append(module.state_dict())
    return out


@pytest.mark.parametrize(
    "arch", [Architecture("cnn_s", 1, 28), Architecture("cnn_digits", 1, 8)], ids=lambda a: a.name
)
def test_each_model_runs_with_its_own_activation(arch: Architecture) -> None:
    state_dicts = _models(arch)
    params = stack_state_dicts(arch, state_dicts)
    shared = torch.randn(5, *arch.input_shape, generator=torch.Generator().manual_seed(1))
    per_model = torch.randn(
        len(ACTIVATIONS), 5, *arch.input_shape, generator=torch.Generator().manual_seed(2)
    )
    codes = activation_codes(ACTIVATIONS)

    by_codes = population_forward(arch, params, shared, activations=codes)
    by_names = population_forward(arch, params, shared, activations=ACTIVATIONS)
    chunked = population_forward(arch, params, per_model, activations=codes, chunk_size=2)
    torch.testing.assert_close(by_codes, by_names, rtol=0, atol=0)
    for i, (sd, activation) in enumerate(zip(state_dicts, ACTIVATIONS, strict=True)):
        own = arch.with_activation(activation)
        torch.testing.assert_close(by_codes[i], module_forward(own, sd, shared), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(chunked[i], module_forward(own, sd, per_model[i]), atol=1e-5, rtol=1e-5)


def test_gradients_flow_to_every_group() -> None:
    arch = Architecture("cnn_digits", 1, 8)
    state_dicts = _models(arch, seed=3)
    params = {k: v.requires_grad_(True) for k, v in stack_state_dicts(arch, state_dicts).items()}
    x = torch.randn(4, *arch.input_shape, generator=torch.Generator().manual_seed(4))
    y = torch.arange(4)
    logits = population_forward(arch, params, x, activations=ACTIVATIONS)
    F.cross_entropy(logits.flatten(0, 1), y.repeat(len(ACTIVATIONS)), reduction="sum").backward()
    for i, (sd, activation) in enumerate(zip(state_dicts, ACTIVATIONS, strict=True)):
        module = arch.with_activation(activation).build().eval()
        module.load_state_dict(sd)
        F.cross_entropy(module(x), y, reduction="sum").backward()
        for name, p in module.named_parameters():
            torch.testing.assert_close(params[name].grad[i], p.grad, atol=1e-4, rtol=1e-4)


def test_one_activation_for_all_is_the_plain_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    arch = Architecture("cnn_digits", 1, 8, activation="tanh")
    params = stack_state_dicts(arch, _models(arch)[:3])
    x = torch.randn(4, *arch.input_shape, generator=torch.Generator().manual_seed(5))
    calls = []
    original = population._forward_all_inputs
    monkeypatch.setattr(
        population, "_forward_all_inputs", lambda a, *rest: calls.append(a) or original(a, *rest)
    )
    relu = population_forward(arch, params, x, activations=["relu"] * 3)
    assert calls == [arch.with_activation("relu")]  # one call, ReLU's program (pool+relu folded)
    torch.testing.assert_close(
        relu, population_forward(arch.with_activation("relu"), params, x), rtol=0, atol=0
    )


def test_activations_must_be_one_per_model() -> None:
    arch = Architecture("cnn_digits", 1, 8)
    params = stack_state_dicts(arch, _models(arch)[:2])
    with pytest.raises(ValueError, match="one per model"):
        population_forward(arch, params, torch.zeros(1, 1, 8, 8), activations=["relu"] * 3)


def test_a_backward_after_several_chunks_and_calls_sees_its_own_inputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the shared-input im2col lives in reused chunk memory only where no backward needs it
    from zooscope.population.batching import widest_activation

    arch = Architecture("cnn_digits", 1, 8)
    monkeypatch.setattr(population, "CHUNK_FLOATS", 16 * 2 * widest_activation(arch))
    state_dicts = _models(arch, seed=6)[:2]
    params = {k: v.requires_grad_(True) for k, v in stack_state_dicts(arch, state_dicts).items()}
    x = torch.randn(64, *arch.input_shape, generator=torch.Generator().manual_seed(7))
    first = population_forward(arch, params, x)  # 4 chunks of 16 inputs
    second = population_forward(arch, params, x.flip(0))
    (first.square().sum() + second.square().sum()).backward()
    for i, sd in enumerate(state_dicts):
        module = arch.build().eval()
        module.load_state_dict(sd)
        (module(x).square().sum() + module(x.flip(0)).square().sum()).backward()
        for name, p in module.named_parameters():
            torch.testing.assert_close(params[name].grad[i], p.grad, atol=1e-3, rtol=1e-4)
