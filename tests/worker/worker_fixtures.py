"""Fixtures of the worker tests (conftest.py imports them): databases, settings, real workers.

PostgreSQL (trust auth on 127.0.0.1) gets a fresh zooscope_worker_<random> database per session,
dropped at the end; Redis db 14 carries the broker, with queue names unique to the session so
nothing else on the machine shares them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.db.migrate import upgrade_to_head
from tests.app.service_fixtures import empty_database  # one way to empty the tables
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN_URL = os.environ.get(
    "ZOOSCOPE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ZOOSCOPE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
# Short enough that a dead worker's job is recovered within seconds, long enough that a busy
# 2-core machine never makes a live job look dead (the beat is every 0.5 s).
TEST_TIMING = {
    "job_heartbeat_timeout_s": 4.0,
    "heartbeat_interval_s": 0.5,
    "sweep_interval_s": 1.0,
    "progress_interval_s": 0.1,
    # A queued job unclaimed this long after its send is sent again (its message may be lost).
    "job_resend_after_s": 5.0,
}


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('worker-sqlite') / 'zooscope.sqlite'}"
    upgrade_to_head(url)
    return url


@pytest.fixture
def sqlite_settings(sqlite_url: str, tmp_path: Path) -> WorkerSettings:
    """Worker settings on a migrated, emptied SQLite database (no services needed)."""
    empty_database(sqlite_url)
    return WorkerSettings(
        data_dir=tmp_path / "data", database_url=sqlite_url, broker_url="memory://", **TEST_TIMING
    )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    name = f"zooscope_worker_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_to_head(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture(scope="session")
def service_settings(
    postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> WorkerSettings:
    """Production shape: PostgreSQL + Redis, queues of this session only."""
    tag = uuid.uuid4().hex[:8]
    return WorkerSettings(
        data_dir=tmp_path_factory.mktemp("service-data"),
        database_url=postgres_url,
        broker_url=redis_url,
        model_queue=f"models-{tag}",
        zoo_queue=f"zoos-{tag}",
        **TEST_TIMING,
    )


def settings_env(settings: WorkerSettings) -> dict[str, str]:
    """The ZOOSCOPE_* environment that makes a child process read `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOOSCOPE_")}
    for name in ("data_dir", "database_url", "broker_url", "model_queue", "zoo_queue", *TEST_TIMING):
        env[f"ZOOSCOPE_{name.upper()}"] = str(getattr(settings, name))
    return env


class WorkerProcess:
    """A real `celery -A worker.celery_app worker` in its own process group."""

    def __init__(self, settings: WorkerSettings, log: Path) -> None:
        self.log = log
        command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"]
        command += ["-Q", f"{settings.model_queue},{settings.zoo_queue}", "--concurrency", "1"]
        command += ["-n", f"test-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "INFO"]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        with log.open("a") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=settings_env(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        self.wait_for_log("ready.", 60)

    def wait_for_log(self, text_: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text_ in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                pytest.fail(f"the worker exited with {self.proc.returncode}:\n{self.tail()}")
            time.sleep(0.2)
        pytest.fail(f"the worker did not log {text_!r} in {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def kill(self) -> None:
        """SIGKILL the whole worker, pool processes included: a machine dying mid-job."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[[WorkerSettings], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(settings: WorkerSettings) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, on_fail: Callable[[], str] = str
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{on_fail()}")


# ---- a tiny zoo and autoencoder, built once per session through the library ------------------------


@pytest.fixture(scope="session")
def tiny_artefacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"zoo": dir, "autoencoder": dir}: 12 digits CNNs, 2 epochs, and a tiny autoencoder on them."""
    from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
    from zooscope.autoencoder.training import train_autoencoder
    from zooscope.zoo.grid import ZooConfig
    from zooscope.zoo.store import build_zoo

    root = tmp_path_factory.mktemp("tiny-artefacts")
    zoo = build_zoo(ZooConfig.tiny(epochs=2, checkpoint_epochs=(1, 2)), root / "zoo")
    train_autoencoder(zoo, AutoencoderConfig.tiny(), TrainingConfig.tiny(), root / "autoencoder")
    return {"zoo": root / "zoo", "autoencoder": root / "autoencoder"}


def register_artefacts(database_url: str, artefacts_: dict[str, Path]) -> tuple[str, str]:
    """Zoo and autoencoder rows for the tiny artefacts (the autoencoder becomes the default)."""
    from app.db import artefacts
    from app.db.session import session_scope
    from zooscope.zoo.store import Zoo

    zoo = Zoo.open(artefacts_["zoo"])
    with session_scope(database_url) as session:
        zoo_row = artefacts.add_zoo(
            session,
            name="tiny zoo",
            path=str(artefacts_["zoo"]),
            manifest=zoo.manifest,
            dataset=zoo.manifest["dataset"]["name"],
            architecture=zoo.architecture.to_dict(),
            n_models=len(zoo.models),
        )
        ae_row = artefacts.add_autoencoder(
            session,
            name="tiny",
            path=str(artefacts_["autoencoder"]),
            architecture_name=zoo.architecture.name,
            zoo_id=zoo_row.id,
            make_default=True,
        )
        return zoo_row.id, ae_row.id
