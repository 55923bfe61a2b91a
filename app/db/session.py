"""Engines and sessions. The API opens one session per request; the worker uses session_scope().

SQLite is shared by the API process and the embedded worker process, so every SQLite connection
gets WAL journaling (readers never block the writer), synchronous=NORMAL (no fsync per commit)
and a busy timeout (a writer waits for the other instead of failing with "database is locked").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`, with the SQLite pragmas above where it applies."""
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"check_same_thread": False})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)  # survive a PostgreSQL restart between requests
    # No server-side prepared statements: psycopg prepares a query after 5 runs, and PostgreSQL
    # may then plan it once for any parameters. For our `key IN (100 values)` lookups that
    # generic plan filtered the whole checkpoints table: a batch job's row writes took 0.031-0.036 s
    # instead of 0.017 s once the table held 5,000 checkpoints (docs/benchmarks.md).
    if url.startswith("postgresql+psycopg"):
        kwargs.setdefault("connect_args", {}).setdefault("prepare_threshold", None)
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    sqlite_shared_file_pragmas(dbapi_connection, record)


def sqlite_shared_file_pragmas(dbapi_connection: Any, _record: Any = None) -> None:
    """A SQLite file that two processes share (our database; the embedded broker's, via
    worker/sqlite_broker.py): a busy timeout, WAL, and no fsync per commit. A "connect" listener."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    if ":memory:" not in str(dbapi_connection):
        cursor.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL syncs at checkpoints instead of every commit (0.27 -> 0.01 ms a commit
        # here): still never corrupt, but a power loss (not a crash of ours) may undo the last
        # commits. A job a lost commit leaves queued or running is re-run by the sweep.
        cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects stay readable after the repository functions commit.
    return sessionmaker(bind=engine, expire_on_commit=False)


@lru_cache
def engine_for(url: str) -> Engine:
    """One engine per URL per process (engines own connection pools: make them once)."""
    return make_engine(url)


@contextmanager
def session_scope(engine: Engine | str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    `engine` may be an Engine, a URL, or None for the URL in the process settings.
    """
    if engine is None:
        from app.settings import get_settings

        engine = get_settings().database_url
    if isinstance(engine, str):
        engine = engine_for(engine)
    session = make_sessionmaker(engine)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def commit_without_waiting_for_disk(session: Session) -> None:
    """PostgreSQL: this transaction's commit does not wait for its WAL flush (0.3-1 ms here,
    benchmarks/storage_microbenchmarks.py).

    Only for writes nothing depends on (progress, heartbeats): losing the last of them in a database
    crash is harmless, the next write or the sweep makes up for it. A no-op elsewhere (SQLite runs
    with synchronous=NORMAL already).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit = off"))
