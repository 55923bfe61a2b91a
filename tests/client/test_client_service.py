"""The client and the CLI against the real API (app.main.create_app with SQLite, served by uvicorn
in a thread): uploads, listing, downloads, deletes and the API's errors, over real HTTP. No worker
runs here; job completion is covered against the real worker by tests/browser/."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.client.servers import serve_in_thread
from zooscope.cli import app
from zooscope.client import ClientError, ZooscopeClient
from zooscope.networks.architectures import candidate_architectures, reference_state_dict
from zooscope.networks.checkpoints import checkpoint_to_torch_bytes, load_checkpoint, save_checkpoint

MAX_BYTES = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from app.main import create_app
    from app.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("zooscope-client"))
    with serve_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)  # a fresh module's weights: any valid checkpoint of a known family will do
    return reference_state_dict(candidate_architectures()[0])


@pytest.fixture
def client(service_url: str) -> Iterator[ZooscopeClient]:
    with ZooscopeClient(service_url, timeout=30) as c:
        yield c


@pytest.fixture
def safetensors_file(tmp_path: Path, state_dict) -> Path:
    path = tmp_path / "fresh.safetensors"
    save_checkpoint(state_dict, path)
    return path


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_upload_records_sha256_and_architecture(client: ZooscopeClient, safetensors_file: Path):
    uploaded = client.upload(safetensors_file)
    # sha256 is of the stored (re-serialised) file; upload_sha256 of the bytes as sent.
    assert uploaded["upload_sha256"] == hashlib.sha256(safetensors_file.read_bytes()).hexdigest()
    assert candidate_architectures()[0].family in json.dumps(uploaded["architecture"])
    assert client.get_checkpoint(uploaded["id"])["sha256"] == uploaded["sha256"]
    assert uploaded["id"] in [c["id"] for c in client.list_checkpoints(limit=100)["items"]]


def test_same_bytes_twice_is_one_checkpoint(client: ZooscopeClient, safetensors_file: Path):
    assert client.upload(safetensors_file)["id"] == client.upload(safetensors_file)["id"]


def test_torch_upload_and_downloads_round_trip(client: ZooscopeClient, tmp_path: Path, state_dict):
    uploaded = client.upload(checkpoint_to_torch_bytes(state_dict), name="fresh.pt")
    for fmt in ("safetensors", "pt"):
        out = client.download(uploaded["id"], tmp_path / f"back.{fmt}", format=fmt)
        assert _same(load_checkpoint(out, max_bytes=MAX_BYTES), state_dict)


def test_invalid_upload_is_a_problem(client: ZooscopeClient):
    with pytest.raises(ClientError) as info:
        client.upload(b"this is not a checkpoint", name="junk.safetensors")
    assert 400 <= info.value.status < 500
    assert info.value.detail  # the service says what is wrong


def test_unknown_ids_are_404(client: ZooscopeClient, tmp_path: Path):
    for call in (
        lambda: client.get_checkpoint("no-such-id"),
        lambda: client.get_job("no-such-id"),
        lambda: client.download("no-such-id", tmp_path / "x"),
    ):
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.status == 404
    assert not (tmp_path / "x").exists()


def test_delete_removes_the_checkpoint(client: ZooscopeClient, tmp_path: Path):
    path = tmp_path / "other.safetensors"
    torch.manual_seed(1)
    save_checkpoint(reference_state_dict(candidate_architectures()[0]), path)
    uploaded = client.upload(path)
    client.delete_checkpoint(uploaded["id"])
    with pytest.raises(ClientError) as info:
        client.get_checkpoint(uploaded["id"])
    assert info.value.status == 404


def test_cli_against_the_service(service_url: str, safetensors_file: Path, tmp_path: Path):
    runner = CliRunner()
    env = {"ZOOSCOPE_URL": service_url}
    result = runner.invoke(app, ["client", "upload", str(safetensors_file), "--json"], env=env)
    assert result.exit_code == 0, result.output
    checkpoint_id = str(json.loads(result.stdout)[0]["id"])
    out = tmp_path / "cli.safetensors"
    result = runner.invoke(app, ["client", "download", checkpoint_id, "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    original = load_checkpoint(safetensors_file, max_bytes=MAX_BYTES)
    assert _same(load_checkpoint(out, max_bytes=MAX_BYTES), original)
    listed = runner.invoke(app, ["client", "jobs", "--json"], env=env)
    assert listed.exit_code == 0 and "items" in json.loads(listed.stdout)
    missing = runner.invoke(app, ["client", "report", "no-such-job"], env=env)
    assert missing.exit_code == 3 and "404" in missing.stderr
