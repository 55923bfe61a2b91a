"""`zooscope serve` (the real API + a real Celery worker) in a subprocess on a free port.

Used by the browser test and the client's service tests; both talk to it over HTTP only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.client.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Service:
    url: str
    data_dir: Path
    log: Path
    proc: subprocess.Popen

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Polls predicate; fails the test with the service's log if it dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"zooscope serve exited with {self.proc.returncode} while {what}:\n{self.log_tail()}"
                )
            try:
                if predicate():
                    return
            except (httpx.HTTPError, OSError):
                pass  # not up yet
            time.sleep(1.0)
        pytest.fail(f"timed out after {timeout:.0f} s {what}:\n{self.log_tail()}")


@contextmanager
def running_service(data_dir: Path, log: Path, *, bootstrap_models: bool) -> Iterator[Service]:
    port = free_port()
    # tiny: the default zoo and autoencoder built on first start are small enough for a test.
    env = {**os.environ, "ZOOSCOPE_DEFAULT_PRESET": "tiny", "ZOOSCOPE_DATA_DIR": str(data_dir)}
    command = [
        sys.executable,
        "-m",
        "zooscope",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--bootstrap-models" if bootstrap_models else "--no-bootstrap-models",
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    service = Service(f"http://127.0.0.1:{port}", data_dir, log, proc)
    try:
        service.wait_until(
            lambda: httpx.get(f"{service.url}/api/v1/readyz", timeout=5).is_success,
            STARTUP_TIMEOUT_S,
            "waiting for /readyz",
        )
        yield service
    finally:
        # SIGINT is Ctrl-C: serve stops the worker and the API cleanly; kill only if it hangs.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
