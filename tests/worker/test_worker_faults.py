"""Faults of the production shape (PostgreSQL, Redis, a real Celery worker), each ending with a
count of jobs submitted / succeeded / failed / lost, where lost must be 0.

The Redis here is the test's own, on its own port and without persistence, so that killing it
loses its queue as a real restart would, and the machine's own Redis is left alone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from worker_fixtures import WorkerProcess, register_artefacts, wait_for
from worker_roundtrip import job, submit, upload_zoo_checkpoints

from app.db.models import Job
from app.db.session import session_scope
from app.main import create_app
from tests.processes import children as children_of
from worker.settings import WorkerSettings

pytestmark = pytest.mark.service
N_JOBS = 30
RECOVERY_TIMEOUT_S = 240


class OwnRedis:
    """redis-server on a free loopback port, no RDB snapshots, no AOF: a restart empties it."""

    def __init__(self, tmp: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.dir)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        wait_for(lambda: _pings(client), 20, "the test's Redis to start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def tally(settings: WorkerSettings, ids: list[str]) -> dict[str, int]:
    with session_scope(settings.database_url) as session:
        states = [session.get(Job, job_id).state for job_id in ids]
    counts = {state: states.count(state) for state in ("succeeded", "failed", "cancelled")}
    return {"submitted": len(ids), **counts, "lost": len(ids) - sum(counts.values())}


def fault_settings(service_settings: WorkerSettings, own_redis: OwnRedis, tag: str) -> WorkerSettings:
    """The session's PostgreSQL, the test's own Redis, queues of this test only."""
    return service_settings.model_copy(
        update={"broker_url": own_redis.url, "model_queue": f"models-{tag}", "zoo_queue": f"zoos-{tag}"}
    )


def submit_training_and_batch(api: TestClient, zoo_id: str, ae_id: str, ids: list[str]) -> list[str]:
    """A training job of 150 tiny epochs (running when the fault hits) and five reconstructs."""
    training = submit(api, "train_autoencoder", {"zoo_id": zoo_id, "preset": "tiny", "epochs": 150})
    params = {"checkpoint_ids": ids, "autoencoder_id": ae_id}
    return [training, *(submit(api, "reconstruct", params) for _ in range(5))]


def assert_none_lost(settings: WorkerSettings, jobs: list[str], fault: str, tail: Callable[[], str]) -> None:
    wait_for(lambda: tally(settings, jobs)["lost"] == 0, RECOVERY_TIMEOUT_S, "every job to end", tail)
    counts = tally(settings, jobs)
    print(f"{fault}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    assert counts == {"submitted": len(jobs), "succeeded": len(jobs), "failed": 0, "cancelled": 0, "lost": 0}


def test_a_lost_broker_queue_and_a_killed_pool_child_lose_no_job(
    service_settings: WorkerSettings,
    tiny_artefacts: dict[str, Path],
    own_redis: OwnRedis,
    worker_factory: Callable[[WorkerSettings], WorkerProcess],
) -> None:
    settings = fault_settings(service_settings, own_redis, "broker")
    _, ae_id = register_artefacts(settings.database_url, tiny_artefacts)
    with TestClient(create_app(settings)) as api:
        ids = upload_zoo_checkpoints(api, tiny_artefacts["zoo"], 4)
        worker = worker_factory(settings)
        jobs = [
            submit(api, "reconstruct", {"checkpoint_ids": ids, "autoencoder_id": ae_id})
            for _ in range(N_JOBS)
        ]
        # The broker restarts with an empty queue while most of the batch is still in it.
        own_redis.kill()
        own_redis.start()
        # And the pool process dies in the middle of whatever it was running.
        children = children_of(worker.proc.pid)
        assert children, worker.tail()
        os.kill(children[0], signal.SIGKILL)
        assert_none_lost(settings, jobs, "broker queue lost + pool child killed", worker.tail)
        # Each report was written once: one set of reconstructions per job, the same four rows.
        for job_id in jobs:
            report = api.get(f"/api/v1/jobs/{job_id}/report").json()
            assert [item["checkpoint_id"] for item in report["items"]] == ids
        assert "queued without a claim for too long; its task is sent again" in worker.tail(2000)


def test_a_sigkilled_worker_main_loses_no_job(
    service_settings: WorkerSettings,
    tiny_artefacts: dict[str, Path],
    own_redis: OwnRedis,
    worker_factory: Callable[[WorkerSettings], WorkerProcess],
) -> None:
    settings = fault_settings(service_settings, own_redis, "main")
    zoo_id, ae_id = register_artefacts(settings.database_url, tiny_artefacts)
    with TestClient(create_app(settings)) as api:
        ids = upload_zoo_checkpoints(api, tiny_artefacts["zoo"], 2)
        worker = worker_factory(settings)
        jobs = submit_training_and_batch(api, zoo_id, ae_id, ids)
        training = jobs[0]
        wait_for(lambda: job(api, training)["progress"] > 0, 120, "the training job to start", worker.tail)
        # Only the main process dies; its pool child is left without a parent, mid-job.
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=10)
        replacement = worker_factory(settings)
        assert_none_lost(settings, jobs, "worker main SIGKILLed", replacement.tail)
        # The training job registered one autoencoder, however many processes ran it.
        made = api.get("/api/v1/autoencoders", params={"limit": 500}).json()["items"]
        assert sum(1 for a in made if a["source_job_id"] == training) == 1


def _admin(settings: WorkerSettings):  # noqa: ANN202 - an Engine on the server's postgres database
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url).set(database="postgres")
    return create_engine(url, isolation_level="AUTOCOMMIT"), make_url(settings.database_url).database


def test_terminated_and_refused_database_connections_lose_no_job(
    service_settings: WorkerSettings,
    tiny_artefacts: dict[str, Path],
    own_redis: OwnRedis,
    worker_factory: Callable[[WorkerSettings], WorkerProcess],
) -> None:
    from sqlalchemy import text

    settings = fault_settings(service_settings, own_redis, "pg")
    zoo_id, ae_id = register_artefacts(settings.database_url, tiny_artefacts)
    admin, name = _admin(settings)
    terminate = text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name")
    try:
        with TestClient(create_app(settings)) as api:
            ids = upload_zoo_checkpoints(api, tiny_artefacts["zoo"], 2)
            worker = worker_factory(settings)
            jobs = submit_training_and_batch(api, zoo_id, ae_id, ids)
            training = jobs[0]
            wait_for(
                lambda: job(api, training)["progress"] > 0, 120, "the training job to start", worker.tail
            )
            # Every connection of the worker and of the API is cut mid-job...
            with admin.connect() as connection:
                connection.execute(terminate, {"name": name})
            assert api.get(f"/api/v1/jobs/{training}").status_code == 200  # the pool reconnects
            # ...then the database refuses connections for a while: the API says so, in a problem.
            with admin.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                connection.execute(terminate, {"name": name})
            gone = api.get(f"/api/v1/jobs/{training}")
            assert gone.status_code == 503, gone.text
            assert gone.headers["content-type"].startswith("application/problem+json")
            assert gone.json()["type"].endswith("/database-unavailable")
            time.sleep(2)
            with admin.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            # Back without a restart of anything.
            wait_for(lambda: api.get(f"/api/v1/jobs/{training}").status_code == 200, 30, "the API to recover")
            assert_none_lost(settings, jobs, "database connections terminated and refused", worker.tail)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
