"""Presence files: how readiness sees workers where the broker cannot ping them."""

from __future__ import annotations

import os
import time
from pathlib import Path

from app.settings import Settings
from app.worker_presence import PRESENCE_STALE_S, present_workers, remove_presence, touch_presence


def test_fresh_files_count_stale_and_removed_ones_do_not(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert present_workers(settings) == []  # no folder yet
    touch_presence(settings, "celery@alpha")
    touch_presence(settings, "celery@beta")
    touch_presence(settings, "celery@../../etc")  # a node name never makes a path outside the folder
    old = time.time() - 2 * PRESENCE_STALE_S
    os.utime(tmp_path / "workers" / "celery@beta", (old, old))
    remove_presence(settings, "celery@alpha")

    assert present_workers(settings) == ["celery@.._.._etc"]
    assert sorted(p.name for p in (tmp_path / "workers").iterdir()) == ["celery@.._.._etc", "celery@beta"]
