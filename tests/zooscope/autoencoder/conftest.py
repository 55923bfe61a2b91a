"""A tiny population of cnn_digits checkpoints and the digits data set, shared by the tests here."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from zooscope.networks.architectures import Architecture
from zooscope.networks.datasets import ImageDataset, load_dataset
from zooscope.networks.parameters import StackedParams, stack_state_dicts

ARCH = Architecture("cnn_digits", 1, 8)


@dataclass
class TinyPopulation:
    """What the trainer needs of zoo.store.Population: the architecture and stacked parameters."""

    arch: Architecture
    params: StackedParams


def make_population(k: int, seed: int) -> TinyPopulation:
    torch.manual_seed(seed)
    return TinyPopulation(ARCH, stack_state_dicts(ARCH, [ARCH.build().state_dict() for _ in range(k)]))


@pytest.fixture(scope="session")
def digits() -> ImageDataset:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def populations() -> tuple[TinyPopulation, TinyPopulation]:
    return make_population(24, seed=0), make_population(6, seed=1)
