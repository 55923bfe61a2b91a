"""An optional fourth training term, beyond docs/method.md: the embedding must carry layer statistics.

Why: on the default digits zoo, test accuracy is read linearly from each layer's order statistics
(mean, std and quantiles of its weights and of its biases, and their logarithms), not from any
per-token moment: a linear probe on those statistics reaches R^2 0.90, one on the C+S+B embedding
0.41-0.45, because none of the three losses asks the encoder to compute whole-layer statistics
into the mean-pooled embedding (docs/tuning.md, "What bounds R^2 on this zoo").

This term asks exactly that, without labels: a LINEAR head (the property probe is linear) maps the
mean-pooled embedding to the statistics of the input checkpoint's own weights, standardised over
the training split, and the loss is their mean squared error. The head is training machinery
only: it is not part of the saved autoencoder. Its weight (TrainingConfig.statistics_weight)
defaults to 0, which is docs/method.md's C+S+B (the paper preset); the cpu preset sets 1, fading to
0.1 after the warm-up, and with its ReLU latent the term lifts R^2 past 0.9 (docs/tuning.md, "The
cpu preset (2026-11-27)" and "The fourth term fades").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zooscope.networks.architectures import Architecture
from zooscope.networks.parameters import StackedParams
from zooscope.weightspace.statistics import weight_statistics_features

# Keeps log|s| finite for a statistic of exactly zero; far below any weight scale in a zoo.
LOG_FLOOR = 1e-6
# A statistic that does not vary over the training split is only centred, not scaled.
MIN_STD = 1e-6


def layer_statistics(arch: Architecture, params: StackedParams) -> torch.Tensor:
    """[K, 2F]: the weight statistics of probing.py (F per checkpoint) and the log of their magnitudes."""
    statistics = weight_statistics_features(arch, params).float()
    return torch.cat([statistics, statistics.abs().clamp_min(LOG_FLOOR).log()], dim=1)


class LayerStatisticsLoss(nn.Module):
    """MSE between a linear map of the embedding [K, L] and the standardised layer statistics of
    the checkpoints it embeds."""

    def __init__(self, arch: Architecture, latent_dim: int, train_params: StackedParams) -> None:
        super().__init__()
        self.arch = arch
        statistics = layer_statistics(arch, train_params)  # fitted on the training split only
        std = statistics.std(0, unbiased=False)
        self.register_buffer("mean", statistics.mean(0))
        self.register_buffer("std", torch.where(std > MIN_STD, std, torch.ones_like(std)))
        self.head = nn.Linear(latent_dim, statistics.shape[1])

    def targets(self, params: StackedParams) -> torch.Tensor:
        """[K, 2F] standardised statistics of `params` (no gradient: they describe the input)."""
        with torch.no_grad():
            return (layer_statistics(self.arch, params).to(self.mean.device) - self.mean) / self.std

    def forward(self, embedding: torch.Tensor, params: StackedParams) -> torch.Tensor:
        return F.mse_loss(self.head(embedding.float()), self.targets(params))
