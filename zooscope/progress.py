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
