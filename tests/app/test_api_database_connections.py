"""The API's pool pings each connection before a request uses it (app/db/session.py make_engine,
pool_pre_ping): a connection the database has dropped (a restart, pg_terminate_backend) is
replaced before any request meets it, so neither a read nor a write answers an error for it.
Measured against the ping's cost in docs/benchmarks.md ("Job reads and the pool's ping")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from service_fixtures import Api
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_ONLY = pytest.mark.parametrize("migrated_database_url", ["postgres"], indirect=True)


def upload(api: Api, data: bytes) -> Any:
    return api.client.post("/api/v1/checkpoints", files={"file": ("m.safetensors", data)})


def drop_the_apis_connections(api: Api) -> int:
    """pg_terminate_backend on every connection to the API's database; how many there were."""
    url = make_url(api.settings.database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            return len(
                connection.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                    {"name": url.database},
                ).all()
            )
    finally:
        admin.dispose()


@POSTGRES_ONLY
def test_after_the_database_dropped_every_connection_the_next_write_and_read_succeed(
    api: Api, state_dict_bytes: Callable[..., bytes]
) -> None:
    first = upload(api, state_dict_bytes(seed=1))
    assert first.status_code == 201, first.text  # the pool now holds a connection
    assert drop_the_apis_connections(api) >= 1
    second = upload(api, state_dict_bytes(seed=2))
    assert second.status_code == 201, second.text
    assert drop_the_apis_connections(api) >= 1
    read = api.client.get(f"/api/v1/checkpoints/{first.json()['id']}")
    assert read.status_code == 200, read.text
    assert api.rows("checkpoints") == 2
