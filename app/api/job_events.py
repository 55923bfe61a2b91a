"""Wake long polls (GET /jobs/{id}?wait=...) the moment a job ends, and tell the kept answers
(app/api/answers.py) which jobs changed.

On PostgreSQL the job repository sends `NOTIFY zooscope_job_ended, '<job id>'` when a job ends
(app/db/jobs.py). One LISTEN connection per API process turns those notifications into asyncio
events for the requests waiting on that job, so a finished job is answered within milliseconds
and a waiting request costs nothing while it waits.

SQLite has no notifications, but `PRAGMA data_version` on one connection changes whenever another
connection (the worker's) commits. While requests wait, one watcher per API process reads it
every WATCH_S (microseconds: no table is read) and, when it moved, looks up which of the awaited
jobs have ended with one query, and wakes those. A job's end reaches its long poll within ~WATCH_S
instead of half a row-polling interval, and the cost does not grow with the number of waiters.
Without either (an in-memory database), a long poll looks at the job row every POLL_S.

The job row stays the truth either way: a notification only says "look now". While the listener
is connected a long poll still looks every SAFETY_LOOK_S, in case a notification was lost (the
listener reconnecting, say).

The same PostgreSQL connection LISTENs for every visible change of a job and of an API key
(triggers: migrations/versions/0005_change_notifications.py) and hands them to the AnswerCache,
which keeps answers only while this connection is up: it may not miss a change. While it keeps
them, a long poll skips those periodic looks (and the last one at its deadline) for as long as
the change notifications say the job's row is as it was read (app/api/routes/jobs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import make_url

from app.api.answers import AnswerCache
from app.db.jobs import JOB_CHANGED_CHANNEL, JOB_ENDED_CHANNEL
from app.db.models import TERMINAL_JOB_STATES
from app.db.owners import KEY_CHANGED_CHANNEL

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a long poll looks at the row without notifications
WATCH_S = 0.005  # how often the SQLite watcher reads data_version while requests wait
SQLITE_MAX_IDS = 500  # ids per IN (...) query, under SQLite's bound-parameter limit
SAFETY_LOOK_S = 1.0  # how often it looks anyway while notifications flow
RECONNECT_MAX_S = 30.0


class JobEndListener:
    """LISTEN for ended jobs on PostgreSQL, watch data_version on a SQLite file; else a no-op
    (long polls look at the row)."""

    def __init__(self, database_url: str, answers: AnswerCache | None = None) -> None:
        self.answers = answers
        url = make_url(database_url)
        backend = url.get_backend_name()
        on_file = backend == "sqlite" and url.database not in (None, "", ":memory:")
        self._sqlite_path = url.database if on_file else None
        self.enabled = backend == "postgresql" or self._sqlite_path is not None
        # psycopg takes a libpq URI: the same URL without SQLAlchemy's "+driver"
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._someone_waits = asyncio.Event()  # set by watch(): wakes an idle SQLite watcher
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    async def start(self) -> None:
        if self.enabled and self._task is None:
            run = self._listen_forever() if self._sqlite_path is None else self._watch_sqlite_forever()
            self._task = asyncio.create_task(run, name="zooscope-job-end-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def look_again_after(self) -> float:
        """Seconds a long poll may sleep before it looks at the job row again."""
        return SAFETY_LOOK_S if self.connected else POLL_S

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set when `job_id` is announced as ended. Watch BEFORE reading the row, so an
        end that lands between the read and the wait is not missed."""
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        self._someone_waits.set()
        try:
            yield event
        finally:
            waiting = self._waiters.get(job_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[job_id]

    def follow(self, conn: Any) -> None:
        """Deliver the changes `conn` LISTENs for to the kept answers from now on, and end them
        the moment the server says it ends the connection."""
        conn.add_notice_handler(self._server_said)
        if self.answers is not None:
            self.answers.start(drain=lambda: self._drain(conn))

    def _server_said(self, diagnostic: Any) -> None:
        # A server that ends a connection (pg_terminate_backend, a shutdown, idle_session_timeout)
        # sends a FATAL error first; libpq, idle, hands it to the notice handlers. The socket
        # closes only after the backend has left pg_stat_activity: at this message, not at the
        # close, no further answer may be given from memory.
        if diagnostic.severity_nonlocalized in ("FATAL", "PANIC") and self.answers is not None:
            self.answers.stop()

    def _drain(self, conn: Any) -> None:
        """Hand on the notifications already in the connection's buffer, now: called before a kept
        answer is given, so that it is never behind a change whose notification has arrived but
        that this task has not been scheduled to read yet, nor behind the server's end of the
        connection (its FATAL message reaches _server_said while the buffer is parsed)."""
        pgconn = conn.pgconn
        try:
            pgconn.consume_input()  # a non-blocking read of what the socket holds
        except Exception:  # noqa: BLE001 - the connection is gone; _listen_forever will notice
            if self.answers is not None:
                self.answers.stop()
            return
        while (note := pgconn.notifies()) is not None:  # parses the buffer: notices included
            self._dispatch(note.relname.decode(), note.extra.decode())

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == JOB_ENDED_CHANNEL:
            self._wake(payload)
        elif self.answers is not None:
            if channel == JOB_CHANGED_CHANNEL:
                self.answers.note(payload)
            else:  # KEY_CHANGED_CHANNEL: whose answers a key may read changed
                self.answers.clear()

    def _wake(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    async def _watch_sqlite_forever(self) -> None:
        delay = 0.5
        while True:
            try:
                connection = sqlite3.connect(self._sqlite_path, timeout=0.05, isolation_level=None)
                try:
                    self.connected, delay = True, 0.5
                    await self._watch(connection)
                finally:
                    connection.close()
            except asyncio.CancelledError:
                raise
            except sqlite3.Error:
                log.warning("job-end watcher lost the database; retrying in %.1f s", delay, exc_info=True)
            finally:
                self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _watch(self, connection: sqlite3.Connection) -> None:
        # Run on the event loop: each read takes microseconds, less than a hop to a thread would.
        seen = None
        ended = ", ".join(f"'{state}'" for state in TERMINAL_JOB_STATES)  # constants, not input
        while True:
            if not self._waiters:
                # Idle: sleep until a request waits (a 5 ms tick with nobody waiting cost ~1.5 %
                # of a core).
                self._someone_waits.clear()
                await self._someone_waits.wait()
                seen = None  # the file may have changed while nobody looked
            if self._waiters:
                version = connection.execute("PRAGMA data_version").fetchone()[0]
                if version != seen:
                    seen = version
                    awaited = list(self._waiters)
                    for start in range(0, len(awaited), SQLITE_MAX_IDS):
                        ids = awaited[start : start + SQLITE_MAX_IDS]
                        marks = ", ".join("?" * len(ids))
                        query = f"SELECT id FROM jobs WHERE state IN ({ended}) AND id IN ({marks})"
                        for (job_id,) in connection.execute(query, ids):
                            self._wake(job_id)
            await asyncio.sleep(WATCH_S)

    async def _listen_forever(self) -> None:
        import psycopg

        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    for channel in (JOB_ENDED_CHANNEL, JOB_CHANGED_CHANNEL, KEY_CHANGED_CHANNEL):
                        await conn.execute(f"LISTEN {channel}")
                    self.connected, delay = True, 0.5
                    self.follow(conn)
                    async for note in conn.notifies():
                        self._dispatch(note.channel, note.payload)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - any failure: long polls fall back to looking often
                log.warning("job-end listener lost its connection; retrying in %.1f s", delay, exc_info=True)
            finally:
                self.connected = False
                if self.answers is not None:
                    self.answers.stop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)
