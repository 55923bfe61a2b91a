"""POST /zoos/archives: a good archive becomes an import_zoo job over its own unpacked folder; every
hostile archive gets a 4xx problem naming the entry, writes nothing, and the server keeps serving."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from service_fixtures import Api
from zoo_archives import (
    archive_of,
    checkpoint_pt,
    make_tar,
    make_zip,
    minimal_zoo,
    tar_info,
    tree,
    zip_with_mode,
)

URL = "/api/v1/zoos/archives"
FORMATS = ("zip", "tar.gz")


class _TouchOnLoad:
    """Unpickling this creates a marker file: the proof that a loader ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def _post(api: Api, data: bytes, filename: str = "zoo.zip", **fields: str):
    return api.client.post(URL, files={"file": (filename, data)}, data=fields)


def _refused(
    api: Api,
    data: bytes,
    status: int | tuple[int, ...],
    type_: str | tuple[str, ...],
    entry: str | None,
    tmp_path: Path,
    filename: str = "zoo.zip",
) -> dict:
    before = tree(tmp_path)
    response = _post(api, data, filename)
    statuses = status if isinstance(status, tuple) else (status,)
    types = type_ if isinstance(type_, tuple) else (type_,)
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].rsplit("/", 1)[1] in types, body
    if entry is not None:
        assert entry in body["detail"], body["detail"]
    assert tree(tmp_path) == before  # nothing written anywhere: no job folder, no temp file
    assert api.rows("jobs") == 0 and api.queue.sent == []
    assert api.client.get("/healthz").status_code == 200
    return body


# ---- the hostile catalogue ---------------------------------------------------------------------------


def _tar_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


ENTRY_CASES: dict[str, tuple[Callable[[str], bytes], int, str, str]] = {
    # case: (make(fmt) -> archive bytes, status, problem type, the entry named in the detail)
    "dotdot": (
        lambda f: archive_of(f, [*minimal_zoo(), ("../../evil.txt", b"x")]),
        422,
        "archive-unsafe-entry",
        "../../evil.txt",
    ),
    "dotdot-inside": (
        lambda f: archive_of(f, [*minimal_zoo(), ("model_a/../../evil.txt", b"x")]),
        422,
        "archive-unsafe-entry",
        "model_a/../../evil.txt",
    ),
    "absolute": (
        lambda f: archive_of(f, [*minimal_zoo(), ("/tmp/zooscope-evil.txt", b"x")]),
        422,
        "archive-unsafe-entry",
        "/tmp/zooscope-evil.txt",
    ),
    "backslash": (
        lambda f: archive_of(f, [*minimal_zoo(), ("..\\..\\evil.txt", b"x")]),
        422,
        "archive-unsafe-entry",
        "evil.txt",
    ),
    "nested-zip-by-name": (
        lambda f: archive_of(f, [*minimal_zoo(), ("model_a/more.zip", make_zip([]))]),
        422,
        "archive-nested-archive",
        "model_a/more.zip",
    ),
    "nested-targz-by-name": (
        lambda f: archive_of(f, [*minimal_zoo(), ("model_a/more.tar.gz", b"x")]),
        422,
        "archive-nested-archive",
        "model_a/more.tar.gz",
    ),
    "nested-gzip-by-content": (
        lambda f: archive_of(f, [*minimal_zoo(), ("model_a/data.bin", gzip.compress(b"a" * 1000))]),
        422,
        "archive-nested-archive",
        "model_a/data.bin",
    ),
    "nested-zip-by-content": (
        lambda f: archive_of(f, [*minimal_zoo(), ("model_a/data.bin", make_zip([("x", b"y")]))]),
        422,
        "archive-nested-archive",
        "model_a/data.bin",
    ),
    "duplicate": (
        lambda f: archive_of(f, [*minimal_zoo(), ("model_a/params.json", b"{}")]),
        422,
        "archive-duplicate-entry",
        "model_a/params.json",
    ),
    "file-and-folder": (
        lambda f: archive_of(f, [*minimal_zoo(), ("model_a", b"x")]),
        422,
        "archive-duplicate-entry",
        "model_a",
    ),
    "control-characters": (
        lambda f: archive_of(f, [*minimal_zoo(), ("model_a/bad\x07name", b"x")]),
        422,
        "archive-unsafe-entry",
        "model_a/bad",
    ),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(ENTRY_CASES))
def test_hostile_entries_are_refused(api: Api, tmp_path: Path, fmt: str, case: str) -> None:
    make, status, type_, entry = ENTRY_CASES[case]
    body = _refused(api, make(fmt), status, type_, entry, tmp_path)
    assert body["entry"]
    assert not Path("/tmp/zooscope-evil.txt").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_symlinks_are_refused(api: Api, tmp_path: Path, fmt: str) -> None:
    if fmt == "zip":
        data = make_zip([*minimal_zoo(), (zip_with_mode("model_a/link", b"/etc/passwd", stat.S_IFLNK | 0o777),
                                          b"/etc/passwd")])  # fmt: skip
    else:
        data = make_tar([*minimal_zoo(), (tar_info("model_a/link", tarfile.SYMTYPE, "/etc/passwd"), None)])
    _refused(api, data, 422, "archive-unsafe-entry", "model_a/link", tmp_path)


def test_hard_links_devices_and_fifos_are_refused(api: Api, tmp_path: Path) -> None:
    for type_, name in ((tarfile.LNKTYPE, "hard"), (tarfile.CHRTYPE, "dev"), (tarfile.BLKTYPE, "blk"),
                        (tarfile.FIFOTYPE, "fifo")):  # fmt: skip
        data = make_tar([*minimal_zoo(), (tar_info(f"model_a/{name}", type_, "model_a/params.json"), None)])
        _refused(api, data, 422, "archive-unsafe-entry", f"model_a/{name}", tmp_path)
    fifo = make_zip([*minimal_zoo(), (zip_with_mode("model_a/fifo", b"", stat.S_IFIFO | 0o644), b"")])
    _refused(api, fifo, 422, "archive-unsafe-entry", "model_a/fifo", tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_more_entries_than_the_cap(api_factory: Callable[..., Api], tmp_path: Path, fmt: str) -> None:
    api = api_factory(max_archive_entries=5)
    entries = [*minimal_zoo(), *[(f"model_a/extra_{i}.txt", b"x") for i in range(10)]]
    _refused(api, archive_of(fmt, entries), 413, "archive-too-many-entries", "extra_", tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_deflate_bomb_is_stopped_at_the_cap(
    api_factory: Callable[..., Api], tmp_path: Path, fmt: str
) -> None:
    api = api_factory(max_archive_unpacked_bytes=1_000_000)
    data = archive_of(fmt, [*minimal_zoo(), ("model_a/zeros.bin", b"\x00" * 5_000_000)])
    assert len(data) < 100_000  # a few kB that claim 5 MB
    _refused(api, data, 413, "archive-too-large", "model_a/zeros.bin", tmp_path)


def test_a_zip_that_lies_about_its_sizes_is_refused(api_factory: Callable[..., Api], tmp_path: Path) -> None:
    """The declared sizes say 100 bytes; the deflated stream holds 5 MB. Counting while reading (or
    zipfile's own size and CRC check) stops it; nothing is written."""
    api = api_factory(max_archive_unpacked_bytes=1_000_000)
    data = bytearray(make_zip([*minimal_zoo(), ("model_a/zeros.bin", b"\x00" * 5_000_000)]))
    size = (5_000_000).to_bytes(4, "little")
    assert data.count(size) == 2  # the local header's and the central directory's
    data[:] = data.replace(size, (100).to_bytes(4, "little"))
    _refused(api, bytes(data), (413, 422), ("archive-too-large", "invalid-archive", "archive-unsafe-entry"),
             "model_a/zeros.bin", tmp_path)  # fmt: skip


def test_non_utf8_names_are_refused(api: Api, tmp_path: Path) -> None:
    # zip without the UTF-8 flag: raw bytes that are not UTF-8 (swapped in for a same-length name)
    plain = make_zip([*minimal_zoo(), ("model_a/QQ.txt", b"x")]).replace(b"QQ.txt", b"\xff\xfe.txt")
    _refused(api, plain, 422, "archive-invalid-name", "model_a/", tmp_path)
    # zip with the UTF-8 flag but bytes that are not UTF-8
    flagged = make_zip([*minimal_zoo(), ("model_a/é.txt", b"x")]).replace("é".encode(), b"\xff\xfe")
    _refused(api, flagged, 422, "archive-invalid-name", None, tmp_path)
    tar = make_tar([*minimal_zoo(), ("model_a/\udcff\udcfe.txt", b"x")])
    _refused(api, tar, 422, "archive-invalid-name", "model_a/", tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_code_running_pickle_is_refused_without_running(api: Api, tmp_path: Path, fmt: str) -> None:
    marker = tmp_path.parent / f"pwned-{tmp_path.name}"
    buffer = io.BytesIO()
    torch.save({"module_list.0.weight": _TouchOnLoad(marker)}, buffer)  # a torch zip, a nasty pickle
    entry = "model_a/checkpoint_000002/checkpoints"
    torch_zip = archive_of(fmt, [*minimal_zoo(), (entry, buffer.getvalue())])
    body = _refused(api, torch_zip, 422, "archive-unsafe-checkpoint", entry, tmp_path)
    assert body["entry"] == entry
    raw = archive_of(fmt, [*minimal_zoo(), ("model_a/optimizer.pkl", pickle.dumps(_TouchOnLoad(marker)))])
    _refused(api, raw, 422, "archive-unsafe-checkpoint", "model_a/optimizer.pkl", tmp_path)
    assert not marker.exists()


def test_not_an_archive_not_a_zoo_and_too_large(api_factory: Callable[..., Api], tmp_path: Path) -> None:
    api = api_factory(max_archive_bytes=50_000)
    _refused(api, b"hello, not an archive", 415, "unsupported-archive-format", None, tmp_path)
    _refused(api, gzip.compress(b"not a tar" * 100), 422, "invalid-archive", None, tmp_path, "x.tar.gz")
    _refused(
        api, make_zip([("README.md", b"hi"), ("notes/a.txt", b"x")]), 422, "archive-not-a-zoo", None, tmp_path
    )
    _refused(api, make_zip([("big.bin", os.urandom(200_000))]), 413, "upload-too-large", None, tmp_path)
    _refused(api, b"", 422, "invalid-archive", None, tmp_path)


# ---- good archives -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_good_archive_becomes_an_import_job_over_its_own_folder(api: Api, fmt: str) -> None:
    entries = [*minimal_zoo("myzoo/"), ("myzoo/model_b/params.json", b"{}"),
               ("myzoo/model_b/checkpoint_000001/checkpoints", checkpoint_pt(1))]  # fmt: skip
    response = _post(api, archive_of(fmt, entries), f"my zoo.{fmt}", dataset="mnist")
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"].endswith(f"/jobs/{job['id']}")
    assert job["kind"] == "import_zoo" and job["state"] == "queued"
    assert api.queue.sent == [("import_zoo", job["id"])]
    params = job["params"]
    assert params["name"] == "my zoo" and params["dataset"] == "mnist" and "path" not in params
    folder = api.settings.archive_dir / params["archive_id"]
    assert {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} == {
        name for name, _ in entries
    }
    assert [p.name for p in api.settings.archive_dir.iterdir()] == [params["archive_id"]]  # no .partial
    assert api.leftover_temp_files() == []


def test_the_archive_id_cannot_be_given_to_post_jobs(api: Api) -> None:
    """Only the upload route makes an archive import: a job naming another upload's folder is refused."""
    response = api.client.post(
        "/api/v1/jobs", json={"kind": "import_zoo", "params": {"archive_id": "0" * 32}}
    )
    assert response.status_code == 422 and "archives" in response.json()["detail"]
    both = api.client.post(
        "/api/v1/jobs", json={"kind": "import_zoo", "params": {"archive_id": "0" * 32, "path": "/x"}}
    )
    assert both.status_code == 422 and "exactly one" in both.json()["detail"]
    assert api.rows("jobs") == 0
