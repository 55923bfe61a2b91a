"""The embedded broker: Kombu's SQLAlchemy transport on a SQLite file, polled cheaply and often.

Kombu's transport looks for a message with a write transaction (BEGIN IMMEDIATE, a query of the
queue table, a query of the messages, a commit) for every queue on every poll: about a millisecond
of Python each. Polled every 0.05 s that cost a job 25 ms of pick-up on average, and polling
faster would have cost an idle worker a few per cent of a core.

`PRAGMA data_version` on a connection of its own changes whenever any other connection commits to
the file (the API publishing a message, for one) and costs microseconds. So a queue found empty
is not looked at again until the version has moved: the worker can look every POLL_S (a few ms of
pick-up) while an idle worker reads one number per queue per poll.
"""

from __future__ import annotations

import sqlite3
from queue import Empty
from typing import Any

from kombu.transport import sqlalchemy as sqla_transport
from sqlalchemy import event
from sqlalchemy.engine import make_url

from app.db.session import sqlite_shared_file_pragmas

POLL_S = 0.01  # seconds between looks at an empty queue; a job waits half of this on average


class DataVersionChannel(sqla_transport.Channel):
    """Kombu's SQLAlchemy channel that skips the message query while the file has not changed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watch: sqlite3.Connection | None = None
        self._empty_at: dict[str, int] = {}  # queue -> data_version at which it was found empty

    def _engine_from_config(self) -> Any:
        # The broker file in WAL mode (it persists in the file, so the API's publishing connections
        # use it too) and without an fsync per commit from the worker: Kombu's default rollback
        # journal cost ~0.9 ms for each take and each ack. The same pragmas as our own database.
        engine = super()._engine_from_config()
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", sqlite_shared_file_pragmas)
        return engine

    def _data_version(self) -> int | None:
        """The file's data_version, or None when the broker is not a SQLite file."""
        if self._watch is None:
            url = make_url(self.connection.client.hostname)
            if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
                return None
            self._watch = sqlite3.connect(url.database, timeout=1.0, check_same_thread=False)
        return int(self._watch.execute("PRAGMA data_version").fetchone()[0])

    def _get(self, queue: str) -> Any:
        # Read before the look: a message committed during the look moves the version past this.
        version = self._data_version()
        if version is not None and self._empty_at.get(queue) == version:
            raise Empty()
        try:
            return super()._get(queue)
        except Empty:
            if version is not None:
                self._empty_at[queue] = version
            raise

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        super().close()


def install() -> None:
    """Make `sqla+sqlite://` broker URLs use the channel above, polled every POLL_S.

    Kombu's transport takes no option for either (its transport options go to create_engine), so
    they are set on its class, in the worker process only (the API only publishes).
    """
    sqla_transport.Transport.Channel = DataVersionChannel
    sqla_transport.Transport.polling_interval = POLL_S
