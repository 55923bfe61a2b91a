"""One Settings object for the service (API and worker), read from ZOOSCOPE_* environment variables.

Defaults describe the embedded run mode: everything under one data directory, a SQLite database
and a SQLite-backed Celery broker, so one machine runs the service with nothing else installed.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.job_kinds import job_kind


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZOOSCOPE_", extra="ignore")

    data_dir: Path = Path(".zooscope")
    # Empty means "derive from data_dir" (filled in by _fill_defaults, so readers always see a value).
    database_url: str = ""
    broker_url: str = ""
    auth_required: bool = False  # production sets true; the embedded mode has no keys
    max_upload_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0
    )  # the zoo CNNs are < 1 MB; 64 MB is generous
    # Zoo archives uploaded to POST /zoos/archives (app/archives.py): the upload itself (streamed
    # like a checkpoint upload), its entries, and what they unpack to (a deflate bomb is stopped
    # there). Each pickle or torch file inside is also held to max_upload_bytes for its audit.
    max_archive_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    max_archive_entries: int = Field(default=20_000, gt=0)
    max_archive_unpacked_bytes: int = Field(default=4 * 1024 * 1024 * 1024, gt=0)
    # Each kind names its queue (app/job_kinds.py): kinds that run a model go to the (GPU-capable)
    # model queue; zoo building/importing is CPU/IO work.
    model_queue: str = "models"
    zoo_queue: str = "zoos"
    # A running job whose worker has not reported for this long is presumed dead (progress ticks
    # at least every few seconds, so two minutes leaves room for a slow epoch).
    job_heartbeat_timeout_s: float = Field(default=120.0, gt=0)
    job_max_attempts: int = Field(default=3, ge=1)  # a job re-queued after a worker death, at most
    readiness_timeout_s: float = Field(default=2.0, gt=0)  # broker and worker ping in /readyz
    # Answers to job polls kept in memory on PostgreSQL, dropped when the rows under them change
    # (app/api/answers.py); a listing's job progress may be this many seconds behind (its states
    # never are). False: every request reaches the routes.
    keep_answers: bool = True
    listing_progress_lag_s: float = Field(default=0.5, ge=0)
    default_zoo_dir: Path | None = None
    default_autoencoder_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # Folders import_zoo jobs may read (ZOOSCOPE_IMPORT_ROOTS, separated by ":"). Empty: any
    # folder when the service runs without keys (the embedded mode: a person's own machine);
    # with keys required, import_zoo is refused until roots are set (app/import_roots.py).
    import_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)

    @field_validator("import_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        data = self.data_dir
        if not self.database_url:
            self.database_url = f"sqlite:///{(data / 'zooscope.sqlite').resolve()}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{(data / 'broker.sqlite').resolve()}"
        if self.default_zoo_dir is None:
            self.default_zoo_dir = data / "zoos" / "default"
        if self.default_autoencoder_dir is None:
            self.default_autoencoder_dir = data / "autoencoders" / "default"
        return self

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def upload_tmp_dir(self) -> Path:
        # Where an upload is streamed to while it is received and validated (app/api/uploads.py).
        return self.data_dir / "tmp"

    @property
    def archive_dir(self) -> Path:
        # Uploaded zoo archives, unpacked: one folder per upload, which its import_zoo job reads.
        return self.data_dir / "archives"

    def queue_for(self, kind: str) -> str:
        """The Celery queue a job kind is routed to."""
        return self.zoo_queue if job_kind(kind).queue == "zoo" else self.model_queue


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests build their own Settings and pass them explicitly)."""
    return Settings()
