"""Zoos: read here; build_zoo and import_zoo jobs create them, and an uploaded zoo archive
(POST /zoos/archives) becomes an import_zoo job."""

from __future__ import annotations

import functools
import shutil

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.api.deps import PageLimit, PageOffset, PrincipalDep, QueueDep, SessionDep, SettingsDep, get_visible
from app.api.problems import Problem
from app.api.routes.jobs import job_location, send_job
from app.api.routing import DatabaseRoute
from app.api.schemas import JobOut, Page, ZooDetail, ZooOut
from app.api.uploads import UploadKind, display_name, multipart_body, receive_upload
from app.archives import ArchiveLimits, ArchiveRefused, archive_folder, new_archive_id, unpack_archive
from app.db import jobs as job_repo
from app.db.models import Checkpoint, Job, Zoo
from app.db.visibility import visible_page
from app.ingest import audit_archive_checkpoint
from app.job_kinds import ImportZooParams
from app.queue import JobQueue
from app.settings import Settings

router = APIRouter(prefix="/zoos", tags=["zoos"], route_class=DatabaseRoute)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")


def _archive_too_large(max_bytes: int) -> Problem:
    return Problem(
        413,
        f"the archive is over the limit of {max_bytes:,} bytes (ZOOSCOPE_MAX_ARCHIVE_BYTES); "
        "an operator can raise it, or import the zoo from a folder (an import_zoo job with params.path)",
        type_="upload-too-large",
    )


ARCHIVE_UPLOAD = UploadKind(
    what="the zoo archive", too_large=_archive_too_large, empty_type="invalid-archive"
)
ARCHIVE_OPENAPI = multipart_body(
    ".zip or .tar.gz of a zoo (public Model Zoos layout or ours)",
    {
        "name": "the zoo's name (default: the file's)",
        "dataset": "the data set, when params.json does not tell",
    },
)


@router.post(
    "/archives",
    status_code=202,
    response_model=JobOut,
    openapi_extra=ARCHIVE_OPENAPI,
    responses={
        413: {"description": "the archive, an entry or what it unpacks to is over a cap"},
        415: {"description": "neither a .zip nor a .tar.gz"},
        422: {"description": "an unsafe entry: path, link, device, duplicate, archive, code-running pickle"},
    },
)
async def upload_zoo_archive(
    request: Request,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    queue: QueueDep,
) -> Job:
    """Upload a zoo archive: every entry is checked, then it is unpacked into a folder of its own
    under the data dir and an import_zoo job is queued for it (202 + Location, as POST /jobs)."""
    upload = await receive_upload(
        request, max_bytes=settings.max_archive_bytes, tmp_dir=settings.upload_tmp_dir, kind=ARCHIVE_UPLOAD
    )
    archive_id = new_archive_id()
    folder = archive_folder(settings.archive_dir, archive_id)
    try:
        params = _archive_params(archive_id, upload.fields, upload.filename)
        try:
            await run_in_threadpool(
                unpack_archive, upload.path, folder, archive_limits(settings), _audit(settings)
            )
        except ArchiveRefused as exc:
            raise Problem(exc.status, exc.detail, type_=exc.kind, entry=exc.entry) from exc
        try:
            job = await run_in_threadpool(_queue_import, session, queue, params, principal.owner_id)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    finally:
        upload.discard()
    response.headers["Location"] = job_location(job.id)
    return job


def _queue_import(session: Session, queue: JobQueue, params: dict, owner_id: str | None) -> Job:
    job, _ = job_repo.create_job(session, kind="import_zoo", params=params, owner_id=owner_id)
    send_job(session, queue, job)
    return job


def archive_limits(settings: Settings) -> ArchiveLimits:
    return ArchiveLimits(
        max_entries=settings.max_archive_entries,
        max_unpacked_bytes=settings.max_archive_unpacked_bytes,
        max_checkpoint_bytes=settings.max_upload_bytes,
    )


def _audit(settings: Settings):  # noqa: ANN202 - an app.archives.CheckpointAudit
    return functools.partial(audit_archive_checkpoint, max_bytes=settings.max_upload_bytes)


def _archive_params(archive_id: str, fields: dict[str, str], filename: str | None) -> dict:
    stem = filename or ""
    for suffix in ARCHIVE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    name = display_name(fields.get("name") or stem, fallback="uploaded zoo")
    try:
        model = ImportZooParams(archive_id=archive_id, name=name, dataset=fields.get("dataset") or None)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise Problem(422, f"invalid form fields: {detail}", type_="validation-error") from exc
    return model.model_dump(mode="json", exclude_none=True)


@router.get("", response_model=Page[ZooOut])
def list_zoos(
    session: SessionDep,
    principal: PrincipalDep,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> dict:
    return visible_page(session, Zoo, principal.owner_id, limit=limit, offset=offset)


@router.get("/{zoo_id}", response_model=ZooDetail)
def get_zoo(zoo_id: str, session: SessionDep, principal: PrincipalDep) -> dict:
    zoo = get_visible(session, principal, Zoo, zoo_id)
    n_checkpoints = session.scalar(
        select(func.count()).select_from(Checkpoint).where(Checkpoint.zoo_id == zoo.id)
    )
    return {
        **ZooOut.model_validate(zoo).model_dump(),
        "manifest": zoo.manifest,
        "summary": zoo.summary,
        "n_checkpoints": n_checkpoints or 0,
    }
