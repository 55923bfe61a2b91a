"""Every job kind in one place: its parameters, the queue it is routed to, how long it may run.

The API validates a job's params with its kind's model and offers the kinds as an enum
(app/api/schemas.py), the settings route each kind to its queue (Settings.queue_for), the worker
takes each kind's time limits from here (WorkerSettings.time_limits) and registers one handler per
kind (worker/tasks.py `job_task`, which refuses a kind not listed here and fails at import when a
kind here has no handler).

Params: unknown fields are refused (a typo must not silently fall back to a default). Ids are
checked against the database in app/api/routes/jobs.py; what the library decides (the defaults of
a preset's training recipe) is left as None here and resolved by the worker, so one place owns
each default. This module stays light (no torch): the settings, and so the worker's main process,
import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zooscope.zoo.presets import DEFAULT_ZOO_PRESET, ZOO_PRESETS

ARCHIVE_ID_PATTERN = r"^[0-9a-f]{32}$"  # app/archives.py names an upload's folder so
MAX_BATCH = 1000  # checkpoints per encode/reconstruct job: a few minutes of work on a CPU
Id = str

# zooscope.autoencoder.config's AUTOENCODER_PRESETS and DEFAULT_AUTOENCODER_PRESET, written out
# because the service may not import zooscope.autoencoder (pyproject.toml's import contracts);
# tests/app/test_job_kinds.py keeps them equal to the library's.
AUTOENCODER_PRESETS = ("cpu", "paper", "tiny", "quick", "compress", "compress_cnn_s")
DEFAULT_AUTOENCODER_PRESET = "cpu"


class JobParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _CheckpointBatch(JobParams):
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


class EvaluateParams(JobParams):
    autoencoder_id: Id | None = None
    # None: the test split of the autoencoder's zoo (or of zoo_id); else these checkpoints.
    checkpoint_ids: list[Id] | None = Field(default=None, min_length=1, max_length=MAX_BATCH)
    zoo_id: Id | None = Field(
        default=None,
        description="score the test split of this zoo (of the autoencoder's architecture) instead of "
        "the autoencoder's own zoo's: two autoencoders compared on the same checkpoints",
    )

    @model_validator(mode="after")
    def _one_source(self) -> EvaluateParams:
        if self.checkpoint_ids is not None and self.zoo_id is not None:
            raise ValueError("give params.checkpoint_ids or params.zoo_id, not both")
        return self


class GenerateParams(JobParams):
    autoencoder_id: Id | None = None
    n_samples: int = Field(default=10, ge=1, le=1000)
    bandwidth: float | None = Field(default=None, gt=0, description="KDE bandwidth; None: Scott's rule")
    threshold: float | None = Field(default=None, ge=0, le=1, description="anchor accuracy threshold")
    seed: int = 0


class EmbeddingMapParams(JobParams):
    autoencoder_id: Id | None = Field(default=None, description="default: the default autoencoder")


class TrainAutoencoderParams(JobParams):
    zoo_id: Id | None = Field(default=None, description="default: the default zoo")
    name: str | None = Field(default=None, max_length=200)
    preset: Literal[AUTOENCODER_PRESETS] = DEFAULT_AUTOENCODER_PRESET  # type: ignore[valid-type]
    # Overrides of the preset's training recipe, by their names in the library's TRAINING_OVERRIDES
    # (zooscope.autoencoder.config; the worker hands them to TrainingConfig.with_overrides).
    gamma: float | None = Field(default=None, ge=0, le=1, description="contrastive vs reconstruction weight")
    beta: float | None = Field(default=None, ge=0, le=1, description="structural vs behavioural weight")
    epochs: int | None = Field(default=None, ge=1, le=100_000)
    learning_rate: float | None = Field(default=None, gt=0)
    query_source: str | None = Field(default=None, description="train | noise | dataset:<name>")
    seed: int = 0
    make_default: bool = False


class BuildZooParams(JobParams):
    dataset: str | None = Field(default=None, description="default: the preset's data set")
    preset: Literal[ZOO_PRESETS] = DEFAULT_ZOO_PRESET  # type: ignore[valid-type]
    seeds: int | None = Field(default=None, ge=1, le=1000, description="seeds per grid point")
    epochs: int | None = Field(default=None, ge=1, le=10_000)
    name: str | None = Field(default=None, max_length=200)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str | None) -> str | None:
        from zooscope.networks.datasets import DATASETS  # here: the module imports torch

        if name is not None and name not in DATASETS:
            raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
        return name


class ImportZooParams(JobParams):
    # One of the two: a folder on the worker's machine (ZOOSCOPE_IMPORT_ROOTS applies), or an
    # uploaded archive, unpacked by the service (POST /zoos/archives sets it; POST /jobs refuses it).
    path: str | None = Field(
        default=None, min_length=1, max_length=4096, description="a folder in the public Model Zoos layout"
    )
    archive_id: str | None = Field(
        default=None,
        pattern=ARCHIVE_ID_PATTERN,
        description="set by POST /zoos/archives: the upload's unpacked folder under the data dir",
    )
    name: str | None = Field(default=None, max_length=200)
    dataset: str | None = None

    @field_validator("path")
    @classmethod
    def _plain_path(cls, path: str | None) -> str | None:
        if path is not None and "\x00" in path:
            raise ValueError("the path contains a NUL character")
        return path

    @model_validator(mode="after")
    def _one_source(self) -> ImportZooParams:
        if (self.path is None) == (self.archive_id is None):
            raise ValueError(
                "give params.path (a folder on the worker's machine) or upload an archive "
                "(POST /zoos/archives), exactly one"
            )
        return self


@dataclass(frozen=True)
class JobKind:
    name: str
    params: type[JobParams]
    # "model": runs a model, to ZOOSCOPE_MODEL_QUEUE (GPU-capable workers); "zoo": zoo building
    # and importing, CPU and IO work, to ZOOSCOPE_ZOO_QUEUE.
    queue: Literal["model", "zoo"]
    # "short": a batch of checkpoints, seconds to minutes; "long": can take hours (a zoo of hundreds
    # of models, a training run). The worker's time limits follow it.
    duration: Literal["short", "long"]


JOB_KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        JobKind("encode", EncodeParams, queue="model", duration="short"),
        JobKind("reconstruct", ReconstructParams, queue="model", duration="short"),
        JobKind("generate", GenerateParams, queue="model", duration="short"),
        JobKind("evaluate", EvaluateParams, queue="model", duration="short"),
        # Encodes every checkpoint of the autoencoder's zoo: as long as the zoo is large.
        JobKind("embedding_map", EmbeddingMapParams, queue="model", duration="long"),
        JobKind("train_autoencoder", TrainAutoencoderParams, queue="model", duration="long"),
        JobKind("build_zoo", BuildZooParams, queue="zoo", duration="long"),
        JobKind("import_zoo", ImportZooParams, queue="zoo", duration="long"),
    )
}
JOB_KIND_NAMES = tuple(JOB_KINDS)
JobKindName = Literal[JOB_KIND_NAMES]  # type: ignore[valid-type]


class UnknownJobKindError(LookupError):
    """A job kind that is not in JOB_KINDS."""


def job_kind(name: str) -> JobKind:
    try:
        return JOB_KINDS[name]
    except KeyError:
        raise UnknownJobKindError(f"unknown job kind {name!r}; known: {', '.join(JOB_KINDS)}") from None
