"""The Celery client of the API: sends tasks by name, revokes them, and pings the workers.

The API never imports the worker package; it sends `zooscope.<kind>` with args [job_id] and the
worker registers tasks under those names. Routing (each kind's queue is in app/job_kinds.py):
kinds that run a model go to ZOOSCOPE_MODEL_QUEUE ("models", served by GPU-capable workers);
build_zoo and import_zoo go to ZOOSCOPE_ZOO_QUEUE ("zoos").
"""

from __future__ import annotations

from typing import Protocol

from celery import Celery

from app.settings import Settings

TASK_PREFIX = "zooscope."


def task_name(kind: str) -> str:
    return TASK_PREFIX + kind


class JobQueue(Protocol):
    def send(self, kind: str, job_id: str) -> None:
        """Enqueue the task of a job, with the job's id as the Celery task id (so the job row knows
        its task before it is sent, and a cancel can revoke it)."""

    def revoke(self, task_id: str) -> None: ...

    def check_broker(self, timeout: float) -> None:
        """Raise if the broker cannot be reached within `timeout` seconds."""

    def ping_workers(self, timeout: float) -> list[str]:
        """Names of the workers that answered a ping within `timeout` seconds."""


def make_celery_client(settings: Settings) -> Celery:
    """A Celery app used only as a client (no tasks registered here)."""
    client = Celery("zooscope-api", broker=settings.broker_url)
    client.conf.update(
        task_default_queue=settings.model_queue,
        # The jobs table holds results; nothing reads Celery's result backend.
        task_ignore_result=True,
        broker_connection_retry_on_startup=False,
    )
    if settings.broker_url.startswith("sqla+sqlite:"):
        from pathlib import Path

        from sqlalchemy.engine import make_url

        path = make_url(settings.broker_url.removeprefix("sqla+")).database
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    return client


class CeleryJobQueue:
    def __init__(self, settings: Settings, client: Celery | None = None) -> None:
        self.settings = settings
        self.client = client or make_celery_client(settings)

    def send(self, kind: str, job_id: str) -> None:
        self.client.send_task(
            task_name(kind), args=[job_id], queue=self.settings.queue_for(kind), task_id=job_id
        )

    def revoke(self, task_id: str) -> None:
        # Best effort: a queued message is dropped by the worker; the jobs table already says
        # cancelled, and the worker also checks that flag, so a lost revoke does no harm.
        try:
            self.client.control.revoke(task_id)
        except Exception:  # noqa: BLE001 - broadcast is unsupported by some transports (sqla)
            pass

    def check_broker(self, timeout: float) -> None:
        with self.client.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)

    @property
    def supports_ping(self) -> bool:
        """Worker pings are broadcasts; the embedded SQLite transport has no fanout exchange."""
        with self.client.connection_for_write() as connection:
            return "fanout" in connection.transport.implements.exchange_type

    def ping_workers(self, timeout: float) -> list[str]:
        replies = self.client.control.ping(timeout=timeout) or []
        return sorted(name for reply in replies for name in reply)
