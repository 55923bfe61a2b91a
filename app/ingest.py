"""Storing checkpoints: the one path of uploads (the upload route) and of a job's outputs (the
worker's reconstructions and generated models).

An upload is validated by the library first (safe loading, architecture detection); a job's
outputs are not audited again (the worker made them, and knows their architecture). Either way
each checkpoint is stored as a canonical safetensors blob, whatever format it came in, so
downloads and the worker read one format, with the architecture in its metadata, so a downloaded
file says what it is. The blob's sha256 is the storage key and the deduplication key; the rows
describe the architecture the same way for every kind.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session

from app.db.checkpoints import add_checkpoints
from app.db.models import Checkpoint
from app.storage import BlobStore
from zooscope.errors import InvalidCheckpointError, UnknownArchitectureError
from zooscope.networks.architectures import ACTIVATIONS, Architecture, detect_canonical
from zooscope.networks.checkpoints import checkpoint_bytes, load_checkpoint
from zooscope.weightspace.tokens import TokenLayout


@dataclass(frozen=True)
class ValidatedCheckpoint:
    state_dict: dict[str, torch.Tensor]
    architecture: Architecture


def validate_checkpoint(
    source: Path | bytes, *, max_bytes: int, activation: str = "relu"
) -> ValidatedCheckpoint:
    """Load safely and detect the architecture; raises the library's typed errors on bad input."""
    if activation not in ACTIVATIONS:
        raise UnknownArchitectureError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    # either CNN-s key layout (with or without dropout modules) is stored in the canonical one
    architecture, state_dict = detect_canonical(load_checkpoint(source, max_bytes=max_bytes), activation)
    return ValidatedCheckpoint(state_dict, architecture)


def audit_archive_checkpoint(entry: str, data: bytes, *, max_bytes: int) -> str | None:
    """app/archives.py's audit of a torch file in an uploaded zoo: why it is refused (its pickle
    would import or call something beyond tensors and plain containers), or None. A file that
    fails the audit for another reason (NaN, damage, not a state_dict) is left to the import,
    which skips that model and says why."""
    try:
        load_checkpoint(data, max_bytes=max_bytes)
    except InvalidCheckpointError as exc:
        if isinstance(exc.__cause__, pickle.UnpicklingError):
            return str(exc)
    return None


@dataclass(frozen=True)
class StoredBlob:
    """A checkpoint written to the blob store, waiting for its row (`add_checkpoint_rows`)."""

    sha256: str
    size_bytes: int
    # Placed by this call: a blob stored just now has no row yet (add_checkpoints' `fresh`).
    stored_now: bool


def write_checkpoint_blobs(
    store: BlobStore,
    state_dicts: Sequence[dict[str, torch.Tensor]],
    architecture: Architecture | Sequence[Architecture],
    *,
    provenance: Mapping[str, str] | None = None,
) -> list[StoredBlob]:
    """The canonical safetensors blobs of checkpoints; touches no database.

    `architecture`: of every checkpoint, or one per checkpoint (a zoo that mixes activations).
    The metadata holds the architecture (the same weights with another activation are another
    blob) and `provenance` (a job's outputs: their kind and job). No timestamp, so a re-run of a
    job writes the same bytes and finds them stored.
    """
    blobs = []
    for state_dict, own in zip(state_dicts, each_architecture(architecture, len(state_dicts)), strict=True):
        metadata = {"architecture": json.dumps(own.to_dict(), sort_keys=True), **(provenance or {})}
        data = checkpoint_bytes(state_dict, "safetensors", metadata=metadata)
        sha256 = hashlib.sha256(data).hexdigest()
        stored_now = store.put_bytes(data, sha256)  # False for bytes already stored
        blobs.append(StoredBlob(sha256, len(data), stored_now))
    return blobs


def each_architecture(architecture: Architecture | Sequence[Architecture], n: int) -> list[Architecture]:
    """One architecture per checkpoint, from one for all or one each (checked to be n)."""
    if isinstance(architecture, Architecture):
        return [architecture] * n
    if len(architecture) != n:
        raise ValueError(f"{len(architecture)} architectures for {n} checkpoints")
    return list(architecture)


def add_checkpoint_rows(
    session: Session,
    blobs: Sequence[StoredBlob],
    architecture: Architecture | Sequence[Architecture],
    *,
    kind: str,
    names: Sequence[str],
    owner_id: str | None = None,
    each: Sequence[Mapping[str, Any]] | None = None,
    **common: Any,
) -> list[tuple[str, bool]]:
    """The rows of blobs from `write_checkpoint_blobs`, in one transaction; (id, created) per blob,
    in order (deduplicated per owner by sha256: app.db.checkpoints.add_checkpoints).

    `architecture`: of every blob, or one per blob (as given to `write_checkpoint_blobs`). `each`
    holds per-row fields (accuracy, extra, ...), `common` fields of every row (source_job_id,
    zoo_id, upload_sha256, ...).
    """
    architectures = each_architecture(architecture, len(blobs))
    described = {arch: _described(arch) for arch in set(architectures)}
    rows = [
        {
            **described[arch],
            "kind": kind,
            "extra": {},
            **common,
            "sha256": blob.sha256,
            "size_bytes": blob.size_bytes,
            "name": name,
            **own,
        }
        for blob, arch, name, own in zip(blobs, architectures, names, each or [{}] * len(blobs), strict=True)
    ]
    fresh = {blob.sha256 for blob in blobs if blob.stored_now}
    return add_checkpoints(session, rows, owner_id=owner_id, fresh=fresh)


def _described(architecture: Architecture) -> dict[str, Any]:
    """The columns that describe a checkpoint's architecture, alike for every kind."""
    return {
        "architecture": architecture.to_dict(),
        "architecture_name": architecture.name,
        "n_parameters": architecture.n_parameters,
        "n_tokens": TokenLayout.of(architecture).n_tokens,
    }


def store_checkpoint(
    session: Session,
    store: BlobStore,
    checkpoint: ValidatedCheckpoint,
    *,
    kind: str,
    name: str,
    owner_id: str | None = None,
    **row: Any,
) -> tuple[Checkpoint, bool]:
    """Store one checkpoint's blob (if new) and its row (deduplicated per owner): (row, created).
    Extra keyword arguments (upload_sha256, zoo_id, ...) go to the row."""
    blobs = write_checkpoint_blobs(store, [checkpoint.state_dict], checkpoint.architecture)
    ((checkpoint_id, created),) = add_checkpoint_rows(
        session, blobs, checkpoint.architecture, kind=kind, names=[name], owner_id=owner_id, **row
    )
    return session.get_one(Checkpoint, checkpoint_id), created
