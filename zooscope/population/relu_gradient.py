"""A ReLU whose forward is exact and whose backward lets a little gradient through dead units.

The behavioural loss trains a decoder through the networks it builds. Where such a network's ReLU
units are negative on every query (a dead layer, a network with one output whatever its input),
the ReLU's gradient is zero and no form of the behavioural loss can move the weights before it:
the decoder stays at the dead network (docs/tuning.md, "Why the decoder lands on dead
networks": on a zoo whose mean network is dead, a decoder that shrinks toward it builds them).
Inside `relu_gradient_slope(s)` with s > 0, every ReLU of the population forward that autograd
records passes gradient g * s where its input was negative (a leaky ReLU's backward), while its
output stays max(x, 0): the logits, hence the loss's value and every evaluation, are those of
the real network. Outside it (the default), a ReLU is torch's.

A context rather than an argument of population_forward because it changes only the backward of
one op wherever the program applies a ReLU, and only for the callers that train through
the forward (losses.BehaviouralLoss); calls that record no graph never look at it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_SLOPE: ContextVar[float] = ContextVar("relu_gradient_slope", default=0.0)


@contextmanager
def relu_gradient_slope(slope: float) -> Iterator[None]:
    """ReLUs recorded by autograd inside this block pass `slope` x the gradient where their input
    was negative (0 <= slope < 1; 0 is torch's ReLU)."""
    if not 0.0 <= slope < 1.0:
        raise ValueError(f"the ReLU gradient slope must lie in [0, 1), got {slope}")
    token = _SLOPE.set(slope)
    try:
        yield
    finally:
        _SLOPE.reset(token)


class _ReLUWithLeakyGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.slope = slope
        return x.clamp_min(0.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.where(x > 0, 1.0, ctx.slope).to(grad.dtype), None


def relu(x: torch.Tensor) -> torch.Tensor:
    """torch.relu(x), with the leaky backward inside `relu_gradient_slope` when autograd records it."""
    slope = _SLOPE.get()
    if slope > 0.0 and x.requires_grad and torch.is_grad_enabled():
        return _ReLUWithLeakyGradient.apply(x, slope)
    return torch.relu(x)
