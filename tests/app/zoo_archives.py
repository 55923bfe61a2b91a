"""Zoo archives for the upload tests: good ones (a small public-layout zoo, zipped or tarred) and
the pieces of hostile ones (entries written as given, names and types included)."""

from __future__ import annotations

import io
import json
import tarfile
import warnings
import zipfile
from pathlib import Path

import torch

from zooscope.networks.architectures import Architecture

ARCH = Architecture("cnn_s", 1, 28)
PARAMS = {"model::nlin": "relu", "model::init_type": "kaiming_uniform", "seed": 1,
          "dataset::dump": "/data/mnist/dataset.pt"}  # fmt: skip


def checkpoint_pt(seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.save({k: v.detach().clone() for k, v in ARCH.build().state_dict().items()}, buffer)
    return buffer.getvalue()


def minimal_zoo(prefix: str = "") -> list[tuple[str, bytes]]:
    """One model folder in the public layout: enough for an archive to pass the layout check."""
    return [
        (f"{prefix}model_a/params.json", json.dumps(PARAMS).encode()),
        (f"{prefix}model_a/checkpoint_000001/checkpoints", checkpoint_pt()),
    ]


def folder_files(root: Path) -> list[tuple[str, bytes]]:
    return [(str(p.relative_to(root)), p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


def make_zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    # The catalogue writes duplicate names on purpose; zipfile warns about each.
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
        for name, data in entries:
            archive.writestr(name, data)
    return out.getvalue()


def zip_with_mode(name: str, data: bytes, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: external_attr's high half is st_mode
    info.external_attr = mode << 16
    return info


def make_tar(entries: list[tuple[str | tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out, mode="w:gz", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape"
    ) as archive:
        for name, data in entries:
            info = name if isinstance(name, tarfile.TarInfo) else tarfile.TarInfo(name)
            if data is not None:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(info)
    return out.getvalue()


def tar_info(name: str, type_: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    return info


def archive_of(fmt: str, entries: list[tuple[str, bytes]]) -> bytes:
    return make_zip(list(entries)) if fmt == "zip" else make_tar(list(entries))


# Folders an upload may create empty and leave: the temp folder and the archives' parent.
SERVICE_FOLDERS = {"data/tmp", "data/archives"}


def tree(root: Path) -> set[str]:
    """Every path under `root` (files and folders), to compare before and after."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*")} - SERVICE_FOLDERS
