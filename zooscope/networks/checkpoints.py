"""Safe reading and writing of checkpoint files (the service's upload validation builds on this).

Two formats are read, recognised by their content, never by the file name:
- safetensors: its header is parsed and checked here before the safetensors library sees it,
  so a header that lies about sizes or offsets is refused with a plain explanation;
- a torch.save zip: inspected with zipfile first (size, no compressed entries), then loaded only
  with `torch.load(weights_only=True)`, which refuses pickles that would import or call code.
Legacy raw-pickle torch files are refused without being unpickled.

Whatever is read must be a flat {name: tensor} dict with finite floating-point values. Every failure
is an `InvalidCheckpointError` saying what is wrong and what to do. We write only safetensors.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from zooscope.errors import InvalidCheckpointError

# Zoo checkpoints are a few kB to a few MB; 64 MiB leaves room for larger models while bounding
# what one upload can make the service read into memory.
DEFAULT_MAX_CHECKPOINT_BYTES = 64 * 2**20
# Keys under which training scripts commonly nest the state_dict.
STATE_DICT_WRAPPER_KEYS = ("state_dict", "model_state_dict")

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# Every pickle of protocol 2 or higher starts with PROTO; legacy torch files are such pickles.
_PICKLE_PROTO = b"\x80"
_SAFETENSORS_PREFIX = 8
# The safetensors library refuses headers above 100 MB; a header that large is never legitimate.
_MAX_SAFETENSORS_HEADER = 100_000_000
# safetensors dtype name -> (torch dtype, bytes per element).
_SAFETENSORS_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
_RESAVE_HINT = (
    "re-save it with torch.save(model.state_dict(), path) (PyTorch >= 1.6) "
    "or with safetensors.torch.save_file"
)


def load_checkpoint(
    source: Path | str | bytes, *, max_bytes: int = DEFAULT_MAX_CHECKPOINT_BYTES
) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} state_dict from a file path or the file's bytes.

    Accepts safetensors or a torch.save zip (optionally {"state_dict": ...} or
    {"model_state_dict": ...} around the state_dict). Raises InvalidCheckpointError for anything
    oversized, truncated, malformed, unsafe, not a flat dict of tensors, or holding NaN/inf.
    """
    data = _read_capped(source, max_bytes)
    # Safetensors first: its 8-byte length prefix can begin with any byte, 0x80 included.
    if _looks_like_safetensors(data):
        loaded = _load_safetensors(data)
    elif data.startswith(_ZIP_MAGIC):
        loaded = _load_torch_zip(data, max_bytes)
    elif data.startswith(_PICKLE_PROTO):
        raise InvalidCheckpointError(
            "this is a legacy (pre-zip) torch file or a raw pickle, which cannot be loaded safely; "
            + _RESAVE_HINT
        )
    else:
        raise InvalidCheckpointError(
            "unrecognised file format: expected a .safetensors file or a torch.save zip "
            f"(the file starts with {data[:8]!r})"
        )
    state_dict = _as_flat_state_dict(loaded)
    _check_finite(state_dict)
    return state_dict


def load_own_checkpoint(data: bytes) -> dict[str, torch.Tensor]:
    """Safetensors bytes that `checkpoint_bytes` wrote, read without the audit of `load_checkpoint`.

    Only for bytes whose origin is known: a service's content-addressed blob store, say, which wrote
    every blob with `checkpoint_bytes` (after `load_checkpoint` accepted the upload, or from a
    reconstruction) and verifies a blob's bytes against its sha256 key when reading it. The header
    audit and the per-tensor finiteness scan cost three times the read itself for small
    checkpoints; check finiteness for a whole batch at once with `first_non_finite`. Never for a
    file a user hands over: that is what `load_checkpoint` is for.
    """
    try:
        return safetensors_load(data)
    except SafetensorError as exc:
        raise InvalidCheckpointError(f"not a safetensors checkpoint written by zooscope: {exc}") from exc


def first_non_finite(state_dicts: list[dict[str, torch.Tensor]]) -> int | None:
    """The index of the first state_dict holding a NaN or infinite value, or None; one scan of all
    of them together (a scan per tensor costs more than the values take to check)."""
    floats = [
        (i, (torch.view_as_real(value) if value.is_complex() else value).reshape(-1))
        for i, state_dict in enumerate(state_dicts)
        for value in state_dict.values()
        if value.is_floating_point() or value.is_complex()
    ]
    if not floats:
        return None
    finite = torch.cat([value for _, value in floats]).isfinite()  # cat promotes mixed dtypes
    if bool(finite.all()):
        return None
    first_bad = int((~finite).nonzero()[0])
    end = 0
    for i, value in floats:
        end += value.numel()
        if first_bad < end:
            return i
    raise AssertionError("unreachable: the bad value lies in one of the tensors")


def save_checkpoint(
    state_dict: Mapping[str, torch.Tensor], path: Path | str, metadata: dict[str, str] | None = None
) -> None:
    """Write `state_dict` as safetensors, with optional string metadata in its header."""
    Path(path).write_bytes(checkpoint_bytes(state_dict, "safetensors", metadata=metadata))


def checkpoint_bytes(
    state_dict: Mapping[str, torch.Tensor],
    format: Literal["safetensors", "pt"] = "safetensors",
    *,
    metadata: dict[str, str] | None = None,
) -> bytes:
    """The bytes of a checkpoint file: safetensors (with metadata) or a torch.save zip."""
    # Independent contiguous copies: safetensors refuses tensors that share storage, and a view's
    # torch.save would otherwise carry its whole base storage.
    tensors = {name: _detached_copy(name, value) for name, value in state_dict.items()}
    if format == "safetensors":
        if metadata is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise TypeError("safetensors metadata must map str to str")
        return _sorted_header(safetensors_save(tensors, metadata=metadata))
    if format == "pt":
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        return buffer.getvalue()
    raise ValueError(f"unknown checkpoint format {format!r}; use 'safetensors' or 'pt'")


def _sorted_header(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted: the safetensors library writes
    metadata from a hash map, in an order that changes from call to call, and the service
    deduplicates made checkpoints by the sha256 of their bytes (a re-run must write the same
    bytes). Offsets count from the end of the header, so only the header changes."""
    length = _declared_header_length(data)
    header = json.loads(data[_SAFETENSORS_PREFIX : _SAFETENSORS_PREFIX + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to a multiple of 8 bytes
    return struct.pack("<Q", len(text)) + text + data[_SAFETENSORS_PREFIX + length :]


def checkpoint_to_torch_bytes(state_dict: Mapping[str, torch.Tensor]) -> bytes:
    """A torch.save zip of `state_dict` (what the public zoos and most users' scripts write)."""
    return checkpoint_bytes(state_dict, "pt")


def read_metadata(source: Path | str | bytes) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none), header checked first.

    From a path only the header is read, so this is cheap on large files.
    """
    if isinstance(source, bytes):
        start, file_size = source[: _SAFETENSORS_PREFIX + _MAX_SAFETENSORS_HEADER], len(source)
    else:
        path = Path(source)
        try:
            with path.open("rb") as handle:
                prefix = handle.read(_SAFETENSORS_PREFIX)
                start = prefix + handle.read(min(_declared_header_length(prefix), _MAX_SAFETENSORS_HEADER))
            file_size = path.stat().st_size
        except OSError as exc:
            raise InvalidCheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not _looks_like_safetensors(start):
        raise InvalidCheckpointError("not a safetensors file; only safetensors files carry metadata")
    header_length = _declared_header_length(start)
    header = start[_SAFETENSORS_PREFIX : _SAFETENSORS_PREFIX + header_length]
    _, metadata = _parse_safetensors_header(
        header, header_length, file_size - _SAFETENSORS_PREFIX - header_length
    )
    return metadata


# ---- reading --------------------------------------------------------------------------------------


def _read_capped(source: Path | str | bytes, max_bytes: int) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        size = len(data)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise InvalidCheckpointError(_too_large(size, max_bytes))
            with path.open("rb") as handle:
                # Read one byte past the cap: a file that grew since stat() is still refused.
                data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise InvalidCheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
        size = len(data)
    if size > max_bytes:
        raise InvalidCheckpointError(_too_large(size, max_bytes))
    if size == 0:
        raise InvalidCheckpointError("the checkpoint file is empty")
    return data


def _too_large(size: int, max_bytes: int) -> str:
    return (
        f"the checkpoint is {size:,} bytes, over the limit of {max_bytes:,} bytes; "
        "zoo checkpoints are far smaller, so check that this is the right file"
    )


def _looks_like_safetensors(data: bytes) -> bool:
    # An 8-byte little-endian header length, then the JSON header, which opens with '{'.
    return len(data) > _SAFETENSORS_PREFIX and data[_SAFETENSORS_PREFIX : _SAFETENSORS_PREFIX + 1] == b"{"


def _parse_safetensors_header(
    header: bytes, header_length: int, data_size: int
) -> tuple[dict[str, dict], dict[str, str]]:
    """Check a safetensors header against the file; return its tensor entries and metadata.

    `data_size` is the number of bytes after the header. Every tensor must have a known dtype, a
    shape of non-negative integers, and data_offsets inside the data region whose span equals
    numel * itemsize; together the tensors must tile the data region with no overlap, gap or
    trailing bytes (as the format requires).
    """
    if header_length > _MAX_SAFETENSORS_HEADER:
        raise InvalidCheckpointError(
            f"safetensors header claims {header_length:,} bytes, which is implausible"
        )
    if data_size < 0 or len(header) != header_length:
        raise InvalidCheckpointError(
            f"safetensors header claims {header_length:,} bytes but the file ends before that: "
            "the file is truncated or not safetensors"
        )
    try:
        parsed = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidCheckpointError(
            f"safetensors header is not valid JSON ({exc}); the file is corrupt"
        ) from exc
    if not isinstance(parsed, dict):
        raise InvalidCheckpointError("safetensors header must be a JSON object")
    metadata = parsed.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InvalidCheckpointError("safetensors __metadata__ must map strings to strings")

    spans: list[tuple[int, int, str]] = []
    for name, entry in parsed.items():
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise InvalidCheckpointError(f"tensor {name!r}: header entry needs dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _SAFETENSORS_DTYPES:
            raise InvalidCheckpointError(
                f"tensor {name!r}: unsupported dtype {dtype!r}; supported: {', '.join(_SAFETENSORS_DTYPES)}"
            )
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise InvalidCheckpointError(
                f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers"
            )
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
            raise InvalidCheckpointError(f"tensor {name!r}: data_offsets {offsets!r} is not [begin, end]")
        begin, end = offsets
        if begin > end or end > data_size:
            raise InvalidCheckpointError(
                f"tensor {name!r}: data_offsets [{begin}, {end}] lie outside the {data_size:,}-byte data "
                "region: the header lies or the file is truncated"
            )
        expected = math.prod(shape) * _SAFETENSORS_DTYPES[dtype][1]
        if end - begin != expected:
            raise InvalidCheckpointError(
                f"tensor {name!r}: shape {shape} of {dtype} needs {expected:,} bytes "
                f"but data_offsets span {end - begin:,}: the header lies about the tensor's size"
            )
        spans.append((begin, end, name))

    position = 0
    for begin, end, name in sorted(spans):
        if begin < position:
            raise InvalidCheckpointError(f"tensor {name!r}: its bytes overlap another tensor's")
        if begin > position:
            raise InvalidCheckpointError(
                f"tensor {name!r}: {begin - position:,} bytes before it belong to no tensor"
            )
        position = end
    if position != data_size:
        raise InvalidCheckpointError(
            f"the file holds {data_size - position:,} bytes after the last tensor that belong to no tensor"
        )
    return parsed, metadata


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _declared_header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:_SAFETENSORS_PREFIX])[0] if len(data) >= _SAFETENSORS_PREFIX else 0


def _load_safetensors(data: bytes) -> dict[str, torch.Tensor]:
    header_length = _declared_header_length(data)
    header = data[_SAFETENSORS_PREFIX : _SAFETENSORS_PREFIX + header_length]
    _parse_safetensors_header(header, header_length, len(data) - _SAFETENSORS_PREFIX - header_length)
    try:
        return safetensors_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:  # defence in depth: header was checked
        raise InvalidCheckpointError(f"safetensors could not read the file: {exc}") from exc


def _load_torch_zip(data: bytes, max_bytes: int) -> object:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise InvalidCheckpointError(
            f"the zip archive is truncated or corrupt ({exc}); upload the complete file"
        ) from exc
    total = 0
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED or entry.compress_size != entry.file_size:
            # torch.save stores entries uncompressed; a compressed one is not torch's and could
            # inflate far beyond the upload's size.
            raise InvalidCheckpointError(
                f"zip entry {entry.filename!r} is compressed, which torch.save never does; " + _RESAVE_HINT
            )
        if entry.flag_bits & 0x1:
            raise InvalidCheckpointError(f"zip entry {entry.filename!r} is encrypted")
        total += entry.file_size
    if total > max_bytes:
        raise InvalidCheckpointError(
            f"the zip's entries add up to {total:,} bytes, over the limit of {max_bytes:,} bytes"
        )
    if not any(e.filename == "data.pkl" or e.filename.endswith("/data.pkl") for e in entries):
        raise InvalidCheckpointError(
            "this zip is not a torch.save file (it has no data.pkl); " + _RESAVE_HINT
        )
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise InvalidCheckpointError(
            "the checkpoint's pickle refers to objects other than tensors and plain containers, "
            f"so it was not loaded ({_refusal_reason(exc)}); save only the state_dict: "
            "torch.save(model.state_dict(), path)"
        ) from exc
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError... for damaged archives
        raise InvalidCheckpointError(
            f"torch could not read the checkpoint ({type(exc).__name__}: {exc}); "
            "the file may be truncated or corrupt"
        ) from exc


def _refusal_reason(exc: pickle.UnpicklingError) -> str:
    """The one sentence of torch's long weights_only message that says what was refused."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        return text.split(marker, 1)[1].strip().split(". ", 1)[0].splitlines()[0]
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


# ---- checking what was read -----------------------------------------------------------------------


def _as_flat_state_dict(loaded: object) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for wrapper in STATE_DICT_WRAPPER_KEYS:
            if isinstance(loaded.get(wrapper), Mapping):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, Mapping):
        raise InvalidCheckpointError(
            f"the checkpoint holds a {type(loaded).__name__}, not a state_dict (a dict of tensors); "
            "save model.state_dict()"
        )
    if not loaded:
        raise InvalidCheckpointError("the checkpoint holds no tensors")
    state_dict: dict[str, torch.Tensor] = {}
    for name, value in loaded.items():
        if not isinstance(name, str):
            raise InvalidCheckpointError(f"state_dict key {name!r} is a {type(name).__name__}, not a string")
        if not isinstance(value, torch.Tensor):
            raise InvalidCheckpointError(
                f"{name!r} holds a {type(value).__name__}, not a tensor: a checkpoint must be a flat "
                "dict of tensors (save model.state_dict())"
            )
        if value.layout != torch.strided or value.is_quantized:
            raise InvalidCheckpointError(f"tensor {name!r} is sparse or quantized; save dense tensors")
        state_dict[name] = value
    return state_dict


def _check_finite(state_dict: dict[str, torch.Tensor]) -> None:
    for name, value in state_dict.items():
        if not (value.is_floating_point() or value.is_complex()):
            continue
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            nan = int(torch.isnan(value).sum())
            inf = int((~finite).sum()) - nan
            raise InvalidCheckpointError(
                f"tensor {name!r} holds {nan} NaN and {inf} infinite values; "
                "the model diverged or the file is damaged"
            )


def _detached_copy(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name!r} is a {type(value).__name__}, not a tensor")
    return value.detach().to("cpu").clone().contiguous()
