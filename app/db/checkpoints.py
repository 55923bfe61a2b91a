"""Checkpoint rows: add (deduplicated per owner by sha256), find, delete with blob reference counts.

The blobs and the rows of new checkpoints (uploads and a job's outputs alike) are written by
app/ingest.py, which calls `add_checkpoints` here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Checkpoint
from app.db.types import new_id, utcnow


def _owned_by(owner_id: str | None) -> ColumnElement[bool]:
    return Checkpoint.owner_id.is_(None) if owner_id is None else Checkpoint.owner_id == owner_id


def find_by_sha256(session: Session, owner_id: str | None, sha256: str) -> Checkpoint | None:
    """The owner's own row with these bytes (shared rows when owner_id is None)."""
    return session.scalars(
        select(Checkpoint).where(
            _owned_by(owner_id), (Checkpoint.sha256 == sha256) | (Checkpoint.upload_sha256 == sha256)
        )
    ).first()


def add_checkpoints(
    session: Session,
    rows: Sequence[dict[str, Any]],
    *,
    owner_id: str | None,
    fresh: Collection[str] = (),
) -> list[tuple[str, bool]]:
    """Insert checkpoints of one owner whose blobs are stored; (id, created) per row, in order.

    `rows` hold add_checkpoint's fields. A row whose sha256 the owner already has gives that row
    (created False). Blobs in `fresh` were placed just now, so they cannot have rows yet (a row
    exists only while its blob does: rows go in after their blob, a blob goes with its last row):
    they skip the lookup, and a fresh job's outputs cost no query before the insert. The rows go in
    with one INSERT and one commit (a commit per row cost more than a small reconstruction on
    SQLite); if another writer raced us on the unique index, each row falls back to add_checkpoint.
    """
    shas = [row["sha256"] for row in rows]
    known = [sha for sha in dict.fromkeys(shas) if sha not in fresh]
    query = select(Checkpoint.sha256, Checkpoint.id).where(_owned_by(owner_id), Checkpoint.sha256.in_(known))
    existing = dict(session.execute(query).tuples().all()) if known else {}
    created_at = utcnow()
    new = {
        row["sha256"]: {
            **row,
            "id": new_id(),
            "blob_key": row.get("blob_key") or row["sha256"],
            "owner_id": owner_id,
            "created_at": created_at,
        }
        for row in rows
        if row["sha256"] not in existing
    }
    try:
        if new:
            # An executemany (pipelined by psycopg): faster than one INSERT ... RETURNING or
            # one multi-VALUES statement (benchmarks/storage_microbenchmarks.py).
            session.execute(insert(Checkpoint), list(new.values()))
        session.commit()
    except IntegrityError:
        session.rollback()
        made = [add_checkpoint(session, **{**row, "owner_id": owner_id}) for row in rows]
        return [(checkpoint.id, created) for checkpoint, created in made]
    ids = {**existing, **{sha: row["id"] for sha, row in new.items()}}
    return [(ids[sha], sha in new) for sha in shas]


def add_checkpoint(
    session: Session,
    *,
    sha256: str,
    kind: str,
    architecture: dict[str, Any],
    architecture_name: str,
    n_parameters: int,
    n_tokens: int,
    name: str,
    size_bytes: int,
    blob_key: str | None = None,
    owner_id: str | None = None,
    upload_sha256: str | None = None,
    zoo_id: str | None = None,
    zoo_model_id: str | None = None,
    epoch: int | None = None,
    source_job_id: str | None = None,
    accuracy: float | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[Checkpoint, bool]:
    """Insert a checkpoint whose blob is already stored; returns (row, created).

    Same owner and same stored sha256 -> the existing row (created False), also when two requests
    race: the loser hits the unique index and reads the winner's row. Commits.
    """
    existing = find_by_sha256(session, owner_id, sha256)
    if existing is not None:
        return existing, False
    row = Checkpoint(
        sha256=sha256,
        upload_sha256=upload_sha256,
        kind=kind,
        architecture=architecture,
        architecture_name=architecture_name,
        n_parameters=n_parameters,
        n_tokens=n_tokens,
        name=name,
        blob_key=blob_key or sha256,
        size_bytes=size_bytes,
        owner_id=owner_id,
        zoo_id=zoo_id,
        zoo_model_id=zoo_model_id,
        epoch=epoch,
        source_job_id=source_job_id,
        accuracy=accuracy,
        extra=extra or {},
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = find_by_sha256(session, owner_id, sha256)
        if existing is None:
            raise
        return existing, False
    return row, True


def blob_references(session: Session, blob_key: str) -> int:
    return (
        session.scalar(select(func.count()).select_from(Checkpoint).where(Checkpoint.blob_key == blob_key))
        or 0
    )


def delete_checkpoint(session: Session, checkpoint: Checkpoint) -> bool:
    """Delete the row; returns True when no other row references its blob (the caller removes it)."""
    blob_key = checkpoint.blob_key
    session.delete(checkpoint)
    session.commit()
    return blob_references(session, blob_key) == 0
