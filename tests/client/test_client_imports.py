"""The client is usable where only the library is installed: it must not pull in the service."""

from __future__ import annotations

import subprocess
import sys


def test_client_imports_no_service_frameworks():
    code = (
        "import sys, zooscope.client, zooscope.cli.client; "
        "bad = [m for m in ('fastapi', 'sqlalchemy', 'celery', 'app', 'worker') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
