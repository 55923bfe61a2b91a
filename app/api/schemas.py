"""Response and request bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from app.job_kinds import JobKindName

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class _FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class CheckpointOut(_FromRow):
    id: str
    sha256: str = Field(description="sha256 of the stored safetensors file (the download)")
    upload_sha256: str | None = Field(description="sha256 of the bytes as uploaded")
    kind: str
    name: str
    architecture: str = Field(validation_alias="architecture_name", description="e.g. cnn_s-1x28x28")
    architecture_config: dict[str, Any] = Field(validation_alias="architecture")
    n_parameters: int
    n_tokens: int
    size_bytes: int
    zoo_id: str | None
    zoo_model_id: str | None
    epoch: int | None
    source_job_id: str | None
    accuracy: float | None
    shared: bool
    created_at: datetime


class ZooOut(_FromRow):
    id: str
    name: str
    dataset: str | None
    architecture: dict[str, Any] | None
    n_models: int
    source_job_id: str | None
    shared: bool
    created_at: datetime


class ZooDetail(ZooOut):
    manifest: dict[str, Any]
    summary: dict[str, Any] = Field(description="models, splits and accuracy summary")
    n_checkpoints: int = Field(description="checkpoints of this zoo registered in the service")


class AutoencoderOut(_FromRow):
    id: str
    name: str
    zoo_id: str | None
    architecture: str = Field(
        validation_alias="architecture_name", description="the architecture it reads, e.g. cnn_s-1x28x28"
    )
    is_default: bool = Field(description="the default of its architecture")
    source_job_id: str | None
    shared: bool
    created_at: datetime


class AutoencoderDetail(AutoencoderOut):
    config: dict[str, Any]
    training_log: dict[str, Any] = Field(description="training curves")
    evaluation: dict[str, Any] = Field(description="evaluation summary")


# ---- the defaults (GET /defaults) ----------------------------------------------------------------


class DefaultQualityOut(BaseModel):
    """How faithful a default is, from its evaluation on its zoo's test split."""

    measured_on: str = Field(description="the checkpoints these figures are over")
    checkpoints: int | None
    agreement: float | None = Field(
        description="mean share of test inputs on which an original and its reconstruction predict "
        "the same class"
    )
    agreement_high_accuracy: float | None = Field(
        description="the same, over the originals whose accuracy is at least high_accuracy_threshold"
    )
    high_accuracy_threshold: float | None
    original_accuracy: float | None = Field(description="mean test accuracy of the originals")
    reconstructed_accuracy: float | None = Field(description="mean test accuracy of the reconstructions")


class DefaultAutoencoderOut(BaseModel):
    architecture: str
    autoencoder_id: str
    name: str
    preset: str | None = Field(description="the train_autoencoder preset it was made with")
    zoo_id: str | None
    zoo_name: str | None
    quick: bool = Field(
        description="made in the first minutes, to serve while a better one is prepared (see builds)"
    )
    quality: DefaultQualityOut


class DefaultStageOut(BaseModel):
    name: str
    kind: str = Field(description="the kind of its job")
    title: str
    job_id: str | None = Field(description="null until its turn comes")
    state: str = Field(description="waiting (no job yet), or its job's state")
    progress: float
    eta_s: float | None = Field(
        description="seconds left: the running job's own estimate, else an estimate from a smaller "
        "build on this machine; null while unknown"
    )


class DefaultBuildOut(BaseModel):
    key: str = Field(description="the zoo preset it is made from")
    architecture: str
    title: str
    state: str = Field(description="preparing | done | failed")
    outcome: str | None = Field(description="what it decided once done, or why it failed")
    stage: str | None = Field(description="the title of the stage in progress")
    eta_s: float | None = Field(description="seconds until it is ready; null while a stage is unknown")
    stages: list[DefaultStageOut]
    updated_at: datetime


class DefaultsOut(BaseModel):
    autoencoders: list[DefaultAutoencoderOut] = Field(
        description="the default of each architecture: what a job on checkpoints of that "
        "architecture uses when it names no autoencoder"
    )
    builds: list[DefaultBuildOut] = Field(
        description="the defaults the service makes for itself on its first start, those being prepared first"
    )


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: JobKindName
    params: dict[str, Any] = Field(default_factory=dict)


class JobOut(_FromRow):
    id: str
    kind: str
    state: str = Field(description="queued | running | succeeded | failed | cancelled")
    progress: float = Field(ge=0, le=1)
    eta_s: float | None = Field(
        default=None,
        description="estimated seconds left, from the job's own pace so far; null while unknown "
        "(queued, or no progress yet), 0 when it succeeded",
    )
    message: str
    params: dict[str, Any]
    error: str | None
    error_type: str | None = Field(
        default=None,
        description="why it failed: input (the request was wrong; the error says what to change), "
        "internal (a fault of the service, not of the request), time_limit or lost_worker",
    )
    attempts: int
    cancel_requested: bool
    has_report: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


# ---- embedding maps (the reports of embedding_map jobs, zooscope/analysis/embedding_map.py) ----


class EmbeddingMapOut(BaseModel):
    id: str = Field(description="the id of the embedding_map job that made the map")
    autoencoder_id: str
    shared: bool
    created_at: datetime
    finished_at: datetime | None


class MapProjectionOut(BaseModel):
    method: str = Field(description="pca: a point's coordinates are (embedding - mean) @ components.T")
    mean: list[float]
    components: list[list[float]] = Field(description="the principal axes PC1, PC2, unit length")
    explained_variance: list[float]
    explained_variance_ratio: list[float | None] = Field(
        description="the share of the embeddings' variance along PC1 and PC2 (null: all embeddings equal)"
    )
    total_variance: float


class MapPointOut(BaseModel):
    checkpoint: str = Field(description="model_id@epoch: the zoo checkpoint")
    model_id: str
    epoch: int
    split: str
    init: str
    lr: float
    wd: float
    seed: int
    test_acc: float | None
    x: float = Field(description="PC1")
    y: float = Field(description="PC2")


class EmbeddingMapDetail(EmbeddingMapOut):
    zoo_id: str | None
    metadata: dict[str, Any] = Field(description="architecture, data set, checkpoints, embedding width")
    projection: MapProjectionOut
    points: Page[MapPointOut] = Field(description="one page of the zoo's checkpoints on the map")


class ProbeOut(BaseModel):
    alpha: float | None = Field(description="the ridge regulariser chosen on the validation split")
    r2_val: float | None
    r2_test: float | None = Field(description="R^2 on the test split (null: undefined, a constant target)")


class PredictionItemOut(BaseModel):
    checkpoint: str = Field(description="model_id@epoch: a test-split checkpoint of the zoo")
    true: float | None
    embedding: float | None = Field(description="predicted by the probe on the autoencoder's embedding")
    weight_statistics: float | None = Field(description="predicted by the probe on weight statistics")


class PropertyPredictionOut(BaseModel):
    map_id: str
    property: str = Field(description="the predicted property: test_acc")
    split: str = Field(description="the split the predictions are for: test")
    probes: dict[str, ProbeOut] = Field(description="by features: embedding, weight_statistics")
    items: Page[PredictionItemOut]
