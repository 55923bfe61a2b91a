"""Which workers are alive, where the broker cannot say: files under <data dir>/workers.

Readiness asks the workers for a ping through the broker. The embedded mode's SQLite broker has
no broadcast, so there each worker's main process touches a file named after its node every
PRESENCE_EVERY_S (worker/celery_app.py), removes it on a clean shutdown, and /readyz counts the
files younger than PRESENCE_STALE_S. Files suffice because such a broker means one machine: the
one the data directory is on.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from app.settings import Settings

PRESENCE_EVERY_S = 2.0
PRESENCE_STALE_S = 3 * PRESENCE_EVERY_S  # two missed touches and a worker counts as gone
_UNSAFE = re.compile(r"[^A-Za-z0-9@._-]")


def presence_dir(settings: Settings) -> Path:
    return settings.data_dir / "workers"


def _file_of(settings: Settings, node: str) -> Path:
    # Node names come from Celery (celery@host); still, never let one name a path outside the folder.
    return presence_dir(settings) / (_UNSAFE.sub("_", node).lstrip(".") or "worker")


def touch_presence(settings: Settings, node: str) -> None:
    path = _file_of(settings, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def remove_presence(settings: Settings, node: str) -> None:
    _file_of(settings, node).unlink(missing_ok=True)


def present_workers(settings: Settings, stale_after_s: float = PRESENCE_STALE_S) -> list[str]:
    """Nodes whose presence file was touched within `stale_after_s` seconds."""
    folder = presence_dir(settings)
    if not folder.is_dir():
        return []
    now = time.time()
    alive = []
    for path in folder.iterdir():
        try:
            if now - path.stat().st_mtime <= stale_after_s:
                alive.append(path.name)
        except FileNotFoundError:  # removed by a worker shutting down meanwhile
            continue
    return sorted(alive)
