"""A background beat that keeps a running job's heartbeat fresh between progress reports.

Progress reports also refresh the heartbeat, but one library step (loading a data set, one slow
epoch) can outlast the sweep's timeout; the beat proves the process is alive meanwhile. When the
process dies the beat stops with it, which is exactly what the sweep looks for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)


class Heartbeat:
    """Calls `touch()` every `interval_s` seconds on a daemon thread while the context is open."""

    def __init__(self, touch: Callable[[], None], interval_s: float, name: str = "job-heartbeat") -> None:
        self._touch = touch
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._touch()
            except Exception:  # a missed beat is harmless; the next one or a progress report retries
                log.warning("heartbeat update failed", exc_info=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval_s + 5)

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
