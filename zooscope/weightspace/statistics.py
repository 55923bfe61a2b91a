"""Simple statistics of each layer's weights: the baseline that embeddings are measured against
(Unterthiner et al. 2020, "Predicting neural network accuracy from weights"), and the target of
the autoencoder's optional layer-statistics term."""

from __future__ import annotations

import torch

from zooscope.networks.architectures import Architecture
from zooscope.networks.parameters import StackedParams

# Unterthiner et al.: these quantiles, plus mean and std, of each layer's weights and of its biases.
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
STATISTICS = ("mean", "std", *(f"q{int(q * 100)}" for q in QUANTILES))


def weight_statistics_features(arch: Architecture, params: StackedParams) -> torch.Tensor:
    """[K, F] features: for each parameter layer, mean, std and quantiles 0/25/50/75/100 of its
    weights, then the same of its biases. F = 2 * 7 * len(arch.parameter_layers())."""
    columns = []
    q = torch.tensor(QUANTILES, dtype=torch.float64)
    for layer in arch.parameter_layers():
        for key in (layer.weight_key, layer.bias_key):
            values = params[key].flatten(1).double()
            columns += [values.mean(1, keepdim=True), values.std(1, unbiased=False, keepdim=True)]
            columns.append(torch.quantile(values, q, dim=1).T)
    return torch.cat(columns, dim=1).float()
