"""The sweep: no job stays `running` after its worker died, and none stays `queued` after its
task message was lost.

Every running job's heartbeat is refreshed by its progress reports and by a background beat
(worker/heartbeat.py). A job whose heartbeat is older than ZOOSCOPE_JOB_HEARTBEAT_TIMEOUT_S is
re-queued and its task sent again while attempts < ZOOSCOPE_JOB_MAX_ATTEMPTS, else failed with
the reason (app.db.jobs.sweep_stale_jobs does the conditional updates). A job still queued
ZOOSCOPE_JOB_RESEND_AFTER_S after its task was last sent, never claimed, is sent again: a broker
that lost its queue costs a delay, never a job (app.db.jobs.claim_unsent_queued_jobs).

Where it runs: in every worker's main process, once when the worker is ready and then on a
timer thread (worker/celery_app.py), so there is no extra service to deploy: as long as one worker
lives, dead workers' jobs are recovered, and a restarted worker recovers its own. Several workers
sweeping at once is safe: each transition is conditional, so one of them wins per job. The
embedded mode also sweeps every running job before it starts its only worker (they are orphans by
construction) and re-sends every queued job (its message may have died with the old worker).

The same sweep removes the unpacked zoo uploads (app/archives.py) that no job will read: those
whose import job ended without removing its folder (its worker died for good, or the job was
cancelled while queued), and those no job refers to (the API died before queuing one).
"""

from __future__ import annotations

import logging
import shutil
import threading
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.pool import NullPool

from app.archives import archive_folders
from app.db import jobs
from app.db.models import TERMINAL_JOB_STATES
from app.db.session import make_engine, session_scope
from app.queue import JobQueue
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


@lru_cache
def _sweep_engine(url: str) -> Engine:
    # No pooled connections: the Celery main process forks pool children while this engine
    # exists, and a child must never inherit (and later close) a connection the parent uses.
    return make_engine(url, poolclass=NullPool)


def sweep_once(
    settings: WorkerSettings, queue: JobQueue, heartbeat_timeout: float | None = None
) -> list[jobs.SweptJob]:
    """Re-queue (and re-send) or fail every stale running job, and re-send every queued job whose
    message is overdue; returns what it did to running jobs."""
    timeout = settings.job_heartbeat_timeout_s if heartbeat_timeout is None else heartbeat_timeout
    with session_scope(_sweep_engine(settings.database_url)) as session:
        swept = jobs.sweep_stale_jobs(session, timeout, settings.job_max_attempts)
        unsent = jobs.claim_unsent_queued_jobs(session, settings.job_resend_after_s)
    for job_id, kind in unsent:
        log.warning(
            "sweep: job %s (%s) queued without a claim for too long; its task is sent again", job_id, kind
        )
        resend(queue, kind, job_id)
    for job in swept:
        if job.requeued:
            log.warning("sweep: job %s (%s) lost its worker; re-queued", job.job_id, job.kind)
            resend(queue, job.kind, job.job_id)
        else:
            log.warning("sweep: job %s (%s) lost its worker too often; failed", job.job_id, job.kind)
    remove_unread_archives(settings)
    return swept


def remove_unread_archives(settings: WorkerSettings) -> list[Path]:
    """Remove every unpacked upload whose import jobs have all ended, and every one (or staging
    folder) no job refers to once `orphan_archive_after_s` has passed since it last changed: a
    folder is unpacked before its job is queued, so a young one without a job is being queued.
    Returns the folders removed."""
    folders = archive_folders(settings.archive_dir)
    if not folders:
        return []
    with session_scope(_sweep_engine(settings.database_url)) as session:
        states = jobs.archive_job_states(session, {f.archive_id for f in folders if not f.staging})
    removed = []
    for folder in folders:
        job_states = states.get(folder.archive_id)
        if job_states:
            unread = all(state in TERMINAL_JOB_STATES for state in job_states)
        else:
            unread = folder.age_s > settings.orphan_archive_after_s
        if unread:
            log.info("sweep: removing the unpacked upload %s, which no job will read", folder.path)
            shutil.rmtree(folder.path, ignore_errors=True)
            removed.append(folder.path)
    return removed


def resend_queued(settings: WorkerSettings, queue: JobQueue) -> int:
    """Send the task of every queued job again (embedded start: the broker may have lost it).
    Duplicates are harmless: only one claim per job wins."""
    with session_scope(_sweep_engine(settings.database_url)) as session:
        queued = jobs.claim_unsent_queued_jobs(session, resend_after_s=0.0)
    for job_id, kind in queued:
        resend(queue, kind, job_id)
    return len(queued)


def resend(queue: JobQueue, kind: str, job_id: str) -> None:
    try:
        queue.send(kind, job_id)
    except Exception:  # the broker is down: the job stays queued; a restart's resend picks it up
        log.error("sweep: could not re-send job %s", job_id, exc_info=True)


class SweepTimer:
    """Runs sweep_once every `interval_s` seconds on a daemon thread."""

    def __init__(self, settings: WorkerSettings, queue: JobQueue, interval_s: float) -> None:
        self.settings = settings
        self.queue = queue
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                sweep_once(self.settings, self.queue)
            except Exception:  # the database is down: try again next round
                log.warning("sweep failed", exc_info=True)
