"""Weights <-> tokens: one token per output neuron/channel (docs/method.md §2).

A layer's weight is read as rows [out, -1] with the bias appended as the last value of each row;
a row becomes one token, zero-padded to the token width, or several consecutive tokens (chunks)
when it is longer than a fixed width. A BatchNorm layer gives one token per channel holding
[weight, bias, running_mean, running_var], or, when left out, its values are taken from a
reference at detokenize time so nothing is ever lost.

Both directions are one indexing operation on the flat parameter vector of `FlatLayout`: the map
between token slots and flat positions is computed once per layout, so K models are tokenized
together and detokenize is differentiable with respect to the tokens (the behavioural loss
backpropagates through it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from zooscope.errors import ArchitectureMismatchError
from zooscope.networks.architectures import Architecture, ParameterLayer
from zooscope.networks.parameters import FlatLayout, StackedParams, check_state_dict

# Order of a BatchNorm channel's values inside its token.
BATCHNORM_TOKEN_FIELDS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class _LayerTokens:
    """Where one tokenized layer's tokens sit in the sequence."""

    key: str
    kind: str
    layer_index: int
    first_token: int
    n_channels: int
    row_length: int
    chunks_per_row: int

    @property
    def n_tokens(self) -> int:
        return self.n_channels * self.chunks_per_row


class TokenLayout:
    """The token sequence of one architecture at one width; build it with `TokenLayout.of`.

    Attributes (treat the tensors as read-only: they are shared by every caller):
      n_tokens, width, n_layers, mask (bool [T, W], True on real values),
      positions (long [T, 3]: global token index, layer index, channel index within its layer).
    """

    def __init__(self, arch: Architecture, width: int | None, include_batchnorm: bool) -> None:
        self.arch = arch
        self.include_batchnorm = include_batchnorm
        self.flat_layout = FlatLayout.of(arch)
        rows = _layer_rows(arch, self.flat_layout, include_batchnorm)
        longest = max(len(row) for _, channel_rows in rows for row in channel_rows)
        if width is not None and width < 1:
            raise ValueError(f"token width must be at least 1, got {width}")
        self.width = longest if width is None else int(width)

        layers: list[_LayerTokens] = []
        slot_of_flat: dict[int, int] = {}
        positions: list[tuple[int, int, int]] = []
        for layer_index, (layer, channel_rows) in enumerate(rows):
            row_length = len(channel_rows[0])
            chunks = math.ceil(row_length / self.width)
            layers.append(
                _LayerTokens(
                    layer.key, layer.kind, layer_index, len(positions), len(channel_rows), row_length, chunks
                )
            )
            for channel, row in enumerate(channel_rows):
                for chunk in range(chunks):
                    token = len(positions)
                    positions.append((token, layer_index, channel))
                    part = row[chunk * self.width : (chunk + 1) * self.width]
                    for column, flat_index in enumerate(part):
                        slot_of_flat[flat_index] = token * self.width + column
        self.layers: tuple[_LayerTokens, ...] = tuple(layers)
        self.n_tokens = len(positions)
        self.n_layers = len(layers)
        self.positions = torch.tensor(positions, dtype=torch.long)

        n_slots = self.n_tokens * self.width
        flat_size = self.flat_layout.size
        # tokenize: slot -> flat position, padding slots read an extra zero column at index P.
        flat_of_slot = torch.full((n_slots,), flat_size, dtype=torch.long)
        tokenized = torch.tensor(sorted(slot_of_flat), dtype=torch.long)
        slots = torch.tensor([slot_of_flat[i] for i in tokenized.tolist()], dtype=torch.long)
        flat_of_slot[slots] = tokenized
        self.mask = (flat_of_slot < flat_size).reshape(self.n_tokens, self.width)
        self.n_real = int(self.mask.sum())
        # detokenize: flat position -> index into cat([tokens [T*W], reference [P]]), so one gather
        # rebuilds the vector; values not tokenized point into the reference part.
        source_of_flat = torch.arange(flat_size, dtype=torch.long) + n_slots
        source_of_flat[tokenized] = slots
        self.needs_reference = len(tokenized) < flat_size
        self._flat_of_slot = flat_of_slot
        self._source_of_flat = source_of_flat
        self._real_slots = self.mask.flatten().nonzero().squeeze(1)
        self._device_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def of(cls, arch: Architecture, width: int | None = None, include_batchnorm: bool = True) -> TokenLayout:
        """The (cached) layout; `width=None` means the longest row (CNN3: 289, CNN-s: 201)."""
        return _cached_layout(arch, width, include_batchnorm)

    # ---- batched ------------------------------------------------------------------------------
    def tokenize(self, params: StackedParams) -> torch.Tensor:
        """{key: [K, *shape]} -> tokens [K, T, W], zeros on padding."""
        self._check_keys(params)
        flat = self.flat_layout.flatten(params)
        flat_of_slot, _, _ = self._indices(flat.device)
        padded = torch.cat([flat, flat.new_zeros(flat.shape[0], 1)], dim=1)
        return padded[:, flat_of_slot].reshape(flat.shape[0], self.n_tokens, self.width)

    def detokenize(self, tokens: torch.Tensor, reference: StackedParams | None = None) -> StackedParams:
        """Tokens [K, T, W] -> {key: [K, *shape]}; padding is ignored, gradients reach the tokens.

        `reference` supplies the values that are not tokenized (BatchNorm left out); it may hold K
        models or one model (leading dimension 1) shared by all K.
        """
        if tokens.dim() != 3 or tuple(tokens.shape[1:]) != (self.n_tokens, self.width):
            raise ValueError(
                f"expected tokens [K, {self.n_tokens}, {self.width}] for {self.arch.name}, "
                f"got {list(tokens.shape)}"
            )
        k = tokens.shape[0]
        _, source_of_flat, _ = self._indices(tokens.device)
        source = tokens.reshape(k, -1)
        if self.needs_reference:
            if reference is None:
                raise ValueError(
                    f"this token layout of {self.arch.name} leaves BatchNorm out of the tokens: "
                    "pass `reference` parameters to supply its values"
                )
            self._check_keys(reference)
            ref_flat = self.flat_layout.flatten(reference).to(device=tokens.device, dtype=tokens.dtype)
            if ref_flat.shape[0] not in (1, k):
                raise ValueError(f"reference holds {ref_flat.shape[0]} models; expected 1 or {k}")
            source = torch.cat([source, ref_flat.expand(k, -1)], dim=1)
        return self.flat_layout.unflatten(source[:, source_of_flat])

    @property
    def tensor_of_slot(self) -> torch.Tensor:
        """long [T, W]: for every real slot, the index in `flat_layout.keys` of the state_dict tensor
        its value comes from (a layer's weight and its bias differ); -1 on padding."""
        flat_of_slot = self._flat_of_slot.reshape(self.n_tokens, self.width)
        starts = torch.tensor(self.flat_layout.offsets, dtype=torch.long)
        owner = torch.bucketize(flat_of_slot, starts, right=True) - 1
        return torch.where(self.mask, owner, torch.full_like(owner, -1))

    def real_values(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens [..., T, W] -> [..., n_real], the real parameter values only (no padding)."""
        _, _, real_slots = self._indices(tokens.device)
        return tokens.flatten(-2)[..., real_slots]

    # ---- single model -------------------------------------------------------------------------
    def tokenize_state_dict(self, state_dict: dict[str, torch.Tensor]) -> torch.Tensor:
        """One state_dict -> tokens [T, W] (float32)."""
        check_state_dict(self.arch, state_dict)
        params = {key: state_dict[key].to(torch.float32).unsqueeze(0) for key in self.flat_layout.keys}
        return self.tokenize(params)[0]

    def detokenize_to_state_dict(
        self, tokens: torch.Tensor, reference_sd: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Tokens [T, W] -> a complete state_dict that `load_state_dict(strict=True)` accepts.

        Tensors are separate copies (safetensors refuses tensors sharing memory). Non-float
        entries (BatchNorm's num_batches_tracked) come from `reference_sd`, or start at 0.
        """
        reference = None
        if reference_sd is not None:
            check_state_dict(self.arch, reference_sd, label="reference state_dict")
            reference = {key: reference_sd[key].unsqueeze(0) for key in self.flat_layout.keys}
        params = self.detokenize(tokens.unsqueeze(0), reference)
        out = {key: value[0].clone() for key, value in params.items()}
        for layer in self.arch.parameter_layers():
            if layer.kind == "batchnorm":
                counter = f"{layer.key}.num_batches_tracked"
                if reference_sd is not None and counter in reference_sd:
                    out[counter] = reference_sd[counter].clone()
                else:
                    out[counter] = torch.tensor(0, dtype=torch.long)
        return out

    # ---- description --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-ready description, recorded with every artefact that holds tokens."""
        return {
            "architecture": self.arch.to_dict(),
            "width": self.width,
            "include_batchnorm": self.include_batchnorm,
            "n_tokens": self.n_tokens,
            "n_layers": self.n_layers,
            "n_real": self.n_real,
            "n_parameters": self.flat_layout.size,
            "layers": [
                {
                    "key": layer.key,
                    "kind": layer.kind,
                    "layer_index": layer.layer_index,
                    "first_token": layer.first_token,
                    "n_tokens": layer.n_tokens,
                    "channels": layer.n_channels,
                    "row_length": layer.row_length,
                    "chunks_per_row": layer.chunks_per_row,
                }
                for layer in self.layers
            ],
        }

    def __repr__(self) -> str:
        return (
            f"TokenLayout({self.arch.name}, tokens={self.n_tokens}, width={self.width}, "
            f"include_batchnorm={self.include_batchnorm})"
        )

    # ---- internals ----------------------------------------------------------------------------
    def _indices(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Index maps are copied to each device once, not on every call.
        if device not in self._device_cache:
            self._device_cache[device] = (
                self._flat_of_slot.to(device),
                self._source_of_flat.to(device),
                self._real_slots.to(device),
            )
        return self._device_cache[device]

    def _check_keys(self, params: StackedParams) -> None:
        missing = [key for key in self.flat_layout.keys if key not in params]
        if missing:
            raise ArchitectureMismatchError(
                f"parameters lack {', '.join(repr(m) for m in missing[:4])} expected by {self.arch.name}"
            )
        k = {params[key].shape[0] for key in self.flat_layout.keys}
        if len(k) != 1:
            raise ArchitectureMismatchError(
                f"stacked parameters disagree on the number of models: {sorted(k)}"
            )


@lru_cache(maxsize=64)
def _cached_layout(arch: Architecture, width: int | None, include_batchnorm: bool) -> TokenLayout:
    return TokenLayout(arch, width, include_batchnorm)


def _layer_rows(
    arch: Architecture, flat: FlatLayout, include_batchnorm: bool
) -> list[tuple[ParameterLayer, list[list[int]]]]:
    """For each tokenized layer, the flat positions of each channel's row, in token order."""
    out: list[tuple[ParameterLayer, list[list[int]]]] = []
    for layer in arch.parameter_layers():
        n = layer.out_channels
        if layer.kind == "batchnorm":
            if not include_batchnorm:
                continue
            starts = [flat.slice_of(f"{layer.key}.{field}").start for field in BATCHNORM_TOKEN_FIELDS]
            out.append((layer, [[start + c for start in starts] for c in range(n)]))
            continue
        weight = flat.slice_of(layer.weight_key)
        row_length = (weight.stop - weight.start) // n
        bias_start = flat.slice_of(layer.bias_key).start if layer.bias_key in flat.keys else None
        rows = []
        for c in range(n):
            row = list(range(weight.start + c * row_length, weight.start + (c + 1) * row_length))
            if bias_start is not None:
                row.append(bias_start + c)
            rows.append(row)
        out.append((layer, rows))
    return out
