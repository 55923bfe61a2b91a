"""The behaviour-aware weight-space autoencoder: config, model, losses, training, artefact.

Import the submodules directly (`from zooscope.autoencoder.artefact import TrainedAutoencoder`);
this package file re-exports the main names lazily so that importing the package stays cheap.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "AutoencoderConfig": "zooscope.autoencoder.config",
    "TrainingConfig": "zooscope.autoencoder.config",
    "WeightAutoencoder": "zooscope.autoencoder.model",
    "StructuralLoss": "zooscope.autoencoder.losses",
    "BehaviouralLoss": "zooscope.autoencoder.losses",
    "ContrastiveLoss": "zooscope.autoencoder.losses",
    "CompositeLoss": "zooscope.autoencoder.losses",
    "train_autoencoder": "zooscope.autoencoder.training",
    "TrainedAutoencoder": "zooscope.autoencoder.artefact",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'zooscope.autoencoder' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
