"""Zoo archives a user uploads (.zip, .tar.gz): hostile until every entry has been checked.

`unpack_archive` works in three passes over the archive, which is a temp file of the upload:
1. the table of entries (zip: the central directory; tar: the headers), before any byte of
   content is read: names (no absolute paths, `..`, backslashes, control characters or non-UTF-8
   bytes; no duplicates, no name both a file and a folder), types (files and folders only: no
   symlinks, hard links, devices, FIFOs, sparse files; no encrypted zip entries), the number of
   entries and their declared total size against the caps, nested archives by name, and the zoo
   layout (ours, with manifest.json, or the public Model Zoos one, with model folders holding
   params.json);
2. the content, read and counted but written nowhere: a total past the cap stops the read (a
   deflate bomb lies about its sizes), an entry that holds more than it declares is refused, an
   archive inside is refused by its magic bytes too, and every pickle is audited: a raw pickle
   whose opcodes import or call anything is refused here, a torch zip goes to the caller's
   `audit` (the service passes one built on zooscope.networks.checkpoints.load_checkpoint, so
   this module needs no torch), which names a pickle that would run code;
3. only then the files are written, each to an explicit join under a hidden staging folder
   beside the destination (checked to stay inside it, opened with O_EXCL|O_NOFOLLOW), counted
   again, and the staging folder is renamed into place; any failure removes it.
Each refusal is an `ArchiveRefused` with a problem type, a status and the entry it is about.
"""

from __future__ import annotations

import os
import pickletools
import re
import shutil
import stat
import tarfile
import time
import unicodedata
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from app.job_kinds import ARCHIVE_ID_PATTERN

ArchiveFormat = Literal["zip", "tar.gz"]
ZooLayout = Literal["zooscope", "public"]
# audit(entry name, the file's bytes) -> why the file is refused (a pickle that would run code),
# or None: accepted, or left to the import (which skips a model whose checkpoint it cannot load).
CheckpointAudit = Callable[[str, bytes], str | None]

CHUNK = 1 << 20
MAX_NAME_CHARS = 1024
MAX_COMPONENT_CHARS = 255
SNIFF_BYTES = 512
IGNORED_TOPS = {"__MACOSX", ".DS_Store"}  # what macOS's archiver adds beside a zoo's folder
NESTED_SUFFIXES = (
    ".zip", ".tar", ".gz", ".tgz", ".bz2", ".tbz", ".tbz2", ".xz", ".txz", ".zst", ".tzst", ".lz",
    ".lzma", ".lz4", ".7z", ".rar", ".jar", ".whl", ".cpio", ".ar", ".z",
)  # fmt: skip
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_ARCHIVE_MAGIC = (
    b"\x1f\x8b",  # gzip
    b"BZh",  # bzip2
    b"\xfd7zXZ\x00",  # xz
    b"\x28\xb5\x2f\xfd",  # zstd
    b"7z\xbc\xaf\x27\x1c",  # 7z
    b"Rar!\x1a\x07",  # rar
    b"\x04\x22\x4d\x18",  # lz4
)
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
# Pickle opcodes that import a global or call one: a pickle without them only builds plain data.
_CODE_OPCODES = {
    "GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "REDUCE", "BUILD", "EXT1",
    "EXT2", "EXT4",
}  # fmt: skip
_DRIVE = re.compile(r"^[A-Za-z]:")
# An upload's folder under the archives' folder, or its staging folder (`_write_all`).
_FOLDER_NAME = re.compile(rf"(?P<staging>\.)?(?P<id>{ARCHIVE_ID_PATTERN.strip('^$')})(?(staging)\.partial)")


class ArchiveRefused(ValueError):
    """Why an archive is not unpacked: `kind` is the problem type, `entry` the entry's name."""

    def __init__(self, kind: str, detail: str, *, entry: str | None = None, status: int = 422) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.entry = entry
        self.status = status


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int
    max_unpacked_bytes: int
    max_checkpoint_bytes: int  # a pickle or torch zip inside is read whole for its audit


@dataclass(frozen=True)
class Entry:
    name: str  # normalised: relative, "/"-separated, no "." or ".." parts
    is_dir: bool
    size: int  # as declared by the archive
    ref: Any  # the ZipInfo or TarInfo


@dataclass(frozen=True)
class UnpackedArchive:
    folder: Path  # what was written: the destination
    root: Path  # the zoo inside it (a single wrapping folder is looked through)
    layout: ZooLayout
    n_files: int
    unpacked_bytes: int


# ---- the whole job ---------------------------------------------------------------------------------


def new_archive_id() -> str:
    return uuid.uuid4().hex


def archive_folder(archive_dir: Path, archive_id: str) -> Path:
    """The folder of one uploaded archive: `archive_dir`/<id>, the id checked (32 hex digits)."""
    if not re.fullmatch(ARCHIVE_ID_PATTERN, archive_id):
        raise ValueError(f"{archive_id!r} is not an archive id")
    base = Path(archive_dir).resolve()
    folder = (base / archive_id).resolve()
    if folder.parent != base:  # the id's folder was swapped for a link
        raise ValueError(f"the folder of archive {archive_id} leads outside {base}")
    return folder


@dataclass(frozen=True)
class ArchiveFolder:
    """A folder under the archives' folder: an unpacked upload, or the hidden staging folder
    (`.<id>.partial`) of an unpack that has not finished (or whose process died)."""

    archive_id: str
    path: Path
    staging: bool
    age_s: float  # since it last changed (a rename into place counts)


def archive_folders(archive_dir: Path) -> list[ArchiveFolder]:
    """Every unpacked upload and staging folder under `archive_dir`; anything else is not ours
    and is left out."""
    if not archive_dir.is_dir():
        return []
    now = time.time()
    found = []
    for path in archive_dir.iterdir():
        match = _FOLDER_NAME.fullmatch(path.name)
        if match is None or path.is_symlink() or not path.is_dir():
            continue
        try:
            info = path.stat()
        except FileNotFoundError:  # removed meanwhile (its job ended, or another sweep)
            continue
        age = now - max(info.st_mtime, info.st_ctime)
        found.append(ArchiveFolder(match["id"], path, match["staging"] is not None, age))
    return found


def detect_format(path: Path) -> ArchiveFormat:
    """By content, never by the file name: a zip or a gzip stream (which must hold a tar)."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    raise ArchiveRefused(
        "unsupported-archive-format",
        "the upload is neither a .zip nor a .tar.gz archive (judged by its first bytes)",
        status=415,
    )


def unpack_archive(
    archive: Path, dest: Path, limits: ArchiveLimits, audit: CheckpointAudit | None = None
) -> UnpackedArchive:
    """Check every entry of `archive`, then write it to `dest` (which must not exist); see the
    module's docstring. Nothing is left behind when it raises."""
    if dest.exists():
        raise FileExistsError(dest)
    fmt = detect_format(archive)
    with _open(archive, fmt) as reader:
        entries = reader.entries(limits)
        prefix, layout = locate_zoo({entry.name for entry in entries if not entry.is_dir})
        total = 0
        for entry in entries:  # pass 2: read, count, sniff and audit; write nothing
            if not entry.is_dir:
                total = _check_content(reader, entry, total, limits, audit)
        written = _write_all(reader, entries, dest, limits)
    root = dest.joinpath(*prefix) if prefix else dest
    n_files = sum(not entry.is_dir for entry in entries)
    return UnpackedArchive(dest, root, layout, n_files, written)


# ---- pass 1: the table of entries --------------------------------------------------------------------


def normalise_name(raw: str) -> str | None:
    """The entry's relative path, or ArchiveRefused; None for the archive's own root ("./")."""
    shown = _shown(raw)
    if any("\udc80" <= c <= "\udcff" for c in raw):
        raise ArchiveRefused(
            "archive-invalid-name", f"entry {shown}: its name is not valid UTF-8", entry=shown
        )
    if any(unicodedata.category(c) == "Cc" for c in raw):
        raise _unsafe(shown, "its name contains control characters")
    if "\\" in raw:
        raise _unsafe(shown, "its name contains a backslash (a Windows path separator)")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise _unsafe(shown, "it has an absolute path")
    if len(raw) > MAX_NAME_CHARS:
        raise _unsafe(shown[:80] + "...", f"its name is over {MAX_NAME_CHARS} characters")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _unsafe(shown, "its path contains '..' (it would be written outside the archive's folder)")
    if any(len(part) > MAX_COMPONENT_CHARS for part in parts):
        raise _unsafe(shown, f"a part of its path is over {MAX_COMPONENT_CHARS} characters")
    return "/".join(parts) if parts else None


def _check_table(entries: list[Entry]) -> None:
    files: set[str] = set()
    dirs: set[str] = set()
    for entry in entries:
        if entry.is_dir:
            if entry.name in files:
                raise _duplicate(entry.name)
            dirs.add(entry.name)
        else:
            if entry.name in files or entry.name in dirs:
                raise _duplicate(entry.name)
            files.add(entry.name)
            suffix = os.path.splitext(entry.name)[1].lower()
            if suffix in NESTED_SUFFIXES or entry.name.lower().endswith(".tar.gz"):
                raise _nested(entry.name, f"its name ends in {suffix!r}")
    for name in files:  # a file that is also some entry's folder
        for parent in _parents(name):
            if parent in files:
                raise _duplicate(parent)


def locate_zoo(files: set[str]) -> tuple[tuple[str, ...], ZooLayout]:
    """Where the zoo lies among `files` (relative paths), and its layout; a single folder that
    wraps it (`zip -r myzoo.zip myzoo/`) is looked through."""
    prefix: tuple[str, ...] = ()
    paths = [tuple(name.split("/")) for name in files]
    for _ in range(8):
        below = [p[len(prefix) :] for p in paths if p[: len(prefix)] == prefix]
        if ("manifest.json",) in below:
            return prefix, "zooscope"
        if any(len(p) == 2 and p[1] == "params.json" for p in below):
            return prefix, "public"
        tops = {p[0] for p in below if len(p) > 1} - IGNORED_TOPS
        if len(tops) != 1 or any(len(p) == 1 and p[0] not in IGNORED_TOPS for p in below):
            break
        prefix = (*prefix, tops.pop())
    raise ArchiveRefused(
        "archive-not-a-zoo",
        "the archive holds neither a zooscope zoo (manifest.json, models.json, checkpoints/) nor a "
        "zoo in the public Model Zoos layout (one folder per model, each with params.json and "
        "checkpoint_<epoch>/checkpoints); put the zoo's folder, or its contents, at the archive's top",
    )


def locate_zoo_in(folder: Path) -> tuple[Path, ZooLayout]:
    """`locate_zoo` on a folder unpacked before (the worker's side)."""
    files = {
        str(Path(dirpath, name).relative_to(folder)).replace(os.sep, "/")
        for dirpath, _, names in os.walk(folder)
        for name in names
    }
    prefix, layout = locate_zoo(files)
    return folder.joinpath(*prefix), layout


def _check_counts(n: int, declared: int, limits: ArchiveLimits, entry: str) -> None:
    if n > limits.max_entries:
        raise ArchiveRefused(
            "archive-too-many-entries",
            f"the archive has more than {limits.max_entries:,} entries (ZOOSCOPE_MAX_ARCHIVE_ENTRIES); "
            f"stopped at {entry}",
            entry=entry,
            status=413,
        )
    if declared > limits.max_unpacked_bytes:
        raise _too_large(entry, limits, "declares")


# ---- pass 2: the content -----------------------------------------------------------------------------


def _check_content(
    reader: _Reader, entry: Entry, total: int, limits: ArchiveLimits, audit: CheckpointAudit | None
) -> int:
    kept = bytearray()  # the first bytes; all of them for a pickle or a zip, for its audit
    keeping: bool | None = None  # decided once the first SNIFF_BYTES are in
    size = 0
    for chunk in reader.read(entry):
        size += len(chunk)
        total += len(chunk)
        if total > limits.max_unpacked_bytes:
            raise _too_large(entry.name, limits, "unpacks to")
        if size > entry.size:
            raise _unsafe(entry.name, f"it holds more bytes than the {entry.size:,} it declares")
        if keeping is not False:
            kept += chunk
        if keeping is None and len(kept) >= SNIFF_BYTES:
            keeping = _decide(entry.name, bytes(kept[:SNIFF_BYTES]))
            if not keeping:
                kept.clear()
        if keeping and size > limits.max_checkpoint_bytes:
            raise ArchiveRefused(
                "archive-too-large",
                f"entry {entry.name}: a pickle or torch file of over {limits.max_checkpoint_bytes:,} "
                "bytes (ZOOSCOPE_MAX_UPLOAD_BYTES)",
                entry=entry.name,
                status=413,
            )
    if size != entry.size:
        raise _unsafe(entry.name, f"it holds {size:,} bytes but declares {entry.size:,}")
    if keeping is None:  # a small file: decided on all of it
        keeping = _decide(entry.name, bytes(kept))
    if keeping and kept:
        data = bytes(kept)
        if _is_zip(data):
            if not _is_torch_zip(data):
                raise _nested(entry.name, "it is a zip archive (and not a torch.save checkpoint)")
            reason = audit(entry.name, data) if audit is not None else None
        else:
            reason = pickle_runs_code(data)
        if reason:
            raise ArchiveRefused(
                "archive-unsafe-checkpoint",
                f"entry {entry.name}: a pickle that would run code when loaded ({reason}); "
                "save only state_dicts (torch.save(model.state_dict(), path)) or safetensors",
                entry=entry.name,
            )
    return total


def _decide(name: str, head: bytes) -> bool:
    """True: a zip or a pickle, kept whole for its audit; refuses another kind of archive."""
    if _is_zip(head) or _is_pickle(head):
        return True
    _refuse_nested_magic(name, head)
    return False


def pickle_runs_code(data: bytes) -> str | None:
    """Why a raw pickle would import or call something when loaded, or None; never unpickles."""
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in _CODE_OPCODES:
                return f"opcode {opcode.name}" + (f" {arg!r}" if arg is not None else "")
    except Exception:  # noqa: BLE001 - not (all) a pickle: nothing loads it as one
        return None
    return None


def _is_zip(head: bytes) -> bool:
    return head.startswith(_ZIP_MAGIC)


def _is_pickle(head: bytes) -> bool:
    # Protocol 2+ starts with PROTO; safetensors' 8-byte length may start with 0x80, then "{".
    return head.startswith(b"\x80") and head[8:9] != b"{"


def _is_torch_zip(data: bytes) -> bool:
    import io

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            return any(n == "data.pkl" or n.endswith("/data.pkl") for n in inner.namelist())
    except (zipfile.BadZipFile, ValueError, EOFError, UnicodeDecodeError):
        return True  # a damaged torch file: the audit (or the import) refuses it, it is no archive


def _refuse_nested_magic(name: str, head: bytes) -> None:
    if head.startswith(_ARCHIVE_MAGIC) or head[257:262] == b"ustar":
        raise _nested(name, "its content is a compressed file or an archive")


# ---- pass 3: writing ---------------------------------------------------------------------------------


def _write_all(reader: _Reader, entries: list[Entry], dest: Path, limits: ArchiveLimits) -> int:
    staging = dest.parent / f".{dest.name}.partial"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    base = staging.resolve()
    total = 0
    try:
        for entry in entries:
            target = _join(base, entry.name)
            if entry.is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.parent.resolve() != target.parent or not target.parent.is_relative_to(base):
                raise _unsafe(entry.name, "its folder leads outside the archive's folder")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            with os.fdopen(os.open(target, flags, 0o644), "wb") as out:
                for chunk in reader.read(entry):
                    total += len(chunk)
                    if total > limits.max_unpacked_bytes:
                        raise _too_large(entry.name, limits, "unpacks to")
                    out.write(chunk)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return total


def _join(base: Path, name: str) -> Path:
    target = base.joinpath(*name.split("/"))
    if not target.is_relative_to(base) or target == base:
        raise _unsafe(name, "it would be written outside the archive's folder")
    return target


# ---- readers -------------------------------------------------------------------------------------------


class _Reader:
    def entries(self, limits: ArchiveLimits) -> list[Entry]:
        raise NotImplementedError

    def read(self, entry: Entry) -> Iterator[bytes]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open(path: Path, fmt: ArchiveFormat) -> _Reader:
    return _ZipReader(path) if fmt == "zip" else _TarReader(path)


class _ZipReader(_Reader):
    def __init__(self, path: Path) -> None:
        try:
            self.zip = zipfile.ZipFile(path)
        except UnicodeDecodeError as exc:
            raise ArchiveRefused(
                "archive-invalid-name",
                f"an entry's name is marked UTF-8 but is not: {exc.object[:80]!r}",
                entry=exc.object[:80].decode("utf-8", "backslashreplace"),
            ) from exc
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            raise ArchiveRefused("invalid-archive", f"the zip archive is damaged: {exc}") from exc

    def entries(self, limits: ArchiveLimits) -> list[Entry]:
        infos = self.zip.infolist()
        entries: list[Entry] = []
        declared = 0
        for n, info in enumerate(infos, 1):
            raw = info.orig_filename
            if not info.flag_bits & 0x800:  # not marked UTF-8: zipfile read it as cp437
                try:
                    raw = raw.encode("cp437").decode("utf-8")
                except UnicodeEncodeError:
                    pass
                except UnicodeDecodeError:
                    shown = raw.encode("cp437").decode("utf-8", "backslashreplace")
                    raise ArchiveRefused(
                        "archive-invalid-name", f"entry {shown}: its name is not valid UTF-8", entry=shown
                    ) from None
            name = normalise_name(raw)
            declared += info.file_size
            _check_counts(n, declared, limits, name or raw)
            mode = info.external_attr >> 16  # st_mode, when made on Unix; a type of 0: a file
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "a device file, FIFO or socket"
                raise _unsafe(name or raw, f"it is {kind}")
            if info.flag_bits & 0x1:
                raise _unsafe(name or raw, "it is encrypted")
            if info.compress_type not in _ZIP_METHODS:
                raise ArchiveRefused(
                    "invalid-archive",
                    f"entry {name}: compression method {info.compress_type} is not supported "
                    "(use stored or deflate)",
                    entry=name,
                )
            if name is None:
                continue
            entries.append(Entry(name, info.is_dir(), info.file_size, info))
        _check_table(entries)
        return entries

    def read(self, entry: Entry) -> Iterator[bytes]:
        try:
            with self.zip.open(entry.ref) as handle:
                yield from _chunks(handle)
        except ArchiveRefused:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
            raise ArchiveRefused(
                "invalid-archive", f"entry {entry.name}: cannot be read ({exc})", entry=entry.name
            ) from exc

    def close(self) -> None:
        self.zip.close()


class _TarReader(_Reader):
    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path, mode="r:gz", encoding="utf-8", errors="surrogateescape")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveRefused(
                "invalid-archive", f"the .tar.gz archive is damaged or not a tar: {exc}"
            ) from exc

    def entries(self, limits: ArchiveLimits) -> list[Entry]:
        entries: list[Entry] = []
        declared = 0
        n = 0
        while True:
            try:
                member = self.tar.next()  # headers only: a member's data is skipped, not kept
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise ArchiveRefused("invalid-archive", f"the tar archive is damaged: {exc}") from exc
            if member is None:
                break
            n += 1
            name = normalise_name(member.name)
            shown = name or member.name
            declared += member.size
            _check_counts(n, declared, limits, shown)
            if member.issym() or member.islnk():
                kind = "a symbolic link" if member.issym() else "a hard link"
                raise _unsafe(shown, f"it is {kind} (to {member.linkname!r})")
            if member.ischr() or member.isblk() or member.isfifo():
                raise _unsafe(shown, "it is a device file or FIFO")
            if member.issparse() or getattr(member, "sparse", None) is not None:
                raise _unsafe(shown, "it is a sparse file")
            if not (member.isfile() or member.isdir()):
                raise _unsafe(shown, f"its tar entry type {member.type!r} is not a file or folder")
            if name is None:
                continue
            entries.append(Entry(name, member.isdir(), member.size, member))
        if not entries:
            raise ArchiveRefused("invalid-archive", "the archive is empty")
        _check_table(entries)
        return entries

    def read(self, entry: Entry) -> Iterator[bytes]:
        try:
            handle = self.tar.extractfile(entry.ref)
            if handle is None:
                raise _unsafe(entry.name, "it is not a regular file")
            with handle:
                yield from _chunks(handle)
        except ArchiveRefused:
            raise
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveRefused(
                "invalid-archive", f"entry {entry.name}: cannot be read ({exc})", entry=entry.name
            ) from exc

    def close(self) -> None:
        self.tar.close()


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


# ---- helpers -------------------------------------------------------------------------------------------


def _parents(name: str) -> Iterator[str]:
    parts = name.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def _shown(raw: str) -> str:
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")[:MAX_NAME_CHARS]


def _unsafe(name: str, why: str) -> ArchiveRefused:
    return ArchiveRefused("archive-unsafe-entry", f"entry {name}: {why}", entry=name)


def _duplicate(name: str) -> ArchiveRefused:
    return ArchiveRefused(
        "archive-duplicate-entry",
        f"entry {name}: the archive holds this name twice (or as both a file and a folder)",
        entry=name,
    )


def _nested(name: str, why: str) -> ArchiveRefused:
    return ArchiveRefused(
        "archive-nested-archive",
        f"entry {name}: an archive inside the archive is not unpacked ({why}); unpack it first",
        entry=name,
    )


def _too_large(name: str, limits: ArchiveLimits, verb: str) -> ArchiveRefused:
    return ArchiveRefused(
        "archive-too-large",
        f"the archive {verb} more than {limits.max_unpacked_bytes:,} bytes "
        f"(ZOOSCOPE_MAX_ARCHIVE_UNPACKED_BYTES); stopped at entry {name}",
        entry=name,
        status=413,
    )
