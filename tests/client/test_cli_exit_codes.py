"""`zooscope client` exit codes, as scripts rely on them: 0 ok, 1 job failed/cancelled, 2 usage,
3 HTTP/API error, 4 connection error, 5 timeout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.client.conftest import API_KEY
from tests.client.servers import free_port
from zooscope.cli import app

runner = CliRunner()


@pytest.fixture
def cli(contract_url: str):
    def invoke(*args: str, env: dict[str, str] | None = None):
        env = {"ZOOSCOPE_URL": contract_url, "ZOOSCOPE_API_KEY": API_KEY, **(env or {})}
        return runner.invoke(app, ["client", *args], env=env)

    return invoke


def _submit(cli, *extra: str) -> str:
    result = cli("submit", "reconstruct", "-c", "1", *extra)
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def test_upload_then_list_and_download(cli, checkpoint_file: Path, tmp_path: Path):
    result = cli("upload", str(checkpoint_file), "--json")
    assert result.exit_code == 0, result.output
    uploaded = json.loads(result.stdout)
    assert uploaded[0]["name"] == "model.safetensors"
    listed = cli("checkpoints", "--json", "--limit", "500")
    assert uploaded[0]["id"] in [c["id"] for c in json.loads(listed.stdout)["items"]]
    out = tmp_path / "copy.safetensors"
    assert cli("download", str(uploaded[0]["id"]), "--out", str(out)).exit_code == 0
    assert out.read_bytes().startswith(b"SAFE")


def test_submit_wait_report_succeeded(cli):
    job_id = _submit(cli, "-p", "autoencoder_id=3")
    assert cli("wait", job_id).exit_code == 0
    table = cli("report", job_id)
    assert table.exit_code == 0 and "agreement" in table.stdout
    data = json.loads(cli("report", job_id, "--json").stdout)
    assert data["items"][0]["checkpoint_id"] == "1"


def test_params_are_parsed_as_json_when_they_parse(cli, contract_app):
    job_id = _submit(cli, "-p", "n=3", "-p", "name=abc", "-p", "flags=[1,2]")
    job = json.loads(cli("jobs", "--json", "--limit", "500").stdout)["items"]
    params = next(j for j in job if str(j["id"]) == job_id)["params"]
    assert params == {"n": 3, "name": "abc", "flags": [1, 2], "checkpoint_ids": ["1"]}


def test_failed_job_exits_1(cli):
    job_id = _submit(cli, "-p", "outcome=failed")
    result = cli("wait", job_id)
    assert result.exit_code == 1
    assert "failed" in result.stderr and "stub failure" in result.stderr


def test_cancelled_job_exits_1(cli):
    job_id = _submit(cli, "-p", "outcome=never")
    assert cli("cancel", job_id).exit_code == 0
    assert cli("wait", job_id).exit_code == 1


def test_submit_with_wait_exits_with_job_outcome(cli):
    assert cli("submit", "reconstruct", "-c", "1", "--wait").exit_code == 0
    assert cli("submit", "reconstruct", "-c", "1", "-p", "outcome=failed", "--wait").exit_code == 1


def test_usage_error_exits_2(cli):
    assert cli("submit", "reconstruct", "-p", "no-equals-sign").exit_code == 2
    assert cli("download", "1").exit_code == 2  # --out is required
    assert cli("download", "1", "--out", "x", "--format", "zip").exit_code == 2


def test_api_error_exits_3(cli):
    result = cli("report", "987654")
    assert result.exit_code == 3
    assert "HTTP 409" in result.stderr and "job 987654 has no report" in result.stderr
    assert cli("submit", "not-a-kind").exit_code == 3
    assert cli("jobs", env={"ZOOSCOPE_API_KEY": "wrong"}).exit_code == 3


def test_connection_error_exits_4(cli):
    result = cli("jobs", env={"ZOOSCOPE_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.exit_code == 4
    assert "cannot reach" in result.stderr


def test_wait_timeout_exits_5(cli):
    job_id = _submit(cli, "-p", "outcome=never")
    result = cli("wait", job_id, "--timeout", "0.5")
    assert result.exit_code == 5
    assert "timeout" in result.stderr


def test_url_option_overrides_env(cli, contract_url: str):
    result = cli("--url", contract_url, "jobs", env={"ZOOSCOPE_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.exit_code == 0, result.output
