"""Where the compiled kernels (compiled_kernels.py) and the measured choices about them
(autotune.py) are kept on this machine."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "ZOOSCOPE_KERNEL_CACHE"  # where built kernels are kept (default ~/.cache/zooscope/kernels)


def cache_folder() -> Path:
    """Where built kernels and the autotune's decisions are kept."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "zooscope" / "kernels")
