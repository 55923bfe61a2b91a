"""Named zoo and training recipes a job may ask for by name (params.preset).

"default_digits" / "cpu" are the service's defaults (the first-start build); "tiny" builds a zoo and an
autoencoder in seconds, for tests and demos (ZOOSCOPE_DEFAULT_PRESET=tiny).
"""

from __future__ import annotations

from typing import Any

DEFAULT_PRESET = "cpu"


def zoo_config(preset: str, overrides: dict[str, Any] | None = None) -> Any:
    from zooscope.zoo.grid import ZooConfig

    if preset in ("default_digits", "digits"):
        config = ZooConfig.default_digits()
    elif preset == "tiny":
        # 2 x 2 x 1 x 3 = 12 models, a few epochs: enough for a split with every side non-empty.
        config = ZooConfig.default_digits(
            inits=("kaiming_uniform", "kaiming_normal"),
            learning_rates=(1e-3, 1e-2),
            weight_decays=(0.0,),
            n_seeds=3,
            epochs=4,
            checkpoint_epochs=(2, 4),
            split_fractions=(0.5, 0.25, 0.25),
        )
    elif preset == "paper":
        overrides = dict(overrides or {})
        config = ZooConfig.paper(overrides.pop("dataset", "svhn"))
    else:
        raise ValueError(f"unknown zoo preset {preset!r}; known: default_digits, tiny, paper")
    return config.replace(**overrides) if overrides else config


def training_configs(preset: str, overrides: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """(AutoencoderConfig, TrainingConfig) of a library preset, with TrainingConfig field overrides."""
    from dataclasses import replace

    from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig

    training = TrainingConfig.preset(preset)
    return AutoencoderConfig.preset(preset), replace(training, **overrides) if overrides else training
