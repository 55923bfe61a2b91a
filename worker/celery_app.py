"""The worker's Celery app: the API's client configuration (app.queue) plus the worker-side policy.

Run it with `celery -A worker.celery_app worker -Q models,zoos`. On a GPU host, one worker per GPU
serves the model queue: `CUDA_VISIBLE_DEVICES=<i> celery -A worker.celery_app worker -Q models
--concurrency 1`; CPU hosts serve "zoos" (zoo builds and imports) and, without GPUs, "models".

Delivery policy, and why:
- acks_late + reject_on_worker_lost: a message is acknowledged only after its task ran, so a
  worker that dies mid-task gives the message back instead of losing the job;
- prefetch 1: a worker holds no more messages than it runs (jobs are long; prefetched messages
  would wait behind one job while another worker idles);
- no result backend: the jobs table is the source of truth;
- soft and hard time limits per kind (worker/settings.py).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from app.queue import CeleryJobQueue, make_celery_client
from worker.settings import get_worker_settings

log = logging.getLogger(__name__)

settings = get_worker_settings()
app: Celery = make_celery_client(settings)
app.main = "zooscope-worker"
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_track_started=False,
    # The worker waits for the broker to come up instead of exiting (the API fails fast instead).
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    worker_hijack_root_logger=True,
    worker_cancel_long_running_tasks_on_connection_loss=False,
)
if settings.broker_url.startswith(("redis", "rediss")):
    # Long tasks: Redis hands an unacknowledged message to another worker after this long (default
    # 1 h, shorter than a training job). The claim would skip the duplicate anyway; a dead worker's
    # job is re-sent by the sweep, not by this timeout. (The SQLite broker passes its transport
    # options to create_engine, so they are set for Redis only.)
    app.conf.broker_transport_options = {"visibility_timeout": 7 * 24 * 3600}
elif settings.broker_url.startswith("sqla+"):
    # The embedded broker: Kombu's SQLAlchemy transport sleeps a second between polls of an empty
    # queue; worker/sqlite_broker.py polls every few ms and skips looks at an unchanged file.
    from worker import sqlite_broker

    sqlite_broker.install()
app.conf.include = ["worker.tasks"]
celery = app  # `celery -A worker.celery_app` finds `app` or `celery`

_sweeper: Any = None
_presence: Any = None


@worker_ready.connect
def _start_reporting_presence(sender: Any = None, **_: Any) -> None:
    """Brokers without broadcast (the embedded SQLite one) cannot ping workers: report by file."""
    global _presence
    if CeleryJobQueue(settings, client=app).supports_ping:
        return
    from app.worker_presence import PRESENCE_EVERY_S, touch_presence
    from worker.heartbeat import Heartbeat

    node = getattr(sender, "hostname", None) or "worker"
    touch_presence(settings, node)
    beat = Heartbeat(lambda: touch_presence(settings, node), PRESENCE_EVERY_S, name="worker-presence")
    _presence = (beat.start(), node)


@worker_shutdown.connect
def _stop_reporting_presence(**_: Any) -> None:
    if _presence is not None:
        from app.worker_presence import remove_presence

        beat, node = _presence
        beat.stop()
        remove_presence(settings, node)


@worker_ready.connect
def _watch_the_supervisor(**_: Any) -> None:
    """Under `zooscope serve`: stop within seconds when the supervisor dies (worker/supervision.py)."""
    from worker.supervision import watch_supervisor

    watch_supervisor()


@worker_ready.connect
def _start_sweeping(**_: Any) -> None:
    """Recover the jobs of dead workers at start, then keep doing so on a timer."""
    global _sweeper
    from worker.sweep import SweepTimer, sweep_once

    queue = CeleryJobQueue(settings, client=app)
    try:
        swept = sweep_once(settings, queue)
        if swept:
            log.warning("start-up sweep recovered %d job(s)", len(swept))
    except Exception:
        log.warning("start-up sweep failed; the timer retries", exc_info=True)
    _sweeper = SweepTimer(settings, queue, settings.sweep_every_s)
    _sweeper.start()


@worker_shutdown.connect
def _stop_sweeping(**_: Any) -> None:
    if _sweeper is not None:
        _sweeper.stop()
