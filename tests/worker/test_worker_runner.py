"""The job life cycle inside a worker (claim, progress, cancel, errors, sweep) on SQLite, in-process.

The real Celery worker and the real library calls are exercised in test_service_worker.py; here
the task body is a plain function, so each rule of worker/runner.py is checked in milliseconds.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from app.db import jobs
from app.db.models import Job
from app.db.session import session_scope
from worker.runner import JobContext, run_job
from worker.settings import WorkerSettings
from worker.sweep import sweep_once
from zooscope.errors import ZooscopeError


class SentQueue:
    """Records re-sent tasks (the sweep's) instead of talking to a broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, kind: str, job_id: str) -> None:
        self.sent.append((kind, job_id))


def new_job(settings: WorkerSettings, kind: str = "encode") -> str:
    with session_scope(settings.database_url) as session:
        job, _ = jobs.create_job(session, kind=kind, params={"checkpoint_ids": ["x"]})
        return job.id


def row(settings: WorkerSettings, job_id: str) -> SimpleNamespace:
    """The job's columns, read in one session (the report column loads lazily)."""
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        names = ("state", "report", "progress", "attempts", "error", "error_type", "eta_s", "sent_at")
        return SimpleNamespace(**{name: getattr(job, name) for name in names})


def test_success_records_the_report_once_and_a_redelivery_is_skipped(sqlite_settings: WorkerSettings) -> None:
    job_id = new_job(sqlite_settings)
    calls: list[int] = []

    def body(ctx: JobContext) -> dict[str, Any]:
        calls.append(ctx.attempt)
        ctx.progress(0.5, "half way")
        return {"answer": 42}

    assert run_job(job_id, body, sqlite_settings) == "succeeded"
    # Celery may deliver the same message again (acks_late after a lost connection): no second run.
    assert run_job(job_id, body, sqlite_settings) == "skipped"
    job = row(sqlite_settings, job_id)
    assert (job.state, job.report, job.progress, job.attempts, calls) == (
        "succeeded",
        {"answer": 42},
        1.0,
        1,
        [1],
    )


def test_invalid_input_fails_with_the_message_and_is_not_retried(sqlite_settings: WorkerSettings) -> None:
    job_id = new_job(sqlite_settings)

    def body(ctx: JobContext) -> dict[str, Any]:
        raise ZooscopeError("checkpoint abc has the wrong architecture")

    assert run_job(job_id, body, sqlite_settings) == "failed"
    job = row(sqlite_settings, job_id)
    assert job.state == "failed" and "wrong architecture" in job.error and job.report is None
    assert job.error_type == "input"
    assert run_job(job_id, body, sqlite_settings) == "skipped"


@pytest.mark.parametrize(
    "error", [ValueError("bad shape"), KeyError("weight"), TypeError("None"), IndexError("3")]
)
def test_a_bug_is_an_internal_error_with_its_traceback_logged(
    sqlite_settings: WorkerSettings, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    # Only the library's typed errors are the caller's fault; anything else is ours.
    job_id = new_job(sqlite_settings)

    def body(ctx: JobContext) -> dict[str, Any]:
        raise error

    with caplog.at_level("ERROR", logger="worker.runner"):
        assert run_job(job_id, body, sqlite_settings) == "failed"
    job = row(sqlite_settings, job_id)
    assert job.error_type == "internal"
    assert job.error.startswith("internal error") and type(error).__name__ in job.error
    assert "not caused by the request" in job.error and job_id in job.error
    logged = [r for r in caplog.records if r.exc_info and job_id in r.getMessage()]
    assert logged and logged[0].exc_info[0] is type(error)  # the traceback is in the worker's log


def test_a_running_job_reports_a_decreasing_eta(sqlite_settings: WorkerSettings) -> None:
    settings = sqlite_settings.model_copy(update={"progress_interval_s": 0.0})
    job_id = new_job(settings)
    seen: list[float | None] = []

    def body(ctx: JobContext) -> dict[str, Any]:
        for step in range(1, 6):
            time.sleep(0.05)
            ctx.progress(step / 10, f"epoch {step}")
            seen.append(row(settings, ctx.job_id).eta_s)
        return {}

    assert run_job(job_id, body, settings) == "succeeded"
    assert all(eta is not None and eta > 0 for eta in seen), seen
    assert all(a > b for a, b in zip(seen, seen[1:], strict=False)), seen
    # 0.05 s a tenth: about 0.05 s per remaining tenth (generous bounds: a shared CPU).
    assert 0.1 < seen[0] < 2.0
    assert row(settings, job_id).eta_s == 0.0  # done


def test_cancel_stops_the_job_at_its_next_progress_report(sqlite_settings: WorkerSettings) -> None:
    job_id = new_job(sqlite_settings)
    reached: list[float] = []

    def body(ctx: JobContext) -> dict[str, Any]:
        for step in range(100):
            if step == 3:
                with session_scope(sqlite_settings.database_url) as session:
                    jobs.cancel_job(session, ctx.job_id)  # what POST /jobs/{id}/cancel does
            ctx.progress(step / 100, f"step {step}")
            reached.append(step)
            time.sleep(0.05)  # past the progress throttle, so each call writes
        return {"never": "recorded"}

    assert run_job(job_id, body, sqlite_settings) == "cancelled"
    job = row(sqlite_settings, job_id)
    assert job.state == "cancelled" and job.report is None
    assert max(reached) < 10  # stopped promptly, not at the end


def test_progress_writes_are_throttled(sqlite_settings: WorkerSettings) -> None:
    job_id = new_job(sqlite_settings)
    seen: dict[str, int] = {}

    def body(ctx: JobContext) -> dict[str, Any]:
        for i in range(2000):  # a tight loop, as a training step loop would call it
            ctx.progress(i / 2000, "tight loop")
        seen["writes"] = ctx.progress.writes  # type: ignore[attr-defined]
        return {}

    start = time.monotonic()
    run_job(job_id, body, sqlite_settings)
    elapsed = time.monotonic() - start
    assert seen["writes"] <= 2 + elapsed / sqlite_settings.progress_interval_s


def test_a_dead_workers_job_is_requeued_then_failed_after_max_attempts(
    sqlite_settings: WorkerSettings,
) -> None:
    job_id = new_job(sqlite_settings)
    queue = SentQueue()
    for attempt in range(1, sqlite_settings.job_max_attempts + 1):
        with session_scope(sqlite_settings.database_url) as session:
            assert jobs.claim_job(session, job_id, f"host:{attempt}") is not None  # then the worker "dies"
        assert sweep_once(sqlite_settings, queue) == []  # its heartbeat is fresh: left alone
        swept = sweep_once(sqlite_settings, queue, heartbeat_timeout=0.0)
        assert [s.job_id for s in swept] == [job_id]
    job = row(sqlite_settings, job_id)
    assert job.state == "failed" and "stopped reporting" in job.error
    assert queue.sent == [("encode", job_id)] * (sqlite_settings.job_max_attempts - 1)


def test_a_queued_job_whose_message_was_lost_is_sent_again_once_per_bound(
    sqlite_settings: WorkerSettings,
) -> None:
    settings = sqlite_settings.model_copy(update={"job_resend_after_s": 0.2})
    lost = new_job(settings)
    queue = SentQueue()
    sweep_once(settings, queue)
    assert queue.sent == []  # just sent: not yet overdue
    time.sleep(0.3)
    fresh = new_job(settings)
    sweep_once(settings, queue)
    assert queue.sent == [("encode", lost)]  # the overdue one only
    sweep_once(settings, queue)
    assert queue.sent == [("encode", lost)]  # marked as sent: not again before the bound
    time.sleep(0.3)
    sweep_once(settings, queue)
    assert sorted(queue.sent) == sorted([("encode", lost), ("encode", lost), ("encode", fresh)])
    # A claimed job is never re-sent, and the re-sent one still runs exactly once.
    assert run_job(lost, lambda ctx: {"ok": True}, settings) == "succeeded"
    assert run_job(lost, lambda ctx: {"ok": True}, settings) == "skipped"
    time.sleep(0.3)
    queue.sent.clear()
    sweep_once(settings, queue)
    assert queue.sent == [("encode", fresh)]


def test_a_transient_database_error_mid_job_leaves_it_to_the_sweep(sqlite_settings: WorkerSettings) -> None:
    job_id = new_job(sqlite_settings)

    def flaky(ctx: JobContext) -> dict[str, Any]:
        raise OperationalError("UPDATE jobs", {}, Exception("server closed the connection"))

    assert run_job(job_id, flaky, sqlite_settings) == "lost"
    assert row(sqlite_settings, job_id).state == "running"
    queue = SentQueue()
    sweep_once(sqlite_settings, queue, heartbeat_timeout=0.0)
    assert queue.sent == [("encode", job_id)] and row(sqlite_settings, job_id).state == "queued"
    assert run_job(job_id, lambda ctx: {"ok": True}, sqlite_settings) == "succeeded"
    assert row(sqlite_settings, job_id).attempts == 2


def test_the_heartbeat_keeps_a_slow_step_alive(sqlite_settings: WorkerSettings) -> None:
    job_id = new_job(sqlite_settings)
    queue = SentQueue()
    swept: list[Any] = []

    def slow(ctx: JobContext) -> dict[str, Any]:
        time.sleep(1.5)  # no progress call: only the background beat refreshes the heartbeat
        swept.extend(sweep_once(sqlite_settings, queue, heartbeat_timeout=1.0))
        return {}

    assert run_job(job_id, slow, sqlite_settings) == "succeeded"
    assert swept == [] and queue.sent == []


def test_soft_time_limit_fails_the_job_with_the_reason(sqlite_settings: WorkerSettings) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    job_id = new_job(sqlite_settings)

    def body(ctx: JobContext) -> dict[str, Any]:
        raise SoftTimeLimitExceeded()

    assert run_job(job_id, body, sqlite_settings) == "failed"
    assert "time limit" in row(sqlite_settings, job_id).error


@pytest.mark.parametrize("kind", ["reconstruct", "train_autoencoder"])
def test_time_limits_depend_on_the_kind(kind: str) -> None:
    settings = WorkerSettings(database_url="sqlite://", broker_url="memory://")
    soft, hard = settings.time_limits(kind)
    assert hard > soft
    assert soft == (
        settings.long_job_time_limit_s if kind == "train_autoencoder" else settings.short_job_time_limit_s
    )


def _cancel(ctx: JobContext) -> dict[str, Any]:
    with session_scope(ctx.settings.database_url) as session:
        jobs.cancel_job(session, ctx.job_id)  # what POST /jobs/{id}/cancel does
    ctx.progress(1.0, "next report")
    return {"never": "recorded"}


def _requeue(ctx: JobContext) -> dict[str, Any]:
    with session_scope(ctx.settings.database_url) as session:  # the sweep took this worker for dead
        jobs.sweep_stale_jobs(session, heartbeat_timeout=0.0)
    ctx.progress(1.0, "next report")
    return {"never": "recorded"}


def _raise(error: BaseException) -> Any:
    def body(ctx: JobContext) -> dict[str, Any]:
        raise error

    return body


@pytest.mark.parametrize(
    ("body", "outcome", "runs"),
    [
        (lambda ctx: {"ok": True}, "succeeded", True),
        (_raise(ZooscopeError("no model could be imported")), "failed", True),
        (_raise(KeyError("a bug")), "failed", True),
        (_cancel, "cancelled", True),
        (_raise(OperationalError("UPDATE jobs", {}, Exception("connection lost"))), "lost", False),
        (_requeue, "cancelled", False),
    ],
    ids=["succeeded", "input error", "internal error", "cancelled", "transient error", "handed over"],
)
def test_end_actions_run_once_the_job_has_ended_for_good(
    sqlite_settings: WorkerSettings, body: Any, outcome: str, runs: bool
) -> None:
    """An input the job alone reads (an unpacked upload) may go when it ends, but a job that will
    run again (re-queued by the sweep) still needs it."""
    job_id = new_job(sqlite_settings)
    ran: list[str] = []

    def with_action(ctx: JobContext) -> dict[str, Any]:
        ctx.when_ended(lambda: ran.append(row(sqlite_settings, job_id).state))
        return body(ctx)

    assert run_job(job_id, with_action, sqlite_settings) == outcome
    # when it runs, the outcome is already recorded
    assert ran == ([row(sqlite_settings, job_id).state] if runs else [])
    assert not runs or ran[0] in ("succeeded", "failed", "cancelled")
