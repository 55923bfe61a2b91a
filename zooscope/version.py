"""The code version every artefact records: zooscope's version, plus the git commit when the code
runs from a checkout (`0.1.0+g1a2b3c4`), so a result can be traced to the code that wrote it."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

import zooscope


@cache  # the code a process runs does not change under it; ask git once
def code_version() -> str:
    """zooscope's version, plus the git commit when the code runs from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return zooscope.__version__
    return f"{zooscope.__version__}+g{sha}" if sha else zooscope.__version__
