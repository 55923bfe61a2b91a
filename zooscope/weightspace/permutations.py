"""Random function-preserving neuron permutations, drawn on the fly for K models at once (docs/method.md §5).

Permuting the output channels of a hidden layer (rows of its weight and bias, its BatchNorm's
weight, bias and running statistics) together with the matching input columns of the next
parameter layer leaves the network's function unchanged: pooling, activations and dropout act
channel by channel. Where a conv output is flattened into a linear layer, one channel is a block
of H*W consecutive input columns. The last layer's outputs, the classes, are never permuted.

A permutation of every hidden layer at once is one gather index on the flat parameter vector
[K, P] (each of the K rows its own permutation). It is built from maps computed once per
architecture: for every flat position, which channel of which permuted layer its row and its
column belong to, and how far apart consecutive channels are. Drawing then costs one argsort of
[K, n_hidden_channels] and a few [K, P] integer operations, cheap enough for every training step.
The contrastive loss uses two such draws as the two views of each checkpoint. The views ablation
(docs/method.md §9.3) also draws permutations that break the function on purpose: each hidden
layer's units move, the next layer's input columns stay where they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from zooscope.networks.architectures import Architecture
from zooscope.networks.parameters import FlatLayout, StackedParams


@dataclass(frozen=True)
class PermutedLayer:
    """One hidden layer whose output channels are permuted, and what follows its channels."""

    producer: str  # layer key whose output channels (weight rows, bias) are permuted
    channels: int
    followers: tuple[str, ...]  # BatchNorm layer keys whose values follow the producer's channels
    consumer: str  # next parameter layer, whose input columns are permuted to match
    block: int  # consecutive consumer input values per channel: kh*kw for a conv, H*W after flatten


class PermutationIndex:
    """Gather maps for random neuron permutations of one architecture; build with `.of(arch)`."""

    def __init__(self, arch: Architecture) -> None:
        self.arch = arch
        self.flat_layout = layout = FlatLayout.of(arch)
        size = layout.size
        # Per flat position: the permuted channel (index into all hidden channels laid end to end)
        # of its output axis and of its input axis, -1 for none, and the flat distance between
        # neighbouring channels along that axis.
        out_channel = torch.full((size,), -1, dtype=torch.long)
        out_stride = torch.zeros(size, dtype=torch.long)
        in_channel = torch.full((size,), -1, dtype=torch.long)
        in_stride = torch.zeros(size, dtype=torch.long)

        layers = arch.parameter_layers()
        last_mixing = [layer.key for layer in layers if layer.kind != "batchnorm"][-1]
        groups: list[PermutedLayer] = []
        group_starts: list[int] = []
        open_start: int | None = None  # start of the channels waiting for their consumer
        open_layer: PermutedLayer | None = None
        total = 0
        for layer in layers:
            n = layer.out_channels
            if layer.kind == "batchnorm":
                if open_layer is None or open_layer.channels != n or open_start is None:
                    raise ValueError(
                        f"{arch.name}: BatchNorm {layer.key} does not follow a hidden layer of {n}"
                    )
                for key in (layer.weight_key, layer.bias_key, *layer.buffer_keys):
                    span = layout.slice_of(key)
                    out_channel[span] = open_start + torch.arange(n)
                    out_stride[span] = 1
                open_layer = PermutedLayer(open_layer.producer, n, (*open_layer.followers, layer.key), "", 0)
                continue
            weight = layout.slice_of(layer.weight_key)
            row = (weight.stop - weight.start) // n
            columns = torch.arange(weight.stop - weight.start) % row
            if open_layer is not None and open_start is not None:
                block = row // open_layer.channels
                if block * open_layer.channels != row or (
                    layer.kind == "linear" and block != layer.flatten_block
                ):
                    raise ValueError(f"{arch.name}: {layer.key} inputs do not match {open_layer.producer}")
                in_channel[weight] = open_start + columns // block
                in_stride[weight] = block
                groups.append(
                    PermutedLayer(
                        open_layer.producer, open_layer.channels, open_layer.followers, layer.key, block
                    )
                )
                group_starts.append(open_start)
                open_layer, open_start = None, None
            if layer.key == last_mixing:
                continue
            rows = torch.arange(weight.stop - weight.start) // row
            out_channel[weight] = total + rows
            out_stride[weight] = row
            if layer.bias_key in layout.keys:
                bias = layout.slice_of(layer.bias_key)
                out_channel[bias] = total + torch.arange(n)
                out_stride[bias] = 1
            open_layer, open_start = PermutedLayer(layer.key, n, (), "", 0), total
            total += n

        self.groups: tuple[PermutedLayer, ...] = tuple(groups)
        self.n_channels = total
        # "No channel" points at an extra always-zero column of the shift table.
        out_channel[out_channel < 0] = total
        in_channel[in_channel < 0] = total
        group_of_channel = torch.zeros(total, dtype=torch.float64)
        for index, (group, start) in enumerate(zip(groups, group_starts, strict=True)):
            group_of_channel[start : start + group.channels] = index
        # Positions sharing (row channel, row stride, column channel, column stride) move by the
        # same amount; there are few such classes (about 1.5k for CNN3 against 10.9k positions),
        # so a draw computes each class's shift once and expands it with one index_select.
        classes, class_of_position = torch.unique(
            torch.stack([out_channel, out_stride, in_channel, in_stride]), dim=1, return_inverse=True
        )
        self._cpu = (*classes.unbind(0), class_of_position, group_of_channel)
        self._device_cache: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    @classmethod
    def of(cls, arch: Architecture) -> PermutationIndex:
        """The (cached) maps of `arch`."""
        return _cached_index(arch)

    @property
    def size(self) -> int:
        return self.flat_layout.size

    def random(
        self,
        k: int,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        *,
        preserve_function: bool = True,
    ) -> torch.Tensor:
        """A gather index [K, P]: model i's permuted flat vector is flat[i, index[i]].

        Drawn with `generator` on its own device, so a seed gives the same permutations on a CPU
        and on a GPU; the index is returned on `device` (default: the generator's). With
        `preserve_function` False the same draw moves only the rows (each hidden layer's units,
        their biases and BatchNorm values) and leaves the next layer's input columns in place, so
        the permuted network computes something else.
        """
        target = torch.device(device) if device is not None else generator.device
        out_channel, out_stride, in_channel, in_stride, class_of_position, group_of_channel = self._on(target)
        # One argsort draws every layer's permutation: adding the group number keeps each group's
        # keys in its own unit interval, so each group sorts within its own block of positions.
        keys = torch.rand(
            k, self.n_channels, generator=generator, dtype=torch.float64, device=generator.device
        )
        order = (keys.to(target) + group_of_channel).argsort(dim=1)
        shift = order - torch.arange(self.n_channels, device=target)  # source channel - target channel
        shift = torch.cat([shift, shift.new_zeros(k, 1)], dim=1)
        class_shift = shift[:, out_channel] * out_stride
        if preserve_function:
            class_shift = class_shift + shift[:, in_channel] * in_stride
        return class_shift.index_select(1, class_of_position).add_(torch.arange(self.size, device=target))

    def identity(self, k: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The gather index that leaves every model as it is."""
        return torch.arange(self.size, device=device).expand(k, -1).clone()

    def _on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        # Maps are copied to a device once, not on every draw.
        if device not in self._device_cache:
            self._device_cache[device] = tuple(t.to(device) for t in self._cpu)
        return self._device_cache[device]


@lru_cache(maxsize=32)
def _cached_index(arch: Architecture) -> PermutationIndex:
    return PermutationIndex(arch)


def permute_flat(flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Apply gather indices [K, P] to flat parameters [K, P] (differentiable w.r.t. `flat`)."""
    if flat.shape != index.shape:
        raise ValueError(f"flat parameters {list(flat.shape)} and index {list(index.shape)} differ in shape")
    return torch.gather(flat, 1, index.to(flat.device))


def inverse_index(index: torch.Tensor) -> torch.Tensor:
    """The gather index that undoes `index`: permute_flat(permute_flat(x, i), inverse_index(i)) == x."""
    positions = torch.arange(index.shape[1], device=index.device).expand_as(index)
    return torch.empty_like(index).scatter_(1, index, positions)


def random_permutation(
    arch: Architecture, params: StackedParams, generator: torch.Generator
) -> StackedParams:
    """Each of the K models in `params` under its own random function-preserving permutation.

    Entries that are not float parameters (num_batches_tracked) pass through unchanged.
    """
    permutation = PermutationIndex.of(arch)
    layout = permutation.flat_layout
    flat = layout.flatten(params)
    index = permutation.random(flat.shape[0], generator, device=flat.device)
    permuted = layout.unflatten(permute_flat(flat, index))
    return {key: permuted.get(key, value) for key, value in params.items()}
