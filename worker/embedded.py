"""The embedded run mode behind `zooscope serve`: one machine, nothing to install.

One supervisor process (this module) prepares the data directory, then runs two children:
- the API: `uvicorn app.main:create_app --factory` on HOST:PORT;
- a real Celery worker: `celery -A worker.celery_app worker`, with the SQLAlchemy broker
  transport on a SQLite file (`sqla+sqlite:///<data_dir>/broker.sqlite`): queued messages are
  rows in a file, so a job submitted before a restart is still there after it.
The database is SQLite under the same folder. Before the worker starts, every job still `running`
is an orphan of the previous run (this worker is the only one), so it is re-queued (or failed
when out of attempts), and every queued job's task is sent again (a duplicate is harmless: one
claim wins). On first start the default zoos and autoencoders are built as jobs (bootstrap.py).

Ctrl-C (SIGINT) or SIGTERM: both children get SIGTERM (uvicorn stops serving, Celery finishes its
running task: warm shutdown); after --shutdown-timeout the worker is killed, and its job is re-run
on the next start. If the supervisor itself dies (SIGKILL included), the API gets SIGKILL
(PR_SET_PDEATHSIG) and the worker kills its own process group within a second
(worker/supervision.py): nothing is left running.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worker.supervision import SUPERVISOR_ENV

PR_SET_PDEATHSIG = 1
KILL_GRACE_S = 5.0  # after the shutdown timeout: cold shutdown, then SIGKILL this much later
EMBEDDED_POOL_PROCESSES = 2  # see start_worker


@dataclass(frozen=True)
class EmbeddedOptions:
    host: str
    port: int
    data_dir: Path
    bootstrap_models: bool = True
    shutdown_timeout: float = 10.0


def embedded_environment(data_dir: Path) -> dict[str, str]:
    """What both children are told. The database and broker URLs follow from the data directory
    (app.settings) unless ZOOSCOPE_DATABASE_URL / ZOOSCOPE_BROKER_URL are set (e.g. PostgreSQL)."""
    return {"ZOOSCOPE_DATA_DIR": str(data_dir)}


def _die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """For the child, before exec: `sig` when the supervisor dies."""

    def arrange() -> None:
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
        except OSError:  # not Linux: Ctrl-C still stops everything, a SIGKILLed supervisor may not
            pass

    return arrange


# The API has nobody to answer once the supervisor is gone: SIGKILL (a graceful uvicorn would
# wait for open long polls). The worker gets SIGTERM only as a fallback: its main process
# watches for the supervisor itself and kills its whole group, pool children included, which
# this signal would not reach (worker/supervision.py).
API_DEATH_SIGNAL = signal.SIGKILL
WORKER_DEATH_SIGNAL = signal.SIGTERM


# Seconds uvicorn keeps an idle connection open (its default is 5). The dashboard polls every
# second and, after an error, every 5 s: at uvicorn's 5 s the server closed connections just as
# a retrying tab sent on them. Longer than any poll interval of the dashboard, so a tab keeps its
# connection. The Dockerfile sets the same for the image (UVICORN_TIMEOUT_KEEP_ALIVE).
API_KEEP_ALIVE_S = 20


def api_command(host: str, port: int, workers: int = 1) -> list[str]:
    """The API's command line: uvicorn on host:port with our keep-alive, in `workers` processes."""
    command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"]
    command += ["--host", host, "--port", str(port), "--log-level", "warning"]
    command += ["--timeout-keep-alive", str(API_KEEP_ALIVE_S)]
    return command + (["--workers", str(workers)] if workers > 1 else [])


def start_api(options: EmbeddedOptions, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = api_command(options.host, options.port)
    return subprocess.Popen(command, env=env, preexec_fn=_die_with_parent(API_DEATH_SIGNAL))


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Its own process group, so the whole pool can be killed at once if it does not stop.
    # Two pool processes: a long job (the first start's zoo build and training, minutes to tens of
    # minutes) holds one, and a reconstruct submitted meanwhile runs in the other instead of
    # waiting behind it. More would only split this machine's cores further.
    command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"]
    command += ["-Q", "models,zoos", "--concurrency", str(EMBEDDED_POOL_PROCESSES)]
    command += ["-n", "embedded@%h", "--loglevel", "INFO"]
    # No broadcast on the SQLite broker: skip the features that need it.
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return subprocess.Popen(
        command, env=env, process_group=0, preexec_fn=_die_with_parent(WORKER_DEATH_SIGNAL)
    )


def prepare() -> None:
    """Migrate the database; recover the jobs the previous run left behind."""
    from app.db.migrate import upgrade_to_head
    from app.queue import CeleryJobQueue
    from worker.settings import WorkerSettings
    from worker.sweep import resend_queued, sweep_once

    settings = WorkerSettings()
    say(f"data directory {settings.data_dir}")
    say(f"database {settings.database_url}, broker {settings.broker_url}")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.database_url)
    queue = CeleryJobQueue(settings)
    swept = sweep_once(settings, queue, heartbeat_timeout=0.0)
    resent = resend_queued(settings, queue)
    if swept or resent:
        say(f"recovered {len(swept)} interrupted and {resent} queued job(s) from the previous run")


def run_embedded(options: EmbeddedOptions) -> int:
    options.data_dir.mkdir(parents=True, exist_ok=True)
    env = embedded_environment(options.data_dir)
    os.environ.update(env)  # this process reads the same settings as its children
    prepare()
    child_env = {**os.environ, **env, SUPERVISOR_ENV: str(os.getpid())}
    worker = start_worker(child_env)
    api = start_api(options, child_env)
    say(f"serving on http://{options.host}:{options.port} (Ctrl-C stops)")

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    if options.bootstrap_models:
        from worker.bootstrap import start_bootstrap

        start_bootstrap(stop, say)
    try:
        while not stop.wait(0.5):
            for name, proc in (("worker", worker), ("API", api)):
                if proc.poll() is not None:
                    say(f"the {name} exited with code {proc.returncode}; stopping")
                    stop.set()
        return shutdown(api, worker, options.shutdown_timeout)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def shutdown(api: subprocess.Popen[bytes], worker: subprocess.Popen[bytes], timeout: float) -> int:
    say("stopping the API and the worker")
    for proc in (api, worker):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # uvicorn: graceful; Celery: warm shutdown
    deadline = time.monotonic() + timeout
    for proc in (api, worker):
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            pass
    if worker.poll() is None:
        say(f"the worker is still busy after {timeout:g} s; stopping its job (it re-runs on the next start)")
        worker.send_signal(signal.SIGQUIT)  # Celery's cold shutdown
        try:
            worker.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    if api.poll() is None:
        api.kill()
        api.wait()
    _kill_group(worker.pid)  # pool processes a dead worker main may have left behind
    say("stopped")
    return 0


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def say(message: str) -> None:
    print(f"zooscope: {message}", flush=True)
