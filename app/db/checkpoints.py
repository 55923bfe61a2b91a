"""Checkpoint rows: add (deduplicated per owner by sha256), find, delete with blob reference counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Checkpoint


def find_by_sha256(session: Session, owner_id: str | None, sha256: str) -> Checkpoint | None:
    """The owner's own row with these bytes (shared rows when owner_id is None)."""
    owner = Checkpoint.owner_id.is_(None) if owner_id is None else Checkpoint.owner_id == owner_id
    return session.scalars(
        select(Checkpoint).where(owner, (Checkpoint.sha256 == sha256) | (Checkpoint.upload_sha256 == sha256))
    ).first()


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
