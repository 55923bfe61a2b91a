"""Fixtures for the service tests: real databases (SQLite and PostgreSQL), settings, the API.

Reusable from other test folders (the worker's): `postgres_database_factory`, `database_url`
(both backends, migrated once per session, emptied before each test), `settings_factory`,
`RecordingQueue`, `api` (a TestClient on a fresh app), `state_dict_bytes`.

PostgreSQL: ZOOSCOPE_TEST_POSTGRES_URL (default postgres@127.0.0.1:5432, trust auth); each test
session creates its own zooscope_test_<random> databases and drops them at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.db.migrate import upgrade_to_head
from app.db.models import Base
from app.db.session import make_engine
from app.main import create_app
from app.settings import Settings
from app.storage import LocalBlobStore
from zooscope.networks.architectures import Architecture
from zooscope.networks.checkpoints import checkpoint_bytes

POSTGRES_ADMIN_URL = os.environ.get(
    "ZOOSCOPE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DIGITS = Architecture("cnn_digits", 1, 8)  # the smallest family: fast to build, save and load


# ---- databases --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_database_factory() -> Iterator[Callable[[], str]]:
    """make() -> the URL of a new, empty PostgreSQL database; all are dropped after the session."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    created: list[str] = []

    def make() -> str:
        name = f"zooscope_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    yield make
    with admin.connect() as connection:
        for name in created:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_database_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], str]:
    def make() -> str:
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'zooscope.sqlite'}"

    return make


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def migrated_database_url(request: pytest.FixtureRequest) -> str:
    """One migrated database per backend per session (migrating per test would be slow)."""
    factory = request.getfixturevalue(f"{request.param}_database_factory")
    url = factory()
    upgrade_to_head(url)
    return url


def empty_database(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(table.delete())
    finally:
        engine.dispose()


@pytest.fixture
def database_url(migrated_database_url: str) -> str:
    """A migrated, empty database, on SQLite and on PostgreSQL (the test runs once for each)."""
    empty_database(migrated_database_url)
    return migrated_database_url


# ---- settings and the app ---------------------------------------------------------------------------


@pytest.fixture
def settings_factory(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    """make(**overrides) -> Settings with a fresh data dir and the test database."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "broker_url": "memory://",
            "auth_required": False,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@dataclass
class RecordingQueue:
    """A JobQueue that records what would have been sent to Celery."""

    sent: list[tuple[str, str]] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    fail_send: bool = False
    supports_ping: bool = True
    workers: list[str] = field(default_factory=lambda: ["celery@test"])

    def send(self, kind: str, job_id: str) -> None:
        if self.fail_send:
            raise ConnectionError("broker down (test)")
        self.sent.append((kind, job_id))

    def revoke(self, task_id: str) -> None:
        self.revoked.append(task_id)

    def check_broker(self, timeout: float) -> None:
        return None

    def ping_workers(self, timeout: float) -> list[str]:
        return list(self.workers)


@dataclass
class Api:
    client: TestClient
    settings: Settings
    queue: RecordingQueue
    store: LocalBlobStore

    def rows(self, table: str) -> int:
        engine = make_engine(self.settings.database_url)
        try:
            with engine.connect() as connection:
                return connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
        finally:
            engine.dispose()

    def leftover_temp_files(self) -> list[Path]:
        tmp = self.settings.upload_tmp_dir
        return list(tmp.iterdir()) if tmp.exists() else []


@pytest.fixture
def api_factory(settings_factory: Callable[..., Settings]) -> Iterator[Callable[..., Api]]:
    """make(**settings_overrides) -> Api: a started app (migrations applied) with a RecordingQueue."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> Api:
        settings = settings_factory(**overrides)
        queue = RecordingQueue()
        store = LocalBlobStore.from_settings(settings)
        client = TestClient(create_app(settings, queue=queue, store=store), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return Api(client, settings, queue, store)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def api(api_factory: Callable[..., Api]) -> Api:
    return api_factory()


# ---- checkpoints ------------------------------------------------------------------------------------


def digits_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in DIGITS.build().state_dict().items()}


@pytest.fixture
def state_dict_bytes() -> Callable[..., bytes]:
    """make(seed=0, format="safetensors"|"pt") -> the bytes of a valid cnn_digits checkpoint."""

    def make(seed: int = 0, format: str = "safetensors") -> bytes:
        return checkpoint_bytes(digits_state_dict(seed), format)  # type: ignore[arg-type]

    return make
