"""Progress reporting shared by the CLI (a bar) and the worker (the jobs table).

Long library calls take `progress: ProgressFn | None`. They call it with a fraction in [0, 1]
and a short message. A callback may raise `Cancelled` to stop the work cleanly (the worker does
when a job was cancelled); the library lets it propagate.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[float, str], None]


class Cancelled(Exception):
    """Raised by a progress callback to stop the work it reports on."""


def report(progress: ProgressFn | None, fraction: float, message: str = "") -> None:
    if progress is not None:
        progress(min(max(fraction, 0.0), 1.0), message)


def scaled(progress: ProgressFn | None, start: float, end: float) -> ProgressFn | None:
    """A callback for a sub-step that maps its own 0..1 onto [start, end] of the parent's."""
    if progress is None:
        return None
    return lambda fraction, message="": progress(start + (end - start) * fraction, message)


# The ETA reads the pace of the recent past, so that a job whose phases run at different speeds
# (training, then evaluation) is estimated by the phase it is in: the last RECENT_SHARE of the
# elapsed time, but never less than MIN_WINDOW_S.
RECENT_SHARE = 0.25
MIN_WINDOW_S = 10.0
MAX_SAMPLES = 512  # older samples are thinned out: memory stays bounded on a days-long job


class EtaEstimator:
    """Seconds left of a piece of work, from the fractions it reported and when.

    `update(fraction, now)` records a sample and returns the estimate: the fraction left divided
    by the pace (fraction per second) over the recent window. None until two samples with
    progress between them exist; 0 once the work is done.
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self._samples: list[tuple[float, float]] = [(started, 0.0)]

    def update(self, fraction: float, now: float) -> float | None:
        fraction = min(max(fraction, 0.0), 1.0)
        if fraction >= 1.0:
            return 0.0
        if fraction < self._samples[-1][1]:  # progress went back (a re-run phase): start afresh
            self._samples = [(now, fraction)]
            return None
        self._samples.append((now, fraction))
        if len(self._samples) > MAX_SAMPLES:
            self._samples = self._samples[::2] + ([self._samples[-1]] if len(self._samples) % 2 == 0 else [])
        window = max(MIN_WINDOW_S, RECENT_SHARE * (now - self.started))
        first = next((s for s in self._samples if s[0] >= now - window), self._samples[-1])
        if first is self._samples[-1]:
            first = self._samples[-2]
        seconds, done = now - first[0], fraction - first[1]
        if seconds <= 0 or done <= 0:
            return None
        return (1.0 - fraction) * seconds / done
