"""population_forward against one nn.Module per model, for every architecture family and every
path the program can take: torch's ops (ZOOSCOPE_COMPILED_KERNELS=0), every compiled kernel (=1),
and each mix of the two the autotune can choose."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from zooscope.networks.architectures import Architecture, initialise
from zooscope.networks.parameters import stack_state_dicts
from zooscope.population import autotune, compiled_kernels
from zooscope.population import forward as population
from zooscope.population.forward import convolution_paths, module_forward, population_forward

FAMILIES = [
    Architecture("cnn_s", 1, 28),
    Architecture("cnn_s", 1, 28, dropout=0.2, dropout_layers=True),
    Architecture("cnn_s", 3, 32),
    Architecture("cnn3", 3, 32, dropout=0.1),
    Architecture("cnn_digits", 1, 8),
    Architecture("cnn_digits", 1, 8, activation="tanh"),
    # the program moves monotone activations after max-pooling; GELU is not monotone and stays
    Architecture("cnn_digits", 1, 8, activation="sigmoid"),
    Architecture("cnn_digits", 1, 8, activation="gelu"),
    # 9x9: the first conv gives 7x7 and the pool drops its last row and column
    Architecture("cnn_digits", 1, 9),
]
N_MODELS = 3
N_INPUTS = 5


def _population(arch: Architecture, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    state_dicts = []
    # kaiming inits keep logits near unit scale, so an absolute 1e-5 is a meaningful tolerance
    # (normal init on CNN-s gives logits in the hundreds, where float32 rounding alone is 1e-4)
    for init in ("kaiming_uniform", "kaiming_normal", "kaiming_uniform")[:N_MODELS]:
        module = arch.build()
        initialise(module, init, generator)
        state_dicts.append(module.state_dict())
    return state_dicts


def _family_id(arch: Architecture) -> str:
    return arch.name + (f"-{arch.activation}" if arch.activation != "relu" else "")


@pytest.fixture(params=["0", "1"], ids=["torch", "compiled"])
def forced_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """ZOOSCOPE_COMPILED_KERNELS forcing torch's ops ("0") or every compiled kernel built ("1")."""
    monkeypatch.setenv(compiled_kernels.ENABLE_ENV, request.param)
    yield request.param


def _diverged(
    arch: Architecture, state_dicts: list[dict[str, torch.Tensor]]
) -> list[dict[str, torch.Tensor]]:
    """The population with its second model diverged: a NaN in its first filter."""
    state_dicts = [dict(sd) for sd in state_dicts]
    first = arch.parameter_layers()[0].weight_key
    state_dicts[1][first] = state_dicts[1][first].clone()
    state_dicts[1][first].view(-1)[0] = float("nan")
    return state_dicts


def _assert_matches_modules(
    arch: Architecture,
    state_dicts: list[dict[str, torch.Tensor]],
    shared: torch.Tensor,
    per_model: torch.Tensor,
) -> None:
    """Both input forms against the modules, NaN where the module gives NaN and nowhere else."""
    params = stack_state_dicts(arch, state_dicts)
    with torch.inference_mode():
        logits_shared = population_forward(arch, params, shared)
        logits_per_model = population_forward(arch, params, per_model)
    assert logits_shared.shape == (len(state_dicts), shared.shape[0], arch.n_classes)
    for i, sd in enumerate(state_dicts):
        for logits, expected in (
            (logits_shared[i], module_forward(arch, sd, shared)),
            (logits_per_model[i], module_forward(arch, sd, per_model[i])),
        ):
            assert torch.equal(torch.isnan(logits), torch.isnan(expected))
            torch.testing.assert_close(logits.nan_to_num(), expected.nan_to_num(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", FAMILIES, ids=_family_id)
@pytest.mark.parametrize("diverged", [False, True], ids=["finite", "diverged"])
def test_population_forward_matches_modules(arch: Architecture, forced_path: str, diverged: bool) -> None:
    state_dicts = _population(arch)
    if diverged:
        state_dicts = _diverged(arch, state_dicts)
    shared = torch.randn(N_INPUTS, *arch.input_shape, generator=torch.Generator().manual_seed(1))
    per_model = torch.randn(N_MODELS, N_INPUTS, *arch.input_shape, generator=torch.Generator().manual_seed(2))
    _assert_matches_modules(arch, state_dicts, shared, per_model)
    # the autograd-recorded form (no inference_mode, weights that need gradients) runs torch's ops
    params = {k: v.requires_grad_(True) for k, v in stack_state_dicts(arch, state_dicts).items()}
    recorded = population_forward(arch, params, shared)
    for i, sd in enumerate(state_dicts):
        expected = module_forward(arch, sd, shared)
        torch.testing.assert_close(
            recorded[i].detach().nan_to_num(), expected.nan_to_num(), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("arch", FAMILIES, ids=_family_id)
def test_every_path_the_autotune_can_choose_matches_modules(
    arch: Architecture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each mix of compiled and torch convolutions, made the autotune's choice by injected timings,
    with a diverged model among the finite ones."""
    monkeypatch.setenv(compiled_kernels.ENABLE_ENV, "auto")
    # decisions neither read nor written: each label below is chosen afresh
    monkeypatch.setattr(autotune, "_read", lambda key, candidates: None)
    monkeypatch.setattr(autotune, "_write", lambda key, identity, decision: None)
    state_dicts = _diverged(arch, _population(arch, seed=12))
    shared = torch.randn(N_INPUTS, *arch.input_shape, generator=torch.Generator().manual_seed(13))
    per_model = torch.randn(
        N_MODELS, N_INPUTS, *arch.input_shape, generator=torch.Generator().manual_seed(14)
    )
    labels = set()
    for is_shared in (True, False):
        available = population._compilable_layers(arch, is_shared)
        labels |= set(population._path_candidates(arch, is_shared, available))
    try:
        for wanted in sorted(labels):
            autotune.forget_decisions()
            # the wanted label is fastest wherever it is a candidate; elsewhere torch's ops run
            monkeypatch.setattr(
                autotune,
                "time_candidates",
                lambda runners, wanted=wanted: {label: 0.5 if label == wanted else 1.0 for label in runners},
            )
            _assert_matches_modules(arch, state_dicts, shared, per_model)
            chosen = {convolution_paths(arch, N_MODELS, N_INPUTS, shared=s).chosen for s in (True, False)}
            assert wanted in chosen
    finally:
        autotune.forget_decisions()


@pytest.mark.parametrize("arch", FAMILIES[:5], ids=lambda a: a.name)
def test_gradients_reach_every_weight_and_match_modules(arch: Architecture) -> None:
    state_dicts = _population(arch, seed=3)
    params = {k: v.requires_grad_(True) for k, v in stack_state_dicts(arch, state_dicts).items()}
    x = torch.randn(N_INPUTS, *arch.input_shape, generator=torch.Generator().manual_seed(4))
    y = torch.arange(N_INPUTS) % arch.n_classes
    logits = population_forward(arch, params, x)
    # summed per-model losses: each model's gradient is its own loss's gradient
    F.cross_entropy(logits.flatten(0, 1), y.repeat(N_MODELS), reduction="sum").backward()

    for i, sd in enumerate(state_dicts):
        module = arch.build().eval()
        module.load_state_dict(sd)
        F.cross_entropy(module(x), y, reduction="sum").backward()
        for name, p in module.named_parameters():
            grad = params[name].grad
            assert grad is not None and torch.isfinite(grad).all(), name
            torch.testing.assert_close(grad[i], p.grad, atol=1e-4, rtol=1e-4)
    assert all(params[k].grad.abs().sum() > 0 for k in params), "some weight got no gradient"


def test_dropout_is_active_and_independent_per_model_in_train_mode() -> None:
    arch = Architecture("cnn_s", 1, 28, dropout=0.5, dropout_layers=True)
    state_dict = _population(arch)[0]
    params = stack_state_dicts(arch, [state_dict, state_dict])  # two identical models
    x = torch.randn(N_INPUTS, *arch.input_shape)
    logits = population_forward(arch, params, x, train=True)
    assert not torch.allclose(logits[0], logits[1]), "identical models drew identical dropout masks"
    evaluated = population_forward(arch, params, x, train=False)
    torch.testing.assert_close(evaluated[0], evaluated[1])


def test_program_pools_before_monotone_activations_only_and_folds_relu_into_the_pool() -> None:
    from zooscope.population.forward import population_program

    def order(activation: str) -> list[str]:
        steps = population_program(Architecture("cnn_digits", 1, 8, activation=activation))
        return [step.kind + ("+relu" if step.relu_after else "") for step in steps]

    # the module itself runs conv -> activation -> pool; a ReLU then runs inside the pool step
    assert order("sigmoid")[:3] == ["conv", "pool", "elementwise"]
    assert order("relu")[:3] == ["conv", "pool+relu", "conv"]
    assert order("gelu")[:3] == ["conv", "elementwise", "pool"]


def test_batchnorm_uses_each_models_running_statistics() -> None:
    arch = Architecture("cnn_digits", 1, 8, batchnorm=True)
    generator = torch.Generator().manual_seed(5)
    state_dicts = []
    for _ in range(N_MODELS):
        module = arch.build()
        initialise(module, "kaiming_uniform", generator)
        for key, value in module.state_dict().items():  # running statistics as after training
            if key.endswith("running_mean"):
                value.normal_(0, 0.5, generator=generator)
            elif key.endswith("running_var"):
                value.uniform_(0.5, 2.0, generator=generator)
        state_dicts.append(module.state_dict())
    params = stack_state_dicts(arch, state_dicts)
    x = torch.randn(N_INPUTS, *arch.input_shape, generator=generator)
    logits = population_forward(arch, params, x)
    for i, sd in enumerate(state_dicts):
        torch.testing.assert_close(logits[i], module_forward(arch, sd, x), atol=1e-5, rtol=1e-5)


def test_each_convolution_gets_the_kernel_its_shapes_call_for() -> None:
    from zooscope.population.convolution import DenseConv, GroupedConv, SharedInputConv
    from zooscope.population.forward import _convolution_plans

    digits = _convolution_plans(Architecture("cnn_digits", 1, 8), True, "cpu")
    first, second = digits["module_list.0"], digits["module_list.3"]
    # shared inputs: one product for all models, ordered for the 2x2 pool, which leaves the
    # per-model layout the dense 2x2 convolution (3x3 -> 2x2) reads
    assert isinstance(first, SharedInputConv) and first.slabs == 4 and first.pool_into_model
    assert isinstance(second, DenseConv)
    cnn_s = _convolution_plans(Architecture("cnn_s", 1, 28), True, "cpu")
    # 5x5 on 12x12 would cost 5.8x its arithmetic as a dense matrix: grouped, so the pool stays wide
    assert isinstance(cnn_s["module_list.0"], SharedInputConv) and not cnn_s["module_list.0"].pool_into_model
    assert isinstance(cnn_s["module_list.3"], GroupedConv)
    assert isinstance(cnn_s["module_list.6"], DenseConv)
    # one batch per model: nothing is shared, the first convolution is grouped
    assert isinstance(
        _convolution_plans(Architecture("cnn_digits", 1, 8), False, "cpu")["module_list.0"], GroupedConv
    )
    # GELU sits between the convolution and the pool (not monotone): no pool ordering
    gelu = _convolution_plans(Architecture("cnn_digits", 1, 8, activation="gelu"), True, "cpu")
    assert isinstance(gelu["module_list.0"], SharedInputConv) and gelu["module_list.0"].slabs == 1


@pytest.mark.parametrize("arch", [FAMILIES[0], FAMILIES[4]], ids=lambda a: a.name)
def test_chunked_inputs_and_reused_chunk_memory_give_each_chunk_its_own_result(
    arch: Architecture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zooscope.population.forward as population
    from zooscope.population.batching import widest_activation

    # chunks of 4 inputs: the 40 inputs run in 10 chunks that reuse one chunk memory
    monkeypatch.setattr(population, "CHUNK_FLOATS", 4 * N_MODELS * widest_activation(arch))
    state_dicts = _population(arch, seed=6)
    params = stack_state_dicts(arch, state_dicts)
    first_inputs, second_inputs = torch.randn(
        2, 40, *arch.input_shape, generator=torch.Generator().manual_seed(7)
    )
    with torch.no_grad():
        first = population_forward(arch, params, first_inputs)
        kept = first.clone()
        second = population_forward(arch, params, second_inputs)  # the same memory, other inputs
    torch.testing.assert_close(first, kept, atol=0, rtol=0)  # a result never lives in chunk memory
    for i, sd in enumerate(state_dicts):
        torch.testing.assert_close(first[i], module_forward(arch, sd, first_inputs), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(second[i], module_forward(arch, sd, second_inputs), atol=1e-5, rtol=1e-5)


def test_chunk_memory_serves_inference_mode_and_no_grad_calls_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import zooscope.population.forward as population

    monkeypatch.setattr(population, "_THREAD_STATE", threading.local())  # memory made afresh below
    arch = FAMILIES[4]
    state_dicts = _population(arch, seed=8)
    params = stack_state_dicts(arch, state_dicts)
    x = torch.randn(N_INPUTS, *arch.input_shape, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        in_inference = population_forward(arch, params, x)
    with torch.no_grad():  # the memory made under inference_mode is written again here
        in_no_grad = population_forward(arch, params, x)
    with torch.inference_mode():
        again = population_forward(arch, params, x)
    torch.testing.assert_close(in_inference, in_no_grad)
    torch.testing.assert_close(in_inference, again)


def test_plans_made_under_inference_mode_serve_a_later_backward() -> None:
    from zooscope.population.forward import _convolution_plans

    _convolution_plans.cache_clear()  # the first call below makes the plans
    arch = FAMILIES[4]
    state_dicts = _population(arch, seed=10)
    x = torch.randn(N_INPUTS, *arch.input_shape, generator=torch.Generator().manual_seed(11))
    with torch.inference_mode():
        population_forward(arch, stack_state_dicts(arch, state_dicts), x)
    params = {k: v.requires_grad_(True) for k, v in stack_state_dicts(arch, state_dicts).items()}
    population_forward(arch, params, x).sum().backward()  # raised: inference tensors saved for backward
    assert all(p.grad is not None for p in params.values())
