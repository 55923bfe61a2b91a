"""docker-compose.yml and the Dockerfile cannot be run here (no Docker daemon): check their shape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_production_services_wired_by_env() -> None:
    services = compose()["services"]
    assert {"api", "worker", "redis", "postgres", "migrate"} <= set(services)
    for name in ("api", "worker", "migrate"):
        env = services[name]["environment"]
        assert env["ZOOSCOPE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in env["ZOOSCOPE_DATABASE_URL"]
        assert env["ZOOSCOPE_BROKER_URL"].startswith("redis://redis:6379/")
        assert env["ZOOSCOPE_AUTH_REQUIRED"] == "true"
    assert services["api"]["command"][:3] == ["uvicorn", "app.main:create_app", "--factory"]
    worker = services["worker"]["command"]
    assert worker[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert worker[worker.index("-Q") + 1] == "models,zoos"
    # The API and workers start only after the schema is migrated and the broker is healthy.
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # Blobs are shared between the API (uploads) and workers (reconstructions).
    assert services["api"]["volumes"] == services["worker"]["volumes"]
    assert set(compose()["volumes"]) >= {"pgdata", "redisdata", "blobs"}


def test_the_api_port_is_bound_to_loopback_only() -> None:
    assert all(p.startswith("127.0.0.1:") for p in compose()["services"]["api"]["ports"])


def test_the_commented_gpu_worker_is_valid_when_uncommented() -> None:
    lines = (ROOT / "docker-compose.yml").read_text().splitlines()
    start = lines.index("  # worker-gpu:")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("  #"))
    uncommented = [line.replace("  # ", "  ", 1) for line in lines[start:end]]
    gpu = yaml.safe_load("\n".join(lines[:start] + uncommented + lines[end:]))["services"]["worker-gpu"]
    assert gpu["command"][gpu["command"].index("-Q") + 1] == "models"  # model work only
    assert gpu["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert gpu["environment"]["ZOOSCOPE_BROKER_URL"].startswith("redis://")  # merged from the anchor
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_dockerfile_is_slim_cpu_torch_and_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert "https://download.pytorch.org/whl/cpu" in text and "torch==${TORCH_VERSION}" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] != "root"


def test_the_cli_starts_without_loading_the_service_stack() -> None:
    # Every `zooscope` start loads the service's command plugin (worker/commands.py); it must stay
    # light and import the service only when `serve` or `keys` runs.
    code = (
        "import sys, zooscope.cli; "
        "heavy = ('fastapi', 'celery', 'sqlalchemy', 'app', 'worker.embedded'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
