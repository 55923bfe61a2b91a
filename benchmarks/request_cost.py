"""Request cost: the CPU time the API and PostgreSQL spend on one request of each polled endpoint,
measured from the processes' own CPU clocks, not from latency. Prints a markdown table
(docs/benchmarks.md, "Load").

    .venv/bin/python benchmarks/request_cost.py
    .venv/bin/python benchmarks/request_cost.py --jobs 100 --requests 2000 --json /tmp/cost.json

The production shape of benchmarks/load_benchmark.py (uvicorn, one process, and a Celery worker on
a fresh PostgreSQL database and Redis db 15), with the tiny preset's default models built as jobs
(ZOOSCOPE_DEFAULT_PRESET=tiny).
--jobs reconstruct jobs are submitted and left to finish, so the jobs page is a full page of real
rows. Then, for each endpoint in turn, one client sends --requests requests back to back (the
service otherwise idle) and the table gives the API's and PostgreSQL's CPU milliseconds per
request (utime + stime of the API's processes and of every `postgres` process, before and after)
and the latency's p50.

Latency under load is queueing on the cores: what a request costs decides how much load the
cores can take before the queue builds. Cost, unlike latency, is little moved by other work on
the machine's other cores, so this can run beside a long job pinned to another core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

from idle_cost import cpu_seconds, role  # noqa: E402
from load_benchmark import (  # noqa: E402
    API,
    machine,
    machine_line,
    markdown_table,
    postgres_service,
    wait_for_default_autoencoder,
    wait_until_done,
)
from raw_http import RawClient  # noqa: E402
from service_benchmarks import distinct_checkpoints  # noqa: E402

API_ROLE = role("uvicorn")


def postgres_pids() -> list[int]:
    listed = subprocess.run(["pgrep", "-u", "postgres"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in listed]


def start_profiler(api_pids: list[int], folder: Path, endpoint: str) -> subprocess.Popen[bytes]:
    """py-spy sampling the API process while an endpoint is measured (it slows what it samples:
    the table's numbers of a profiled run are not the cost)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() else "_" for c in endpoint).strip("_")
    # The environment's own py-spy (pip install py-spy into .venv) before one on PATH.
    beside = Path(sys.executable).parent / "py-spy"
    command = [
        str(beside) if beside.exists() else "py-spy",
        "record",
        "--format",
        "raw",
        "--rate",
        "1000",
        "--nonblocking",
        "--threads",
    ]
    command += ["-o", str(folder / f"{name}.txt"), "--pid", str(api_pids[0])]
    profiler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the first request
    return profiler


def stop_profiler(profiler: subprocess.Popen[bytes]) -> None:
    profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    profiler.wait(timeout=60)


def top_functions(collapsed: Path, n: int = 25) -> list[tuple[str, float, float]]:
    """From py-spy's collapsed stacks: (function, % of samples in it or below, % on top)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    ranked = sorted(inclusive, key=inclusive.__getitem__, reverse=True)[:n]
    return [(frame, 100 * inclusive[frame] / total, 100 * own.get(frame, 0) / total) for frame in ranked]


def total_cpu(pids: list[int]) -> float:
    return sum(seconds for seconds, _ in cpu_seconds(pids).values())


async def measure(
    url: str, paths: list[str], requests: int, revalidate: bool, before_each: Callable[[], None] | None = None
) -> list[float]:
    """`requests` GETs back to back on one kept-alive connection, of `paths` in turn; latencies in
    seconds. With `revalidate`, each request revalidates the previous answer (If-None-Match);
    `before_each` runs before each request, outside its latency."""
    client = RawClient(url)
    latencies = []
    try:
        etag = None
        for i in range(requests):
            path = paths[i % len(paths)]
            if before_each is not None:
                before_each()
            headers = {"If-None-Match": etag} if revalidate and etag else {}
            started = time.perf_counter()
            response = await client.get(path, headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code not in (200, 304):
                raise RuntimeError(f"GET {path}: {response.status_code} {response.content[:200]!r}")
            etag = response.headers.get("etag", etag)
    finally:
        await client.aclose()
    return latencies


def run(args: argparse.Namespace) -> dict[str, Any]:
    from app.settings import Settings
    from zooscope.networks.checkpoints import checkpoint_bytes

    with (
        tempfile.TemporaryDirectory(prefix="zooscope-cost-") as work,
        postgres_service(Path(work)) as running,
    ):
        autoencoder_id = wait_for_default_autoencoder(running.url)
        zoo_dir = Settings(data_dir=running.data_dir).default_zoo_dir
        job_ids = []
        with httpx.Client(base_url=running.url, timeout=30) as client:
            for state_dict in distinct_checkpoints(zoo_dir, args.jobs):
                upload = client.post(
                    f"{API}/checkpoints", files={"file": ("c.safetensors", checkpoint_bytes(state_dict))}
                )
                upload.raise_for_status()
                params = {"checkpoint_ids": [upload.json()["id"]], "autoencoder_id": autoencoder_id}
                submitted = client.post(f"{API}/jobs", json={"kind": "reconstruct", "params": params})
                submitted.raise_for_status()
                job_ids.append(submitted.json()["id"])
        print(f"waiting for {len(job_ids)} jobs", file=sys.stderr)
        wait_until_done(running.database_url, job_ids, 600)
        api_pids = [
            pid for pid, (_, command) in cpu_seconds(running.processes()).items() if role(command) == API_ROLE
        ]
        # Listings of limit 40 to 139 in turn: 100 versions, more than an API process keeps
        # rendered (app.api.conditional.RenderedBodies), so each page is assembled for its
        # request, from rows rendered before (app/api/job_bodies.py).
        new_pages = [f"{API}/jobs?limit={limit}" for limit in range(40, 140)]
        database = sqlalchemy.create_engine(running.database_url)

        def change_newest_job() -> None:
            # A visible change as the worker's writes make them (the revision goes up): the jobs
            # page has a new version, with one row to render again. PostgreSQL's column includes
            # this write.
            with database.begin() as connection:
                bump = sqlalchemy.text("UPDATE jobs SET revision = revision + 1 WHERE id = :id")
                connection.execute(bump, {"id": job_ids[-1]})

        endpoints: dict[str, tuple[list[str], bool, Callable[[], None] | None]] = {
            "GET /jobs?limit=50, a version already rendered": ([f"{API}/jobs?limit=50"], False, None),
            "GET /jobs?limit=40..139, a new page of rows rendered before": (new_pages, False, None),
            "GET /jobs?limit=50, one row changed before each request": (
                [f"{API}/jobs?limit=50"],
                False,
                change_newest_job,
            ),
            "GET /jobs?limit=50, revalidated (304)": ([f"{API}/jobs?limit=50"], True, None),
            "GET /jobs/{id}": ([f"{API}/jobs/{job_ids[-1]}"], False, None),
            "GET /jobs/{id}, revalidated (304)": ([f"{API}/jobs/{job_ids[-1]}"], True, None),
            "GET /jobs/{id}/report": ([f"{API}/jobs/{job_ids[-1]}/report"], False, None),
        }
        rows = {}
        for name, (paths, revalidate, before_each) in endpoints.items():
            asyncio.run(measure(running.url, paths, 50, revalidate, before_each))  # warm: plans, caches, pool
            profiler = start_profiler(api_pids, args.profile, name) if args.profile else None
            api_before, db_before = total_cpu(api_pids), total_cpu(postgres_pids())
            started = time.perf_counter()
            latencies = asyncio.run(measure(running.url, paths, args.requests, revalidate, before_each))
            wall = time.perf_counter() - started
            if profiler is not None:
                stop_profiler(profiler)
            api_ms = 1000 * (total_cpu(api_pids) - api_before) / args.requests
            db_ms = 1000 * (total_cpu(postgres_pids()) - db_before) / args.requests
            rows[name] = {
                "requests": args.requests,
                "api_cpu_ms": api_ms,
                "postgres_cpu_ms": db_ms,
                "p50_ms": 1000 * statistics.median(latencies),
                "requests_per_s": args.requests / wall,
            }
            print(f"{name}: API {api_ms:.2f} ms, PostgreSQL {db_ms:.2f} ms a request", file=sys.stderr)
        database.dispose()
    return {"machine": machine(), "jobs": args.jobs, "endpoints": rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--jobs", type=int, default=60, help="reconstruct jobs made first (the jobs page's rows)"
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests per endpoint")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample the API with py-spy into this folder (one collapsed-stack file per endpoint) and "
        "print each endpoint's top functions; slows the API, so its costs are not the unprofiled ones",
    )
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so every process started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    os.environ["ZOOSCOPE_DEFAULT_PRESET"] = "tiny"  # the default zoo and autoencoder in seconds
    result = run(args)
    print(machine_line(result["machine"]))
    print()
    print(
        f"{result['jobs']} jobs in the table; one client, requests back to back, the service otherwise idle."
    )
    print()
    rows = [
        [name, r["requests"], f"{r['api_cpu_ms']:.2f}", f"{r['postgres_cpu_ms']:.2f}", f"{r['p50_ms']:.2f}",
         f"{r['requests_per_s']:.0f}"]
        for name, r in result["endpoints"].items()
    ]  # fmt: skip
    header = [
        "endpoint",
        "requests",
        "API CPU ms a request",
        "PostgreSQL CPU ms a request",
        "p50 (ms)",
        "requests/s",
    ]
    print(markdown_table(header, rows))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    for collapsed in sorted(args.profile.glob("*.txt")) if args.profile else []:
        print(f"\n{collapsed.stem}: % of samples in the function or below / on top")
        for frame, below, on_top in top_functions(collapsed):
            print(f"  {below:5.1f} {on_top:5.1f}  {frame}")


if __name__ == "__main__":
    main()
