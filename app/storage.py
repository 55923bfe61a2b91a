"""Blob storage for checkpoint files, content-addressed by sha256.

`BlobStore` is the interface the API and worker use; `LocalBlobStore` keeps blobs in a folder
under the data directory. An S3 store would implement the same five methods (keys are hex
sha256 digests, never user input, so they are safe as object names and paths).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from app.settings import Settings

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1024 * 1024


class BlobStore(Protocol):
    def put_file(self, src: Path, key: str) -> None:
        """Store the file at `src` under `key` (its sha256); `src` is consumed (moved or deleted)."""

    def put_bytes(self, data: bytes, key: str) -> bool:
        """Store `data` under `key` (its sha256), for blobs made in memory (worker outputs); False
        when the blob was already stored."""

    def read_verified(self, key: str) -> bytes:
        """The blob's bytes, checked against their key (CorruptBlobError if they do not hash to it)."""

    def exists(self, key: str) -> bool: ...

    def open_path(self, key: str) -> Path:
        """A local path to read the blob from (an S3 store would download to a cache)."""

    def delete(self, key: str) -> None: ...


class CorruptBlobError(ValueError):
    """A stored blob's bytes no longer hash to its key: damaged or altered on disk."""


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_key(key: str) -> str:
    if not _SHA256.match(key):
        raise ValueError(f"blob keys are lowercase hex sha256 digests, got {key!r}")
    return key


class LocalBlobStore:
    """<root>/<ab>/<abcdef...>: two-level fan-out keeps directories small."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBlobStore:
        return cls(settings.blob_dir)

    def path_for(self, key: str) -> Path:
        check_key(key)
        return self.root / key[:2] / key

    def put_file(self, src: Path, key: str) -> None:
        def move_in(tmp: str) -> None:
            try:
                os.replace(src, tmp)
            except OSError:  # another filesystem: copy
                shutil.copyfile(src, tmp)
                Path(src).unlink(missing_ok=True)

        if not self._place(key, move_in):  # same content already stored
            Path(src).unlink(missing_ok=True)

    def put_bytes(self, data: bytes, key: str) -> bool:
        def write(tmp: str) -> None:
            # O_EXCL: the name is fresh (secrets.token_hex), never someone else's file.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)

        return self._place(key, write)

    def _place(self, key: str, fill: Callable[[str], None]) -> bool:
        """Fill a temp file beside the blob's place, then rename it there; False if the blob was
        already stored. A reader never sees a half-written blob, and a rename on one filesystem is
        atomic even if two writers race on the same key."""
        dest = self.path_for(key)
        if dest.exists():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = str(dest.parent / f".incoming-{secrets.token_hex(8)}")
        try:
            fill(tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def read_verified(self, key: str) -> bytes:
        # Hashing a small checkpoint costs microseconds; it lets readers trust what the blob's
        # writer checked (app/ingest.py validates every upload before it is stored).
        data = self.open_path(key).read_bytes()
        if hashlib.sha256(data).hexdigest() != key:
            raise CorruptBlobError(
                f"blob {key} in {self.root} is damaged: its bytes no longer match its sha256"
            )
        return data

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def open_path(self, key: str) -> Path:
        path = self.path_for(key)
        if not path.is_file():
            raise FileNotFoundError(f"blob {key} is missing from {self.root}")
        return path

    def delete(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)

    def count(self) -> int:
        """How many blobs are stored (tests check that rejected uploads leave none)."""
        return sum(1 for p in self.root.glob("*/*") if p.is_file() and not p.name.startswith("."))
