"""A tiny set of cnn_digits checkpoints and the digits data set, shared by the tests here."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from zooscope.networks.architectures import Architecture
from zooscope.networks.datasets import ImageDataset, load_dataset
from zooscope.networks.parameters import StackedParams, stack_state_dicts

ARCH = Architecture("cnn_digits", 1, 8)


@dataclass
class TinyCheckpointSet:
    """What the trainer needs of zoo.store.CheckpointSet: the architecture and stacked parameters."""

    arch: Architecture
    params: StackedParams


def make_checkpoint_set(k: int, seed: int) -> TinyCheckpointSet:
    torch.manual_seed(seed)
    return TinyCheckpointSet(ARCH, stack_state_dicts(ARCH, [ARCH.build().state_dict() for _ in range(k)]))


@pytest.fixture(scope="session")
def digits() -> ImageDataset:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def checkpoint_sets() -> tuple[TinyCheckpointSet, TinyCheckpointSet]:
    return make_checkpoint_set(24, seed=0), make_checkpoint_set(6, seed=1)
