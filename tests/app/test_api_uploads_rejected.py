"""Every bad upload gets a clear 4xx problem, stores nothing, leaves no temp file, and the
server keeps serving."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from service_fixtures import Api, digits_state_dict

from zooscope.networks.checkpoints import checkpoint_bytes

URL = "/api/v1/checkpoints"


class _TouchOnLoad:
    """Unpickling this creates a marker file: the proof that a loader ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def _assert_rejected(api: Api, response, status: int, words: str) -> None:  # noqa: ANN001
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["instance"] == URL
    assert words.lower() in body["detail"].lower(), body["detail"]
    assert api.rows("checkpoints") == 0
    assert api.store.count() == 0
    assert api.leftover_temp_files() == []
    assert api.client.get("/healthz").status_code == 200


def _post(api: Api, data: bytes, filename: str = "model.pt", **fields: str):
    return api.client.post(URL, files={"file": (filename, data)}, data=fields)


def _recompressed(data: bytes) -> bytes:
    """The same torch zip with every entry deflated (torch writes them stored)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    return out.getvalue()


def _lying_safetensors() -> bytes:
    """A header that claims 800 bytes of data where there are 8."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [200], "data_offsets": [0, 800]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\x00" * 8


def test_pickle_that_runs_code_is_refused_without_running(api: Api, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"module_list.0.weight": _TouchOnLoad(marker)}, buffer)  # a torch zip with a nasty pickle
    _assert_rejected(api, _post(api, buffer.getvalue()), 422, "")
    _assert_rejected(api, _post(api, pickle.dumps(_TouchOnLoad(marker))), 422, "pickle")  # legacy raw pickle
    assert not marker.exists()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: _recompressed(checkpoint_bytes(digits_state_dict(), "pt")), "compress"),
        (lambda: checkpoint_bytes(digits_state_dict(), "safetensors")[:-100], ""),
        (lambda: checkpoint_bytes(digits_state_dict(), "pt")[:500], ""),
        (_lying_safetensors, ""),
        (lambda: checkpoint_bytes({k: v.fill_(float("nan")) for k, v in digits_state_dict().items()}), "nan"),
        (lambda: checkpoint_bytes({"w": torch.full((3,), float("inf"))}), "inf"),
        (lambda: checkpoint_bytes({"encoder.weight": torch.zeros(3, 3)}), "matches no known architecture"),
        (lambda: b"hello, this is not a checkpoint", "format"),
    ],
    ids=[
        "compressed-zip",
        "truncated-safetensors",
        "truncated-zip",
        "lying-header",
        "nan",
        "inf",
        "unknown-arch",
        "text",
    ],
)
def test_invalid_checkpoints_are_422(api: Api, make: Callable[[], bytes], words: str) -> None:
    _assert_rejected(api, _post(api, make()), 422, words)


def test_unknown_activation_is_422(api: Api, state_dict_bytes: Callable[..., bytes]) -> None:
    _assert_rejected(api, _post(api, state_dict_bytes(), activation="swish"), 422, "activation")


def test_filename_with_path_separators_is_refused(api: Api, state_dict_bytes: Callable[..., bytes]) -> None:
    for name in ("../../etc/passwd", "..\\evil.pt", "a/b.safetensors"):
        _assert_rejected(api, _post(api, state_dict_bytes(), filename=name), 422, "path")
    assert not (api.settings.data_dir.parent / "etc").exists()


def test_odd_display_names_are_sanitised(api: Api, state_dict_bytes: Callable[..., bytes]) -> None:
    response = _post(api, state_dict_bytes(), filename="we<i>rd;name$.pt", name="")
    assert response.status_code == 201
    assert response.json()["name"] == "we_i_rd_name_.pt"
    titled = _post(api, state_dict_bytes(seed=1), name="zoo, epoch 24: seed #2")
    assert titled.status_code == 201 and titled.json()["name"] == "zoo, epoch 24: seed #2"


def test_upload_over_the_cap_is_413_from_content_length(
    api_factory: Callable[..., Api], state_dict_bytes: Callable[..., bytes]
) -> None:
    api = api_factory(max_upload_bytes=1000)
    big = b"\x00" * 200_000  # Content-Length alone exceeds cap + multipart overhead
    _assert_rejected(api, _post(api, big), 413, "limit")


def test_upload_over_the_cap_is_413_while_streaming(api_factory: Callable[..., Api]) -> None:
    """No Content-Length (chunked): the stream is cut at the first byte over the cap."""
    api = api_factory(max_upload_bytes=1000)
    boundary = "zsboundary"

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.pt"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for _ in range(100):  # 100 x 1 kB, far over the cap
            yield b"\x01" * 1024
        yield f"\r\n--{boundary}--\r\n".encode()

    response = api.client.post(
        URL, content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    _assert_rejected(api, response, 413, "limit")


def test_not_multipart_and_missing_file(api: Api) -> None:
    _assert_rejected(
        api, api.client.post(URL, content=b"raw", headers={"Content-Type": "text/plain"}), 415, "multipart"
    )
    _assert_rejected(
        api, api.client.post(URL, data={"name": "x"}, files={"other": ("a", b"1")}), 422, "field 'file'"
    )
    _assert_rejected(api, _post(api, b""), 422, "empty")
