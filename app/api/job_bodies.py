"""A job's JSON body, rendered once per revision in each API process, and a listing's body
assembled from its rows' bodies.

What a client sees of a job is fixed by its id and revision (the revision goes up with every
change a client can see: app/db/jobs.py), which is why the job's ETag is made of them
(app/api/conditional.py). The same pair fixes the job's rendered bytes, so they are kept under
that ETag and serve GET /jobs/{id} and every listing that shows the job at that revision. The
dashboard's jobs page changes several times a second while jobs run: a new version of a page
loads and renders only its jobs that changed, not all of its rows (docs/benchmarks.md, "Cheaper
job polls").
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Response
from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.conditional import RenderedBodies, entity_tag, validator_headers
from app.api.schemas import JobOut
from app.db.models import Job

JOB = TypeAdapter(JobOut)
# A listing holds at most 500 rows (app.api.deps.MAX_PAGE_SIZE); a rendered row is about 0.5 KB.
RENDERED_JOBS_CAPACITY = 4096


def job_etag(job_id: str, revision: int) -> str:
    return entity_tag("job", job_id, revision)


def job_body(job: Job, rendered: RenderedBodies) -> tuple[str, bytes]:
    """(ETag, JSON body) of a loaded job, rendered unless this revision already was."""
    etag = job_etag(job.id, job.revision)
    body = rendered.get(etag)
    if body is None:
        body = rendered.put(etag, JOB.dump_json(JOB.validate_python(job, from_attributes=True)))
    return etag, body


def job_response(job: Job, rendered: RenderedBodies) -> Response:
    etag, body = job_body(job, rendered)
    return Response(body, headers=validator_headers(etag), media_type="application/json")


def page_rows(
    session: Session, keys: Sequence[tuple[str, int]], rendered: RenderedBodies
) -> tuple[list[tuple[str, int]], list[bytes]]:
    """The bodies of a page's jobs, in the order of `keys` ((id, revision), newest first), with
    the keys they were rendered at. Only the rows not rendered at their revision are loaded. A row
    changed since `keys` were read is rendered as it is now, and one deleted since is left out:
    the keys returned are those of the bodies, so a listing's version names what it shows."""
    bodies: dict[str, tuple[int, bytes]] = {}
    missing = []
    for job_id, revision in keys:
        body = rendered.get(job_etag(job_id, revision))
        if body is None:
            missing.append(job_id)
        else:
            bodies[job_id] = (revision, body)
    if missing:
        for job in session.scalars(select(Job).where(Job.id.in_(missing))):
            bodies[job.id] = (job.revision, job_body(job, rendered)[1])
    shown = [(job_id, bodies[job_id][0]) for job_id, _ in keys if job_id in bodies]
    return shown, [bodies[job_id][1] for job_id, _ in shown]


def page_body(rows: Sequence[bytes], total: int, limit: int, offset: int) -> bytes:
    """A listing's body (app.api.schemas.Page) from its rows' rendered bodies: the bytes pydantic
    writes for the same page (tests/app/test_api_conditional.py holds them equal)."""
    return b'{"items":[%s],"total":%d,"limit":%d,"offset":%d}' % (b",".join(rows), total, limit, offset)
