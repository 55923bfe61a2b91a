"""ZooscopeClient against the contract double: requests it sends, errors it raises, how it waits."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.client.conftest import API_KEY
from tests.client.servers import free_port
from zooscope.client import ClientConnectionError, ClientError, ClientTimeoutError, ZooscopeClient


@pytest.fixture
def client(contract_url: str):
    with ZooscopeClient(contract_url, key=API_KEY, timeout=5) as c:
        yield c


def test_upload_list_get_download_round_trip(client: ZooscopeClient, checkpoint_file: Path, tmp_path: Path):
    uploaded = client.upload(checkpoint_file)
    assert uploaded["name"] == "model.safetensors"
    assert client.get_checkpoint(uploaded["id"]) == uploaded
    assert uploaded["id"] in [c["id"] for c in client.list_checkpoints(limit=500)["items"]]
    out = client.download(uploaded["id"], tmp_path / "back.pt", format="pt")
    assert out.read_bytes() == checkpoint_file.read_bytes() + b"pt"
    assert not (tmp_path / "back.pt.part").exists()


def test_sends_bearer_key_and_idempotency_key(client: ZooscopeClient, contract_app):
    client.submit("encode", {"checkpoint_ids": [1]}, idempotency_key="abc-1")
    last = contract_app.state.seen_headers[-1]
    assert last["authorization"] == f"Bearer {API_KEY}"
    assert last["idempotency-key"] == "abc-1"


def test_problem_json_becomes_typed_error(client: ZooscopeClient):
    with pytest.raises(ClientError) as info:
        client.get_checkpoint(999_999)
    assert info.value.status == 404
    assert info.value.title == "Not found"
    assert "no checkpoint 999999" in info.value.detail


def test_wrong_key_is_401(contract_url: str):
    with ZooscopeClient(contract_url, key="wrong") as c, pytest.raises(ClientError) as info:
        c.list_jobs()
    assert info.value.status == 401


def test_failed_download_leaves_no_file(client: ZooscopeClient, tmp_path: Path):
    with pytest.raises(ClientError):
        client.download(424_242, tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_wait_reports_progress_until_terminal(client: ZooscopeClient):
    job = client.submit("reconstruct", {"checkpoint_ids": [1]})
    seen: list[tuple[str, float]] = []
    final = client.wait(
        job["id"], timeout=10, progress=lambda j: seen.append((j["state"], j["progress"])), poll_initial=0.01
    )
    assert final["state"] == "succeeded"
    assert seen[0][0] == "running" and seen[-1] == ("succeeded", 1.0)
    assert [p for _, p in seen] == sorted(p for _, p in seen)  # progress never goes backwards


def test_wait_returns_failed_job_without_raising(client: ZooscopeClient):
    job = client.submit("reconstruct", {"checkpoint_ids": [1], "outcome": "failed"})
    final = client.wait(job["id"], timeout=10, poll_initial=0.01)
    assert final["state"] == "failed" and final["error"] == "stub failure"


def test_wait_times_out(client: ZooscopeClient):
    job = client.submit("reconstruct", {"checkpoint_ids": [1], "outcome": "never"})
    with pytest.raises(ClientTimeoutError, match="still running"):
        client.wait(job["id"], timeout=0.3, poll_initial=0.05)


def test_connection_refused_is_connection_error():
    with ZooscopeClient(f"http://127.0.0.1:{free_port()}") as c, pytest.raises(ClientConnectionError):
        c.health()


def test_read_timeout_is_timeout_error():
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with ZooscopeClient("http://zooscope.invalid", transport=httpx.MockTransport(slow)) as c:
        with pytest.raises(ClientTimeoutError):
            c.list_jobs()


def test_submit_follows_location_when_body_lacks_the_job():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": "/api/v1/jobs/7"})
        assert request.url.path == "/api/v1/jobs/7"
        return httpx.Response(200, json={"id": 7, "state": "queued"})

    with ZooscopeClient("http://zooscope.invalid", transport=httpx.MockTransport(handler)) as c:
        assert c.submit("encode", {})["id"] == 7


def test_non_json_error_body_is_kept_readable():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    with ZooscopeClient("http://zooscope.invalid", transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(ClientError) as info:
            c.list_jobs()
    assert info.value.status == 502 and "Bad Gateway" in info.value.detail


def test_validation_error_detail_is_flattened():
    body = {"detail": [{"loc": ["body", "kind"], "msg": "field required", "type": "missing"}]}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json=body)

    with ZooscopeClient("http://zooscope.invalid", transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(ClientError) as info:
            c.submit("encode", {})
    assert info.value.detail == "body.kind: field required"
