"""The parameters of each job kind, validated before a job is queued.

Unknown fields are refused (a typo must not silently fall back to a default). Ids are checked
against the database in routes/jobs.py; what the library decides (presets, defaults of the
training recipe) is left as None here and resolved by the worker, so one place owns each default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from zooscope.networks.datasets import DATASETS

MAX_BATCH = 1000  # checkpoints per encode/reconstruct job: a few minutes of work on a CPU
Id = str


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _CheckpointBatch(_Params):
    checkpoint_ids: list[Id] = Field(min_length=1, max_length=MAX_BATCH)
    autoencoder_id: Id | None = Field(default=None, description="default: the default autoencoder")

    @field_validator("checkpoint_ids")
    @classmethod
    def _unique(cls, ids: list[str]) -> list[str]:
        return list(dict.fromkeys(ids))  # keep order, drop repeats: one row per checkpoint in the report


class EncodeParams(_CheckpointBatch):
    pass


class ReconstructParams(_CheckpointBatch):
    pass


class EvaluateParams(_Params):
    autoencoder_id: Id | None = None
    # None: the test split of the autoencoder's zoo; else these checkpoints.
    checkpoint_ids: list[Id] | None = Field(default=None, min_length=1, max_length=MAX_BATCH)


class GenerateParams(_Params):
    autoencoder_id: Id | None = None
    n_samples: int = Field(default=10, ge=1, le=1000)
    bandwidth: float | None = Field(default=None, gt=0, description="KDE bandwidth; None: Scott's rule")
    threshold: float | None = Field(default=None, ge=0, le=1, description="anchor accuracy threshold")
    seed: int = 0


class TrainAutoencoderParams(_Params):
    zoo_id: Id | None = Field(default=None, description="default: the default zoo")
    name: str | None = Field(default=None, max_length=200)
    preset: Literal["cpu", "paper", "tiny"] = "cpu"
    gamma: float | None = Field(default=None, ge=0, le=1, description="contrastive vs reconstruction weight")
    beta: float | None = Field(default=None, ge=0, le=1, description="structural vs behavioural weight")
    epochs: int | None = Field(default=None, ge=1, le=100_000)
    learning_rate: float | None = Field(default=None, gt=0)
    query_source: str | None = Field(default=None, description="train | noise | dataset:<name>")
    seed: int = 0
    make_default: bool = False


class BuildZooParams(_Params):
    dataset: str = "digits"
    preset: Literal["default_digits", "paper"] = "default_digits"
    seeds: int | None = Field(default=None, ge=1, le=1000, description="seeds per grid point")
    epochs: int | None = Field(default=None, ge=1, le=10_000)
    name: str | None = Field(default=None, max_length=200)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
        return name


class ImportZooParams(_Params):
    path: str = Field(min_length=1, max_length=4096, description="a folder in the public Model Zoos layout")
    name: str | None = Field(default=None, max_length=200)
    dataset: str | None = None

    @field_validator("path")
    @classmethod
    def _plain_path(cls, path: str) -> str:
        if "\x00" in path:
            raise ValueError("the path contains a NUL character")
        return path


PARAMS_BY_KIND: dict[str, type[_Params]] = {
    "encode": EncodeParams,
    "reconstruct": ReconstructParams,
    "generate": GenerateParams,
    "evaluate": EvaluateParams,
    "train_autoencoder": TrainAutoencoderParams,
    "build_zoo": BuildZooParams,
    "import_zoo": ImportZooParams,
}
JobKind = Literal[
    "encode", "reconstruct", "generate", "evaluate", "train_autoencoder", "build_zoo", "import_zoo"
]
