"""Job polls answered from kept answers (app/api/answers.py): what is kept, what drops it, and
that a kept answer is the routes' own answer. The service side runs on a real PostgreSQL, whose
triggers (migration 0005) and the API's listener deliver the changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_fixtures import RecordingQueue, empty_database
from sqlalchemy import event, text

import app.api.answers as answers_module
from app.api.answers import Answer, AnswerCache, KeptAnswers, job_poll_target
from app.db import jobs as job_repo
from app.db import owners
from app.db.migrate import upgrade_to_head
from app.db.session import session_scope
from app.main import create_app
from app.settings import Settings
from app.storage import LocalBlobStore

URL = "/api/v1/jobs"
LAG_S = 0.3


# ---- the cache alone ----------------------------------------------------------------------------


def _answer(body: bytes = b"{}") -> Answer:
    return Answer('"t"', [(b"etag", b'"t"')], body, time.monotonic())


def test_an_answer_is_kept_only_while_the_changes_are_delivered_and_none_came_meanwhile() -> None:
    cache = AnswerCache(listing_progress_lag_s=LAG_S)
    key = (f"{URL}/j1", b"", b"")
    cache.keep(key, "j1", _answer(), cache.generation)
    assert cache.find(key, "j1") is None  # not started: no listener, nothing kept
    cache.start()
    made_at = cache.generation
    cache.job_changed("j1", state_changed=False)  # a change of the job while its answer was made
    cache.keep(key, "j1", _answer(), made_at)
    assert cache.find(key, "j1") is None
    made_at = cache.generation
    cache.job_changed("other", state_changed=True)  # another job's: the answer still holds
    cache.keep(key, "j1", _answer(), made_at)
    assert cache.find(key, "j1") is not None
    cache.job_changed("other", state_changed=True)  # another job: this one's answer stays
    assert cache.find(key, "j1") is not None
    cache.note("j1 progress")
    assert cache.find(key, "j1") is None
    cache.keep(key, "j1", _answer(), cache.generation)
    cache.stop()
    assert cache.find(key, "j1") is None and len(cache) == 0


def test_a_listing_drops_at_a_state_change_at_once_and_at_a_progress_change_after_the_lag() -> None:
    cache = AnswerCache(listing_progress_lag_s=LAG_S)
    cache.start()
    key = (URL, b"limit=50", b"")
    made_at = cache.generation
    cache.note("j2 state")  # a new job while the listing was made: it is not kept
    cache.keep(key, None, _answer(), made_at)
    assert cache.find(key, None) is None
    made_at = cache.generation
    cache.note("j1 progress")  # progress while it was made: kept, as behind by up to the lag
    cache.keep(key, None, _answer(), made_at)
    assert cache.find(key, None).progress_changed
    cache.keep(key, None, _answer(), cache.generation)
    cache.note("j1 progress")
    assert cache.find(key, None) is not None  # kept for less than the lag
    time.sleep(LAG_S + 0.05)
    assert cache.find(key, None) is None
    cache.keep(key, None, _answer(), cache.generation)
    time.sleep(LAG_S + 0.05)
    assert cache.find(key, None) is not None  # old, but nothing changed since
    cache.note("j2 state")
    assert cache.find(key, None) is None


def test_the_least_recently_used_job_answers_go_first(monkeypatch) -> None:
    monkeypatch.setattr(answers_module, "JOB_ANSWERS_CAPACITY", 2)
    cache = AnswerCache(listing_progress_lag_s=LAG_S)
    cache.start()
    keys = [(f"{URL}/j{i}", b"", b"") for i in range(3)]
    cache.keep(keys[0], "j0", _answer(), cache.generation)
    cache.keep(keys[1], "j1", _answer(), cache.generation)
    assert cache.find(keys[0], "j0") is not None  # j0 used last: j1 goes
    cache.keep(keys[2], "j2", _answer(), cache.generation)
    assert [cache.find(k, f"j{i}") is not None for i, k in enumerate(keys)] == [True, False, True]
    cache.job_changed("j1", state_changed=True)  # its entry already gone: nothing to trip on
    assert len(cache) == 2
    # A byte budget too: a body that does not fit with the others pushes the oldest out.
    monkeypatch.setattr(answers_module, "JOB_ANSWERS_MAX_BYTES", 9)
    cache.keep(keys[1], "j1", _answer(b"x" * 8), cache.generation)
    assert [cache.find(k, f"j{i}") is not None for i, k in enumerate(keys)] == [False, True, False]
    cache.job_changed("j1", state_changed=False)
    assert len(cache) == 0 and cache._job_answer_bytes == 0


def test_a_job_whose_last_change_was_forgotten_counts_as_changed_then(monkeypatch) -> None:
    monkeypatch.setattr(answers_module, "CHANGES_REMEMBERED", 1)
    cache = AnswerCache(listing_progress_lag_s=LAG_S)
    cache.start()
    before_a = cache.generation
    cache.job_changed("a", state_changed=False)
    cache.job_changed("b", state_changed=False)  # "a"'s change is forgotten, not its bound
    assert not cache.still_holds("a", before_a)  # made before a's change: not kept
    assert cache.still_holds("a", cache.generation)


@pytest.mark.parametrize(
    ("path", "query", "target"),
    [
        (URL, b"limit=50", (True, None)),
        (f"{URL}/abc", b"", (True, "abc")),
        (f"{URL}/abc/report", b"", (True, "abc")),
        (f"{URL}/abc", b"wait=30", (False, None)),  # a long poll waits for a change
        (f"{URL}/abc/cancel", b"", (False, None)),
        (f"{URL}/", b"", (False, None)),
        ("/api/v1/checkpoints", b"", (False, None)),
    ],
)
def test_which_requests_may_be_answered_from_kept_answers(path, query, target) -> None:
    assert job_poll_target(path, query) == target


# ---- the service on PostgreSQL ------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url(postgres_database_factory: Callable[[], str]) -> str:
    url = postgres_database_factory()
    upgrade_to_head(url)
    return url


class Service:
    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.statements = 0
        event.listen(client.app.state.engine, "before_cursor_execute", self._count)

    def _count(self, *_: object) -> None:
        self.statements += 1

    def get(self, path: str, **kwargs: object):
        """(response, statements the request ran: 0 when it was answered from kept answers)."""
        before = self.statements
        response = self.client.get(path, **kwargs)
        return response, self.statements - before

    def kept(self, path: str, **kwargs: object):
        """The answer once it comes from kept answers: the first after the routes' may not be
        kept, when a change's notification (this test's own writes) arrived while it was made."""
        deadline = time.monotonic() + 5
        while True:
            response, ran = self.get(path, **kwargs)
            if ran == 0:
                assert response.headers["x-cache"] == "hit"
                return response
            assert time.monotonic() < deadline, f"{path} was never answered from kept answers"
            time.sleep(0.01)

    def until(self, path: str, holds: Callable[[object], bool], timeout: float = 5.0, **kwargs: object):
        deadline = time.monotonic() + timeout
        while True:
            response = self.client.get(path, **kwargs)
            if holds(response) or time.monotonic() > deadline:
                return response
            time.sleep(0.01)


@pytest.fixture
def service_factory(postgres_url: str, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    clients: list[TestClient] = []

    def make(**overrides: object) -> Service:
        empty_database(postgres_url)
        values = {"data_dir": tmp_path / "data", "database_url": postgres_url, "broker_url": "memory://"}
        settings = Settings(**{**values, "listing_progress_lag_s": LAG_S, **overrides})
        app = create_app(settings, queue=RecordingQueue(), store=LocalBlobStore.from_settings(settings))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        if settings.keep_answers:
            _wait_for(lambda: app.state.answers.enabled, "the listener did not connect")
        else:  # the listener still serves the long polls
            _wait_for(lambda: app.state.job_events.connected, "the listener did not connect")
        return Service(client, settings)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _submit(service: Service) -> str:
    response = service.client.post(URL, json={"kind": "build_zoo", "params": {"dataset": "digits"}})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_a_job_poll_is_answered_from_memory_with_the_routes_bytes_until_the_job_changes(
    service_factory,
) -> None:
    service = service_factory()
    job_id = _submit(service)
    first, ran = service.get(f"{URL}/{job_id}")
    assert first.status_code == 200 and ran > 0
    kept = service.kept(f"{URL}/{job_id}")
    assert kept.content == first.content
    assert {**kept.headers, "x-cache": ""} == {**first.headers, "x-cache": ""}
    etag = first.headers["etag"]
    revalidated, ran = service.get(f"{URL}/{job_id}", headers={"If-None-Match": etag})
    assert revalidated.status_code == 304 and ran == 0 and revalidated.headers["etag"] == etag
    # What the routes answer to the same revalidation, with nothing kept: the same headers.
    service.client.app.state.answers.clear()
    routed, ran = service.get(f"{URL}/{job_id}", headers={"If-None-Match": etag})
    assert routed.status_code == 304 and ran > 0 and "x-cache" not in routed.headers
    assert {**routed.headers, "x-cache": "hit"} == revalidated.headers

    with session_scope(service.settings.database_url) as session:  # the worker's change
        job_repo.claim_job(session, job_id, "w1")
    running = service.until(f"{URL}/{job_id}", lambda r: r.json()["state"] == "running", timeout=2)
    assert running.json()["state"] == "running" and running.headers["etag"] != etag


def test_a_listing_shows_states_at_once_and_progress_within_the_lag(service_factory) -> None:
    service = service_factory()
    job_id = _submit(service)
    with session_scope(service.settings.database_url) as session:
        job_repo.claim_job(session, job_id, "w1")
    listing = service.until(URL, lambda r: r.json()["items"][0]["state"] == "running", timeout=2)
    assert listing.json()["items"][0]["state"] == "running"
    service.kept(URL)

    with session_scope(service.settings.database_url) as session:
        job_repo.update_progress(session, job_id, 0.5, "halfway")
    # The job's own GET shows the progress once the notification is in; the listing within the lag.
    seen = service.until(f"{URL}/{job_id}", lambda r: r.json()["progress"] == 0.5, timeout=2)
    assert seen.json()["progress"] == 0.5
    started = time.monotonic()
    listed = service.until(URL, lambda r: r.json()["items"][0]["progress"] == 0.5, timeout=2)
    assert listed.json()["items"][0]["progress"] == 0.5
    assert time.monotonic() - started < LAG_S + 0.5

    with session_scope(service.settings.database_url) as session:
        job_repo.finish_job(session, job_id, {"ok": True})
    # A state change: once the job's GET shows it, so does the listing, with no lag.
    service.until(f"{URL}/{job_id}", lambda r: r.json()["state"] == "succeeded", timeout=2)
    assert service.client.get(URL).json()["items"][0]["state"] == "succeeded"


def test_a_report_is_kept_and_revalidated(service_factory) -> None:
    service = service_factory()
    job_id = _submit(service)
    not_ready, _ = service.get(f"{URL}/{job_id}/report")
    assert not_ready.status_code == 409
    again, ran = service.get(f"{URL}/{job_id}/report")
    assert again.status_code == 409 and ran > 0  # only answers with an ETag are kept
    with session_scope(service.settings.database_url) as session:
        job_repo.claim_job(session, job_id, "w1")
        job_repo.finish_job(session, job_id, {"aggregate": {"agreement": 0.9}})
    report = service.until(f"{URL}/{job_id}/report", lambda r: r.status_code == 200, timeout=2)
    assert report.json() == {"aggregate": {"agreement": 0.9}} and "etag" in report.headers
    assert service.kept(f"{URL}/{job_id}/report").content == report.content
    etag = {"If-None-Match": report.headers["etag"]}
    revalidated, ran = service.get(f"{URL}/{job_id}/report", headers=etag)
    assert revalidated.status_code == 304 and ran == 0


def test_a_write_through_this_api_is_seen_by_the_next_poll_at_once(service_factory) -> None:
    service = service_factory()
    job_id = _submit(service)
    assert service.get(f"{URL}/{job_id}")[0].json()["state"] == "queued"
    assert service.kept(URL).json()["total"] == 1
    second = _submit(service)
    assert service.client.get(URL).json()["total"] == 2  # not one notification later
    assert service.client.post(f"{URL}/{job_id}/cancel").status_code == 200
    assert service.client.get(f"{URL}/{job_id}").json()["state"] == "cancelled"
    assert second != job_id


def test_a_revoked_key_is_refused_although_its_answers_were_kept(service_factory) -> None:
    service = service_factory(auth_required=True)
    with session_scope(service.settings.database_url) as session:
        row, key = owners.create_key(session, "alice")
    bearer = {"Authorization": f"Bearer {key}"}
    assert service.kept(URL, headers=bearer).status_code == 200
    assert service.get(URL)[0].status_code == 401  # no key: never answered from another's
    with session_scope(service.settings.database_url) as session:
        owners.revoke_key(session, row.id)
    refused = service.until(URL, lambda r: r.status_code == 401, timeout=2, headers=bearer)
    assert refused.status_code == 401


def test_without_the_listener_every_poll_reaches_the_database(service_factory) -> None:
    service = service_factory()
    job_id = _submit(service)
    service.kept(f"{URL}/{job_id}")
    listeners = text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )
    with session_scope(service.settings.database_url) as session:  # the listener's connection dies
        (pid,) = session.execute(listeners).scalars().all()
        session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    gone = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")

    def backend_gone() -> bool:  # a transaction each: one keeps its first snapshot of the view
        with session_scope(service.settings.database_url) as session:
            return session.execute(gone, {"pid": pid}).scalar_one() == 0

    _wait_for(backend_gone, "the backend is still up")
    # The very next poll reaches the database: the listener's end is found before a kept answer.
    assert service.get(f"{URL}/{job_id}")[1] > 0
    answers = service.client.app.state.answers
    # Until it is back, nothing is kept: a change it would miss cannot leave an answer behind.
    with session_scope(service.settings.database_url) as session:
        job_repo.claim_job(session, job_id, "w1")
    assert service.client.get(f"{URL}/{job_id}").json()["state"] == "running"
    _wait_for(lambda: answers.enabled, "the listener did not come back", timeout=15)
    assert service.kept(f"{URL}/{job_id}").json()["state"] == "running"


def test_on_sqlite_nothing_is_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", broker_url="memory://")
    app = create_app(settings, queue=RecordingQueue(), store=LocalBlobStore.from_settings(settings))
    with TestClient(app) as client:
        job = client.post(URL, json={"kind": "build_zoo", "params": {"dataset": "digits"}}).json()
        for _ in range(3):
            assert client.get(f"{URL}/{job['id']}").status_code == 200
        assert not app.state.answers.enabled and len(app.state.answers) == 0


# ---- the same request, asked again while the routes answer it -----------------------------------


class SlowRoutes:
    """An ASGI app that answers a job's GET with a 200 and an ETag once `release` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1
        call = self.calls
        await self.release.wait()
        body = b'{"calls": %d}' % call
        headers = [(b"etag", b'"%d"' % call), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _ask(middleware: KeptAnswers, path: str = f"{URL}/j1") -> tuple[int, dict, bytes]:
    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []}
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    await middleware(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_requests_that_arrive_while_the_routes_answer_the_same_one_share_its_answer() -> None:
    async def run() -> None:
        cache = AnswerCache(listing_progress_lag_s=LAG_S)
        cache.start()
        routes = SlowRoutes()
        middleware = KeptAnswers(routes, cache)
        first = asyncio.create_task(_ask(middleware))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(_ask(middleware))
        await asyncio.sleep(0.01)
        routes.release.set()
        (s1, h1, b1), (s2, h2, b2) = await first, await second
        assert routes.calls == 1 and s1 == s2 == 200 and b1 == b2 == b'{"calls": 1}'
        assert b"x-cache" not in h1 and h2[b"x-cache"] == b"hit"

        # A change of the job after the first began: the next one asks the routes itself.
        cache.clear()
        cache.start()
        routes.release.clear()
        first = asyncio.create_task(_ask(middleware))
        await asyncio.sleep(0.01)
        cache.note("j1 progress")
        second = asyncio.create_task(_ask(middleware))
        await asyncio.sleep(0.01)
        routes.release.set()
        (_, _, b1), (_, h2, b2) = await first, await second
        assert routes.calls == 3 and b1 == b'{"calls": 2}' and b2 == b'{"calls": 3}'
        assert b"x-cache" not in h2
        # The first's answer was not kept (the change came while it was made); the second's was.
        assert (await _ask(middleware))[1][b"x-cache"] == b"hit" and routes.calls == 3

    asyncio.run(run())


def test_a_long_poll_on_an_unchanged_job_reads_it_once(service_factory, monkeypatch) -> None:
    """While the change notifications flow, a long poll neither looks at the row every
    SAFETY_LOOK_S nor again at its deadline: the job is as it was read."""
    import app.api.job_events as job_events

    monkeypatch.setattr(job_events, "SAFETY_LOOK_S", 0.1)
    service = service_factory()
    job_id = _submit(service)
    service.client.app.state.answers.clear()
    _, one_read = service.get(f"{URL}/{job_id}")
    started = time.monotonic()
    waited, ran = service.get(f"{URL}/{job_id}", params={"wait": 1.0})
    assert time.monotonic() - started >= 1.0 and waited.json()["state"] == "queued"
    assert ran == one_read, f"{ran} statements for a long poll, {one_read} for one read"
    # A change during the wait is read at once (the end notification wakes it).
    with session_scope(service.settings.database_url) as session:
        job_repo.claim_job(session, job_id, "w1")
        job_repo.fail_job(session, job_id, "boom", error_type="input")
    assert service.client.get(f"{URL}/{job_id}", params={"wait": 5}).json()["state"] == "failed"


def test_with_keep_answers_off_every_poll_reaches_the_routes(service_factory) -> None:
    service = service_factory(keep_answers=False)
    job_id = _submit(service)
    for _ in range(3):
        response, ran = service.get(f"{URL}/{job_id}")
        assert response.status_code == 200 and ran > 0 and "x-cache" not in response.headers
    assert not service.client.app.state.answers.enabled


def test_a_listener_the_server_ended_keeps_no_answer_given(postgres_url: str) -> None:
    """The backend leaves pg_stat_activity before its socket closes, with its FATAL message
    already sent: from that message on, no answer is given from memory. Twenty connections:
    reading the socket for its end alone answered from memory in about three of four."""
    import psycopg

    from app.api.job_events import JobEndListener

    conninfo = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    gone = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
    with psycopg.connect(conninfo, autocommit=True) as admin:
        for _ in range(20):
            cache = AnswerCache(listing_progress_lag_s=LAG_S)
            listener = JobEndListener(postgres_url, cache)
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute("LISTEN zooscope_job_changed")
                listener.follow(conn)
                key = (f"{URL}/j1", b"", b"")
                cache.keep(key, "j1", _answer(), cache.generation)
                assert cache.find(key, "j1") is not None
                pid = conn.pgconn.backend_pid
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                deadline = time.monotonic() + 10
                while admin.execute(gone, (pid,)).fetchone()[0]:  # no sleep: ask right after it left
                    assert time.monotonic() < deadline, "the backend is still up"
                assert cache.find(key, "j1") is None and not cache.enabled
