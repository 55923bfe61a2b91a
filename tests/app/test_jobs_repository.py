"""The job state machine the worker relies on: claims, progress, cancel, finish, sweep."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from app.db import jobs
from app.db.models import Job
from app.db.session import make_engine, make_sessionmaker
from app.db.types import utcnow


def _session(url: str):
    return make_sessionmaker(make_engine(url))()


def test_claim_is_exclusive_and_finish_writes_once(database_url: str) -> None:
    with _session(database_url) as session:
        job, created = jobs.create_job(session, kind="encode", params={"checkpoint_ids": ["a"]})
        assert created and job.state == "queued"
        claimed = jobs.claim_job(session, job.id, "w1")
        assert claimed is not None and claimed.state == "running" and claimed.attempts == 1
        assert jobs.claim_job(session, job.id, "w2", heartbeat_timeout=60) is None  # w1 is alive

        assert jobs.update_progress(session, job.id, 1.7, "half") is False
        assert session.get(Job, job.id, populate_existing=True).progress == 1.0  # clamped to [0, 1]

        assert jobs.finish_job(session, job.id, {"items": [1]}) is True
        assert jobs.finish_job(session, job.id, {"items": [2]}) is False  # a redelivered task
        assert jobs.fail_job(session, job.id, "late", error_type="input") is False
        row = session.get(Job, job.id, populate_existing=True)
        assert row.state == "succeeded" and row.report == {"items": [1]} and row.finished_at is not None


def test_cancel_is_seen_by_progress_and_blocks_finish(database_url: str) -> None:
    with _session(database_url) as session:
        job, _ = jobs.create_job(session, kind="generate", params={})
        jobs.claim_job(session, job.id, "w1")
        assert jobs.cancel_job(session, job.id) is True
        assert jobs.update_progress(session, job.id, 0.5, "still going") is True  # stop now
        assert jobs.heartbeat(session, job.id) is True
        assert jobs.finish_job(session, job.id, {"x": 1}) is False
        assert jobs.cancel_job(session, job.id) is False  # already ended
        assert session.get(Job, job.id, populate_existing=True).state == "cancelled"


def test_stale_running_job_is_reclaimed_and_swept(database_url: str) -> None:
    with _session(database_url) as session:
        a, _ = jobs.create_job(session, kind="encode", params={})
        b, _ = jobs.create_job(session, kind="build_zoo", params={})
        for job in (a, b):
            jobs.claim_job(session, job.id, "dead-worker")
        old = utcnow() - timedelta(seconds=600)
        session.execute(update(Job).values(heartbeat_at=old))
        # b has used up its attempts; a has one left.
        session.execute(update(Job).where(Job.id == b.id).values(attempts=3))
        session.commit()

        swept = {s.job_id: s for s in jobs.sweep_stale_jobs(session, heartbeat_timeout=60, max_attempts=3)}
        assert swept[a.id].requeued and swept[a.id].kind == "encode"
        assert not swept[b.id].requeued
        assert session.get(Job, a.id, populate_existing=True).state == "queued"
        failed = session.get(Job, b.id, populate_existing=True)
        assert failed.state == "failed" and "stopped reporting" in failed.error
        assert jobs.sweep_stale_jobs(session, heartbeat_timeout=60) == []

        # A redelivered task re-claims a running job whose heartbeat went stale.
        again = jobs.claim_job(session, a.id, "w2")
        assert again is not None and again.attempts == 2
        session.execute(update(Job).where(Job.id == a.id).values(heartbeat_at=old))
        session.commit()
        third = jobs.claim_job(session, a.id, "w3", heartbeat_timeout=60)
        assert third is not None and third.worker_id == "w3"


def test_idempotency_key_is_unique_per_owner(database_url: str) -> None:
    with _session(database_url) as session:
        first, created = jobs.create_job(session, kind="encode", params={}, idempotency_key="k")
        second, created_again = jobs.create_job(session, kind="encode", params={}, idempotency_key="k")
        assert created and not created_again and first.id == second.id


def test_engines_tune_each_backend_for_the_job_path(database_url: str) -> None:
    """SQLite: WAL without an fsync per commit. PostgreSQL: no server-side prepared statements (a
    generic plan for `key IN (...)` lookups filtered whole tables), and progress writes that do
    not wait for the WAL flush."""
    from sqlalchemy import text

    engine = make_engine(database_url)
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        else:
            assert connection.connection.driver_connection.prepare_threshold is None
    with _session(database_url) as session:
        job, _ = jobs.create_job(session, kind="encode", params={"checkpoint_ids": ["a"]})
        jobs.claim_job(session, job.id, "w1")
        jobs.update_progress(session, job.id, 0.5, "half")
        if engine.dialect.name == "postgresql":  # SET LOCAL lasted for that transaction only
            assert session.execute(text("SHOW synchronous_commit")).scalar() == "on"
    engine.dispose()


def test_archive_job_states_finds_the_import_jobs_of_uploads(database_url: str) -> None:
    """The sweep keeps an unpacked upload while its import job may still read it: it reads the
    jobs by params.archive_id (a JSON field, on SQLite and PostgreSQL alike)."""
    ended, live, without_job = "a" * 32, "b" * 32, "c" * 32
    with _session(database_url) as session:
        failed, _ = jobs.create_job(session, kind="import_zoo", params={"archive_id": ended, "name": "x"})
        jobs.fail_job(session, failed.id, "no model could be imported", error_type="input")
        jobs.create_job(session, kind="import_zoo", params={"archive_id": live, "name": "y"})
        jobs.create_job(session, kind="import_zoo", params={"path": "/zoos/z"})
        jobs.create_job(session, kind="encode", params={"archive_id": without_job})  # not an import
        states = jobs.archive_job_states(session, {ended, live, without_job})
        assert states == {ended: ["failed"], live: ["queued"]}
        assert jobs.archive_job_states(session, set()) == {}
