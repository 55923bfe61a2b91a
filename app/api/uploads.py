"""Streaming multipart uploads: the file goes to a temp file, hashed and counted as it arrives.

FastAPI's UploadFile spools the whole body before the route runs, so an oversized upload would be
read in full before it could be refused. This parser reads the request stream itself: it refuses
a too-large Content-Length before reading anything, and stops at the first byte over the cap.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.api.problems import Problem

# Room for the multipart framing and the small form fields around the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_FIELD_BYTES = 1024  # name, activation, zoo_id: short strings
MAX_PARTS = 16
MAX_NAME_CHARS = 200
# Letters, digits and the punctuation of ordinary titles ("96 CNN-s models, real MNIST #2");
# anything else (markup, shell and path characters) becomes "_".
_SAFE_NAME_CHAR = re.compile(r"[^A-Za-z0-9._+(),:#=@ -]")


@dataclass
class ReceivedUpload:
    path: Path  # the temp file; the caller removes or consumes it
    sha256: str
    size: int
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def display_name(raw: str | None, fallback: str = "checkpoint") -> str:
    """A name for people to read, never used as a path: printable, limited characters, bounded."""
    if not raw:
        return fallback
    text = unicodedata.normalize("NFKC", raw)
    text = _SAFE_NAME_CHAR.sub("_", text).strip(" ._")
    return text[:MAX_NAME_CHARS] or fallback


def check_filename(filename: str | None) -> None:
    """A client sends the file's own name; one with directories or control characters is refused,
    since it can only be an attempt to reach a path (we never use it as one either way)."""
    if filename is None:
        return
    if "/" in filename or "\\" in filename or filename in (".", ".."):
        raise Problem(
            422,
            f"the upload's file name {filename!r} contains a path; send a plain file name such as "
            "'model.safetensors'",
            type_="invalid-filename",
        )
    if any(unicodedata.category(c) == "Cc" for c in filename):
        raise Problem(422, "the upload's file name contains control characters", type_="invalid-filename")


def multipart_body(file_description: str, fields: dict[str, str]) -> dict:
    """The OpenAPI request body of an upload route (its `openapi_extra`): the streamed parser reads
    the body itself, so FastAPI cannot infer it. `fields`: the optional text fields and what
    each means."""
    properties: dict[str, dict] = {
        "file": {"type": "string", "format": "binary", "description": file_description}
    }
    properties |= {name: {"type": "string", "description": text} for name, text in fields.items()}
    schema = {"type": "object", "required": ["file"], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def too_large(max_bytes: int) -> Problem:
    return Problem(
        413,
        f"the upload is over the limit of {max_bytes:,} bytes (ZOOSCOPE_MAX_UPLOAD_BYTES); "
        "zoo checkpoints are far smaller, so check that this is a single state_dict",
        type_="upload-too-large",
    )


@dataclass(frozen=True)
class UploadKind:
    """What an upload is, for its messages: a checkpoint (the default) or a zoo archive."""

    what: str = "the checkpoint"
    too_large: Callable[[int], Problem] = too_large
    empty_type: str = "invalid-checkpoint"


CHECKPOINT_UPLOAD = UploadKind()


async def receive_upload(
    request: Request,
    *,
    max_bytes: int,
    tmp_dir: Path,
    file_field: str = "file",
    kind: UploadKind = CHECKPOINT_UPLOAD,
) -> ReceivedUpload:
    """Stream a multipart/form-data body: the `file_field` part to a temp file, other parts as text."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise Problem(
            415,
            f"send {kind.what} as multipart/form-data with the file in the field '{file_field}'",
            type_="unsupported-media-type",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD_BYTES:
        raise kind.too_large(max_bytes)

    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-", suffix=".part")
    out = os.fdopen(fd, "wb")
    digest = hashlib.sha256()
    state = _PartState()
    result = ReceivedUpload(path=Path(tmp_name), sha256="", size=0, filename=None)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        state.headers[state.header_field.decode("latin-1").lower()] = state.header_value.decode(
            "utf-8", "replace"
        )
        state.header_field, state.header_value = b"", b""

    def on_headers_finished() -> None:
        state.parts += 1
        if state.parts > MAX_PARTS:
            raise Problem(422, f"too many form fields (at most {MAX_PARTS})", type_="validation-error")
        _, options = parse_options_header(state.headers.get("content-disposition", ""))
        state.name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if state.name == file_field:
            if state.seen_file:
                raise Problem(
                    422, f"send exactly one file in the field '{file_field}'", type_="validation-error"
                )
            state.seen_file = True
            result.filename = filename.decode("utf-8", "replace") if filename is not None else None
            check_filename(result.filename)
        state.value = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if state.name == file_field:
            result.size += len(chunk)
            if result.size > max_bytes:
                raise kind.too_large(max_bytes)
            digest.update(chunk)
            out.write(chunk)
        else:
            state.value += chunk
            if len(state.value) > MAX_FIELD_BYTES:
                raise Problem(
                    422,
                    f"the form field {state.name!r} is over {MAX_FIELD_BYTES} bytes",
                    type_="validation-error",
                )

    def on_part_end() -> None:
        if state.name != file_field and state.name:
            result.fields[state.name] = state.value.decode("utf-8", "replace")
        state.headers = {}

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        try:
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        finally:
            out.close()
        if not state.seen_file:
            raise Problem(
                422,
                f"no file in the form: send {kind.what} in the field '{file_field}'",
                type_="validation-error",
            )
        if result.size == 0:
            raise Problem(422, "the uploaded file is empty", type_=kind.empty_type)
    except Problem:
        result.discard()
        raise
    except Exception as exc:  # malformed multipart framing, a dropped connection
        result.discard()
        raise Problem(400, f"the multipart body could not be read: {exc}", type_="bad-request") from exc
    result.sha256 = digest.hexdigest()
    return result


@dataclass
class _PartState:
    header_field: bytes = b""
    header_value: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    value: bytearray = field(default_factory=bytearray)
    parts: int = 0
    seen_file: bool = False
