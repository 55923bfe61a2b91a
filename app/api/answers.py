"""Answers to job polls kept in front of the framework, dropped when the rows under them change.

The dashboard's tabs poll GET /jobs, GET /jobs/{id} and GET /jobs/{id}/report once a second, and
most polls find nothing changed. Answered by the routes, each costs the API about a millisecond of
CPU (routing, dependencies, a session, one or two queries), and at a few hundred polls a second on
a small machine that CPU is what makes polls wait (docs/benchmarks.md, "Load"). Here an answer the
routes gave (200 with an ETag, or a 304) is kept under the request's path, query and
Authorization header, and the same request is answered from memory, before routing: 200 with the
kept bytes, or 304 when its If-None-Match names the kept ETag.

What the answers depend on is the jobs table and the API keys, and on PostgreSQL triggers NOTIFY
every change to them (migrations/versions/0005_change_notifications.py), which the API's listener
turns into drops here (app/api/job_events.py):
- a job's change drops the answers about that job (its GET and its report) at once;
- a new or deleted job, or a change of a job's state, drops every listing at once; a change of
  progress only (progress, message, ETA) drops a listing once it has been kept for
  `listing_progress_lag_s` (Settings): while jobs run their progress changes many times a second,
  a tab that polls once a second cannot tell a listing's progress half a second old, and a
  listing kept that long is rendered a few times a second instead of at every poll. A job's own
  GET is never behind;
- a key revoked or deleted, a lost listener connection, or a job request of this process that
  writes (POST /jobs, cancel) drops everything or what it touched, the last so that a client
  sees its own writes at once.
An answer is kept only if nothing it depends on changed while it was being made (generation
numbers, AnswerCache), so an answer read before a change can never outlive the change's
notification; the notifications that have arrived are read before each kept answer is given.
What is kept is thus at most one notification's delivery behind the database (on loopback, well
under a millisecond), apart from the listings' progress. A request that arrives while the routes
answer the same request waits for that answer instead of making it again. Without a listener
(SQLite: no notifications) nothing is kept and every request reaches the routes. Answers given
from memory carry `X-Cache: hit`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from app.api.conditional import still_current
from zooscope.client import API_PREFIX

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JOBS_PATH = f"{API_PREFIX}/jobs"
# Kept answers about single jobs (a job's GET and its report, per key), least recently used out
# first; and listings (per key and query: a handful of distinct pages are polled).
JOB_ANSWERS_CAPACITY = 8192
JOB_ANSWERS_MAX_BYTES = 64 * 1024 * 1024  # their bodies together: a report can weigh 100 KB
LISTING_ANSWERS_CAPACITY = 256
CHANGES_REMEMBERED = 16384  # jobs whose last change's generation is remembered (~3 MB)
VALIDATORS = (b"etag", b"cache-control", b"vary")  # the headers of a 304 (app/api/conditional.py)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Marks an answer given from memory, as caches in front of web servers do (for operators and the
# load benchmark; a client needs nothing from it).
HIT = (b"x-cache", b"hit")

AnswerKey = tuple[str, bytes, bytes]  # path, query string, Authorization header


@dataclass
class Answer:
    etag: str
    headers: list[tuple[bytes, bytes]]  # of the 200; a 304 is answered with the VALIDATORS among them
    body: bytes | None  # None: only a 304 was seen; a request without the tag goes to the routes
    kept_at: float
    progress_changed: bool = False  # (listings) a job's progress changed since it was kept


def _nothing_to_drain() -> None:
    pass


class AnswerCache:
    """The kept answers of one API process. Used on its event loop only (the middleware and the
    listener task), so it needs no lock.

    Every change gets the next generation number. An answer made from reads that began at
    generation g is kept only if nothing it depends on changed after g: that job (for a job's
    answers), a state change (for listings), a clear. Progress changes while a listing was being
    made keep it, marked as behind."""

    def __init__(self, listing_progress_lag_s: float) -> None:
        self.listing_progress_lag_s = listing_progress_lag_s
        self.enabled = False  # only while a listener delivers the changes
        self.generation = 0
        self.hits = self.misses = 0
        self._drain: Callable[[], None] = _nothing_to_drain
        self._cleared_at = 0
        self._listings_changed_at = 0  # the last new, deleted or re-stated job
        self._progress_changed_at = 0
        # The generation of each job's last change, for the jobs changed most recently; of the
        # jobs forgotten, only that they changed at or before _forgotten_at.
        self._job_changed_at: OrderedDict[str, int] = OrderedDict()
        self._forgotten_at = 0
        self._job_answers: OrderedDict[AnswerKey, tuple[str, Answer]] = OrderedDict()
        self._job_answer_bytes = 0
        self._by_job: dict[str, set[AnswerKey]] = {}
        self._listings: OrderedDict[AnswerKey, Answer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._job_answers) + len(self._listings)

    # ---- the listener's side ----
    def start(self, drain: Callable[[], None] = _nothing_to_drain) -> None:
        """Changes are delivered from now on (what was kept before may have missed some);
        `drain` hands on those that have arrived and wait to be read."""
        self.clear()
        self._drain = drain
        self.enabled = True

    def stop(self) -> None:
        self.enabled = False
        self._drain = _nothing_to_drain
        self.clear()

    def clear(self) -> None:
        self.generation += 1
        self._cleared_at = self.generation
        self._job_answers.clear()
        self._job_answer_bytes = 0
        self._by_job.clear()
        self._listings.clear()
        self._job_changed_at.clear()
        self._forgotten_at = self.generation

    def job_changed(self, job_id: str, state_changed: bool) -> None:
        if state_changed:
            self.listings_changed()
        else:
            self.generation += 1
            self._progress_changed_at = self.generation
            for answer in self._listings.values():
                answer.progress_changed = True
        self._job_changed_at[job_id] = self.generation
        self._job_changed_at.move_to_end(job_id)
        while len(self._job_changed_at) > CHANGES_REMEMBERED:
            _, self._forgotten_at = self._job_changed_at.popitem(last=False)
        for key in list(self._by_job.get(job_id, ())):
            self._forget_job_answer(key)

    def listings_changed(self) -> None:
        self.generation += 1
        self._listings_changed_at = self.generation
        self._listings.clear()

    def note(self, payload: str) -> None:
        """A JOB_CHANGED_CHANNEL notification: "<job id> state|progress"."""
        job_id, _, what = payload.partition(" ")
        self.job_changed(job_id, state_changed=what != "progress")

    # ---- the middleware's side ----
    def find(self, key: AnswerKey, job_id: str | None) -> Answer | None:
        self._drain()
        if not self.enabled:
            return None
        if job_id is not None:
            found = self._job_answers.get(key)
            if found is None:
                return None
            self._job_answers.move_to_end(key)
            return found[1]
        answer = self._listings.get(key)
        if answer is not None and answer.progress_changed:
            if time.monotonic() - answer.kept_at > self.listing_progress_lag_s:
                del self._listings[key]
                return None
        return answer

    def still_holds(self, job_id: str | None, generation: int) -> bool:
        """Whether an answer read from the database after `generation` still holds: nothing it
        depends on has changed since (for a listing, progress aside)."""
        if not self.enabled or self._cleared_at > generation:
            return False
        if job_id is None:
            return self._listings_changed_at <= generation
        return self._job_changed_at.get(job_id, self._forgotten_at) <= generation

    def keep(self, key: AnswerKey, job_id: str | None, answer: Answer, generation: int) -> None:
        """Keep `answer`, made from what the database held after `generation` was read, unless
        something it depends on changed since."""
        if not self.still_holds(job_id, generation):
            return
        if job_id is None:
            answer.progress_changed = self._progress_changed_at > generation
            self._listings[key] = answer
            self._listings.move_to_end(key)
            while len(self._listings) > LISTING_ANSWERS_CAPACITY:
                self._listings.popitem(last=False)
            return
        self._forget_job_answer(key)
        self._job_answers[key] = (job_id, answer)
        self._job_answer_bytes += len(answer.body or b"")
        self._by_job.setdefault(job_id, set()).add(key)
        while self._job_answers and (
            len(self._job_answers) > JOB_ANSWERS_CAPACITY or self._job_answer_bytes > JOB_ANSWERS_MAX_BYTES
        ):
            self._forget_job_answer(next(iter(self._job_answers)))  # the least recently used

    def _forget_job_answer(self, key: AnswerKey) -> None:
        """Drop one kept job answer, from the answers, their bytes and their job's keys."""
        dropped = self._job_answers.pop(key, None)
        if dropped is None:
            return
        job_id, answer = dropped
        self._job_answer_bytes -= len(answer.body or b"")
        keys = self._by_job.get(job_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_job[job_id]


def job_poll_target(path: str, query: bytes) -> tuple[bool, str | None]:
    """(whether the request may be answered from kept answers, the job it is about: None for a
    listing). Kept: GET /jobs, GET /jobs/{id} without `wait` (a long poll waits for a change),
    GET /jobs/{id}/report."""
    if path == JOBS_PATH:
        return True, None
    if not path.startswith(JOBS_PATH + "/"):
        return False, None
    rest = path[len(JOBS_PATH) + 1 :]
    job_id, _, tail = rest.partition("/")
    if not job_id or tail not in ("", "report") or (tail == "" and b"wait" in query):
        return False, None
    return True, job_id


class KeptAnswers:
    """ASGI middleware: job polls answered from an AnswerCache when it holds their answer."""

    def __init__(self, app: ASGIApp, cache: AnswerCache) -> None:
        self.app = app
        self.cache = cache
        # Requests being answered by the routes, by key: (the generation their reads began
        # after, their answer). A request that arrives meanwhile waits for that answer instead
        # of making the same one (under load, many tabs ask at once).
        self._in_flight: dict[AnswerKey, tuple[int, asyncio.Future[Answer | None]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.cache.enabled:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if scope["method"] != "GET":
            try:
                await self.app(scope, receive, send)
            finally:
                if scope["method"] not in SAFE_METHODS and path.startswith(JOBS_PATH):
                    self._own_write(path)
            return
        keepable, job_id = job_poll_target(path, scope["query_string"])
        if not keepable:
            await self.app(scope, receive, send)
            return
        authorization = if_none_match = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"if-none-match":
                if_none_match = value
        key = (path, scope["query_string"], authorization)
        answer = self.cache.find(key, job_id)
        if answer is not None and await self._send_kept(send, answer, if_none_match):
            self.cache.hits += 1
            return
        made = self._in_flight.get(key)
        if made is not None and self.cache.still_holds(job_id, made[0]):
            # The same request is being answered by the routes from reads that began after the
            # last change it depends on: its answer holds for this one too.
            answer = await asyncio.shield(made[1])
            if answer is not None and await self._send_kept(send, answer, if_none_match):
                self.cache.hits += 1
                return
        self.cache.misses += 1
        await self._answer_and_keep(scope, receive, send, key, job_id)

    async def _send_kept(self, send: Send, answer: Answer, if_none_match: bytes) -> bool:
        """Send `answer` as the answer to a request with this If-None-Match: a 304 when it names
        the kept tag, else the kept 200; False (nothing sent) when only a 304 was kept."""
        if if_none_match and still_current(if_none_match.decode("latin-1"), answer.etag):
            validators = [(name, value) for name, value in answer.headers if name in VALIDATORS]
            await send({"type": "http.response.start", "status": 304, "headers": [*validators, HIT]})
            await send({"type": "http.response.body", "body": b""})
            return True
        if answer.body is not None:
            await send({"type": "http.response.start", "status": 200, "headers": [*answer.headers, HIT]})
            await send({"type": "http.response.body", "body": answer.body})
            return True
        return False

    def _own_write(self, path: str) -> None:
        """A job request of this process that wrote: its change is visible to its client at once,
        not one notification later."""
        job_id = path[len(JOBS_PATH) + 1 :].partition("/")[0]
        if job_id:
            self.cache.job_changed(job_id, state_changed=True)
        else:  # a submission: a new job in the listings
            self.cache.listings_changed()

    async def _answer_and_keep(
        self, scope: Scope, receive: Receive, send: Send, key: AnswerKey, job_id: str | None
    ) -> None:
        generation = self.cache.generation
        made: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = (generation, made)
        answer = None
        try:
            answer = await self._answer(scope, receive, send)
            if answer is not None:
                self.cache.keep(key, job_id, answer, generation)
        finally:
            made.set_result(answer)
            if self._in_flight.get(key, (0, None))[1] is made:
                del self._in_flight[key]

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> Answer | None:
        """The routes' answer, sent; returned when it may be kept (a 200 or 304 with an ETag)."""
        started: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        if started is None or started["status"] not in (200, 304):
            return None
        headers = [(bytes(name).lower(), bytes(value)) for name, value in started.get("headers", ())]
        etag = next((value.decode("latin-1") for name, value in headers if name == b"etag"), None)
        if etag is None:
            return None
        body = b"".join(chunks) if started["status"] == 200 else None
        return Answer(etag, headers, body, time.monotonic())
