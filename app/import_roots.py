"""Which folders an import_zoo job may read.

An import job names a folder on the worker's machine. Without a rule, anyone holding an API key
could point the worker at any folder it can read; so with keys required (production) a folder
must lie inside one of ZOOSCOPE_IMPORT_ROOTS, and without roots imports are refused. The
embedded mode (no keys, loopback only) is a person's own machine: with no roots set, any folder.

The API checks when the job is submitted (a clear 422); the worker checks again before reading,
on the resolved path, so a symlink swapped in between does not lead outside the roots.
"""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings


class ImportPathRefused(ValueError):
    """The folder is outside the allowed import roots (or imports are off)."""


def check_import_path(settings: Settings, path: str | Path) -> Path:
    """The resolved folder if an import may read it; ImportPathRefused saying why otherwise."""
    resolved = Path(path).expanduser().resolve()
    roots = [Path(root).expanduser().resolve() for root in settings.import_roots]
    if not roots:
        if settings.auth_required:
            raise ImportPathRefused(
                "zoo imports are off on this server: an operator enables them by setting "
                "ZOOSCOPE_IMPORT_ROOTS to the folders imports may read"
            )
        return resolved
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise ImportPathRefused(f"{resolved} is outside the folders imports may read ({allowed})")
    return resolved
