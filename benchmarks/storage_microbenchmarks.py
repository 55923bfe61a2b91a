"""The small costs behind a job's storage phases, each measured alone (docs/benchmarks.md, "Service").

    .venv/bin/python benchmarks/storage_microbenchmarks.py             # SQLite and file parts only
    .venv/bin/python benchmarks/storage_microbenchmarks.py --postgres  # + PostgreSQL on 127.0.0.1:5432

1. Reading 100 small checkpoints: `load_checkpoint`'s full audit (what an upload gets) against a
   blob verified by its sha256 and read with `load_own_checkpoint` + one `first_non_finite` scan
   (what the worker does with blobs the service wrote).
2. One commit of a one-row transaction: SQLite in the rollback journal (Kombu's default for the
   embedded broker), in WAL with synchronous=FULL and with NORMAL; PostgreSQL with
   synchronous_commit on and off.
3. Inserting 100 checkpoint rows in one transaction through SQLAlchemy: executemany (what
   `app/db/checkpoints.add_checkpoints` does), one INSERT ... RETURNING, one multi-VALUES statement, and on
   PostgreSQL a raw COPY.
4. PostgreSQL: one job read as GET /api/v1/jobs/{id} does it (a pooled session, the row by id),
   with the pool's pre-ping on and off, in a transaction and in autocommit: each of ping, BEGIN
   and COMMIT is a round trip of its own (the API keeps pre-ping and transactions: NOTES.md).
Medians of repeated runs, milliseconds. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from service_benchmarks import build_artefacts, distinct_checkpoints, postgres_database  # noqa: E402

N = 100


def median_ms(work: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def reading(folder: Path) -> list[tuple[str, float]]:
    from zooscope.networks.checkpoints import (
        checkpoint_bytes,
        first_non_finite,
        load_checkpoint,
        load_own_checkpoint,
    )

    zoo_dir, _ = build_artefacts(ROOT / ".zooscope" / "bench-artefacts")
    paths = []
    for state_dict in distinct_checkpoints(zoo_dir, N):
        data = checkpoint_bytes(state_dict)
        paths.append(folder / hashlib.sha256(data).hexdigest())
        paths[-1].write_bytes(data)

    def audited() -> None:
        for path in paths:
            load_checkpoint(path)

    def verified() -> None:
        state_dicts = []
        for path in paths:
            data = path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == path.name
            state_dicts.append(load_own_checkpoint(data))
        assert first_non_finite(state_dicts) is None

    return [
        (f"read {N} checkpoints, `load_checkpoint` (full audit)", median_ms(audited, 15)),
        (f"read {N} blobs: sha256, `load_own_checkpoint`, one finiteness scan", median_ms(verified, 15)),
    ]


def sqlite_commits(folder: Path) -> list[tuple[str, float]]:
    rows = []
    for journal, synchronous in (("delete", "FULL"), ("wal", "FULL"), ("wal", "NORMAL")):
        connection = sqlite3.connect(folder / f"{journal}-{synchronous}.sqlite", isolation_level=None)
        connection.execute(f"PRAGMA journal_mode={journal}")
        connection.execute(f"PRAGMA synchronous={synchronous}")
        connection.execute("CREATE TABLE t (x INTEGER)")

        def commit(connection: sqlite3.Connection = connection) -> None:
            connection.execute("BEGIN")
            connection.execute("INSERT INTO t VALUES (1)")
            connection.execute("COMMIT")

        rows.append((f"SQLite commit, journal {journal}, synchronous={synchronous}", median_ms(commit, 300)))
        connection.close()
    return rows


def postgres_commits(url: str) -> list[tuple[str, float]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    rows = []
    with engine.connect() as connection:
        connection.execute(text("CREATE TABLE commit_probe (x INTEGER)"))
        connection.commit()
        for setting in ("on", "off"):

            def commit(setting: str = setting) -> None:
                connection.execute(text(f"SET LOCAL synchronous_commit = {setting}"))
                connection.execute(text("INSERT INTO commit_probe VALUES (1)"))
                connection.commit()

            rows.append((f"PostgreSQL commit, synchronous_commit {setting}", median_ms(commit, 300)))
    engine.dispose()
    return rows


def row_inserts(url: str) -> list[tuple[str, float]]:
    from sqlalchemy import insert

    from app.db import jobs
    from app.db.migrate import upgrade_to_head
    from app.db.models import Checkpoint
    from app.db.session import session_scope
    from app.db.types import new_id, utcnow

    upgrade_to_head(url)
    with session_scope(url) as session:
        job_id = jobs.create_job(session, kind="reconstruct", params={})[0].id
    architecture = {"family": "cnn_digits", "in_channels": 1, "image_size": 8, "activation": "relu"}

    def rows() -> list[dict[str, Any]]:
        return [
            {
                "id": new_id(),
                "sha256": uuid.uuid4().hex * 2,
                "blob_key": "0" * 64,
                "kind": "reconstructed",
                "architecture": architecture,
                "architecture_name": "cnn_digits-1x8x8",
                "n_parameters": 1042,
                "n_tokens": 42,
                "name": f"reconstruction {i}",
                "size_bytes": 4904,
                "owner_id": None,
                "source_job_id": job_id,
                "accuracy": 0.5,
                "created_at": utcnow(),
                "extra": {"original_id": "a", "autoencoder_id": "b"},
            }  # fmt: skip
            for i in range(N)
        ]

    def executemany() -> None:
        with session_scope(url) as session:
            session.execute(insert(Checkpoint), rows())

    def returning() -> None:
        with session_scope(url) as session:
            session.execute(insert(Checkpoint).returning(Checkpoint.id), rows()).all()

    def values() -> None:
        with session_scope(url) as session:
            session.execute(insert(Checkpoint).values(rows()))

    def copy() -> None:
        batch = rows()
        columns = list(batch[0])
        with session_scope(url) as session:
            raw = session.connection().connection.driver_connection
            statement = f"COPY checkpoints ({', '.join(columns)}) FROM STDIN"
            with raw.cursor() as cursor, cursor.copy(statement) as out:
                for row in batch:
                    out.write_row([json.dumps(v) if isinstance(v, dict) else v for v in row.values()])

    shape = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    ways = [("executemany", executemany), ("one INSERT ... RETURNING", returning)]
    ways.append(("one multi-VALUES", values))
    if shape == "PostgreSQL":
        ways.append(("COPY (raw psycopg)", copy))
    return [(f"{shape}: insert {N} checkpoint rows, {name}", median_ms(work, 20)) for name, work in ways]


def job_reads(url: str) -> list[tuple[str, float]]:
    from app.db import jobs
    from app.db.migrate import upgrade_to_head
    from app.db.models import Job
    from app.db.session import make_engine, make_sessionmaker, session_scope
    from app.db.visibility import find_visible

    upgrade_to_head(url)
    with session_scope(url) as session:
        job_id = jobs.create_job(session, kind="reconstruct", params={})[0].id
    rows = []
    for pre_ping in (True, False):
        engine = make_engine(url, pool_pre_ping=pre_ping)
        makers = {
            "transaction": make_sessionmaker(engine),
            "autocommit": make_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT")),
        }
        for mode, maker in makers.items():

            def read(maker: Any = maker) -> None:
                with maker() as session:
                    assert find_visible(session, Job, job_id, None) is not None
                    session.commit()

            name = f"PostgreSQL job read, pre-ping {'on' if pre_ping else 'off'}, {mode}"
            rows.append((name, median_ms(read, 2000)))
        engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", action="store_true", help="also measure PostgreSQL on 127.0.0.1:5432")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="zooscope-micro-"))
    results = reading(folder) + sqlite_commits(folder) + row_inserts(f"sqlite:///{folder / 'rows.sqlite'}")
    if args.postgres:
        url, drop = postgres_database()
        try:
            results += postgres_commits(url) + row_inserts(url) + job_reads(url)
        finally:
            drop()
    print("| measurement | median (ms) |")
    print("|---|---|")
    for name, ms in results:
        print(f"| {name} | {ms:.2f} |")


if __name__ == "__main__":
    main()
