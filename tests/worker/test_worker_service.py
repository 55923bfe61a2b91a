"""The worker in production shape: PostgreSQL, Redis, a real Celery worker process (not eager).

The API runs in-process (TestClient on app.main.create_app) and sends tasks through Redis; the
worker is `celery -A worker.celery_app worker` in a subprocess sharing the database and data dir.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from worker_fixtures import WorkerProcess, register_artefacts, wait_for
from worker_roundtrip import job, reconstruct_and_verify, submit, upload_zoo_checkpoints, wait_for_job

from app.db.models import Autoencoder
from app.db.session import session_scope
from app.main import create_app
from worker.settings import WorkerSettings

pytestmark = pytest.mark.service
JOB_TIMEOUT_S = 180  # generous: eight engineers share two cores
KILLED_JOB_EPOCHS = 150


@pytest.fixture(scope="module")
def registered(service_settings: WorkerSettings, tiny_artefacts: dict[str, Path]) -> dict[str, str]:
    zoo_id, ae_id = register_artefacts(service_settings.database_url, tiny_artefacts)
    return {"zoo_id": zoo_id, "autoencoder_id": ae_id}


@pytest.fixture(scope="module")
def api(service_settings: WorkerSettings, registered: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(service_settings)) as client:
        yield client


def autoencoders_made_by(settings: WorkerSettings, job_id: str) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).where(Autoencoder.source_job_id == job_id)) or 0


def test_upload_reconstruct_poll_report_download(
    api: TestClient,
    service_settings: WorkerSettings,
    tiny_artefacts: dict[str, Path],
    worker_factory: Callable[[WorkerSettings], WorkerProcess],
) -> None:
    worker = worker_factory(service_settings)
    ids = upload_zoo_checkpoints(api, tiny_artefacts["zoo"], 2)
    report = reconstruct_and_verify(api, ids, tiny_artefacts["zoo"], JOB_TIMEOUT_S)
    assert report["autoencoder_id"] and len(report["items"]) == 2
    assert "attempt 1" in worker.tail(200)


def test_a_sigkilled_workers_job_is_rerun_and_reported_once(
    api: TestClient,
    service_settings: WorkerSettings,
    registered: dict[str, str],
    worker_factory: Callable[[WorkerSettings], WorkerProcess],
) -> None:
    first = worker_factory(service_settings)
    # Long enough (about 5 s of tiny epochs here) that the kill lands mid-job: with 6 epochs the job
    # once finished between the poll that saw its first progress and the kill, on a loaded CI machine.
    params = {"zoo_id": registered["zoo_id"], "preset": "tiny", "epochs": KILLED_JOB_EPOCHS}
    job_id = submit(api, "train_autoencoder", params)
    seen = wait_for(lambda: job(api, job_id)["progress"], JOB_TIMEOUT_S, "the job's progress", first.tail)
    first.kill()  # the machine dies: worker and pool process, no chance to clean up
    assert seen < 0.5, f"the job was {seen:.0%} done before the kill: give it more epochs"
    assert job(api, job_id)["state"] == "running"
    second = worker_factory(service_settings)  # its start-up sweep (or timer) finds the stale job
    final = wait_for_job(api, job_id, JOB_TIMEOUT_S, second.tail)
    # The contract allows "failed with a reason" too, but with attempts left it must be re-run.
    assert (final["state"], final["attempts"]) == ("succeeded", 2), final
    assert f"job {job_id} (train_autoencoder): attempt 2" in second.tail(400)
    assert autoencoders_made_by(service_settings, job_id) == 1  # recorded once
    assert api.get(f"/api/v1/jobs/{job_id}/report").json()["autoencoder_id"]


def test_a_training_job_reports_its_eta_and_a_cancelled_job_records_nothing(
    api: TestClient,
    service_settings: WorkerSettings,
    registered: dict[str, str],
    worker_factory: Callable[[WorkerSettings], WorkerProcess],
) -> None:
    worker = worker_factory(service_settings)
    job_id = submit(
        api, "train_autoencoder", {"zoo_id": registered["zoo_id"], "preset": "tiny", "epochs": 500}
    )
    wait_for(lambda: job(api, job_id)["progress"] > 0, JOB_TIMEOUT_S, "the job to make progress", worker.tail)
    # While it trains, the job says how long it has left, from its own epochs' pace: present, and
    # shrinking as the epochs go by.
    etas = []
    for _ in range(4):
        time.sleep(1.0)
        etas.append(job(api, job_id)["eta_s"])
    assert all(eta is not None and eta > 0 for eta in etas), etas
    assert etas[-1] < etas[0], etas
    response = api.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    # The worker stops at its next progress report instead of training 500 epochs.
    worker.wait_for_log(f"job {job_id}: stopped", 60)
    assert job(api, job_id)["state"] == "cancelled"
    assert api.get(f"/api/v1/jobs/{job_id}/report").status_code == 409
    assert autoencoders_made_by(service_settings, job_id) == 0
