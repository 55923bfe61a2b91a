"""The local blob store: content-addressed, atomic, idempotent."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app.storage import LocalBlobStore


def test_put_bytes_and_put_file_store_the_same_blob_once(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = b"weights" * 100
    key = hashlib.sha256(data).hexdigest()

    assert store.put_bytes(data, key) is True
    assert store.put_bytes(data, key) is False  # same content again: nothing new
    src = tmp_path / "upload.bin"
    src.write_bytes(data)
    store.put_file(src, key)

    assert store.open_path(key).read_bytes() == data
    assert store.count() == 1
    assert not src.exists()  # put_file consumes its source even when the blob was already there
    assert not list((tmp_path / "blobs").glob("*/.incoming-*"))  # no temp files left behind


def test_keys_that_are_not_sha256_digests_are_refused(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(ValueError):
        store.put_bytes(b"x", "../../etc/passwd")


def test_a_failed_write_leaves_no_blob_and_no_temp_file(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    key = hashlib.sha256(b"never").hexdigest()

    def broken(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full (test)")

    with pytest.raises(OSError, match="disk full"):
        store._place(key, broken)
    assert not store.exists(key)
    assert not list((tmp_path / "blobs").glob("*/.incoming-*"))
    store.put_bytes(b"never", key)  # a later write of the same blob goes in
    assert store.open_path(key).read_bytes() == b"never"


def test_read_verified_refuses_bytes_that_no_longer_match_their_key(tmp_path: Path) -> None:
    from app.storage import CorruptBlobError

    store = LocalBlobStore(tmp_path / "blobs")
    data = b"weights" * 100
    key = hashlib.sha256(data).hexdigest()
    store.put_bytes(data, key)
    assert store.read_verified(key) == data
    store.path_for(key).write_bytes(data[:-1] + b"!")  # damaged on disk
    with pytest.raises(CorruptBlobError, match=key):
        store.read_verified(key)
    with pytest.raises(FileNotFoundError):
        store.read_verified(hashlib.sha256(b"absent").hexdigest())
