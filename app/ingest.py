"""Turning checkpoint files into stored checkpoint rows (the upload route and the worker share it).

A checkpoint is validated by the library (safe loading, architecture detection), then stored as a
canonical safetensors blob, whatever format it came in, so downloads and the worker read one
format. The blob's sha256 is the storage key and the deduplication key.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session

from app.db.checkpoints import add_checkpoint
from app.db.models import Checkpoint
from app.storage import BlobStore, sha256_of_file
from zooscope.errors import UnknownArchitectureError
from zooscope.networks.architectures import ACTIVATIONS, Architecture, detect_architecture
from zooscope.networks.checkpoints import checkpoint_bytes, load_checkpoint
from zooscope.weightspace.tokens import TokenLayout


@dataclass(frozen=True)
class ValidatedCheckpoint:
    state_dict: dict[str, torch.Tensor]
    architecture: Architecture
    n_parameters: int
    n_tokens: int


def validate_checkpoint(
    source: Path | bytes, *, max_bytes: int, activation: str = "relu"
) -> ValidatedCheckpoint:
    """Load safely and detect the architecture; raises the library's typed errors on bad input."""
    if activation not in ACTIVATIONS:
        raise UnknownArchitectureError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    state_dict = load_checkpoint(source, max_bytes=max_bytes)
    return describe_state_dict(state_dict, activation=activation)


def describe_state_dict(
    state_dict: dict[str, torch.Tensor], *, activation: str = "relu"
) -> ValidatedCheckpoint:
    arch = detect_architecture(state_dict, activation)
    return ValidatedCheckpoint(
        state_dict=state_dict,
        architecture=arch,
        n_parameters=arch.n_parameters,
        n_tokens=TokenLayout.of(arch).n_tokens,
    )


def canonical_blob(checkpoint: ValidatedCheckpoint, tmp_dir: Path) -> Path:
    """Write the safetensors blob to a temp file; the architecture rides along in its metadata, so a
    downloaded file says what it is (and the same weights with another activation are another blob)."""
    metadata = {"architecture": json.dumps(checkpoint.architecture.to_dict(), sort_keys=True)}
    data = checkpoint_bytes(checkpoint.state_dict, "safetensors", metadata=metadata)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="blob-", suffix=".safetensors")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return Path(name)


def store_checkpoint(
    session: Session,
    store: BlobStore,
    checkpoint: ValidatedCheckpoint,
    *,
    tmp_dir: Path,
    kind: str,
    name: str,
    owner_id: str | None = None,
    upload_sha256: str | None = None,
    **row: Any,
) -> tuple[Checkpoint, bool]:
    """Store the blob (if new) and add the row (deduplicated per owner). Returns (row, created).

    The worker calls this for reconstructed, generated and zoo checkpoints: build a
    ValidatedCheckpoint with describe_state_dict(sd, activation=...) first. Extra keyword
    arguments (zoo_id, zoo_model_id, epoch, source_job_id, accuracy, extra) go to the row.
    """
    blob = canonical_blob(checkpoint, tmp_dir)
    try:
        sha256 = sha256_of_file(blob)
        size = blob.stat().st_size
        store.put_file(blob, sha256)
    finally:
        blob.unlink(missing_ok=True)
    return add_checkpoint(
        session,
        sha256=sha256,
        upload_sha256=upload_sha256,
        kind=kind,
        architecture=checkpoint.architecture.to_dict(),
        architecture_name=checkpoint.architecture.name,
        n_parameters=checkpoint.n_parameters,
        n_tokens=checkpoint.n_tokens,
        name=name,
        size_bytes=size,
        owner_id=owner_id,
        **row,
    )
