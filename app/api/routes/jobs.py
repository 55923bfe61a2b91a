"""Jobs: submit (202 + Location, idempotent with Idempotency-Key), read, list, cancel, report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from app.api.answers import AnswerCache
from app.api.auth import Principal
from app.api.conditional import (
    NOT_MODIFIED_RESPONSE,
    IfNoneMatch,
    RenderedBodies,
    entity_tag,
    not_modified,
    still_current,
    validator_headers,
)
from app.api.deps import PageLimit, PageOffset, PrincipalDep, QueueDep, SessionDep, SettingsDep, get_visible
from app.api.job_bodies import job_etag, job_response, page_body, page_rows
from app.api.job_events import JobEndListener
from app.api.problems import Problem
from app.api.routing import DatabaseRoute
from app.api.schemas import JobIn, JobOut, Page
from app.db import jobs as job_repo
from app.db.artefacts import default_autoencoders
from app.db.default_builds import list_builds, preparing_for, seconds_left, stage_progress
from app.db.models import JOB_STATES, TERMINAL_JOB_STATES, Autoencoder, Checkpoint, Job, Zoo
from app.db.visibility import find_visible, is_visible, visible_to
from app.import_roots import ImportPathRefused, check_import_path
from app.job_kinds import JobKindName, job_kind
from app.queue import JobQueue
from app.settings import Settings
from zooscope.client import API_PREFIX

log = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=DatabaseRoute)
MAX_IDEMPOTENCY_KEY = 200
MAX_WAIT_S = 60.0  # the longest long poll: below common proxy idle timeouts


def job_location(job_id: str) -> str:
    return f"{API_PREFIX}/jobs/{job_id}"


def _validate_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        model = job_kind(kind).params.model_validate(params)
    except ValidationError as exc:
        errors = [
            {"loc": ["params", *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False)
        ]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        raise Problem(
            422, f"invalid params for a {kind} job: {detail}", type_="validation-error", errors=errors
        ) from exc
    return model.model_dump(mode="json")


def _resolve_references(
    session: Session, principal: Principal, settings: Settings, kind: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Check every id in params exists and is visible, and an import's folder is allowed; fill
    the default autoencoder in."""
    owner = principal.owner_id
    ids = params.get("checkpoint_ids")
    architectures: Counter[str] = Counter()
    found: set[str] = set()
    if ids:
        query = select(Checkpoint.id, Checkpoint.architecture_name).where(
            Checkpoint.id.in_(ids), visible_to(Checkpoint, owner)
        )
        for checkpoint_id, architecture in session.execute(query):
            found.add(checkpoint_id)
            architectures[architecture] += 1
    if "autoencoder_id" in params:
        if params["autoencoder_id"] is None:
            params["autoencoder_id"] = _default_autoencoder(session, owner, kind, architectures).id
        else:
            chosen = find_visible(session, Autoencoder, params["autoencoder_id"], owner)
            if chosen is None:
                raise Problem(
                    404,
                    f"params.autoencoder_id: no autoencoder with id {params['autoencoder_id']!r}",
                    type_="not-found",
                )
            others = sorted(set(architectures) - {chosen.architecture_name})
            if others:
                raise Problem(
                    422,
                    f"autoencoder {chosen.id} reads {chosen.architecture_name} checkpoints, and some of "
                    f"params.checkpoint_ids are {', '.join(others)}: choose an autoencoder of their "
                    "architecture, or leave params.autoencoder_id out for its default",
                    type_="architecture-mismatch",
                )
    if ids:
        missing = [i for i in ids if i not in found]
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise Problem(
                404,
                f"params.checkpoint_ids: no checkpoint with id {shown}",
                type_="not-found",
                missing=missing,
            )
    if kind == "import_zoo":
        if params.get("archive_id") is not None:
            raise Problem(
                422,
                "params.archive_id is set by the service: upload the archive with POST /zoos/archives",
                type_="validation-error",
            )
        try:
            check_import_path(settings, params["path"])
        except ImportPathRefused as exc:
            raise Problem(422, f"params.path: {exc}", type_="import-path-refused") from exc
    if params.get("zoo_id") is not None and not is_visible(session, Zoo, params["zoo_id"], owner):
        raise Problem(404, f"params.zoo_id: no zoo with id {params['zoo_id']!r}", type_="not-found")
    return params


HOW_TO_GET_A_DEFAULT = (
    "pass params.autoencoder_id, or make a default: build a zoo of that architecture (a build_zoo "
    "job), train an autoencoder on it with make_default true (a train_autoencoder job), or, in the "
    "embedded mode, add a zoo preset of that architecture to ZOOSCOPE_DEFAULT_ZOOS and restart"
)


def _default_autoencoder(
    session: Session, owner: str | None, kind: str, architectures: Counter[str]
) -> Autoencoder:
    """The default a job on checkpoints of these architectures uses (the one default of theirs; a
    job without checkpoints: the only default there is), or a 422 that says what to do."""
    if len(architectures) > 1:
        counts = ", ".join(f"{n} {name}" for name, n in sorted(architectures.items()))
        raise Problem(
            422,
            f"params.checkpoint_ids mixes {len(architectures)} architectures ({counts}) and a {kind} "
            "job runs one autoencoder: submit one job per architecture (each gets its architecture's "
            "default), or pass params.autoencoder_id",
            type_="mixed-architectures",
        )
    defaults = [row for row in default_autoencoders(session) if row.owner_id in (None, owner)]
    if architectures:
        (architecture,) = architectures
        default = next((row for row in defaults if row.architecture_name == architecture), None)
        if default is None:
            raise Problem(
                422,
                f"a {kind} job on {architecture} checkpoints needs an autoencoder, and there is no "
                f"default one for {architecture}{_being_prepared(session, architecture)}: "
                f"{HOW_TO_GET_A_DEFAULT}",
                type_="no-default-autoencoder",
            )
        return default
    if len(defaults) == 1:
        return defaults[0]
    if not defaults:
        raise Problem(
            422,
            f"a {kind} job needs an autoencoder and there is no default one"
            f"{''.join(_being_prepared(session, b.architecture_name) for b in list_builds(session))}: "
            f"{HOW_TO_GET_A_DEFAULT}",
            type_="no-default-autoencoder",
        )
    named = ", ".join(f"{row.architecture_name}: {row.id}" for row in defaults)
    raise Problem(
        422,
        f"a {kind} job names no checkpoints, so no architecture picks its default, and "
        f"{len(defaults)} architectures have one ({named}): pass params.autoencoder_id",
        type_="several-default-autoencoders",
    )


def _being_prepared(session: Session, architecture: str) -> str:
    """The note that a default for `architecture` is being prepared, and when it will be ready."""
    build = preparing_for(session, architecture)
    if build is None:
        return ""
    stages = stage_progress(session, build)
    left = seconds_left(stages)
    current = next((s["title"] for s in stages if s["state"] != "succeeded"), "finishing")
    when = f"ready in about {max(1, round(left))} s" if left is not None else "its time is not known yet"
    return f" (one is being prepared: {current}, {when}; GET {API_PREFIX}/defaults follows it)"


def _replay(job: Job, fingerprint: str, response: Response) -> Job:
    if job.request_fingerprint and job.request_fingerprint != fingerprint:
        raise Problem(
            422,
            "this Idempotency-Key was used for a different request; use a new key for a new job",
            type_="idempotency-key-reused",
        )
    response.status_code = 200
    response.headers["Location"] = job_location(job.id)
    return job


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    responses={200: {"model": JobOut, "description": "a retry with the same Idempotency-Key: the same job"}},
)
def submit_job(
    body: JobIn,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    queue: QueueDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=MAX_IDEMPOTENCY_KEY)] = None,
) -> Job:
    """Queue a job. The body is {kind, params}; see the *Params schemas for each kind's params."""
    params = _validate_params(body.kind, body.params)
    # Compared on what the client sent, before defaults are filled in, so a retry matches.
    fingerprint = job_repo.request_fingerprint(body.kind, params)
    if idempotency_key:
        existing = job_repo.find_by_idempotency_key(session, principal.owner_id, idempotency_key)
        if existing is not None:
            return _replay(existing, fingerprint, response)
    params = _resolve_references(session, principal, settings, body.kind, params)
    job, created = job_repo.create_job(
        session,
        kind=body.kind,
        params=params,
        owner_id=principal.owner_id,
        idempotency_key=idempotency_key or None,
        fingerprint=fingerprint,
    )
    if not created:  # a concurrent retry won the race
        return _replay(job, fingerprint, response)
    send_job(session, queue, job)
    response.headers["Location"] = job_location(job.id)
    return job


def send_job(session: Session, queue: JobQueue, job: Job) -> None:
    """Send a created job's task; if the broker cannot take it, fail the job and answer 503."""
    try:
        queue.send(job.kind, job.id)
    except Exception as exc:
        log.exception("job %s: could not send its task", job.id)
        job_repo.fail_job(session, job.id, f"the task could not be queued: {exc}", error_type="internal")
        raise Problem(
            503,
            "the job queue (broker) is unreachable; the job was not queued, try again later",
            type_="broker-unavailable",
        ) from exc


@router.get("", response_model=Page[JobOut], responses=NOT_MODIFIED_RESPONSE)
def list_jobs(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    state: Literal[JOB_STATES] | None = None,  # type: ignore[valid-type]
    kind: JobKindName | None = None,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
    if_none_match: IfNoneMatch = None,
) -> Any:
    """Newest first. With If-None-Match, 304 while no job of the listing has changed; a version
    already rendered for another client is answered with the same bytes, and a new version renders
    only its changed rows (app/api/conditional.py, app/api/job_bodies.py)."""
    owner = principal.owner_id
    total, keys = job_repo.listing_version(session, owner, state, kind, limit, offset)
    page = ("jobs", owner, state, kind, limit, offset, total)
    etag = entity_tag(*page, keys)
    if still_current(if_none_match, etag):
        return not_modified(etag)
    listings: RenderedBodies = request.app.state.rendered_listings
    body = listings.get(etag)
    if body is None:
        shown, rows = page_rows(session, keys, request.app.state.rendered_jobs)
        etag = entity_tag(*page, shown)  # the rows as rendered, should one have changed meanwhile
        body = listings.put(etag, page_body(rows, total, limit, offset))
    return Response(body, media_type="application/json", headers=validator_headers(etag))


@router.get("/{job_id}", response_model=JobOut, responses=NOT_MODIFIED_RESPONSE)
async def get_job(
    job_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    if_none_match: IfNoneMatch = None,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_S,
            description="hold the response until the job has ended (succeeded, failed or cancelled) "
            f"or this many seconds have passed, at most {MAX_WAIT_S:g}; 0 answers at once",
        ),
    ] = 0.0,
) -> Any:
    """A job's state; with `wait`, a long poll: one request instead of many to see a job end.
    With If-None-Match, 304 when the job is as the client has it (app/api/conditional.py)."""
    # Every read ends its transaction on its thread: a connection held from here to the next hop
    # to the threadpool waits out that hop (app/api/routing.py).
    read_at = request.app.state.answers.generation
    job = await run_in_threadpool(_read_and_release, session, principal, job_id)
    if wait > 0 and job.state not in TERMINAL_JOB_STATES:
        job = await _wait_for_end(request, session, principal, job, read_at, wait)
    etag = job_etag(job.id, job.revision)
    if still_current(if_none_match, etag):
        return not_modified(etag)
    return job_response(job, request.app.state.rendered_jobs)


async def _wait_for_end(
    request: Request, session: Session, principal: Principal, job: Job, read_at: int, wait: float
) -> Job:
    """The job once it has ended, or as it is after `wait` seconds; `job` as read after the kept
    answers' generation `read_at` (app/api/answers.py)."""
    listener: JobEndListener = request.app.state.job_events
    answers: AnswerCache = request.app.state.answers
    deadline = time.monotonic() + wait
    job_id = job.id
    with listener.watch(job_id) as ended:
        if not answers.still_holds(job_id, read_at):  # it may have ended before the watch began
            read_at = answers.generation
            job = await run_in_threadpool(_read_and_release, session, principal, job_id)
        while job.state not in TERMINAL_JOB_STATES and (left := deadline - time.monotonic()) > 0:
            # Waiting holds no thread, no transaction and no pooled connection; a notification
            # (PostgreSQL) wakes it at once, otherwise it looks again after a short sleep (one
            # primary-key read).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), timeout=min(listener.look_again_after(), left))
            ended.clear()
            if answers.still_holds(job_id, read_at):
                # The change notifications say the row is as it was read (app/api/answers.py): no
                # look needed, neither the periodic one nor the last one at the deadline. Long polls
                # that began together end together: their reads came as one burst.
                continue
            read_at = answers.generation
            job = await run_in_threadpool(_read_and_release, session, principal, job_id)
    return job


def _read_and_release(session: Session, principal: Principal, job_id: str) -> Job:
    """The job row as it is now, read in a transaction of its own that has ended when this returns."""
    # A new transaction (under SQLite's WAL a transaction keeps its snapshot, and the worker's
    # update would stay invisible to it), and the row read again rather than taken from the
    # session's last read (nothing expires it: the sessions do not expire on commit).
    session.rollback()
    session.expire_all()
    job = get_visible(session, principal, Job, job_id)
    # Ending it gives the connection back to the pool (the row stays loaded: the sessions do not
    # expire on commit). Kept through the wait, it would be one of the pool's 15 (5 + 10
    # overflow): 15 waiting long polls would queue every other request until a wait ended.
    session.commit()
    return job


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, session: SessionDep, principal: PrincipalDep, queue: QueueDep) -> Job:
    """queued or running -> cancelled; a running worker stops at its next progress report."""
    job = get_visible(session, principal, Job, job_id)
    if job.owner_id != principal.owner_id:
        raise Problem(
            403, "this job is shared; only a request without a key may cancel it", type_="forbidden"
        )
    if job.state in TERMINAL_JOB_STATES:
        raise Problem(
            409,
            f"job {job_id} already ended ({job.state}); nothing to cancel",
            type_="job-ended",
            state=job.state,
        )
    if not job_repo.cancel_job(session, job.id):
        session.refresh(job)
        raise Problem(
            409,
            f"job {job_id} ended ({job.state}) before it could be cancelled",
            type_="job-ended",
            state=job.state,
        )
    if job.celery_task_id:
        queue.revoke(job.celery_task_id)
    session.refresh(job)
    return job


@router.get("/{job_id}/report", responses=NOT_MODIFIED_RESPONSE)
def get_report(
    job_id: str, session: SessionDep, principal: PrincipalDep, if_none_match: IfNoneMatch = None
) -> Any:
    """The stored report of a succeeded job (409 while it is queued or running, or if it did not
    succeed). A report never changes once written: with If-None-Match, 304 (app/api/conditional.py)."""
    job = get_visible(session, principal, Job, job_id, undefer(Job.report))
    if job.state != "succeeded" or job.report is None:
        lines = (job.error or "").strip().splitlines()
        hint = {
            "queued": "it is waiting for a worker; poll GET /jobs/{id}",
            "running": f"it is running ({job.progress:.0%}); poll GET /jobs/{{id}}",
            "failed": f"it failed: {lines[-1] if lines else 'no reason recorded'}",
            "cancelled": "it was cancelled",
        }.get(job.state, job.state)
        # A failure of ours is told apart from a wrong request by its problem type.
        type_ = "job-internal-error" if job.error_type == "internal" else "report-not-ready"
        raise Problem(409, f"job {job_id} has no report: {hint}", type_=type_, state=job.state)
    etag = entity_tag("report", job.id, job.revision)
    if still_current(if_none_match, etag):
        return not_modified(etag)
    # Read from a JSON column: already JSON, no encoding pass needed.
    return JSONResponse(job.report, headers=validator_headers(etag))
