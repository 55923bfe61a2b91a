"""The life of one job inside a worker: claim, run with progress and heartbeat, record the outcome.

Every state change goes through app.db.jobs (one conditional UPDATE each), so whatever Celery
does (redeliver after a lost worker, a sweep's re-send racing a late message) a job is claimed by
one worker at a time and its report is written once.

Errors:
- `Cancelled` (from the progress callback): the job was cancelled or handed to another worker;
  stop and write nothing.
- transient database errors while claiming: re-raised, so Celery retries the task (nothing was
  claimed yet). While running or recording: the job is left `running` with a heartbeat that
  stops; the sweep re-queues it within about 1.5 heartbeat timeouts (the attempt counts).
- invalid input: the library's typed errors (`ZooscopeError` and its subclasses) and nothing
  else. The job fails with their message (error_type "input"); never retried, a second run
  would fail the same way.
- any other exception is ours, not the caller's: its traceback goes to the worker log and the job
  fails as an internal error (error_type "internal"), its message naming the exception and
  pointing at the log.
- the soft time limit: the job fails with that reason (error_type "time_limit").

A body's `ctx.when_ended` actions run after the outcome is recorded, only when the job will not
run again (succeeded, failed, or cancelled by its owner; not lost, not handed over).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from app.db import jobs
from app.db.models import TERMINAL_JOB_STATES, Job
from app.db.session import session_scope
from worker.heartbeat import Heartbeat
from worker.settings import WorkerSettings
from zooscope.errors import ZooscopeError
from zooscope.progress import Cancelled, EtaEstimator

log = logging.getLogger(__name__)

# Errors worth a retry: the database or the broker was unreachable for a moment.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, BrokerError, ConnectionError)
# Errors that say the request itself is wrong: retrying would fail the same way. Only the
# library's typed errors: a ValueError or KeyError from deep inside is a bug, not bad input.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ZooscopeError,)


def worker_identity() -> str:
    """Who holds a claim: host and pool process, so a sweep can tell a dead holder from a new one."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class JobContext:
    """What a task body gets: the job's row values and its progress callback."""

    job_id: str
    kind: str
    params: dict[str, Any]
    owner_id: str | None
    attempt: int
    settings: WorkerSettings
    progress: Callable[[float, str], None]
    extra: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds, into the report
    end_actions: list[Callable[[], None]] = field(default_factory=list)  # see `when_ended`

    def when_ended(self, action: Callable[[], None]) -> None:
        """Run `action` (e.g. remove an input only this job reads) once the job has ended for
        good, whatever its end: succeeded, failed or cancelled. Not when it will run again (a
        transient error leaves it to the sweep; a cancel that is a hand-over to another worker):
        that run still needs what the action removes."""
        self.end_actions.append(action)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase of the job body; the report's `timings_s` says where a job's time went."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - started, 4)


class JobProgress:
    """The progress callback handed to the library: throttled writes, heartbeat, cancellation.

    A write that reports the job should stop (cancelled, or no longer ours) raises `Cancelled`;
    so does the next call after the background heartbeat saw the same.
    """

    def __init__(self, job_id: str, settings: WorkerSettings) -> None:
        self.job_id = job_id
        self.settings = settings
        self._stop = threading.Event()
        # The claim has just written the row (running, progress 0): the first progress write can
        # wait one interval like the others (a short job then writes none until it ends).
        self._last_write = time.monotonic()
        self._eta = EtaEstimator(started=self._last_write)
        self.writes = 0

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def __call__(self, fraction: float, message: str = "") -> None:
        if self._stop.is_set():
            raise Cancelled(f"job {self.job_id} was cancelled")
        now = time.monotonic()
        if now - self._last_write < self.settings.progress_interval_s and fraction < 1.0:
            return
        self._last_write = now
        # Sampled at the writes only: a tight training loop calls this thousands of times a
        # second, and one sample per progress interval is plenty for the pace.
        eta_s = self._eta.update(fraction, now)
        try:
            with session_scope(self.settings.database_url) as session:
                stop = jobs.update_progress(session, self.job_id, fraction, message, eta_s=eta_s)
            self.writes += 1
        except TRANSIENT_ERRORS:  # a lost progress write is harmless; the next one retries
            log.warning("job %s: progress write failed", self.job_id, exc_info=True)
            return
        if stop:
            self._stop.set()
            raise Cancelled(f"job {self.job_id} was cancelled")

    def beat(self) -> None:
        """The heartbeat thread's touch; it cannot interrupt the library, so it only sets the flag."""
        with session_scope(self.settings.database_url) as session:
            if jobs.heartbeat(session, self.job_id):
                self._stop.set()


Handler = Callable[[JobContext], dict[str, Any]]


def run_job(job_id: str, handler: Handler, settings: WorkerSettings, worker_id: str | None = None) -> str:
    """Run one job end to end. Returns the outcome: succeeded, failed, cancelled, skipped or lost."""
    worker_id = worker_id or worker_identity()
    # Transient errors here propagate: the task is retried by Celery, nothing was claimed.
    with session_scope(settings.database_url) as session:
        job = jobs.claim_job(session, job_id, worker_id, heartbeat_timeout=settings.job_heartbeat_timeout_s)
        if job is None:
            log.info("job %s: not claimable (finished, cancelled or held by a live worker); skipped", job_id)
            return "skipped"
        progress = JobProgress(job.id, settings)
        ctx = JobContext(
            job_id=job.id,
            kind=job.kind,
            params=dict(job.params or {}),
            owner_id=job.owner_id,
            attempt=job.attempts,
            settings=settings,
            progress=progress,
        )
    log.info("job %s (%s): attempt %d on %s", job_id, ctx.kind, ctx.attempt, worker_id)
    outcome = _run_claimed(ctx, progress, handler, settings, worker_id)
    if ctx.end_actions and _ended_for_good(settings, job_id, outcome):
        for action in ctx.end_actions:
            try:
                action()
            except Exception:  # the outcome is recorded; a leftover is the sweep's to remove
                log.warning("job %s: an end action failed", job_id, exc_info=True)
    return outcome


def _run_claimed(
    ctx: JobContext, progress: JobProgress, handler: Handler, settings: WorkerSettings, worker_id: str
) -> str:
    """Run the body of a claimed job and record its outcome (run_job's return values)."""
    job_id = ctx.job_id
    try:
        with Heartbeat(progress.beat, settings.heartbeat_every_s):
            report = handler(ctx)
    except Cancelled:
        log.info("job %s: stopped (cancelled or handed over)", job_id)
        return "cancelled"
    except SoftTimeLimitExceeded:
        soft, _ = settings.time_limits(ctx.kind)
        return _fail(job_id, f"the job exceeded its time limit of {soft:g} s", settings, "time_limit")
    except TRANSIENT_ERRORS:
        # Leave the claim: the heartbeat has stopped, so the sweep re-queues the job shortly.
        log.error("job %s: transient error; the sweep will re-queue it", job_id, exc_info=True)
        return "lost"
    except INPUT_ERRORS as exc:
        return _fail(job_id, f"{type(exc).__name__}: {exc}", settings, "input")
    except Exception as exc:
        log.exception("job %s (%s): internal error", job_id, ctx.kind)
        error = (
            f"internal error ({type(exc).__name__}: {exc}); not caused by the request. The worker "
            f"{worker_id} logged the traceback under job {job_id}."
        )
        return _fail(job_id, error, settings, "internal")
    if ctx.timings:
        report.setdefault("timings_s", ctx.timings)
    written = _write_with_retries(
        settings, lambda s: jobs.finish_job(s, job_id, report, message="succeeded"), f"job {job_id}: finish"
    )
    if written is None:
        return "lost"
    if not written:
        log.info("job %s: finished, but it was cancelled or already reported; result not recorded", job_id)
        return "cancelled"
    return "succeeded"


def _ended_for_good(settings: WorkerSettings, job_id: str, outcome: str) -> bool:
    """Whether the job will not run again: it succeeded or failed here, or its row says it ended
    (a cancel; not a hand-over to another worker, whose row is running or queued again)."""
    if outcome in ("succeeded", "failed"):
        return True
    if outcome != "cancelled":
        return False
    try:
        with session_scope(settings.database_url) as session:
            return session.scalar(select(Job.state).where(Job.id == job_id)) in TERMINAL_JOB_STATES
    except TRANSIENT_ERRORS:
        log.warning("job %s: could not read whether it ended", job_id, exc_info=True)
        return False


def _fail(job_id: str, error: str, settings: WorkerSettings, error_type: str) -> str:
    log.warning("job %s failed (%s): %s", job_id, error_type, error)
    written = _write_with_retries(
        settings, lambda s: jobs.fail_job(s, job_id, error, error_type=error_type), f"job {job_id}: fail"
    )
    return "failed" if written is not None else "lost"


def _write_with_retries(settings: WorkerSettings, write: Callable[[Any], bool], what: str) -> bool | None:
    """Run a final write, retrying transient errors with backoff: the result is in memory and
    losing it would cost a whole re-run. None: still failing; the sweep re-runs the job."""
    delay = 0.5
    for attempt in range(1, settings.db_write_retries + 1):
        try:
            with session_scope(settings.database_url) as session:
                return write(session)
        except TRANSIENT_ERRORS:
            if attempt == settings.db_write_retries:
                log.error("%s: gave up after %d tries", what, attempt, exc_info=True)
                return None
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    return None
