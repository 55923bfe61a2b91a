"""ZooscopeClient.upload_zoo_archive and `zooscope client zoos upload` against the real API over
real HTTP (no worker: the job stays queued; tests/worker/test_worker_zoo_archives.py runs one)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.client.servers import serve_in_thread
from zooscope.cli import app
from zooscope.client import ClientError, ZooscopeClient
from zooscope.networks.architectures import Architecture


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from app.main import create_app
    from app.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("zooscope-zoo-archives"))
    with serve_in_thread(create_app(settings)) as url:
        yield url, settings.archive_dir


def _zoo_zip(path: Path, *extra: tuple[str, bytes]) -> Path:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(Architecture("cnn_s", 1, 28).build().state_dict(), buffer)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model_a/params.json", json.dumps({"model::nlin": "relu"}))
        archive.writestr("model_a/checkpoint_000001/checkpoints", buffer.getvalue())
        for name, data in extra:
            archive.writestr(name, data)
    return path


def test_upload_zoo_archive_returns_the_import_job(service: tuple[str, Path], tmp_path: Path) -> None:
    url, archive_dir = service
    with ZooscopeClient(url) as client:
        job = client.upload_zoo_archive(_zoo_zip(tmp_path / "small.zip"), name="small", dataset="mnist")
        assert job["kind"] == "import_zoo" and job["state"] == "queued"
        assert job["params"]["name"] == "small" and job["params"]["dataset"] == "mnist"
        assert (archive_dir / job["params"]["archive_id"] / "model_a" / "params.json").is_file()
        assert client.get_job(job["id"])["id"] == job["id"]


def test_a_refused_archive_is_a_client_error_naming_the_entry(
    service: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = service
    bad = _zoo_zip(tmp_path / "bad.zip", ("../escape.txt", b"x"))
    with ZooscopeClient(url) as client, pytest.raises(ClientError) as caught:
        client.upload_zoo_archive(bad)
    assert caught.value.status == 422
    assert "../escape.txt" in str(caught.value)


def test_cli_zoos_upload_prints_the_job_id(service: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = service
    result = CliRunner().invoke(
        app, ["client", "--url", url, "zoos", "upload", str(_zoo_zip(tmp_path / "cli.zip")), "--name", "cli"]
    )
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip().splitlines()[-1]
    with ZooscopeClient(url) as client:
        assert client.get_job(job_id)["params"]["name"] == "cli"
    hostile = _zoo_zip(tmp_path / "hostile.zip", ("model_a/inner.zip", b"PK\x05\x06" + bytes(18)))
    bad = CliRunner().invoke(app, ["client", "--url", url, "zoos", "upload", str(hostile)])
    assert bad.exit_code == 3, bad.output  # the API's error, on stderr
    assert "model_a/inner.zip" in bad.output
