"""Each loss on small known cases, and the composite weighting with its normalisers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zooscope.autoencoder.losses import BehaviouralLoss, CompositeLoss, ContrastiveLoss, StructuralLoss
from zooscope.networks.architectures import Architecture
from zooscope.networks.parameters import stack_state_dicts
from zooscope.population.forward import module_forward
from zooscope.weightspace.tokens import TokenLayout

ARCH = Architecture("cnn_digits", 1, 8)


def _population(k: int, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return stack_state_dicts(ARCH, [ARCH.build().state_dict() for _ in range(k)])


def _queries(n: int = 12) -> torch.Tensor:
    return torch.randn(n, *ARCH.input_shape, generator=torch.Generator().manual_seed(1))


# ---- structural -------------------------------------------------------------------------------
def test_structural_loss_counts_real_values_only() -> None:
    loss = StructuralLoss(torch.tensor([[True, True, False]]))
    target = torch.tensor([[[1.0, 2.0, 0.0]], [[0.0, 0.0, 0.0]]])
    reconstruction = torch.tensor([[[2.0, 2.0, 100.0]], [[0.0, 3.0, -7.0]]])
    # model 0: (1^2 + 0) / 2 real values; model 1: (0 + 3^2) / 2; padding ignored.
    assert loss.per_model(reconstruction, target).tolist() == pytest.approx([0.5, 4.5])
    assert loss(reconstruction, target).item() == pytest.approx(2.5)
    assert loss(target, target).item() == 0.0


def test_relative_structural_loss_weighs_each_checkpoint_by_its_own_size() -> None:
    mask = torch.tensor([[True, True, False]])
    loss = StructuralLoss(mask, kind="relative")
    target = torch.tensor([[[10.0, 0.0, 0.0]], [[0.1, 0.1, 5.0]]])
    # the same 10 % error on a large and on a small checkpoint costs them the same
    reconstruction = target * 1.1
    assert loss.per_model(reconstruction, target).tolist() == pytest.approx([0.01, 0.01], rel=1e-3)
    plain = StructuralLoss(mask).per_model(reconstruction, target).tolist()
    assert plain == pytest.approx([0.5, 0.0001], rel=1e-3)
    with pytest.raises(ValueError, match="structural loss kind"):
        StructuralLoss(mask, kind="l1")


# ---- behavioural ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mse", "mse_scaled", "logits", "kl"])
def test_behavioural_loss_is_zero_for_identical_networks(kind: str) -> None:
    layout = TokenLayout.of(ARCH)
    params = _population(3)
    loss = BehaviouralLoss(ARCH, layout, kind=kind)
    queries = _queries()
    targets = loss.targets(params, queries)
    assert loss(layout.tokenize(params), targets, queries).item() == pytest.approx(0.0, abs=1e-7)
    other = layout.tokenize(_population(3, seed=5))
    assert loss(other, targets, queries).item() > 1e-4


def test_behavioural_mse_matches_a_direct_computation_per_model() -> None:
    layout = TokenLayout.of(ARCH)
    originals, others = _population(2), _population(2, seed=9)
    loss = BehaviouralLoss(ARCH, layout, kind="mse")
    queries = _queries()
    value = loss(layout.tokenize(others), loss.targets(originals, queries), queries).item()
    expected = []
    for i in range(2):
        p_o = module_forward(ARCH, {k: v[i] for k, v in originals.items()}, queries).softmax(-1)
        p_r = module_forward(ARCH, {k: v[i] for k, v in others.items()}, queries).softmax(-1)
        expected.append(((p_o - p_r) ** 2).mean().item())
    assert value == pytest.approx(sum(expected) / 2, rel=1e-4)


def test_behavioural_kl_is_the_temperature_scaled_distillation_loss() -> None:
    layout = TokenLayout.of(ARCH)
    originals, others = _population(1), _population(1, seed=9)
    loss = BehaviouralLoss(ARCH, layout, kind="kl", temperature=2.0)
    queries = _queries()
    value = loss(layout.tokenize(others), loss.targets(originals, queries), queries).item()
    logits_o = module_forward(ARCH, {k: v[0] for k, v in originals.items()}, queries)
    logits_r = module_forward(ARCH, {k: v[0] for k, v in others.items()}, queries)
    kl = F.kl_div(
        F.log_softmax(logits_r / 2, -1),
        F.log_softmax(logits_o / 2, -1),
        log_target=True,
        reduction="batchmean",
    )
    assert value == pytest.approx(4 * kl.item(), rel=1e-4)


def test_behavioural_mse_scaled_divides_each_model_by_its_originals_softmax_variance() -> None:
    layout = TokenLayout.of(ARCH)
    loss = BehaviouralLoss(ARCH, layout, kind="mse_scaled")
    plain = BehaviouralLoss(ARCH, layout, kind="mse")
    target = torch.randn(2, 12, 10)
    target[1] *= 0.05  # a weak original: nearly flat softmax, tiny variance
    logits = torch.randn(2, 12, 10)
    variance = target.softmax(-1).var(dim=(1, 2), unbiased=False)
    expected = plain._compare(logits, target) / variance
    assert torch.allclose(loss._compare(logits, target), expected, rtol=1e-5)
    # Under "mse" the weak original's error counts for less; scaled, it is lifted by 1/variance.
    assert variance[1] < variance[0]


def test_behavioural_logits_ignores_a_per_query_shift_and_the_originals_scale() -> None:
    layout = TokenLayout.of(ARCH)
    loss = BehaviouralLoss(ARCH, layout, kind="logits")
    target = torch.randn(3, 12, 10)
    logits = torch.randn(3, 12, 10)
    value = loss._compare(logits, target)
    shifted = logits + torch.randn(3, 12, 1)  # softmax (and the argmax) ignore a per-query shift
    assert torch.allclose(loss._compare(shifted, target), value, rtol=1e-5)
    # Scaling original and reconstruction together leaves the loss unchanged: a weak original with
    # small logits weighs as much as a confident one with large logits.
    assert torch.allclose(loss._compare(0.01 * logits, 0.01 * target), value, rtol=1e-4)
    # ... while the paper's softmax MSE shrinks for the small-logit (flat softmax) pair.
    mse = BehaviouralLoss(ARCH, layout, kind="mse")
    assert (mse._compare(0.01 * logits, 0.01 * target) < 0.01 * mse._compare(logits, target)).all()


def test_behavioural_loss_runs_the_real_weights_behind_standardised_tokens() -> None:
    layout = TokenLayout.of(ARCH)
    originals = _population(2)
    queries = _queries()
    tokens = layout.tokenize(originals)
    plain = BehaviouralLoss(ARCH, layout)
    targets = plain.targets(originals, queries)
    standardised = BehaviouralLoss(ARCH, layout, to_real=lambda t: t * 4.0)
    assert standardised(tokens / 4.0, targets, queries).item() == pytest.approx(0.0, abs=1e-7)
    assert plain(tokens / 4.0, targets, queries).item() > 1e-4


def test_non_finite_models_are_dropped_from_the_loss_and_the_gradient() -> None:
    layout = TokenLayout.of(ARCH)
    originals, others = _population(3), _population(3, seed=9)
    loss = BehaviouralLoss(ARCH, layout)
    queries = _queries()
    targets = loss.targets(originals, queries)
    tokens = layout.tokenize(others)
    keep = torch.tensor([0, 2])
    expected = loss(tokens[keep], targets[keep], queries).item()

    broken = tokens.clone()
    broken[1, 0, 0] = math.inf  # model 1 computes NaN
    broken.requires_grad_(True)
    value = loss(broken, targets, queries)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    value.backward()
    assert torch.isfinite(broken.grad).all()
    assert broken.grad[1].abs().sum() == 0  # the dropped model receives no gradient
    assert broken.grad[0].abs().sum() > 0


def test_behavioural_loss_compares_several_views_with_one_set_of_targets() -> None:
    layout = TokenLayout.of(ARCH)
    originals, others = _population(2), _population(2, seed=9)
    loss = BehaviouralLoss(ARCH, layout)
    queries = _queries()
    targets = loss.targets(originals, queries)
    tokens = layout.tokenize(others)
    single = loss(tokens, targets, queries).item()
    assert loss(torch.cat([tokens, tokens]), targets, queries).item() == pytest.approx(single, rel=1e-6)


def test_a_relu_gradient_slope_keeps_the_value_and_gives_a_dead_reconstruction_a_gradient() -> None:
    layout = TokenLayout.of(ARCH)
    originals, dead = _population(3), _population(3, seed=9)
    dead["module_list.6.bias"] = torch.full_like(dead["module_list.6.bias"], -1e3)  # last hidden layer off
    queries = _queries()
    tokens = layout.tokenize(dead).requires_grad_(True)
    values, gradients = [], []
    for slope in (0.0, 0.05):
        loss = BehaviouralLoss(ARCH, layout, relu_gradient_slope=slope)
        value = loss(tokens, loss.targets(originals, queries), queries)
        (gradient,) = torch.autograd.grad(value, tokens)
        values.append(value.item())
        gradients.append(gradient)
    assert values[0] == values[1]
    # The first conv's entries among the tokens; torch's ReLU lets nothing past the dead layer.
    ones_in_first_layer = {k: (v * 0 + k.startswith("module_list.0.")) for k, v in dead.items()}
    first_layer = layout.tokenize(ones_in_first_layer).bool()
    assert gradients[0][first_layer].abs().max().item() == 0.0
    assert gradients[1][first_layer].abs().max().item() > 0.0


# ---- contrastive ------------------------------------------------------------------------------
def test_nt_xent_prefers_matching_views() -> None:
    torch.manual_seed(0)
    z = torch.randn(8, 30)
    loss = ContrastiveLoss(temperature=0.1)
    matched = loss(z, z + 0.01 * torch.randn_like(z)).item()
    shuffled = loss(z, z[torch.tensor([1, 2, 3, 4, 5, 6, 7, 0])]).item()
    assert matched < shuffled


def test_nt_xent_on_a_hand_case() -> None:
    # Two checkpoints, orthogonal unit projections, identical views: each row of the 4x4
    # similarity matrix has its positive at cos 1 and two negatives at cos 0.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * math.exp(0.0)))
    assert ContrastiveLoss(temperature=t)(z, z).item() == pytest.approx(expected, rel=1e-6)


# ---- composite --------------------------------------------------------------------------------
def test_composite_divides_each_term_by_its_first_value() -> None:
    gamma, beta = 0.05, 0.1
    composite = CompositeLoss(gamma, beta)
    c, s, b = torch.tensor(4.0), torch.tensor(0.5), torch.tensor(0.02)
    first = composite(c, s, b).item()
    assert first == pytest.approx(gamma + (1 - gamma) * (beta + (1 - beta)))  # every term is 1
    assert composite.normalisers() == pytest.approx(
        {"contrastive": 4.0, "structural": 0.5, "behavioural": 0.02, "statistics": None}
    )

    second = composite(torch.tensor(2.0), torch.tensor(0.25), torch.tensor(0.01)).item()
    expected = gamma * 2.0 / 4.0 + (1 - gamma) * (beta * 0.25 / 0.5 + (1 - beta) * 0.01 / 0.02)
    assert second == pytest.approx(expected)
    # beta overridden (the warm-up) changes the weights, not the normalisers.
    third = composite(torch.tensor(2.0), torch.tensor(0.25), torch.tensor(0.04), beta=0.5).item()
    assert third == pytest.approx(0.05 * 0.5 + 0.95 * (0.5 * 0.5 + 0.5 * 2.0))


def test_composite_delta_overridden_by_its_schedule_weighs_the_fourth_term() -> None:
    composite = CompositeLoss(0.0, 1.0, delta=1.0)
    assert composite(None, torch.tensor(2.0), None, statistics=torch.tensor(0.4)).item() == pytest.approx(2.0)
    # The term at half its first value under delta 0.3: 1 + 0.3 * 0.5.
    value = composite(None, torch.tensor(2.0), None, statistics=torch.tensor(0.2), delta=0.3).item()
    assert value == pytest.approx(1.15)
    # delta scheduled down to 0 drops the term: it need not be computed.
    assert composite(None, torch.tensor(2.0), None, delta=0.0).item() == pytest.approx(1.0)


def test_composite_structure_only_needs_no_behaviour_and_normalisers_survive_a_reload() -> None:
    composite = CompositeLoss(gamma=0.0, beta=1.0)
    assert composite(None, torch.tensor(3.0), None).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="behavioural"):
        CompositeLoss(0.05, 0.1)(torch.tensor(1.0), torch.tensor(1.0), None)

    trained = CompositeLoss(0.05, 0.1)
    trained(torch.tensor(4.0), torch.tensor(0.5), torch.tensor(0.02))
    restored = CompositeLoss(0.05, 0.1)
    restored.load_state_dict(trained.state_dict())
    assert restored.normalisers() == trained.normalisers()
    value = restored(torch.tensor(4.0), torch.tensor(0.5), torch.tensor(0.02)).item()
    assert value == pytest.approx(1.0)


def test_a_behaviour_normaliser_set_late_uses_its_own_first_value() -> None:
    # Under the warm-up L_B is first computed after some structure-only steps.
    composite = CompositeLoss(0.0, 0.5)
    composite(None, torch.tensor(2.0), None, beta=1.0)
    assert composite.normalisers()["behavioural"] is None
    assert composite(None, torch.tensor(2.0), torch.tensor(0.3)).item() == pytest.approx(1.0)
    assert composite.normalisers()["behavioural"] == pytest.approx(0.3)
