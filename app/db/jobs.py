"""Job state transitions, shared by the API (create, cancel) and the worker (claim, progress, finish).

Every transition is one conditional UPDATE (`... WHERE state = ...`), so two workers, or a
worker and a cancel request, never both win; each function commits, so the change is visible to
the other process at once. The states:

    queued -> running -> succeeded | failed
    queued | running -> cancelled            (cancel: the worker sees it in update_progress)
    running -> queued                        (sweep: the worker died, attempts left)

On PostgreSQL a transition to an end state also sends NOTIFY on JOB_ENDED_CHANNEL with the job
id (delivered at commit), so the API's long polls answer at once instead of at their next look
(app/api/job_events.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, String, and_, bindparam, cast, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import JOB_ERROR_TYPES, Job
from app.db.session import commit_without_waiting_for_disk
from app.db.types import new_id, utcnow
from app.db.visibility import owner_parameters, visible_to_bound

MAX_ERROR_CHARS = 10_000  # a traceback tail is enough to act on; the worker log has the rest
JOB_ENDED_CHANNEL = "zooscope_job_ended"
# NOTIFY'd by a trigger on every visible change of a job, payload "<id> state|progress"
# (migrations/versions/0005_change_notifications.py; read by app/api/answers.py).
JOB_CHANGED_CHANNEL = "zooscope_job_changed"
# Set by every transition that changes what GET /jobs shows (not by heartbeats or re-sends): a
# job's revision goes up by one, so its ETag and its listings' ETags change (app/api/conditional.py).
VISIBLE_CHANGE = {"revision": Job.revision + 1}


def _announce_end(session: Session, job_id: str) -> None:
    """NOTIFY listeners that `job_id` ended; sent by PostgreSQL when the transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(JOB_ENDED_CHANNEL, job_id)))


def request_fingerprint(kind: str, params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([kind, params], sort_keys=True, default=str).encode()).hexdigest()


def find_by_idempotency_key(session: Session, owner_id: str | None, key: str) -> Job | None:
    owner = Job.owner_id.is_(None) if owner_id is None else Job.owner_id == owner_id
    return session.scalars(select(Job).where(owner, Job.idempotency_key == key)).first()


def create_job(
    session: Session,
    *,
    kind: str,
    params: dict[str, Any],
    owner_id: str | None = None,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
) -> tuple[Job, bool]:
    """A queued job, or the existing one for (owner, idempotency_key). Returns (job, created).

    A concurrent request with the same key loses on the unique index and gets the winner's job.
    `fingerprint` identifies the request (default: of kind and params) for comparing retries.
    """
    fingerprint = fingerprint or request_fingerprint(kind, params)
    if idempotency_key is not None:
        existing = find_by_idempotency_key(session, owner_id, idempotency_key)
        if existing is not None:
            return existing, False
    job_id = new_id()
    job = Job(
        id=job_id,
        # Tasks are sent with the job's id as their Celery task id (app/queue.py): recorded here,
        # not after the send, which would cost the submission a second write.
        celery_task_id=job_id,
        kind=kind,
        params=params,
        owner_id=owner_id,
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
        state="queued",
        progress=0.0,
        message="queued",
    )
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        if idempotency_key is None:
            raise
        existing = find_by_idempotency_key(session, owner_id, idempotency_key)
        if existing is None:
            raise
        return existing, False
    return job, True


def claim_job(
    session: Session, job_id: str, worker_id: str, heartbeat_timeout: float | None = None
) -> Job | None:
    """Atomically move a job to running for `worker_id`; None if another worker has it or it ended.

    A running job whose heartbeat is older than `heartbeat_timeout` seconds is re-claimed (its
    worker died mid-task and Celery redelivered the message, acks_late).
    """
    now = utcnow()
    claimable = Job.state == "queued"
    if heartbeat_timeout is not None:
        stale = now - timedelta(seconds=heartbeat_timeout)
        claimable = or_(claimable, and_(Job.state == "running", Job.heartbeat_at < stale))
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, claimable, Job.cancel_requested.is_(False))
        .values(
            state="running",
            worker_id=worker_id,
            heartbeat_at=now,
            started_at=now,
            attempts=Job.attempts + 1,
            progress=0.0,  # a re-run starts over
            eta_s=None,
            message="running",
            **VISIBLE_CHANGE,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if result.rowcount != 1:
        return None
    return session.get(Job, job_id, populate_existing=True)


def update_progress(
    session: Session, job_id: str, fraction: float, message: str = "", eta_s: float | None = None
) -> bool:
    """Record progress, the estimated seconds left and a heartbeat. Returns True when the job
    should stop (cancelled or gone)."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    commit_without_waiting_for_disk(session)
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "running", Job.cancel_requested.is_(False))
        .values(
            progress=fraction, message=message[:1000], heartbeat_at=utcnow(), eta_s=eta_s, **VISIBLE_CHANGE
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount != 1


def heartbeat(session: Session, job_id: str) -> bool:
    """Only the heartbeat (for long steps without progress). Returns True when the job should stop."""
    commit_without_waiting_for_disk(session)
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "running", Job.cancel_requested.is_(False))
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount != 1


def finish_job(session: Session, job_id: str, report: dict[str, Any], message: str = "done") -> bool:
    """running -> succeeded with its report. Idempotent: the report is written once; later calls
    (a redelivered task) and calls on a cancelled job change nothing and return False."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "running", Job.report.is_(None))
        .values(
            state="succeeded",
            report=report,
            progress=1.0,
            eta_s=0.0,
            message=message,
            finished_at=utcnow(),
            **VISIBLE_CHANGE,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        _announce_end(session, job_id)
    session.commit()
    return result.rowcount == 1


def fail_job(session: Session, job_id: str, error: str, *, error_type: str) -> bool:
    """queued | running -> failed with a reason and its type (models.JOB_ERROR_TYPES). False if
    the job had already ended."""
    if error_type not in JOB_ERROR_TYPES:
        raise ValueError(f"unknown error type {error_type!r}")
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.in_(("queued", "running")))
        .values(
            state="failed",
            error=error[-MAX_ERROR_CHARS:],
            error_type=error_type,
            eta_s=None,
            message="failed",
            finished_at=utcnow(),
            **VISIBLE_CHANGE,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        _announce_end(session, job_id)
    session.commit()
    return result.rowcount == 1


def cancel_job(session: Session, job_id: str) -> bool:
    """queued | running -> cancelled at once; a running worker stops at its next progress call.
    False if the job had already ended."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.in_(("queued", "running")))
        .values(
            state="cancelled",
            cancel_requested=True,
            message="cancelled",
            finished_at=utcnow(),
            **VISIBLE_CHANGE,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        _announce_end(session, job_id)
    session.commit()
    return result.rowcount == 1


@dataclass(frozen=True)
class SweptJob:
    job_id: str
    kind: str
    requeued: bool  # True: send its task again; False: it was failed (no attempts left)


def sweep_stale_jobs(session: Session, heartbeat_timeout: float, max_attempts: int = 3) -> list[SweptJob]:
    """Running jobs whose worker stopped reporting: re-queue them while attempts < max_attempts,
    else fail them with the reason. The caller re-sends the task of each re-queued job."""
    stale = utcnow() - timedelta(seconds=heartbeat_timeout)
    candidates = session.scalars(
        select(Job).where(
            Job.state == "running",
            or_(Job.heartbeat_at < stale, and_(Job.heartbeat_at.is_(None), Job.started_at < stale)),
        )
    ).all()
    swept: list[SweptJob] = []
    for job in candidates:
        condition = (Job.id == job.id, Job.state == "running", Job.worker_id == job.worker_id)
        if job.attempts < max_attempts:
            values: dict[str, Any] = {
                "state": "queued",
                "worker_id": None,
                "eta_s": None,
                "sent_at": utcnow(),  # the caller sends its task again now
                "message": f"re-queued: worker {job.worker_id} stopped reporting",
            }
        else:
            values = {
                "state": "failed",
                "finished_at": utcnow(),
                "message": "failed",
                "error_type": "lost_worker",
                "eta_s": None,
                "error": (
                    f"the worker ({job.worker_id}) stopped reporting for over {heartbeat_timeout:g} s "
                    f"on attempt {job.attempts} of {max_attempts}; giving up"
                ),
            }
        # Conditional on the same worker still holding it: a heartbeat that raced the sweep wins.
        result = session.execute(
            update(Job)
            .where(*condition)
            .values(**values, **VISIBLE_CHANGE)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            swept.append(SweptJob(job.id, job.kind, requeued=values["state"] == "queued"))
            if values["state"] == "failed":
                _announce_end(session, job.id)
    session.commit()
    return swept


def claim_unsent_queued_jobs(session: Session, resend_after_s: float) -> list[tuple[str, str]]:
    """Queued jobs whose task message was sent more than `resend_after_s` ago and never claimed:
    the broker may have lost it. Marks each as sent now (conditionally, so that of several
    sweeping workers one re-sends it) and returns their (id, kind) for the caller to send."""
    now = utcnow()
    cutoff = now - timedelta(seconds=resend_after_s)
    last_sent = func.coalesce(Job.sent_at, Job.created_at)
    candidates = session.execute(
        select(Job.id, Job.kind, Job.sent_at).where(Job.state == "queued", last_sent < cutoff)
    ).all()
    claimed: list[tuple[str, str]] = []
    for job_id, kind, sent_at in candidates:
        same_send = Job.sent_at.is_(None) if sent_at is None else Job.sent_at == sent_at
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "queued", same_send)
            .values(sent_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            claimed.append((job_id, kind))
    session.commit()
    return claimed


def listing_version(
    session: Session, owner_id: str | None, state: str | None, kind: str | None, limit: int, offset: int
) -> tuple[int, list[tuple[str, int]]]:
    """(count, [(id, revision)] of one page, newest first) of the jobs `owner_id` may see, of
    `state` and `kind` where given: what the page shows is fixed by these (each job by its id and
    revision), so they are its version, and they are what a render needs. One round trip and one
    row back, whatever the page's length: the count (a subquery computed once) and the page's keys
    with their positions, joined into one string by the database (a row for each key costs a poll
    more than the one aggregate row, and a second query for their order would be one more wait
    for the database on a busy machine)."""
    statement = _listing_statement(owner_id is not None, state is not None, kind is not None)
    total, keys = session.execute(statement, _listing_parameters(owner_id, state, kind, limit, offset)).one()
    entries = (entry.split(KEY_SEPARATOR) for entry in keys.split(KEYS_SEPARATOR)) if keys else ()
    ranked = sorted((int(position), job_id, int(revision)) for position, job_id, revision in entries)
    return int(total), [(job_id, revision) for _, job_id, revision in ranked]


KEY_SEPARATOR, KEYS_SEPARATOR = ":", ","  # neither occurs in an id (app.db.types.new_id)


@lru_cache(maxsize=8)
def _listing_statement(keyed: bool, by_state: bool, by_kind: bool) -> Select[tuple[int, str | None]]:
    """listing_version's statement for one shape of the filters, built once (see
    app/db/visibility.py): their values are bound parameters (_listing_parameters)."""
    where = [visible_to_bound(Job, keyed)]
    if by_state:
        where.append(Job.state == bindparam("state"))
    if by_kind:
        where.append(Job.kind == bindparam("kind"))
    newest_first = (Job.created_at.desc(), Job.id.desc())  # the listings' order (visible_page)
    position = func.row_number().over(order_by=newest_first)
    page = (
        select(Job.id, Job.revision, position.label("position"))
        .where(*where)
        .order_by(*newest_first)
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
        .subquery()
    )
    count = select(func.count()).select_from(Job).where(*where).scalar_subquery()
    key = (
        cast(page.c.position, String)
        + KEY_SEPARATOR
        + page.c.id
        + KEY_SEPARATOR
        + cast(page.c.revision, String)
    )
    # The count comes back even for a page past the end: an aggregate always returns its row.
    return select(count, func.aggregate_strings(key, KEYS_SEPARATOR)).select_from(page)


def _listing_parameters(
    owner_id: str | None, state: str | None, kind: str | None, limit: int, offset: int
) -> dict[str, Any]:
    filters = {name: value for name, value in (("state", state), ("kind", kind)) if value is not None}
    return {**owner_parameters(owner_id), **filters, "limit": limit, "offset": offset}


def archive_job_states(session: Session, archive_ids: Collection[str]) -> dict[str, list[str]]:
    """The states of the import_zoo jobs of each uploaded archive (params.archive_id, set by
    POST /zoos/archives), by archive id; an id without a job is absent."""
    if not archive_ids:
        return {}
    archive_id = Job.params["archive_id"].as_string()
    rows = session.execute(
        select(archive_id, Job.state).where(Job.kind == "import_zoo", archive_id.in_(sorted(archive_ids)))
    ).all()
    states: dict[str, list[str]] = {}
    for key, state in rows:
        states.setdefault(key, []).append(state)
    return states
