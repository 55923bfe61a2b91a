"""The embedded run mode: `zooscope serve` (API + a real Celery worker, SQLite + the SQLite broker).

One test walks the user's path and the restart promise: a job submitted while the worker cannot
take it survives stopping everything and completes after the restart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from worker_fixtures import ROOT, TEST_TIMING, register_artefacts, wait_for
from worker_roundtrip import reconstruct_and_verify, submit, upload_zoo_checkpoints, wait_for_job

from app.db.migrate import upgrade_to_head
from app.db.models import Job
from app.db.session import session_scope
from app.worker_presence import PRESENCE_STALE_S
from tests.processes import descendants, live_in_group, still_running

STARTUP_TIMEOUT_S = 120
JOB_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    def __init__(self, data_dir: Path, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZOOSCOPE_")}
        env.update({f"ZOOSCOPE_{k.upper()}": str(v) for k, v in TEST_TIMING.items()})
        command = [
            sys.executable,
            "-m",
            "zooscope",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ]
        command += ["--no-bootstrap-models", "--shutdown-timeout", "2"]
        with log.open("a") as out:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self.ready, STARTUP_TIMEOUT_S, "zooscope serve to be ready", self.tail)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"zooscope serve exited with {self.proc.returncode}:\n{self.tail()}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def worker_pid(self) -> int:
        """The Celery worker child (its own process group, which its pool process shares)."""
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if int(stat[1]) == self.proc.pid and b"celery" in cmdline:
                    return int(entry.name)
        pytest.fail(f"no Celery worker child of serve:\n{self.tail()}")

    def interrupt(self) -> int:
        """Ctrl-C, and wait for a clean exit."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not stop on SIGINT:\n{self.tail()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def answer_on(connection: socket.socket) -> bytes:
    """GET /healthz on an open connection, kept alive: the answer's head and body."""
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = connection.recv(65536)
        if not chunk:
            return answer  # closed by the server
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += connection.recv(65536)
    return answer


def registered_data_dir(tmp_path: Path, tiny_artefacts: dict[str, Path]) -> tuple[Path, str, str]:
    """A data folder with a migrated SQLite database holding the tiny zoo and autoencoder
    (instead of the first-start build, slow here): (data_dir, database_url, zoo_id)."""
    data_dir = tmp_path / "data"
    database_url = f"sqlite:///{data_dir / 'zooscope.sqlite'}"
    data_dir.mkdir()
    upgrade_to_head(database_url)
    zoo_id, _ = register_artefacts(database_url, tiny_artefacts)
    return data_dir, database_url, zoo_id


@pytest.fixture
def services() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.kill()


def test_embedded_round_trip_and_a_queued_job_survives_a_restart(
    tmp_path: Path, tiny_artefacts: dict[str, Path], services: list[Serve]
) -> None:
    data_dir, database_url, _ = registered_data_dir(tmp_path, tiny_artefacts)
    port = free_port()
    log = tmp_path / "serve.log"

    serve = Serve(data_dir, port, log)
    services.append(serve)
    client = httpx.Client(base_url=serve.url, timeout=30)
    # The SQLite broker cannot broadcast a ping: readiness counts the workers' presence files.
    assert client.get("/readyz").json()["checks"]["workers"][0].startswith("embedded@")
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)  # a tab's kept-alive connection
    assert answer_on(idle).startswith(b"HTTP/1.1 200")
    idle_since = time.monotonic()
    ids = upload_zoo_checkpoints(client, tiny_artefacts["zoo"], 3)
    reconstruct_and_verify(client, ids[:2], tiny_artefacts["zoo"], JOB_TIMEOUT_S)
    # Idle for longer than the dashboard's slowest poll (5 s), the connection still answers:
    # uvicorn's own default closed it at 5 s (worker/embedded.py, API_KEEP_ALIVE_S).
    time.sleep(max(0.0, 6.0 - (time.monotonic() - idle_since)))
    assert answer_on(idle).startswith(b"HTTP/1.1 200")
    idle.close()

    # Freeze the worker so it cannot take the next job, submit one, then stop everything.
    worker = serve.worker_pid()
    os.killpg(worker, signal.SIGSTOP)
    job_id = submit(client, "reconstruct", {"checkpoint_ids": ids[2:]})
    time.sleep(1.5)  # past the SQLite broker's polling interval: a live worker would have taken it
    # A frozen worker stops reporting its presence, and readiness says so.
    wait_for(
        lambda: client.get("/readyz").status_code == 503,
        3 * PRESENCE_STALE_S,
        "readyz to see no worker",
        serve.tail,
    )
    assert "no worker has reported" in client.get("/readyz").json()["checks"]["workers"]
    assert serve.interrupt() == 0
    assert "stopped" in serve.tail()
    assert live_in_group(worker) == []  # the frozen worker was killed, pool included
    with session_scope(database_url) as session:  # nothing ran it before the restart
        stored = session.get(Job, job_id)
        assert (stored.state, stored.attempts) == ("queued", 0)

    restarted = Serve(data_dir, port, log)
    services.append(restarted)
    client = httpx.Client(base_url=restarted.url, timeout=30)
    final = wait_for_job(client, job_id, JOB_TIMEOUT_S, restarted.tail)
    assert final["state"] == "succeeded", final
    assert [i["checkpoint_id"] for i in client.get(f"/api/v1/jobs/{job_id}/report").json()["items"]] == ids[
        2:
    ]
    assert restarted.interrupt() == 0


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM then SIGKILL after 2 s"])
def test_nothing_of_serve_outlives_its_supervisor(
    tmp_path: Path, tiny_artefacts: dict[str, Path], services: list[Serve], how: str
) -> None:
    data_dir, database_url, zoo_id = registered_data_dir(tmp_path, tiny_artefacts)
    serve = Serve(data_dir, free_port(), tmp_path / "serve.log")
    services.append(serve)
    client = httpx.Client(base_url=serve.url, timeout=30)
    # A long training job (thousands of tiny epochs), running when the supervisor dies.
    job_id = submit(client, "train_autoencoder", {"zoo_id": zoo_id, "preset": "tiny", "epochs": 5000})
    wait_for(
        lambda: client.get(f"/api/v1/jobs/{job_id}").json()["progress"] > 0,
        JOB_TIMEOUT_S,
        "the job to make progress",
        serve.tail,
    )
    tree = descendants(serve.proc.pid)
    assert len(tree) >= 3, tree  # the API, the worker and its pool process at least
    if how == "SIGKILL":
        serve.proc.kill()  # the supervisor only; its children are left to fend for themselves
    else:  # what process managers do: ask, then kill the supervisor if it has not exited
        serve.proc.terminate()
        try:
            serve.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            serve.proc.kill()
    serve.proc.wait()
    deadline = time.monotonic() + 15
    while still_running(tree) and time.monotonic() < deadline:
        time.sleep(0.25)
    left = still_running(tree)
    print(f"supervisor {how}: {len(tree)} processes, {len(left)} alive 15 s later")
    assert left == [], f"alive 15 s after the supervisor: {left}\n{serve.tail()}"
    with session_scope(database_url) as session:  # left to the next start, not finished by an orphan
        assert session.get(Job, job_id).state == "running"


N_WAITING_CLIENTS = 50


def test_clients_waiting_through_a_restart_see_the_final_states(
    tmp_path: Path, tiny_artefacts: dict[str, Path], services: list[Serve]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from zooscope.client import ZooscopeClient

    data_dir, _, _ = registered_data_dir(tmp_path, tiny_artefacts)
    port = free_port()
    serve = Serve(data_dir, port, tmp_path / "serve.log")
    services.append(serve)
    client = httpx.Client(base_url=serve.url, timeout=30)
    ids = upload_zoo_checkpoints(client, tiny_artefacts["zoo"], 2)
    # The worker is frozen, so every job stays queued while the clients wait on long polls.
    os.killpg(serve.worker_pid(), signal.SIGSTOP)
    jobs = [submit(client, "reconstruct", {"checkpoint_ids": ids}) for _ in range(5)]

    def wait_for_one(index: int) -> dict:
        with ZooscopeClient(serve.url, timeout=30) as waiting:
            return waiting.wait(jobs[index % len(jobs)], timeout=JOB_TIMEOUT_S)

    with ThreadPoolExecutor(N_WAITING_CLIENTS) as pool:
        futures = [pool.submit(wait_for_one, i) for i in range(N_WAITING_CLIENTS)]
        time.sleep(3.0)  # the clients are inside their long polls now
        assert not any(f.done() for f in futures)
        assert serve.interrupt() == 0  # the API goes away under 50 open long polls
        restarted = Serve(data_dir, port, tmp_path / "serve.log")
        services.append(restarted)
        finals = [f.result(timeout=JOB_TIMEOUT_S) for f in futures]
    states = [final["state"] for final in finals]
    print(f"API restarted under {N_WAITING_CLIENTS} long polls: {states.count('succeeded')} saw succeeded")
    assert states == ["succeeded"] * N_WAITING_CLIENTS
