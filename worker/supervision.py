"""A worker started by `zooscope serve` stops at once when its supervisor is gone.

The supervisor (worker/embedded.py) starts the worker in its own process group and names its own
pid in ZOOSCOPE_SUPERVISOR_PID. The kernel's parent-death signal (SIGTERM) alone is not enough:
Celery reads SIGTERM as a warm shutdown and finishes the running job, possibly a training run of
many minutes, with nobody serving its result, holding the CPU. So the worker's main process also
watches its parent: once it is no longer the supervisor (it died, whatever the signal), the worker
kills its whole process group, pool children included. The interrupted job is re-run on the next
start (or, with a shared database, by another worker through the sweep).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

SUPERVISOR_ENV = "ZOOSCOPE_SUPERVISOR_PID"
CHECK_EVERY_S = 1.0  # the worker is gone within about this long after its supervisor


def supervisor_pid() -> int | None:
    value = os.environ.get(SUPERVISOR_ENV, "")
    return int(value) if value.isdigit() else None


def watch_supervisor() -> threading.Thread | None:
    """Start the watch in this (the worker's main) process; None when no supervisor is named."""
    supervisor = supervisor_pid()
    if supervisor is None:
        return None
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(CHECK_EVERY_S):
            if os.getppid() != supervisor:
                log.error(
                    "the supervisor (pid %d) is gone: stopping this worker and its pool now; "
                    "the interrupted job re-runs on the next start",
                    supervisor,
                )
                os.killpg(os.getpgid(0), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="supervisor-watch", daemon=True)
    thread.start()
    return thread
