"""Wake long polls (GET /jobs/{id}?wait=...) the moment a job ends.

On PostgreSQL the job repository sends `NOTIFY zooscope_job_ended, '<job id>'` when a job ends
(app/db/jobs.py). One LISTEN connection per API process turns those notifications into asyncio
events for the requests waiting on that job, so a finished job is answered within milliseconds
and a waiting request costs nothing while it waits. Elsewhere (SQLite) there is nothing to listen
to, and a long poll looks at the job row every POLL_S.

The job row stays the truth either way: a notification only says "look now". While the listener
is connected a long poll still looks every SAFETY_LOOK_S, in case a notification was lost (the
listener reconnecting, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from sqlalchemy.engine import make_url

from app.db.jobs import JOB_ENDED_CHANNEL

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a long poll looks at the row without notifications
SAFETY_LOOK_S = 1.0  # how often it looks anyway while notifications flow
RECONNECT_MAX_S = 30.0


class JobEndListener:
    """LISTEN for ended jobs on PostgreSQL; a no-op (polling) on other databases."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self.enabled = url.get_backend_name() == "postgresql"
        # psycopg takes a libpq URI: the same URL without SQLAlchemy's "+driver"
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._listen_forever(), name="zooscope-job-end-listener")

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
        try:
            yield event
        finally:
            waiting = self._waiters.get(job_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[job_id]

    async def _listen_forever(self) -> None:
        import psycopg

        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {JOB_ENDED_CHANNEL}")
                    self.connected, delay = True, 0.5
                    async for note in conn.notifies():
                        for event in self._waiters.get(note.payload, ()):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - any failure: long polls fall back to looking often
                log.warning("job-end listener lost its connection; retrying in %.1f s", delay, exc_info=True)
            finally:
                self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)
