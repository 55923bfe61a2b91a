"""Checkpoints: upload (streamed, validated, deduplicated), list, get, download, delete."""

from __future__ import annotations

import io
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy.orm import Session

from app.api.auth import Principal
from app.api.deps import PageLimit, PageOffset, PrincipalDep, SessionDep, SettingsDep, StoreDep, get_visible
from app.api.problems import Problem
from app.api.routing import DatabaseRoute
from app.api.schemas import CheckpointOut, Page
from app.api.uploads import ReceivedUpload, display_name, multipart_body, receive_upload
from app.db.checkpoints import delete_checkpoint, find_by_sha256
from app.db.models import CHECKPOINT_KINDS, Checkpoint, Zoo
from app.db.visibility import is_visible, visible_page
from app.ingest import store_checkpoint, validate_checkpoint
from app.settings import Settings
from app.storage import BlobStore

router = APIRouter(prefix="/checkpoints", tags=["checkpoints"], route_class=DatabaseRoute)

UPLOAD_OPENAPI = multipart_body(
    ".safetensors or torch .pt/.pth",
    {
        "name": "display name (default: the file name)",
        "activation": "relu (default), tanh, gelu, sigmoid",
        "zoo_id": "the zoo the checkpoint belongs to, if any",
    },
)


@router.post(
    "",
    status_code=201,
    response_model=CheckpointOut,
    openapi_extra=UPLOAD_OPENAPI,
    responses={200: {"model": CheckpointOut, "description": "the same bytes were uploaded before"}},
)
async def upload_checkpoint(
    request: Request,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    store: StoreDep,
) -> Checkpoint:
    """Upload a .safetensors or torch state_dict. Same bytes again: 200 with the existing record."""
    upload = await receive_upload(
        request, max_bytes=settings.max_upload_bytes, tmp_dir=settings.upload_tmp_dir
    )
    try:
        # Everything below reads or writes the database or runs torch: all of it on a worker
        # thread. A query on the event loop waits there for a pooled connection, and the requests
        # that hold the pool's connections need the loop to finish: with the pool busy, one upload
        # stalled the whole API (docs/benchmarks.md, "Load").
        row, created = await run_in_threadpool(_store_upload, session, principal, settings, store, upload)
        if not created:
            response.status_code = 200
        return row
    finally:
        upload.discard()


def _store_upload(
    session: Session, principal: Principal, settings: Settings, store: BlobStore, upload: ReceivedUpload
) -> tuple[Checkpoint, bool]:
    """The uploaded file's row: the existing one for the same bytes (False), else a new one (True)."""
    existing = find_by_sha256(session, principal.owner_id, upload.sha256)
    if existing is not None:
        session.commit()  # the read's transaction ends on this thread (app/api/routing.py)
        return existing, False
    zoo_id = upload.fields.get("zoo_id") or None
    if zoo_id is not None and not is_visible(session, Zoo, zoo_id, principal.owner_id):
        raise Problem(422, f"zoo_id {zoo_id!r}: no such zoo", type_="unknown-reference")
    activation = (upload.fields.get("activation") or "relu").strip().lower()
    checkpoint = validate_checkpoint(upload.path, max_bytes=settings.max_upload_bytes, activation=activation)
    return store_checkpoint(
        session,
        store,
        checkpoint,
        kind="uploaded",
        name=display_name(upload.fields.get("name") or upload.filename),
        owner_id=principal.owner_id,
        upload_sha256=upload.sha256,
        zoo_id=zoo_id,
    )


@router.get("", response_model=Page[CheckpointOut])
def list_checkpoints(
    session: SessionDep,
    principal: PrincipalDep,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
    architecture: str | None = None,
    zoo_id: str | None = None,
    kind: Literal[CHECKPOINT_KINDS] | None = None,  # type: ignore[valid-type]
) -> dict:
    """Newest first. `architecture` is a name such as cnn_s-1x28x28."""
    filters = []
    if architecture:
        filters.append(Checkpoint.architecture_name == architecture)
    if zoo_id:
        filters.append(Checkpoint.zoo_id == zoo_id)
    if kind:
        filters.append(Checkpoint.kind == kind)
    return visible_page(session, Checkpoint, principal.owner_id, *filters, limit=limit, offset=offset)


@router.get("/{checkpoint_id}", response_model=CheckpointOut)
def get_checkpoint(checkpoint_id: str, session: SessionDep, principal: PrincipalDep) -> Checkpoint:
    return get_visible(session, principal, Checkpoint, checkpoint_id)


@router.get(
    "/{checkpoint_id}/download",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_checkpoint(
    checkpoint_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    store: StoreDep,
    settings: SettingsDep,
    format: Literal["safetensors", "pt"] = "safetensors",
) -> Response:
    """The stored safetensors file, or the same weights as a torch.save zip (format=pt)."""
    row = get_visible(session, principal, Checkpoint, checkpoint_id)
    try:
        path = store.open_path(row.blob_key)
    except FileNotFoundError as exc:
        raise Problem(
            500, f"the file of checkpoint {checkpoint_id} is missing from blob storage", type_="blob-missing"
        ) from exc
    stem = display_name(row.name.removesuffix(".safetensors").removesuffix(".pt").removesuffix(".pth"))
    if format == "safetensors":
        return FileResponse(path, media_type="application/octet-stream", filename=f"{stem}.safetensors")
    from zooscope.networks.checkpoints import checkpoint_to_torch_bytes, load_checkpoint

    # Converted on the fly: zoo checkpoints are small, and storing one format keeps one truth.
    data = checkpoint_to_torch_bytes(
        load_checkpoint(path, max_bytes=max(settings.max_upload_bytes, row.size_bytes))
    )
    return StreamingResponse(
        io.BytesIO(data),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{stem}.pt"',
            "Content-Length": str(len(data)),
        },
    )


@router.delete("/{checkpoint_id}", status_code=204, response_class=Response)
def remove_checkpoint(
    checkpoint_id: str, session: SessionDep, principal: PrincipalDep, store: StoreDep
) -> Response:
    """Delete a checkpoint; its file goes when no other record (another owner's) uses it."""
    row = get_visible(session, principal, Checkpoint, checkpoint_id)
    if row.owner_id != principal.owner_id:
        raise Problem(
            403,
            "this checkpoint is shared; only a request without a key (the embedded mode) may delete it",
            type_="forbidden",
        )
    blob_key = row.blob_key
    if delete_checkpoint(session, row):
        store.delete(blob_key)
    return Response(status_code=204)
