"""The first-start build of the embedded mode: the default zoo, then the default autoencoder.

Both are ordinary jobs (visible in the API and dashboard, re-run if the worker dies); this thread
only submits them, follows them, and prints their progress on the console. It submits nothing
when a default autoencoder exists, and reuses a default build that is already queued or running
(from a previous start). ZOOSCOPE_DEFAULT_PRESET, an autoencoder preset, picks the size: "cpu"
(the default: the "digits" zoo of 360 models and the CPU autoencoder, tens of minutes on a laptop)
or "tiny" (the "tiny" zoo and autoencoder: seconds).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from app.db import artefacts, jobs
from app.db.models import Job
from app.db.session import session_scope
from app.queue import CeleryJobQueue
from worker.settings import WorkerSettings
from zooscope.autoencoder.config import AUTOENCODER_PRESETS, DEFAULT_AUTOENCODER_PRESET
from zooscope.zoo.presets import DEFAULT_ZOO_PRESET

POLL_S = 1.0
PRINT_STEP = 0.05  # print progress when it moved by this much (or the message changed)
ACTIVE = ("queued", "running", "succeeded")

Say = Callable[[str], None]


def start_bootstrap(stop: threading.Event, say: Say) -> threading.Thread:
    thread = threading.Thread(target=_bootstrap_safely, args=(stop, say), name="bootstrap", daemon=True)
    thread.start()
    return thread


def _bootstrap_safely(stop: threading.Event, say: Say) -> None:
    try:
        bootstrap_default_models(WorkerSettings(), stop, say)
    except Exception as exc:  # the service still serves; say why the defaults are missing
        say(f"first-start build stopped: {type(exc).__name__}: {exc}")


def bootstrap_default_models(settings: WorkerSettings, stop: threading.Event, say: Say) -> None:
    preset = os.environ.get("ZOOSCOPE_DEFAULT_PRESET") or DEFAULT_AUTOENCODER_PRESET
    if preset not in AUTOENCODER_PRESETS:
        raise ValueError(f"ZOOSCOPE_DEFAULT_PRESET={preset!r}; known: {', '.join(AUTOENCODER_PRESETS)}")
    queue = CeleryJobQueue(settings)
    url = settings.database_url
    with session_scope(url) as session:
        if artefacts.get_default_autoencoder(session) is not None:
            return
        zoo = artefacts.find_zoo_by_path(session, str(settings.default_zoo_dir.resolve()))
        zoo_id = zoo.id if zoo is not None else None
    if zoo_id is None:
        zoo_preset = "tiny" if preset == "tiny" else DEFAULT_ZOO_PRESET
        say(f"no default zoo yet: building it ({zoo_preset}) as a job")
        job = _submit(settings, queue, "build_zoo", {"preset": zoo_preset, "name": "default digits zoo"})
        report = _follow(settings, job, stop, say)
        if report is None:
            return
        zoo_id = report["zoo_id"]
    say(f"no default autoencoder yet: training it ({preset}) as a job")
    params = {"zoo_id": zoo_id, "preset": preset, "name": "default autoencoder", "make_default": True}
    job = _submit(settings, queue, "train_autoencoder", params)
    if _follow(settings, job, stop, say) is not None:
        say("the default zoo and autoencoder are ready")


def _submit(settings: WorkerSettings, queue: CeleryJobQueue, kind: str, params: dict[str, Any]) -> str:
    """A default-build job of `kind`: the live one from an earlier start, else a new one."""
    params = {**params, "target": "default"}
    with session_scope(settings.database_url) as session:
        for job in session.scalars(select(Job).where(Job.kind == kind, Job.state.in_(ACTIVE))):
            if (job.params or {}).get("target") == "default":
                return job.id
        job, _ = jobs.create_job(session, kind=kind, params=params)
        job_id = job.id
    queue.send(kind, job_id)
    return job_id


def _follow(settings: WorkerSettings, job_id: str, stop: threading.Event, say: Say) -> dict[str, Any] | None:
    """Print the job's progress until it ends; its report if it succeeded."""
    shown = (-1.0, "")
    while not stop.is_set():
        with session_scope(settings.database_url) as session:
            job = session.get(Job, job_id)
            state, progress, message = job.state, job.progress, job.message
            report, error = job.report, job.error
        if state == "succeeded":
            say(f"job {job_id} ({job.kind}) succeeded")
            return report
        if state in ("failed", "cancelled"):
            say(f"job {job_id} ({job.kind}) {state}: {error or message}")
            return None
        if progress - shown[0] >= PRINT_STEP or message != shown[1]:
            say(f"job {job_id} ({job.kind}) {state} {100 * progress:3.0f}% {message}")
            shown = (progress, message)
        time.sleep(POLL_S)
    return None
