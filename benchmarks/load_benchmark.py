"""Load benchmark: the service under a dashboard's polling, uploads and long polls while a worker
runs jobs; latency per endpoint, then the closed-loop ceiling of GET /jobs/{id}. Prints markdown
tables (docs/benchmarks.md, "Load").

    .venv/bin/python benchmarks/load_benchmark.py                    # both modes, 60 s each
    .venv/bin/python benchmarks/load_benchmark.py --mode postgres --duration 10 --json /tmp/load.json

Modes: `embedded` is `zooscope serve` on a fresh data folder (API + worker, SQLite and the SQLite
broker); `postgres` is the production shape, uvicorn (--api-workers processes, 1; the compose file
runs 2) and a Celery worker (one pool process) on a fresh PostgreSQL database and Redis db 15 with
queue names of the run. Both build
the default zoo and autoencoder of the tiny preset as jobs first and start the load once the
default autoencoder exists.

Open loop, for --warmup (10) and then --duration seconds, every request sent at its scheduled
time whether or not the ones before it were answered, its latency counted from that time (a
stalled server shows as latency, not as fewer requests). The tables count the requests sent after
the warm-up: in its first second every tab, uploader and long poll opens its connection at once,
a burst a dashboard in steady use does not make; the JSON keeps every request with its send time,
and the printout gives the p99 of GET /jobs/{id} with the warm-up and per 10 s beside. The load:
- dashboard tabs (--clients, 200), each polling once a second from its own offset in the first
  second, as app/api/static/pages do: a tab on the jobs page GETs /jobs?limit=50; a tab on a
  report page GETs /jobs/{id} of its uploader's newest job and, once that job has succeeded, its
  /jobs/{id}/report (--jobs-page-share of the tabs, 0.5, are on the jobs page). Each tab
  revalidates its last answer of a URL with If-None-Match, as a browser's HTTP cache does with the
  `no-cache` answers that carry an ETag, and reuses it on a 304 (--no-revalidate: every poll in
  full, a client without a cache);
- uploaders (--uploaders, 10), each once every --upload-interval seconds (1): POST /checkpoints
  (a cnn_digits checkpoint of the default zoo with seeded noise, distinct bytes each time, so
  deduplication never answers early), then POST /jobs for a reconstruct job of it, which the
  worker runs during the load;
- long polls (--long-polls, 50) held open on a job that stays queued (its row is written without
  sending its task, so no worker takes it; it is cancelled at the end), each re-issued when it
  returns: GET /jobs/{id}?wait=60.
Then the submitted jobs are left to finish (at most --drain seconds) and a closed loop measures
the ceiling: --ceiling-clients (32) clients GET /jobs/{id} of the submitted jobs back to back for
--ceiling-duration seconds (15).

The tabs' polls and the closed loop go out on raw_http.RawClient (--tab-client httpx: on httpx),
which costs this process a small fraction of httpx's CPU a request: the generator shares the
machine's cores with what it measures. Uploads, submissions and long polls use httpx.

Everything runs on loopback and this process starts and stops every process it needs, in process
groups, on an error or Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

from idle_cost import TICKS, cpu_seconds, descendants, role  # noqa: E402
from raw_http import ConnectionFailed, RawClient  # noqa: E402
from service_benchmarks import (  # noqa: E402
    REDIS_URL,
    Service,
    distinct_checkpoints,
    percentile,
    postgres_database,
    service_environment,
)

from zooscope.machine import cpu_flags, cpu_model  # noqa: E402

API = "/api/v1"
JOBS_PAGE = f"GET {API}/jobs?limit=50"
JOB = f"GET {API}/jobs/{{id}}"
REPORT = f"GET {API}/jobs/{{id}}/report"
UPLOAD = f"POST {API}/checkpoints"
SUBMIT = f"POST {API}/jobs"
LONG_POLL = f"GET {API}/jobs/{{id}}?wait=60"
ENDPOINTS = (JOBS_PAGE, JOB, REPORT, UPLOAD, SUBMIT, LONG_POLL)
LONG_POLL_WAIT_S = 60
REQUEST_TIMEOUT_S = 30.0
BROWSER_LIMITS = httpx.Limits(max_connections=6, max_keepalive_connections=6)
TERMINAL = {"succeeded", "failed", "cancelled"}
MODES = {"embedded": "SQLite + SQLite broker", "postgres": "PostgreSQL + Redis"}


# ---- the numbers ------------------------------------------------------------------------------------


@dataclass
class Samples:
    """What one endpoint answered: every request's seconds (failed ones too), when each was sent
    (seconds from the start of the load, for the open loop) and what each failed with, if it did."""

    seconds: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    failures: list[str | None] = field(default_factory=list)

    def add(self, seconds: float, error: str | None, sent_at: float = 0.0) -> None:
        self.seconds.append(seconds)
        self.sent_at.append(sent_at)
        self.failures.append(error)

    @property
    def errors(self) -> Counter[str]:
        return Counter(error for error in self.failures if error is not None)

    def sent_from(self, t: float) -> Samples:
        """The requests sent at `t` or later: the measured window after the warm-up."""
        kept = Samples()
        for seconds, sent, error in zip(self.seconds, self.sent_at, self.failures, strict=True):
            if sent >= t:
                kept.add(seconds, error, sent)
        return kept


def summary(samples: Samples) -> dict[str, Any]:
    """count, errors (and their kinds), p50 / p99 / max in ms; None for the percentiles of nothing."""
    values = samples.seconds
    ms = {f"p{q}_ms": 1000 * percentile(values, q) if values else None for q in (50, 99)}
    return {
        "count": len(values),
        "errors": sum(samples.errors.values()),
        "error_kinds": dict(samples.errors),
        **ms,
        "max_ms": 1000 * max(values) if values else None,
    }


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields)
    return (total - idle) / TICKS, total / TICKS


def windows_p99(samples: Samples, length_s: float, window_s: float = 10.0) -> list[float | None]:
    """p99 (ms) of the requests sent in each `window_s` of the load, warm-up included: where in
    the run the slow answers are."""
    windows: list[list[float]] = [[] for _ in range(max(1, int(-(-length_s // window_s))))]
    for seconds, sent in zip(samples.seconds, samples.sent_at, strict=True):
        windows[min(len(windows) - 1, max(0, int(sent // window_s)))].append(seconds)
    return [1000 * percentile(w, 99) if w else None for w in windows]


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def endpoint_rows(summaries: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for name, s in summaries.items():
        errors = s["errors"]
        if errors:
            errors = f"{errors} (" + ", ".join(f"{k}: {n}" for k, n in sorted(s["error_kinds"].items())) + ")"
        rows.append([name, s["count"], errors, s["p50_ms"], s["p99_ms"], s["max_ms"]])
    return rows


def machine() -> dict[str, Any]:
    """CPU model and the vector flags that matter here, cores, versions, load."""
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "avx512f": "avx512f" in flags,
        "avx2": "avx2" in flags,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0],
    }


def machine_line(m: dict[str, Any]) -> str:
    def yes(flag: str) -> str:
        return f"{flag} {'yes' if m[flag] else 'no'}"

    return (
        f"{m['cpu']} ({yes('avx512f')}, {yes('avx2')}), {m['cores']} cores; torch {m['torch']}, "
        f"Python {m['python']}; load average {m['load_average']:.1f} at the start"
    )


# ---- the service, in each mode ----------------------------------------------------------------------


@dataclass
class Running:
    url: str
    database_url: str
    data_dir: Path
    processes: Callable[[], list[int]]  # the service's pids, for their CPU time


@contextlib.contextmanager
def embedded_service(work: Path) -> Iterator[Running]:
    """`zooscope serve` (tiny default models), as the browser and client tests run it."""
    from app.settings import Settings
    from tests.service_process import running_service

    data_dir = work / "data"
    with running_service(data_dir, work / "serve.log", bootstrap_models=True) as service:
        database_url = Settings(data_dir=data_dir).database_url
        yield Running(
            service.url, database_url, data_dir, lambda: [service.proc.pid, *descendants(service.proc.pid)]
        )


@contextlib.contextmanager
def postgres_service(work: Path, api_workers: int = 1) -> Iterator[Running]:
    """uvicorn + a Celery worker on a database of their own; the default models built as jobs by
    the same code as `zooscope serve`'s first start (worker/bootstrap.py)."""
    from app.db.migrate import upgrade_to_head
    from worker.bootstrap import bootstrap_default_models
    from worker.settings import WorkerSettings

    data_dir = work / "data"
    database_url, drop = postgres_database()
    try:
        env, queues = service_environment(data_dir, database_url, REDIS_URL)
        upgrade_to_head(database_url)
        service = Service(env, queues, work / "service.log", api_workers)
        try:
            model_queue, zoo_queue = queues.split(",")
            settings = WorkerSettings(
                data_dir=data_dir, database_url=database_url, broker_url=REDIS_URL,
                model_queue=model_queue, zoo_queue=zoo_queue,
            )  # fmt: skip
            bootstrap_default_models(
                settings, threading.Event(), lambda line: print(f"  {line}", file=sys.stderr)
            )

            def processes() -> list[int]:
                api, worker = service.api.pid, service.worker.pid
                return [api, *descendants(api), worker, *descendants(worker)]

            yield Running(service.url, database_url, data_dir, processes)
        finally:
            service.stop()
            forget_queues(queues.split(","))
    finally:
        drop()


def forget_queues(queues: list[str]) -> None:
    """Remove what Kombu left in Redis db 15 for this run's queues (nothing else is touched)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for queue in queues:
            for key in client.scan_iter(match=f"*{queue}*"):
                client.delete(key)
        for key in client.scan_iter(match="_kombu.binding.*"):
            members = [m for m in client.smembers(key) if any(q.encode() in m for q in queues)]
            if members:
                client.srem(key, *members)
    finally:
        client.close()


def wait_for_default_autoencoder(url: str, timeout: float = 600.0) -> str:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=10) as client:
        while time.monotonic() < deadline:
            items = client.get(f"{API}/autoencoders").json().get("items", [])
            default = next((a["id"] for a in items if a["is_default"]), None)
            if default is not None:
                return default
            time.sleep(1.0)
    raise RuntimeError(f"no default autoencoder after {timeout:.0f} s")


def held_job(running: Running, checkpoint: bytes, autoencoder_id: str) -> str:
    """A reconstruct job whose row is written but whose task is never sent: it stays queued (the
    sweep would re-send it only after ZOOSCOPE_JOB_RESEND_AFTER_S, 300 s) so long polls on it are
    held their whole wait."""
    from app.db import jobs
    from app.db.session import session_scope

    with httpx.Client(base_url=running.url, timeout=30) as client:
        response = client.post(f"{API}/checkpoints", files={"file": ("held.safetensors", checkpoint)})
        response.raise_for_status()
    params = {"checkpoint_ids": [response.json()["id"]], "autoencoder_id": autoencoder_id}
    with session_scope(running.database_url) as session:
        job, _ = jobs.create_job(session, kind="reconstruct", params=params)
        return job.id


def job_states(database_url: str, job_ids: list[str], before: float | None = None) -> dict[str, int]:
    """How many of the jobs are in each state; with `before` (a Unix time), succeeded splits into
    those that finished before it and after."""
    from datetime import UTC

    from sqlalchemy import select

    from app.db.models import Job
    from app.db.session import session_scope

    counts: Counter[str] = Counter()
    with session_scope(database_url) as session:
        for state, finished in session.execute(select(Job.state, Job.finished_at).where(Job.id.in_(job_ids))):
            if state == "succeeded" and before is not None and finished is not None:
                at = finished if finished.tzinfo else finished.replace(tzinfo=UTC)
                state = "succeeded in time" if at.timestamp() <= before else "succeeded later"
            counts[state] += 1
    return dict(counts)


def wait_until_done(database_url: str, job_ids: list[str], timeout: float) -> float:
    """Seconds until no job of `job_ids` is queued or running (at most `timeout`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        states = job_states(database_url, job_ids)
        if not states.get("queued") and not states.get("running"):
            break
        time.sleep(1.0)
    return time.monotonic() - started


# ---- the load ---------------------------------------------------------------------------------------


@dataclass
class Load:
    clients: int
    jobs_page_share: float
    uploaders: int
    upload_interval_s: float
    long_polls: int
    duration_s: float  # the measured window, after the warm-up
    revalidate: bool  # tabs send If-None-Match with their last ETag, as a browser's cache does
    # "raw": the tabs' polls on raw_http.RawClient (a small fraction of httpx's CPU a request),
    # "httpx": on httpx, as before; uploads and long polls always use httpx
    tab_client: str = "raw"
    # The same load runs this long before the measured window: every tab, uploader and long poll
    # opens its connection in the first second, a burst no dashboard sees in steady use.
    warmup_s: float = 10.0

    @property
    def length_s(self) -> float:
        """The whole open loop: the warm-up and the measured window."""
        return self.warmup_s + self.duration_s


@dataclass
class OpenLoopResult:
    samples: dict[str, Samples]
    send_lag: Samples  # how late this process sent scheduled requests: its own saturation
    submitted: list[str]
    long_polls_open_at_end: int
    cpu_percent: dict[str, float]  # % of one core over the load, this process and the service's
    machine_busy_percent: float  # the whole machine's busy time over the load, % of all its cores
    backlog_s: float  # from the end of the load to the last answer of what was sent during it
    ended_at: float  # Unix time at the end of the load
    not_modified: Counter[str]  # per endpoint: answers 304 (the tab's copy was current)
    kept: Counter[str]  # per endpoint: answered from the API's kept answers (X-Cache: hit)
    retries: int  # polls resent once on a fresh connection: the kept-alive one had been closed


class TabCache:
    """What a browser tab's HTTP cache does with answers marked `no-cache` that carry an ETag
    (app/api/conditional.py): the next GET of the URL sends If-None-Match, and a 304 hands the
    stored answer back to the page."""

    def __init__(
        self,
        client: httpx.AsyncClient | RawClient,
        enabled: bool,
        not_modified: Counter[str],
        kept: Counter[str],
    ) -> None:
        self.client, self.enabled, self.not_modified, self.kept = client, enabled, not_modified, kept
        self.stored: dict[str, httpx.Response] = {}

    async def get(self, name: str, path: str, **params: Any) -> Any:  # the client's response
        key = f"{path}?{sorted(params.items())}"
        kept = self.stored.get(key) if self.enabled else None
        headers = {"If-None-Match": kept.headers["etag"]} if kept is not None else {}
        response = await self.client.get(path, params=params, headers=headers)
        if response.headers.get("x-cache") == "hit":  # app/api/answers.py
            self.kept[name] += 1
        if response.status_code == 304 and kept is not None:
            self.not_modified[name] += 1
            return kept
        if self.enabled and response.is_success and "etag" in response.headers:
            self.stored[key] = response
        return response


async def until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def open_loop(
    url: str, load: Load, checkpoints: list[bytes], held_job_id: str, pids: list[int]
) -> OpenLoopResult:
    samples = {name: Samples() for name in ENDPOINTS}
    send_lag = Samples()
    submitted: list[str] = []
    newest: dict[int, str] = {}  # uploader -> its newest job
    not_modified: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    in_flight: set[asyncio.Task[Any]] = set()
    uploads = iter(checkpoints)
    # One client (its own connection) for each tab, uploader and long poll, as each browser tab
    # keeps its own. One shared pool was the bottleneck: httpcore walks all its connections for
    # every queued request, so once requests queued the load generator spent a whole core there
    # (p50 of 76 s with the service nearly idle).
    async with contextlib.AsyncExitStack() as stack:

        def own_client() -> httpx.AsyncClient:
            # at most 6 connections, as a browser keeps to one host
            client = httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=BROWSER_LIMITS)
            stack.push_async_callback(client.aclose)
            return client

        raw_clients: list[RawClient] = []

        def tab_client() -> httpx.AsyncClient | RawClient:
            if load.tab_client == "httpx":
                return own_client()
            client = RawClient(url, timeout_s=REQUEST_TIMEOUT_S)
            stack.push_async_callback(client.aclose)
            raw_clients.append(client)
            return client

        async def timed(name: str, since: float, request: Awaitable[Any]) -> Any:
            try:
                response = await request
            except (httpx.HTTPError, ConnectionFailed) as exc:
                samples[name].add(time.perf_counter() - since, _error_name(exc), since - start)
                return None
            error = None if response.is_success else f"HTTP {response.status_code}"
            samples[name].add(time.perf_counter() - since, error, since - start)
            return response if error is None else None

        def spawn(work: Awaitable[Any]) -> None:
            task = asyncio.ensure_future(work)
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

        def scheduled(tick: Callable[[float], Awaitable[Any]]) -> Callable[[float], Awaitable[Any]]:
            async def run(at: float) -> None:
                send_lag.add(time.perf_counter() - at, None, at - start)
                await tick(at)

            return run

        def jobs_page() -> Callable[[float], Awaitable[Any]]:
            cache = TabCache(tab_client(), load.revalidate, not_modified, kept)

            @scheduled
            async def tick(at: float) -> None:
                await timed(JOBS_PAGE, at, cache.get(JOBS_PAGE, f"{API}/jobs", limit=50))

            return tick

        def report_page(uploader: int) -> Callable[[float], Awaitable[Any]]:
            reported: set[str] = set()
            client = tab_client()
            cache = TabCache(client, load.revalidate, not_modified, kept)

            @scheduled
            async def tick(at: float) -> None:
                job_id = newest.get(uploader, held_job_id)
                response = await timed(JOB, at, cache.get(JOB, f"{API}/jobs/{job_id}"))
                if response is None or response.json()["state"] != "succeeded" or job_id in reported:
                    return
                reported.add(job_id)
                await timed(REPORT, time.perf_counter(), client.get(f"{API}/jobs/{job_id}/report"))

            return tick

        def uploader(u: int) -> Callable[[float], Awaitable[Any]]:
            client = own_client()

            @scheduled
            async def tick(at: float) -> None:
                data = next(uploads)
                files = {"file": (f"load-{u}.safetensors", data)}
                response = await timed(UPLOAD, at, client.post(f"{API}/checkpoints", files=files))
                if response is None:
                    return
                body = {"kind": "reconstruct", "params": {"checkpoint_ids": [response.json()["id"]]}}
                response = await timed(SUBMIT, time.perf_counter(), client.post(f"{API}/jobs", json=body))
                if response is not None:
                    submitted.append(response.json()["id"])
                    newest[u] = submitted[-1]

            return tick

        async def every(period: float, offset: float, tick: Callable[[float], Awaitable[Any]]) -> None:
            at = start + offset
            while at < end:
                await until(at)
                spawn(tick(at))
                at += period

        async def long_poll(offset: float) -> None:
            client = own_client()
            await until(start + offset)
            while True:
                since = time.perf_counter()
                request = client.get(
                    f"{API}/jobs/{held_job_id}",
                    params={"wait": LONG_POLL_WAIT_S},
                    timeout=LONG_POLL_WAIT_S + REQUEST_TIMEOUT_S,
                )
                response = await timed(LONG_POLL, since, request)
                if response is not None and response.json()["state"] in TERMINAL:
                    return  # cancelled at the end of the load
                if response is None:
                    await asyncio.sleep(1.0)  # an error: do not spin on it

        jobs_page_tabs = round(load.clients * load.jobs_page_share)
        start = time.perf_counter() + 0.5
        await until(start)
        measured_from = start + load.warmup_s
        end = measured_from + load.duration_s
        cpu_before: list[Any] = []

        async def cpu_from_the_window() -> None:
            await until(measured_from)
            cpu_before[:] = [time.process_time(), cpu_seconds(pids), machine_busy_seconds()]

        cpu_clock = asyncio.ensure_future(cpu_from_the_window())
        polls = [
            asyncio.ensure_future(long_poll(k / max(load.long_polls, 1))) for k in range(load.long_polls)
        ]
        schedules = [
            every(
                1.0,
                k / load.clients,
                jobs_page() if k < jobs_page_tabs else report_page(k % load.uploaders),
            )
            for k in range(load.clients)
        ]
        schedules += [
            every(load.upload_interval_s, load.upload_interval_s * u / load.uploaders, uploader(u))
            for u in range(load.uploaders)
        ]
        await asyncio.gather(*schedules)
        await until(end)
        await cpu_clock
        ended_at, wall = time.time(), time.perf_counter() - measured_from
        cpu = {"load generator": 100 * (time.process_time() - cpu_before[0]) / wall}
        cpu |= cpu_by_role(cpu_before[1], cpu_seconds(pids), wall)
        busy, total = machine_busy_seconds()
        busy_share = (busy - cpu_before[2][0]) / max(total - cpu_before[2][1], 1e-9)
        # The rest of the machine's busy time: PostgreSQL, Redis, the kernel, anything else.
        cpu["everything else (database and broker servers, kernel)"] = max(
            0.0, 100 * busy_share * (os.cpu_count() or 1) - sum(cpu.values())
        )
        open_at_end = sum(not task.done() for task in polls)
        # What was sent is waited for (each has its timeout): a stalled answer counts in full.
        while in_flight:
            await asyncio.gather(*list(in_flight), return_exceptions=True)
        backlog = time.perf_counter() - end
        cancel = await own_client().post(f"{API}/jobs/{held_job_id}/cancel")
        cancel.raise_for_status()
        await asyncio.wait_for(asyncio.gather(*polls, return_exceptions=True), REQUEST_TIMEOUT_S)
        retries = sum(client.retries for client in raw_clients)
    return OpenLoopResult(
        samples, send_lag, submitted, open_at_end, cpu, 100 * busy_share, backlog, ended_at,
        not_modified, kept, retries,
    )  # fmt: skip


async def closed_loop(
    url: str, job_ids: list[str], clients: int, duration_s: float, tab_client: str = "raw"
) -> tuple[Samples, float, int]:
    """`clients` GETting /jobs/{id} back to back, each on its own connection (raw_http.RawClient,
    or one httpx pool with `tab_client` "httpx"): every answer's seconds, the wall time, and the
    requests resent on a fresh connection (RawClient.retries)."""
    samples = Samples()
    retries = 0
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S) as pooled:

        async def one(k: int) -> None:
            nonlocal retries
            client: httpx.AsyncClient | RawClient = pooled
            if tab_client == "raw":
                client = RawClient(url, timeout_s=REQUEST_TIMEOUT_S)
            try:
                for i in itertools.count(k):
                    if time.perf_counter() >= end:
                        return
                    since = time.perf_counter()
                    try:
                        response = await client.get(f"{API}/jobs/{job_ids[i % len(job_ids)]}")
                        error = None if response.is_success else f"HTTP {response.status_code}"
                    except (httpx.HTTPError, ConnectionFailed) as exc:
                        error = _error_name(exc)
                    samples.add(time.perf_counter() - since, error)
            finally:
                if isinstance(client, RawClient):
                    retries += client.retries
                    await client.aclose()

        start = time.perf_counter()
        end = start + duration_s
        await asyncio.gather(*(one(k) for k in range(clients)))
        return samples, time.perf_counter() - start, retries


def _error_name(error: Exception) -> str:
    name = type(error).__name__
    return f"{name} ({error})" if isinstance(error, ConnectionFailed) else name


def run_async(work: Awaitable[Any]) -> Any:
    """On uvloop where it is installed (uvicorn's standard extra): the load generator shares the
    cores with the service it measures, so its own cost per request matters."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(work)


# ---- one mode ---------------------------------------------------------------------------------------


def cpu_by_role(
    before: dict[int, tuple[float, str]], after: dict[int, tuple[float, str]], wall: float
) -> dict:
    used: dict[str, float] = {}
    for pid, (seconds, command) in after.items():
        used[role(command)] = used.get(role(command), 0.0) + seconds - before.get(pid, (0.0, ""))[0]
    return {name: 100 * seconds / wall for name, seconds in sorted(used.items())}


def run_mode(mode: str, load: Load, args: argparse.Namespace) -> dict[str, Any]:
    start = embedded_service if mode == "embedded" else postgres_service
    print(f"{mode}: starting the service and building the default models (tiny)", file=sys.stderr)
    options = {} if mode == "embedded" else {"api_workers": args.api_workers}
    with (
        tempfile.TemporaryDirectory(prefix="zooscope-load-") as work,
        start(Path(work), **options) as running,
    ):
        autoencoder_id = wait_for_default_autoencoder(running.url)
        from app.settings import Settings
        from zooscope.networks.checkpoints import checkpoint_bytes

        uploads = load.uploaders * (int(load.length_s / load.upload_interval_s) + 2) + 1
        zoo_dir = Settings(data_dir=running.data_dir).default_zoo_dir
        checkpoints = [checkpoint_bytes(sd) for sd in distinct_checkpoints(zoo_dir, uploads)]
        held = held_job(running, checkpoints.pop(), autoencoder_id)
        print(
            f"{mode}: {load.warmup_s:.0f} s of warm-up, then {load.duration_s:.0f} s of open-loop load",
            file=sys.stderr,
        )
        result = run_async(open_loop(running.url, load, checkpoints, held, running.processes()))
        at_end = job_states(running.database_url, result.submitted, result.ended_at)
        drained_s = wait_until_done(running.database_url, result.submitted, args.drain)
        after_drain = job_states(running.database_url, result.submitted)
        print(
            f"{mode}: closed loop, {args.ceiling_clients} clients, {args.ceiling_duration:.0f} s",
            file=sys.stderr,
        )
        ceiling, ceiling_wall, ceiling_retries = run_async(
            closed_loop(
                running.url,
                result.submitted or [held],
                args.ceiling_clients,
                args.ceiling_duration,
                load.tab_client,
            )
        )
    return {
        "mode": mode,
        "shape": MODES[mode],
        "load": vars(load),
        # Long polls are held, not timed: their row is the whole run's (each one waits ~60 s).
        "open_loop": {
            name: summary(s if name == LONG_POLL else s.sent_from(load.warmup_s))
            for name, s in result.samples.items()
        },
        "open_loop_with_warmup": {name: summary(s) for name, s in result.samples.items()},
        "job_p99_ms_by_10_s": windows_p99(result.samples[JOB], load.length_s),
        "latencies_ms": {name: [round(1000 * v, 3) for v in s.seconds] for name, s in result.samples.items()},
        "sent_at_s": {name: [round(v, 4) for v in s.sent_at] for name, s in result.samples.items()},
        "send_lag_ms": summary(result.send_lag.sent_from(load.warmup_s)),
        "send_lag_ms_with_warmup": summary(result.send_lag),
        "long_polls_open_at_end": result.long_polls_open_at_end,
        "not_modified": dict(result.not_modified),
        "kept": dict(result.kept),
        "retries": result.retries,
        "backlog_s": result.backlog_s,
        "jobs": {
            "submitted": len(result.submitted),
            "at_end_of_load": at_end,
            "after_drain": after_drain,
            "drain_s": drained_s,
        },
        "cpu_percent_of_one_core": result.cpu_percent,
        "machine_busy_percent": result.machine_busy_percent,
        "ceiling": {
            "clients": args.ceiling_clients,
            "duration_s": ceiling_wall,
            "requests_per_s": len(ceiling.seconds) / ceiling_wall,
            "retries": ceiling_retries,
            **summary(ceiling),
        },
    }


def print_mode(r: dict[str, Any], duration: float) -> None:
    load = r["load"]
    print(f"\n### {r['mode']} ({r['shape']}), {duration:.0f}-s run\n")
    print(
        f"Open loop: {load['clients']} dashboard tabs polling once a second "
        f"({round(load['clients'] * load['jobs_page_share'])} on the jobs page, the rest on a report "
        f"page), {load['uploaders']} uploaders (an upload and a reconstruct job every "
        f"{load['upload_interval_s']:g} s each), {load['long_polls']} long polls held on a queued job; "
        "latency from each request's scheduled time; "
        + f"tabs' polls on {load.get('tab_client', 'httpx')} clients; "
        + (
            "tabs revalidate with If-None-Match.\n"
            if load.get("revalidate", False)
            else "tabs poll without If-None-Match.\n"
        )
    )
    print(
        markdown_table(
            ["endpoint", "requests", "errors", "p50 (ms)", "p99 (ms)", "max (ms)"],
            endpoint_rows(r["open_loop"]),
        )
    )
    whole = r["open_loop_with_warmup"][JOB]
    by_10_s = ", ".join("-" if v is None else f"{v:.0f}" for v in r["job_p99_ms_by_10_s"])
    print(
        f"\nThe table counts the requests sent after {load['warmup_s']:g} s of warm-up (the same "
        f"load, during which every tab, uploader and long poll opens its connection). With the "
        f"warm-up, {JOB}: p50 {whole['p50_ms']:.1f} ms, p99 {whole['p99_ms']:.1f} ms; its p99 in "
        f"each 10 s of the run, warm-up first (ms): {by_10_s}."
    )
    jobs = r["jobs"]
    at_end, drained = jobs["at_end_of_load"], jobs["after_drain"]
    print(
        f"\nJobs: {jobs['submitted']} submitted, {at_end.get('succeeded in time', 0)} succeeded during the "
        f"load, {drained.get('succeeded', 0)} after {jobs['drain_s']:.0f} s more "
        f"(failed {drained.get('failed', 0)}, still queued or running "
        f"{drained.get('queued', 0) + drained.get('running', 0)}). Long polls still open at the end of the "
        f"load: {r['long_polls_open_at_end']} of {load['long_polls']}. The last answer to a request sent "
        f"during the load came {r['backlog_s']:.1f} s after its end."
    )
    if r.get("not_modified"):
        counts = r["open_loop"]
        answered = ", ".join(
            f"{name} {n} of {counts[name]['count']}" for name, n in sorted(r["not_modified"].items())
        )
        print(f"\nAnswered 304 Not Modified (the tab's copy was current): {answered}.")
    if r.get("kept"):
        counts = r["open_loop"]
        kept = sorted(r["kept"].items())
        answered = ", ".join(f"{name} {n} of {counts[name]['count']}" for name, n in kept)
        print(f"\nAnswered from the API's kept answers, without routing (X-Cache: hit): {answered}.")
    if r.get("retries"):
        print(
            f"\nPolls resent once on a fresh connection because the kept-alive one had been closed "
            f"(as a browser does): {r['retries']}."
        )
    lag = r["send_lag_ms"]
    cpu = ", ".join(f"{name} {percent:.0f} %" for name, percent in r["cpu_percent_of_one_core"].items())
    print(
        f"\nCPU during the load, % of one core: {cpu}; the whole machine busy "
        f"{r['machine_busy_percent']:.0f} % of all its cores. "
        "The load generator sent its scheduled requests "
        f"p50 {lag['p50_ms']:.1f} ms, p99 {lag['p99_ms']:.1f} ms late (its own lag)."
    )
    c = r["ceiling"]
    print(
        f"\nClosed loop: {c['clients']} clients GET {API}/jobs/{{id}} back to back "
        f"for {c['duration_s']:.0f} s:\n"
    )
    print(
        markdown_table(
            ["requests/s", "requests", "errors", "p50 (ms)", "p99 (ms)", "max (ms)"],
            [[c["requests_per_s"], c["count"], c["errors"], c["p50_ms"], c["p99_ms"], c["max_ms"]]],
        )
    )
    if c.get("retries"):
        print(f"\nResent once on a fresh connection (a kept-alive one had been closed): {c['retries']}.")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["embedded", "postgres", "both"], default="both")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of open-loop load")
    parser.add_argument(
        "--warmup",
        type=float,
        default=10.0,
        help="seconds of the same load before the measured window (connections open, caches fill)",
    )
    parser.add_argument("--clients", type=int, default=200, help="dashboard tabs, each polling once a second")
    parser.add_argument(
        "--jobs-page-share", type=float, default=0.5, help="the share of tabs on the jobs page"
    )
    parser.add_argument("--uploaders", type=int, default=10)
    parser.add_argument(
        "--upload-interval", type=float, default=1.0, help="seconds between an uploader's uploads"
    )
    parser.add_argument("--long-polls", type=int, default=50, help="long polls held open during the load")
    parser.add_argument("--drain", type=float, default=120.0, help="at most this long for the jobs to finish")
    parser.add_argument("--ceiling-clients", type=int, default=32)
    parser.add_argument("--ceiling-duration", type=float, default=15.0)
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    parser.add_argument(
        "--no-revalidate",
        action="store_true",
        help="tabs poll without If-None-Match (a client without an HTTP cache): each poll answered in full",
    )
    parser.add_argument(
        "--tab-client",
        choices=["raw", "httpx"],
        default="raw",
        help="what the tabs' polls and the closed loop send with: raw_http.RawClient (cheap) or httpx",
    )
    parser.add_argument(
        "--api-workers",
        type=int,
        default=1,
        help="uvicorn processes in the postgres mode (docker-compose.yml runs 2)",
    )
    args = parser.parse_args()
    load = Load(
        args.clients,
        args.jobs_page_share,
        args.uploaders,
        args.upload_interval,
        args.long_polls,
        args.duration,
        revalidate=not args.no_revalidate,
        tab_client=args.tab_client,
        warmup_s=args.warmup,
    )
    # SIGTERM unwinds like Ctrl-C, so every process started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    os.environ["ZOOSCOPE_DEFAULT_PRESET"] = "tiny"  # the default zoo and autoencoder in seconds
    m = machine()
    command = shlex.join([".venv/bin/python", "benchmarks/load_benchmark.py", *sys.argv[1:]])
    modes = ["embedded", "postgres"] if args.mode == "both" else [args.mode]
    results = [run_mode(mode, load, args) for mode in modes]
    print(f"`{command}`; {machine_line(m)}")
    for r in results:
        print_mode(r, args.duration)
    if args.json:
        args.json.write_text(json.dumps({"command": command, "machine": m, "modes": results}, indent=1))


if __name__ == "__main__":
    main()
