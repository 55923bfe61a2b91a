"""Worker-only knobs, on top of the service's one Settings object (same ZOOSCOPE_* variables).

They extend app.settings.Settings instead of living beside it, so the worker reads one object:
the database, broker, queues, heartbeat timeout and attempts come from the service settings.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from app.job_kinds import job_kind
from app.settings import Settings


class WorkerSettings(Settings):
    # Soft limit: the task gets SoftTimeLimitExceeded and fails its job with that reason. Which of
    # the two a kind gets is its duration in app/job_kinds.py.
    short_job_time_limit_s: float = Field(default=30 * 60, gt=0)
    long_job_time_limit_s: float = Field(default=24 * 3600, gt=0)
    # Hard limit = soft + grace: the pool process is killed if the soft limit did not stop it.
    time_limit_grace_s: float = Field(default=60, gt=0)
    # Loaded autoencoders kept per worker process (a CPU-default model is ~10-100 MB).
    autoencoder_cache_size: int = Field(default=4, ge=1)
    # Progress writes per job are at most one per this interval (a tight training loop would
    # otherwise write the jobs table hundreds of times a second); cancel is seen at each write.
    progress_interval_s: float = Field(default=0.5, ge=0)
    # 0 = derive from job_heartbeat_timeout_s: beat 4x and sweep 2x per timeout, so a live job
    # never looks stale and a dead one is found within 1.5 timeouts.
    heartbeat_interval_s: float = Field(default=0, ge=0)
    sweep_interval_s: float = Field(default=0, ge=0)
    # A job still queued this long after its task was sent, and never claimed, is sent again by
    # the sweep: its message may be gone with the broker's queue (a restart without persistence,
    # a flush, a failover). Duplicates are harmless (one claim wins); the bound keeps a long
    # backlog from being re-sent on every sweep.
    job_resend_after_s: float = Field(default=300, gt=0)
    # An unpacked zoo upload (app/archives.py) that no import job refers to this long after it
    # last changed is removed by the sweep: the API process died between unpacking and queuing
    # the job, or while unpacking. Folders of jobs that ended go at the next sweep, whatever age.
    orphan_archive_after_s: float = Field(default=3600, gt=0)
    # Transient database errors while a task writes its result: tries before giving up to the sweep.
    db_write_retries: int = Field(default=5, ge=1)

    @property
    def heartbeat_every_s(self) -> float:
        return self.heartbeat_interval_s or self.job_heartbeat_timeout_s / 4

    @property
    def sweep_every_s(self) -> float:
        return self.sweep_interval_s or self.job_heartbeat_timeout_s / 2

    def time_limits(self, kind: str) -> tuple[float, float]:
        """(soft, hard) seconds for a job kind."""
        long = job_kind(kind).duration == "long"
        soft = self.long_job_time_limit_s if long else self.short_job_time_limit_s
        return soft, soft + self.time_limit_grace_s


@lru_cache
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
