"""No route runs a database query on the event loop.

A query on the loop waits there for a pooled connection, while the requests that hold the pool's
connections need the loop to finish: once the pool is busy, the whole API stalls (the load
benchmark found an upload doing it, docs/benchmarks.md "Load"). Every query of the async routes
must go through a worker thread. The check: a hook on the app's engine notes every statement sent
from a thread that is running an event loop, while each async route is exercised.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable, Iterator

import pytest
from service_fixtures import Api
from sqlalchemy import event
from zoo_archives import archive_of, minimal_zoo

URL = "/api/v1"


@pytest.fixture
def on_the_loop(api: Api) -> Iterator[list[str]]:
    """The statements (with where they came from) sent on a thread that runs an event loop."""
    found: list[str] = []

    def note(conn, cursor, statement: str, *args: object) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a worker thread: where queries belong
        found.append(statement.split("\n")[0][:80] + "\n" + "".join(traceback.format_stack(limit=12)))

    engine = api.client.app.state.engine
    event.listen(engine, "before_cursor_execute", note)
    yield found
    event.remove(engine, "before_cursor_execute", note)


def test_the_hook_sees_a_query_made_on_the_loop(api: Api, on_the_loop: list[str]) -> None:
    """The check itself can fail: a query run from inside a running loop is noted."""

    async def query_on_the_loop() -> None:
        with api.client.app.state.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    asyncio.run(query_on_the_loop())
    assert len(on_the_loop) == 1 and "SELECT 1" in on_the_loop[0]


def test_async_routes_query_the_database_off_the_loop(
    api: Api, on_the_loop: list[str], state_dict_bytes: Callable[..., bytes]
) -> None:
    files = {"file": ("model.safetensors", state_dict_bytes(0), "application/octet-stream")}
    created = api.client.post(f"{URL}/checkpoints", files=files)
    again = api.client.post(f"{URL}/checkpoints", files=files)  # the deduplicated answer
    unknown_zoo = api.client.post(
        f"{URL}/checkpoints",
        files={"file": ("other.safetensors", state_dict_bytes(1), "application/octet-stream")},
        data={"zoo_id": "no-such-zoo"},
    )
    assert (created.status_code, again.status_code, unknown_zoo.status_code) == (201, 200, 422)

    job = api.client.post(f"{URL}/jobs", json={"kind": "build_zoo", "params": {"dataset": "digits"}}).json()
    assert api.client.get(f"{URL}/jobs/{job['id']}", params={"wait": 0.3}).json()["state"] == "queued"
    assert api.client.get(f"{URL}/jobs/{job['id']}").status_code == 200

    archive = archive_of("zip", minimal_zoo())
    files = {"file": ("zoo.zip", archive, "application/zip")}
    uploaded = api.client.post(f"{URL}/zoos/archives", files=files)
    assert uploaded.status_code == 202, uploaded.text
    assert api.client.get("/readyz").status_code in (200, 503)

    assert on_the_loop == [], "queries on the event loop:\n\n" + "\n\n".join(on_the_loop)


def test_more_concurrent_requests_than_threads_and_connections_all_answer(api: Api) -> None:
    """More requests at once than the threadpool has threads (40) and the pool connections (15),
    plain GETs and long polls mixed: each is answered in time. While a request held its pooled
    connection across a hop to the threadpool (a plain endpoint's serialisation, a long poll's
    first read, the session's close), every thread could end up waiting for a connection that only
    a request waiting for a thread could give back, until the pool's 30-s timeout."""
    import threading
    import time

    job = api.client.post(f"{URL}/jobs", json={"kind": "build_zoo", "params": {"dataset": "digits"}}).json()
    answers: list[int] = []
    n_gets, n_polls = 100, 60
    start = threading.Barrier(n_gets + n_polls)

    def get_jobs() -> None:
        start.wait()
        answers.append(api.client.get(f"{URL}/jobs", params={"limit": 50}).status_code)

    def long_poll() -> None:
        start.wait()
        answers.append(api.client.get(f"{URL}/jobs/{job['id']}", params={"wait": 0.5}).status_code)

    threads = [threading.Thread(target=get_jobs) for _ in range(n_gets)]
    threads += [threading.Thread(target=long_poll) for _ in range(n_polls)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    assert sorted(answers) == [200] * (n_gets + n_polls)
    assert elapsed < 15.0, f"{n_gets} GETs and {n_polls} long polls at once took {elapsed:.1f} s"
