"""Service benchmarks: what the API + queue + database cost on top of the library, and how fast
job status is served. Prints markdown tables (docs/benchmarks.md, "Service").

    .venv/bin/python benchmarks/service_benchmarks.py                       # embedded: SQLite + SQLite broker
    .venv/bin/python benchmarks/service_benchmarks.py --postgres --redis    # production shape

1. 100 reconstructions of distinct checkpoints with a CPU-preset-sized autoencoder, (a) as one
   job of 100 and (b) as 100 jobs of 1 (submitted at once, waited for with long polls), against
   the same library call(s) in this process: `reconstruct_and_evaluate` on state_dicts in memory,
   and the same as a library user runs it on files (read the checkpoints, write the
   reconstructions). The service side includes the HTTP requests, the queue, the claim, progress
   and finish writes, reading the uploaded checkpoints, storing 100 reconstructions as blobs and
   rows, and the long poll that answers when the job ends. Uploads are not timed (the library's
   files are written before its clock starts too).
2. GET /api/v1/jobs/{id} latency under 50 concurrent pollers on loopback (httpx async), a bounded
   number of requests.
The API (uvicorn, one process) and the worker (Celery, one pool process) are real subprocesses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
N_RECONSTRUCTIONS = 100
POLLERS = 50
REQUESTS_PER_POLLER = 40
SINGLE_POLLER_REQUESTS = 400
POLL_BUDGET_S = 60.0
REDIS_URL = "redis://127.0.0.1:6379/15"  # a database of its own, with queue names of the run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_artefacts(root: Path) -> tuple[Path, Path]:
    """A tiny digits zoo and an autoencoder of the CPU preset's size (one short epoch: its speed,
    not its quality, is what is measured)."""
    from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
    from zooscope.autoencoder.training import train_autoencoder
    from zooscope.zoo.grid import ZooConfig
    from zooscope.zoo.store import Zoo, build_zoo

    zoo_dir, ae_dir = root / "zoo", root / "autoencoder"
    zoo = Zoo.open(zoo_dir) if zoo_dir.exists() else build_zoo(ZooConfig.tiny(), zoo_dir)
    if not ae_dir.exists():
        training = TrainingConfig.tiny().with_overrides(epochs=1)
        train_autoencoder(zoo, AutoencoderConfig.cpu(), training, ae_dir)
    return zoo_dir, ae_dir


def distinct_checkpoints(zoo_dir: Path, n: int) -> list[dict[str, torch.Tensor]]:
    """n different checkpoints: zoo checkpoints with a little seeded noise (uploads are deduplicated)."""
    from zooscope.zoo.store import Zoo

    zoo = Zoo.open(zoo_dir)
    records = zoo.checkpoints()
    checkpoint_set = zoo.load_checkpoints(records)
    generator = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        k = i % len(records)
        sd = {key: value[k].clone() for key, value in checkpoint_set.params.items()}
        for value in sd.values():
            if value.is_floating_point():
                value.add_(1e-3 * torch.randn(value.shape, generator=generator))
        out.append(sd)
    return out


class Library:
    """The same work in this process, model and data loaded once, two ways:

    - in memory: `reconstruct_and_evaluate` on state_dicts already in memory (the compute alone);
    - files: what a library user without the service runs (`zooscope reconstruct`): read the
      checkpoint files with `load_checkpoint`, `reconstruct_and_evaluate`, write every
      reconstruction with `save_checkpoint`. The service does this same file work for its users
      (uploads in, reconstructions out), so this is the like-for-like side.
    """

    def __init__(self, ae_dir: Path, zoo_dir: Path, files_dir: Path) -> None:
        from zooscope.autoencoder.artefact import TrainedAutoencoder
        from zooscope.zoo.store import Zoo

        self.ae = TrainedAutoencoder.load(ae_dir, "cpu")
        self.dataset = Zoo.open(zoo_dir).dataset()
        self.files_dir = files_dir

    def seconds(self, checkpoints: list[dict[str, torch.Tensor]], one_call: bool) -> float:
        from zooscope.analysis.evaluation import reconstruct_and_evaluate

        ids = [str(i) for i in range(len(checkpoints))]
        start = time.perf_counter()
        if one_call:
            reconstruct_and_evaluate(self.ae, checkpoints, self.dataset, ids=ids)
        else:
            for i, sd in zip(ids, checkpoints, strict=True):
                reconstruct_and_evaluate(self.ae, [sd], self.dataset, ids=[i])
        return time.perf_counter() - start

    def file_seconds(self, paths: list[Path], one_call: bool) -> float:
        """Read the files, reconstruct and evaluate, write the reconstructions."""
        from zooscope.analysis.evaluation import reconstruct_and_evaluate
        from zooscope.networks.checkpoints import load_checkpoint, save_checkpoint
        from zooscope.networks.parameters import unstack

        out = self.files_dir / uuid.uuid4().hex[:8]
        out.mkdir(parents=True)
        start = time.perf_counter()
        for batch in [paths] if one_call else [[p] for p in paths]:
            state_dicts = [load_checkpoint(p) for p in batch]
            ids = [p.stem for p in batch]
            result = reconstruct_and_evaluate(self.ae, state_dicts, self.dataset, ids=ids)
            for i, rebuilt in zip(ids, unstack(result.reconstructed), strict=True):
                save_checkpoint(rebuilt, out / f"{i}.reconstructed.safetensors", {"source": i})
        return time.perf_counter() - start


class Service:
    """uvicorn + a Celery worker, configured by ZOOSCOPE_* variables, each in its own process
    group. They die with this process as `zooscope serve`'s children die with it: the API by its
    parent-death signal, the worker by watching its parent (worker/supervision.py)."""

    def __init__(self, env: dict[str, str], queues: str, log: Path, api_workers: int = 1) -> None:
        from worker.embedded import API_DEATH_SIGNAL, WORKER_DEATH_SIGNAL, _die_with_parent, api_command
        from worker.supervision import SUPERVISOR_ENV

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        out = log.open("w")
        common = {"cwd": ROOT, "stdout": out, "stderr": subprocess.STDOUT, "process_group": 0}
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues,
             "--concurrency", "1", "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            env={**env, SUPERVISOR_ENV: str(os.getpid())}, preexec_fn=_die_with_parent(WORKER_DEATH_SIGNAL),
            **common,
        )  # fmt: skip
        self.api = subprocess.Popen(
            api_command("127.0.0.1", self.port, api_workers),
            env=env, preexec_fn=_die_with_parent(API_DEATH_SIGNAL), **common,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the service did not become ready; see {log}")

    def stop(self) -> None:
        for proc in (self.api, self.worker):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.api, self.worker):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            # Whatever is left in the group (pool processes of a worker that did not stop).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_all(client: httpx.Client, job_ids: list[str], timeout: float = 1800) -> None:
    """Until every job has succeeded: one long poll per job (GET /jobs/{id}?wait=...), answered by
    the server the moment the job ends, so the benchmark's own waiting neither adds polling
    delay nor takes CPU from the worker it measures."""
    deadline = time.monotonic() + timeout
    for job_id in job_ids:
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(job_ids)} jobs did not finish in {timeout} s")
            job = client.get(f"/api/v1/jobs/{job_id}", params={"wait": 30}).json()
            if job["state"] == "succeeded":
                break
            if job["state"] in ("failed", "cancelled"):
                raise RuntimeError(f"job {job_id} {job['state']}: {job.get('error')}")


def service_seconds(client: httpx.Client, ids: list[str], one_job: bool) -> tuple[float, list[str]]:
    """Wall seconds from the first POST to the last 'succeeded', and the job ids."""

    def post(batch: list[str]) -> str:
        body = {"kind": "reconstruct", "params": {"checkpoint_ids": batch}}
        return client.post("/api/v1/jobs", json=body).json()["id"]

    start = time.perf_counter()
    job_ids = [post(ids)] if one_job else [post([i]) for i in ids]
    wait_all(client, job_ids)
    return time.perf_counter() - start, job_ids


def timeline(client: httpx.Client, job_id: str, wall: float) -> dict[str, float]:
    """Where a job's wall time went, from its row: queued (created -> started), in the worker
    (started -> finished, split by the report's timings_s), and the rest (the POST, and the long
    poll's answer)."""
    from datetime import datetime

    job = client.get(f"/api/v1/jobs/{job_id}").json()
    created, started, finished = (
        datetime.fromisoformat(job[k]) for k in ("created_at", "started_at", "finished_at")
    )
    queued, worker = (started - created).total_seconds(), (finished - started).total_seconds()
    phases = client.get(f"/api/v1/jobs/{job_id}/report").json().get("timings_s", {})
    inside = {f"worker: {name}": seconds for name, seconds in phases.items()}
    rest = worker - sum(phases.values())
    return {
        "queued": queued,
        **inside,
        "worker: claim, rows, finish": rest,
        "post and answer": wall - queued - worker,
    }


async def poll_latencies(url: str, job_ids: list[str], pollers: int, each: int) -> tuple[list[float], float]:
    """Each poller GETs job statuses back to back; all latencies (s) and the wall time."""
    latencies: list[float] = []
    deadline = time.monotonic() + POLL_BUDGET_S
    limits = httpx.Limits(max_connections=pollers)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def poller(k: int) -> None:
            for i in range(each):
                if time.monotonic() > deadline:
                    return
                start = time.perf_counter()
                response = await client.get(f"/api/v1/jobs/{job_ids[(k + i) % len(job_ids)]}")
                latencies.append(time.perf_counter() - start)
                response.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(poller(k) for k in range(pollers)))
        return latencies, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    if q >= 100 or len(values) == 1:
        return max(values)
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def service_environment(
    data_dir: Path, database_url: str, broker_url: str | None
) -> tuple[dict[str, str], str]:
    """The ZOOSCOPE_* environment of the API and the worker (None: the SQLite broker in the data
    folder), with queue names of this run only, and the worker's -Q list."""
    tag = uuid.uuid4().hex[:6]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOOSCOPE_")}
    env.update(ZOOSCOPE_DATA_DIR=str(data_dir), ZOOSCOPE_DATABASE_URL=database_url,
               ZOOSCOPE_MODEL_QUEUE=f"models-{tag}", ZOOSCOPE_ZOO_QUEUE=f"zoos-{tag}")  # fmt: skip
    if broker_url is not None:
        env["ZOOSCOPE_BROKER_URL"] = broker_url
    return env, f"models-{tag},zoos-{tag}"


def postgres_database() -> tuple[str, Any]:
    from sqlalchemy import create_engine, text

    admin = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    name = f"zooscope_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL on 127.0.0.1:5432 (else SQLite)")
    parser.add_argument(
        "--redis", action="store_true", help="Redis db 15 on 127.0.0.1:6379 (else the SQLite broker)"
    )
    parser.add_argument("--artefacts", type=Path, default=ROOT / ".zooscope" / "bench-artefacts")
    parser.add_argument(
        "--rounds", type=int, default=9, help="library/service measurements, interleaved, order alternating"
    )
    args = parser.parse_args()

    from app.db.migrate import upgrade_to_head
    from app.db.session import session_scope

    zoo_dir, ae_dir = build_artefacts(args.artefacts)
    # Distinct checkpoints for every measurement: a repeated one would be deduplicated by the service.
    sets = distinct_checkpoints(zoo_dir, 2 * args.rounds * N_RECONSTRUCTIONS + 2)
    data_dir = Path(tempfile.mkdtemp(prefix="zooscope-bench-"))
    from zooscope.networks.checkpoints import checkpoint_bytes

    files = []  # the library user's checkpoint files: the bytes that are uploaded to the service
    for i, sd in enumerate(sets):
        files.append(data_dir / "library-in" / f"c{i}.safetensors")
        files[-1].parent.mkdir(exist_ok=True)
        files[-1].write_bytes(checkpoint_bytes(sd))
    library = Library(ae_dir, zoo_dir, data_dir / "library-out")
    library.seconds(sets[-2:], one_call=True)  # warm-up
    library.file_seconds(files[-2:], one_call=True)

    drop = None
    database_url = f"sqlite:///{data_dir / 'zooscope.sqlite'}"
    if args.postgres:
        database_url, drop = postgres_database()
    env, queues = service_environment(data_dir, database_url, REDIS_URL if args.redis else None)
    upgrade_to_head(database_url)
    from app.db import artefacts
    from zooscope.zoo.store import Zoo

    with session_scope(database_url) as session:
        zoo = Zoo.open(zoo_dir)
        zoo_row = artefacts.add_zoo(
            session, name="bench", path=str(zoo_dir), architecture=zoo.architecture.to_dict()
        )
        artefacts.add_autoencoder(
            session,
            name="bench",
            path=str(ae_dir),
            architecture_name=zoo.architecture.name,
            zoo_id=zoo_row.id,
            make_default=True,
        )

    service = Service(env, queues, data_dir / "service.log")
    try:
        with httpx.Client(base_url=service.url, timeout=60) as client:
            ids = [
                client.post("/api/v1/checkpoints", files={"file": (path.name, path.read_bytes())}).json()[
                    "id"
                ]
                for path in files
            ]
            assert len(set(ids)) == len(sets)
            service_seconds(client, ids[-2:], one_job=True)  # warm-up: the worker loads model and data once
            # Interleaved rounds, so a change in the machine's load hits both sides alike.
            times: dict[tuple[str, bool], list[float]] = {}
            timelines: list[dict[str, float]] = []
            for r in range(args.rounds):
                for k, one in enumerate((True, False)):
                    chunk = slice((2 * r + k) * N_RECONSTRUCTIONS, (2 * r + k + 1) * N_RECONSTRUCTIONS)

                    def on_library(chunk: slice = chunk, one: bool = one) -> None:
                        times.setdefault(("library", one), []).append(library.seconds(sets[chunk], one))
                        times.setdefault(("files", one), []).append(library.file_seconds(files[chunk], one))

                    def on_service(chunk: slice = chunk, one: bool = one) -> None:
                        wall, job_ids = service_seconds(client, ids[chunk], one)
                        times.setdefault(("service", one), []).append(wall)
                        if one:
                            timelines.append(timeline(client, job_ids[0], wall))

                    # Alternate which side goes first, so neither always follows the other's work.
                    for side in (on_library, on_service) if r % 2 == 0 else (on_service, on_library):
                        side()
            job_ids = [j["id"] for j in client.get("/api/v1/jobs", params={"limit": 100}).json()["items"]]
        # One poller first: the cost of one request without queueing, then the contended case.
        polls = {
            1: asyncio.run(poll_latencies(service.url, job_ids, 1, SINGLE_POLLER_REQUESTS)),
            POLLERS: asyncio.run(poll_latencies(service.url, job_ids, POLLERS, REQUESTS_PER_POLLER)),
        }
    finally:
        service.stop()
        if drop is not None:
            drop()

    shape = f"{'PostgreSQL' if args.postgres else 'SQLite'} + {'Redis' if args.redis else 'SQLite broker'}"
    print(f"### {N_RECONSTRUCTIONS} reconstructions: service ({shape}) vs library, CPU-preset autoencoder\n")
    print(
        f"Median of {args.rounds} interleaved rounds; overhead = service / library - 1 (per-round range).\n"
    )
    print(
        "Library in memory: the compute alone. Library with files: the same call as a library user "
        "runs it, reading the checkpoint files and writing the reconstructions.\n"
    )
    print(
        "| how | library, in memory (s) | library, files (s) | service (s) "
        "| overhead vs files | per round: middle half | per round: all | overhead vs in memory |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, one in (("1 job of 100", True), ("100 jobs of 1", False)):
        lib, fil, svc = times[("library", one)], times[("files", one)], times[("service", one)]
        rounds = [100 * (b / a - 1) for a, b in zip(fil, svc, strict=True)]
        quarter, _, three_quarters = statistics.quantiles(rounds, n=4)
        median = statistics.median
        print(
            f"| {name} | {median(lib):.3f} | {median(fil):.3f} | {median(svc):.3f} "
            f"| {100 * (median(svc) / median(fil) - 1):+.0f}% | {quarter:+.0f}% .. {three_quarters:+.0f}% "
            f"| {min(rounds):+.0f}% .. {max(rounds):+.0f}% "
            f"| {100 * (median(svc) / median(lib) - 1):+.0f}% |"
        )
    print("\nWhere the batch job's time went (median over rounds, seconds):\n")
    print("| " + " | ".join(timelines[0]) + " |")
    print("|" + "---|" * len(timelines[0]))
    print("| " + " | ".join(f"{statistics.median(t[k] for t in timelines):.3f}" for k in timelines[0]) + " |")
    print(f"\n### GET /api/v1/jobs/{{id}} on loopback ({shape}, one uvicorn process)\n")
    print("| concurrent pollers | requests | p50 (ms) | p99 (ms) | max (ms) | requests/s |")
    print("|---|---|---|---|---|---|")
    for n, (latencies, wall) in polls.items():
        p50, p99, worst = (1000 * percentile(latencies, q) for q in (50, 99, 100))
        print(
            f"| {n} | {len(latencies)} | {p50:.1f} | {p99:.1f} | {worst:.1f} | {len(latencies) / wall:.0f} |"
        )


if __name__ == "__main__":
    main()
