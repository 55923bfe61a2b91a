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
    is_default: bool
    source_job_id: str | None
    shared: bool
    created_at: datetime


class AutoencoderDetail(AutoencoderOut):
    config: dict[str, Any]
    training_log: dict[str, Any] = Field(description="training curves")
    evaluation: dict[str, Any] = Field(description="evaluation summary")


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
