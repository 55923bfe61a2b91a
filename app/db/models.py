"""SQLAlchemy 2.0 typed models: owners and API keys, checkpoints, zoos, autoencoders, jobs.

Ownership: every resource has `owner_id`; NULL means shared (visible to every key, and the only
kind of row the embedded mode, which has no keys, creates). A key sees its own rows plus shared
ones. Ids are UUID strings so they can be made by the API and the worker without coordination.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.db.types import UTCDateTime, new_id, utcnow

# Named constraints, so Alembic migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_JOB_STATES = ("succeeded", "failed", "cancelled")
# Why a job failed: the caller's input (the library's typed errors), a bug or fault of ours
# ("internal": the traceback is in the worker log), or the job's time limit.
JOB_ERROR_TYPES = ("input", "internal", "time_limit", "lost_worker")
CHECKPOINT_KINDS = ("uploaded", "reconstructed", "generated", "zoo")

ID = String(36)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class _Owned:
    """Rows with an owner_id column; NULL is shared."""

    @property
    def shared(self) -> bool:
        return getattr(self, "owner_id", None) is None


class Owner(Base):
    __tablename__ = "owners"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A bearer key. Only its sha256 is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ID, ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, so `keys list` can name a key
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Zoo(_Owned, Base):
    __tablename__ = "zoos"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    owner_id: Mapped[str | None] = mapped_column(ID, ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)  # the zoo folder (zooscope.zoo.store.Zoo.open)
    dataset: Mapped[str | None] = mapped_column(String(100))
    architecture: Mapped[dict[str, Any] | None]  # Architecture.to_dict()
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)  # models, splits, accuracy summary
    n_models: Mapped[int] = mapped_column(Integer, default=0)
    source_job_id: Mapped[str | None] = mapped_column(ID, ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Autoencoder(_Owned, Base):
    __tablename__ = "autoencoders"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    owner_id: Mapped[str | None] = mapped_column(ID, ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)  # TrainedAutoencoder.load(path)
    zoo_id: Mapped[str | None] = mapped_column(ID, ForeignKey("zoos.id", ondelete="SET NULL"), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    training_log: Mapped[dict[str, Any]] = mapped_column(default=dict)  # curves per epoch
    evaluation: Mapped[dict[str, Any]] = mapped_column(default=dict)  # ReconstructionReport aggregate
    # The architecture it reads and writes (Architecture.name, as Checkpoint.architecture_name).
    architecture_name: Mapped[str] = mapped_column(String(100))
    # The default of its architecture: the one a job on checkpoints of that architecture uses when
    # it names none. At most one per architecture (partial unique index below).
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    source_job_id: Mapped[str | None] = mapped_column(ID, ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index(
            "uq_autoencoders_default_per_architecture",
            "architecture_name",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
    )


DEFAULT_BUILD_STATES = ("preparing", "done", "failed")


class DefaultBuild(Base):
    """A default autoencoder the service prepares for itself (the embedded mode's first start,
    worker/bootstrap.py): its stages (jobs, some not submitted yet) and how it ended. The API
    reads it to say what is being prepared and when it will be ready."""

    __tablename__ = "default_builds"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(String(100), unique=True)  # the zoo preset it is built from
    architecture_name: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(300))
    state: Mapped[str] = mapped_column(String(20), default="preparing")  # one of DEFAULT_BUILD_STATES
    # [{"name", "kind", "title", "job_id" (None until submitted)}], in order.
    stages: Mapped[list[Any]] = mapped_column(default=list)
    outcome: Mapped[str | None] = mapped_column(Text)  # what it decided, or why it failed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(_Owned, Base):
    """A stored checkpoint. Blobs are content-addressed by sha256 and shared between rows.

    Deduplication is per owner: the same bytes uploaded twice by one owner (or twice shared)
    give the same row; two owners get two rows that share one blob. The two partial unique
    indexes express "unique per owner, NULL owner included" on both SQLite and PostgreSQL.
    """

    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    owner_id: Mapped[str | None] = mapped_column(ID, ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the stored safetensors blob
    upload_sha256: Mapped[str | None] = mapped_column(String(64), index=True)  # of the bytes as uploaded
    kind: Mapped[str] = mapped_column(String(20), index=True)  # one of CHECKPOINT_KINDS
    architecture: Mapped[dict[str, Any]]  # Architecture.to_dict()
    architecture_name: Mapped[str] = mapped_column(String(100), index=True)  # Architecture.name
    n_parameters: Mapped[int] = mapped_column(Integer)
    n_tokens: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    blob_key: Mapped[str] = mapped_column(String(64))  # BlobStore key: the sha256
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    zoo_id: Mapped[str | None] = mapped_column(ID, ForeignKey("zoos.id", ondelete="SET NULL"), index=True)
    zoo_model_id: Mapped[str | None] = mapped_column(String(200))
    epoch: Mapped[int | None] = mapped_column(Integer)
    source_job_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    accuracy: Mapped[float | None] = mapped_column(Float)
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. generation seed, anchor ids
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    __table_args__ = (
        Index(
            "uq_checkpoints_owner_sha256",
            "owner_id",
            "sha256",
            unique=True,
            sqlite_where=text("owner_id IS NOT NULL"),
            postgresql_where=text("owner_id IS NOT NULL"),
        ),
        Index(
            "uq_checkpoints_shared_sha256",
            "sha256",
            unique=True,
            sqlite_where=text("owner_id IS NULL"),
            postgresql_where=text("owner_id IS NULL"),
        ),
    )


class Job(_Owned, Base):
    """The source of truth for a job's state (not the Celery result backend)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    owner_id: Mapped[str | None] = mapped_column(ID, ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(30), index=True)  # one of app.job_kinds.JOB_KINDS
    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)  # one of JOB_STATES
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    # Seconds left, estimated by the worker from the job's own pace (zooscope.progress.EtaEstimator).
    eta_s: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # sha256 of kind+params: a retry with the same key but another body is an error, not a replay.
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    celery_task_id: Mapped[str | None] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims so far
    # One more on every change a client can see (app.db.jobs.VISIBLE_CHANGE), not on heartbeats:
    # the ETag of a job and of a listing (app.api.conditional) comes from it.
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(20))  # one of JOB_ERROR_TYPES
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # When the job's task message was last sent (None: at created_at). A job queued far longer
    # than this without a claim has lost its message (a broker that forgot its queue): the sweep
    # sends it again.
    sent_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # The report is large (embeddings): listings should not load it.
    report: Mapped[dict[str, Any] | None] = mapped_column(deferred=True)

    @property
    def has_report(self) -> bool:
        return self.state == "succeeded"  # finish_job writes the report and this state together

    __table_args__ = (
        Index(
            "uq_jobs_owner_idempotency_key",
            "owner_id",
            "idempotency_key",
            unique=True,
            sqlite_where=text("owner_id IS NOT NULL AND idempotency_key IS NOT NULL"),
            postgresql_where=text("owner_id IS NOT NULL AND idempotency_key IS NOT NULL"),
        ),
        Index(
            "uq_jobs_shared_idempotency_key",
            "idempotency_key",
            unique=True,
            sqlite_where=text("owner_id IS NULL AND idempotency_key IS NOT NULL"),
            postgresql_where=text("owner_id IS NULL AND idempotency_key IS NOT NULL"),
        ),
    )
