"""One canonical key layout per architecture: CNN-s with and without dropout modules."""

from __future__ import annotations

import pytest
import torch

from zooscope.errors import UnknownArchitectureError
from zooscope.networks.architectures import (
    ACTIVATION_NAMES,
    Architecture,
    activation_codes,
    canonical_architecture,
    canonical_state_dict,
    convert_state_dict,
    detect_architecture,
    detect_canonical,
    initialise,
    same_function_family,
)

PLAIN = Architecture("cnn_s", 1, 28)  # keys 0,3,6,9,11
DROPOUT = Architecture("cnn_s", 1, 28, dropout=0.3, dropout_layers=True)  # keys 0,4,8,11,14


def _trained_like(arch: Architecture, seed: int) -> dict[str, torch.Tensor]:
    module = arch.build()
    initialise(module, "kaiming_uniform", torch.Generator().manual_seed(seed))
    return module.state_dict()


def test_the_canonical_layout_is_the_one_without_dropout_modules() -> None:
    assert canonical_architecture(DROPOUT) == PLAIN
    assert canonical_architecture(PLAIN) == PLAIN
    assert canonical_architecture(DROPOUT.with_activation("tanh")) == PLAIN.with_activation("tanh")
    # CNN3 always has dropout modules and cnn_digits never: one layout each, kept
    cnn3 = Architecture("cnn3", 3, 32, dropout=0.1)
    assert canonical_architecture(cnn3).parameter_layers() == cnn3.parameter_layers()
    assert same_function_family(DROPOUT.with_activation("gelu"), PLAIN)
    assert not same_function_family(PLAIN, Architecture("cnn_s", 3, 32))


def test_a_dropout_layout_checkpoint_round_trips_exactly() -> None:
    original = _trained_like(DROPOUT, 0)
    assert sorted({k.rsplit(".", 1)[0] for k in original}) == [f"module_list.{i}" for i in (0, 11, 14, 4, 8)]
    canonical = canonical_state_dict(original, DROPOUT)
    assert set(canonical) == set(PLAIN.build().state_dict())
    back = convert_state_dict(canonical, PLAIN, DROPOUT)
    assert back.keys() == original.keys()
    for key, value in original.items():
        assert torch.equal(back[key], value), key


def test_the_canonical_module_computes_what_the_dropout_module_computes() -> None:
    for activation in ACTIVATION_NAMES:
        arch = DROPOUT.with_activation(activation)
        original = _trained_like(arch, 1)
        dropout_module = arch.build().eval()
        dropout_module.load_state_dict(original)
        canonical_module = canonical_architecture(arch).build().eval()
        canonical_module.load_state_dict(canonical_state_dict(original, arch))  # strict: every key
        x = torch.randn(7, *arch.input_shape, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            torch.testing.assert_close(canonical_module(x), dropout_module(x), rtol=0, atol=0)


def test_detection_accepts_both_layouts_as_one_architecture() -> None:
    with_dropout, without = _trained_like(DROPOUT, 3), _trained_like(PLAIN, 4)
    assert detect_architecture(with_dropout).name == "cnn_s-1x28x28-dropout"  # the layout as found
    arch_a, sd_a = detect_canonical(with_dropout, "tanh")
    arch_b, sd_b = detect_canonical(without, "tanh")
    assert arch_a == arch_b == PLAIN.with_activation("tanh")
    assert sd_a.keys() == sd_b.keys()
    assert torch.equal(sd_a["module_list.11.weight"], with_dropout["module_list.14.weight"])


def test_conversion_refuses_other_layers() -> None:
    with pytest.raises(UnknownArchitectureError):
        convert_state_dict(_trained_like(PLAIN, 0), PLAIN, Architecture("cnn_s", 3, 32))
    with pytest.raises(UnknownArchitectureError, match="belongs to no layer"):
        convert_state_dict({"module_list.1.weight": torch.zeros(1)}, PLAIN, DROPOUT)


def test_activation_codes_index_the_activation_names() -> None:
    codes = activation_codes(["gelu", "relu", "gelu"])
    assert [ACTIVATION_NAMES[c] for c in codes.tolist()] == ["gelu", "relu", "gelu"]
    with pytest.raises(UnknownArchitectureError):
        activation_codes(["swish"])


def test_sizes_and_detection_leave_the_global_random_state_alone() -> None:
    # They are read once per architecture and kept: asked or not before, a seeded draw after them
    # is the same.
    arch = Architecture("cnn3", 3, 32)
    checkpoint = _trained_like(arch, 1)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    n = arch.n_parameters
    assert detect_architecture(checkpoint) == arch
    assert torch.equal(torch.rand(3), expected)
    assert n == sum(p.numel() for p in arch.build().parameters()) == arch.n_parameters
