"""Per-layer (or per-tensor) standardisation of weight tokens, fitted once on a zoo's training split.

Why: the layers of a small CNN differ in scale by an order of magnitude (the first conv's weights
vs the classifier's bias), and so do zoo members (uniform/normal inits train to weights about 3x
larger than kaiming ones). In raw units the structural MSE is dominated by the largest layers
and models; the SANE code standardises each layer over the population before the autoencoder sees
it. We do the same: the autoencoder reads and writes standardised tokens, the structural loss is
measured there, and everything that leaves the autoencoder (the behavioural loss's networks, every
reconstruction a report shows) is de-standardised back to real weights first.

The normaliser is a fixed function of the training split, stored with the artefact
(config.json, "token_normaliser"); an artefact without one uses the identity.
"""

from __future__ import annotations

from typing import Any

import torch

from zooscope.autoencoder.config import TOKEN_NORMALISATIONS
from zooscope.weightspace.tokens import TokenLayout

KINDS = TOKEN_NORMALISATIONS  # one list of kinds: TrainingConfig checks the same names
# A layer whose values barely vary over the population (a std below this) is only shifted, not
# scaled: dividing by a tiny std would blow numerical noise up into the autoencoder's targets.
MIN_STD = 1e-6


def _group_of_slot(layout: TokenLayout, kind: str) -> torch.Tensor:
    """long [T, W]: the group whose statistics standardise each slot, -1 on padding.

    "layer": the tokenized layer (a layer's weights and bias share one mean and std, as in the
    SANE code). "tensor": the state_dict tensor, so a layer's bias (2-5x smaller than its weights in
    the digits zoo) gets its own scale and weighs as much per value in the structural loss.
    """
    if kind == "tensor":
        return layout.tensor_of_slot
    layer_of_token = layout.positions[:, 1].unsqueeze(1).expand(-1, layout.width)
    return torch.where(layout.mask, layer_of_token, torch.full_like(layer_of_token, -1))


def n_groups(layout: TokenLayout, kind: str) -> int:
    """How many means and stds a normaliser of this kind holds for this layout."""
    return len(layout.flat_layout.keys) if kind == "tensor" else layout.n_layers


class TokenNormaliser:
    """tokens [K,T,W] <-> standardised tokens: per group of values (a tokenized layer, or a
    state_dict tensor), (x - mean) / std on real values.

    Padding passes through unchanged in both directions (shift 0, scale 1), so the decoder's
    padding output is still visible to the paper's padding-included structural distance.
    """

    def __init__(
        self, layout: TokenLayout, mean: torch.Tensor, std: torch.Tensor, kind: str = "layer"
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"token normalisation must be one of {', '.join(KINDS)}, not {kind!r}")
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        groups = n_groups(layout, kind)
        if mean.shape != (groups,) or std.shape != (groups,):
            raise ValueError(
                f"a {kind} normaliser of {layout.arch.name} needs {groups} means and stds, "
                f"got {mean.numel()} and {std.numel()}"
            )
        if not bool(torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("normaliser means must be finite and stds finite and positive")
        self.layout = layout
        self.kind = kind
        self.mean = mean
        self.std = std
        group = _group_of_slot(layout, kind).clamp(min=0)
        # Per-slot shift and scale [T, W]: a group's statistics on its real values, identity on padding.
        self._shift = torch.where(layout.mask, mean[group], torch.zeros(()))
        self._scale = torch.where(layout.mask, std[group], torch.ones(()))
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def identity(cls, layout: TokenLayout) -> TokenNormaliser:
        return cls(layout, torch.zeros(layout.n_layers), torch.ones(layout.n_layers), kind="none")

    @classmethod
    def fit(cls, layout: TokenLayout, tokens: torch.Tensor, kind: str = "layer") -> TokenNormaliser:
        """Statistics of each group's real values (per layer, or per tensor) over the population
        `tokens` [K,T,W].

        Pass the TRAINING split's tokens only: validation and test checkpoints must not leak into a
        function the autoencoder is trained through.
        """
        if kind == "none":
            return cls.identity(layout)
        if kind not in KINDS:
            raise ValueError(f"token normalisation must be one of {', '.join(KINDS)}, not {kind!r}")
        values = tokens.detach().to("cpu", torch.float64)
        group_of_slot = _group_of_slot(layout, kind)
        groups = n_groups(layout, kind)
        mean = torch.zeros(groups, dtype=torch.float64)
        std = torch.ones(groups, dtype=torch.float64)
        for group in range(groups):
            real = values[:, group_of_slot == group]  # [K, n_real_of_group]
            if real.numel() == 0:  # a tensor left out of the tokens (BatchNorm, include_batchnorm=False)
                continue
            mean[group] = real.mean()
            spread = real.std(unbiased=False)
            std[group] = spread if spread > MIN_STD else 1.0
        return cls(layout, mean.float(), std.float(), kind=kind)

    # ---- use ------------------------------------------------------------------------------------
    def _on(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = (
                self._shift.to(like.device, like.dtype),
                self._scale.to(like.device, like.dtype),
            )
        return self._cache[key]

    @property
    def is_identity(self) -> bool:
        return self.kind == "none"

    def normalise(self, tokens: torch.Tensor) -> torch.Tensor:
        """Real tokens [..., T, W] -> standardised tokens (what the autoencoder reads and writes)."""
        if self.is_identity:
            return tokens
        shift, scale = self._on(tokens)
        return (tokens - shift) / scale

    def denormalise(self, tokens: torch.Tensor) -> torch.Tensor:
        """Standardised tokens -> real tokens; differentiable (the behavioural loss runs through it)."""
        if self.is_identity:
            return tokens
        shift, scale = self._on(tokens)
        return tokens * scale + shift

    # ---- files ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, layout: TokenLayout, data: dict[str, Any] | None) -> TokenNormaliser:
        """The stored normaliser; None (an artefact older than normalisation) is the identity."""
        if not data or data.get("kind", "none") == "none":
            return cls.identity(layout)
        return cls(layout, torch.tensor(data["mean"]), torch.tensor(data["std"]), kind=data["kind"])
