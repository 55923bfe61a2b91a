"""Conditional GETs of jobs: an ETag on a job and on a listing, 304 Not Modified for a client that
already holds that version.

The dashboard polls GET /jobs and GET /jobs/{id} once a second per tab. Answered in full, each
listing poll loads and serialises up to 100 rows although nothing changed since the last one.
With an ETag and `Cache-Control: private, no-cache`, a browser's fetch() revalidates its copy
with If-None-Match and gets a bodiless 304 while nothing has changed, which costs the service one
primary-key read (a job) or one aggregate query (a listing).

A job's version is its `revision` (one more on every change a client can see: app/db/jobs.py);
a listing's is its count and the (id, revision) of each job on the page, read as one row
(app.db.jobs.listing_version): any insert, visible update or delete among the rows it is drawn
from changes it, and a change to a job on another page does not. The page's own parameters are
in the tag too, and the code's version, so that a new release never answers 304 to a copy an
older one made.

Because a tag fixes its representation, a body rendered once can answer every client that asks
for the same version (RenderedBodies): the dashboard's tabs poll the same listing. A new version
renders only the jobs that changed: each job's body is kept under its own tag
(app/api/job_bodies.py).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Annotated, Any

from fastapi import Header, Response

from zooscope.version import code_version

# Browsers may keep the copy (private: it was fetched with the caller's key) but must ask first.
CACHE_CONTROL = "private, no-cache"

IfNoneMatch = Annotated[
    str | None,
    Header(
        description="the ETag of a copy the client holds: when it is still current the answer is "
        "304 Not Modified, without a body"
    ),
]

NOT_MODIFIED_RESPONSE: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not Modified: the copy whose ETag was sent in If-None-Match is current"}
}


def entity_tag(*version: object) -> str:
    """A strong ETag for a representation whose content is fixed by `version`."""
    digest = hashlib.blake2b(repr((code_version(), *version)).encode(), digest_size=12).hexdigest()
    return f'"{digest}"'


def still_current(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match names `etag` (or is `*`); the weak comparison, as RFC 9110 asks for GETs."""
    if not if_none_match:
        return False
    candidates = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in candidates or etag in (tag.removeprefix("W/") for tag in candidates)


def not_modified(etag: str) -> Response:
    return Response(status_code=304, headers=validator_headers(etag))


def validator_headers(etag: str) -> dict[str, str]:
    """The headers of a 200 or 304: the tag, and how a cache may hold the copy."""
    return {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": "Authorization"}


class RenderedBodies:
    """Bodies of recent representations by ETag, for the requests of one API process: while the
    version a tag names stands, every client gets the bytes rendered for the first. Bounded: the
    least recently used goes first. Thread-safe (plain `def` endpoints run on the threadpool)."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._bodies: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, etag: str) -> bytes | None:
        with self._lock:
            body = self._bodies.get(etag)
            if body is not None:
                self._bodies.move_to_end(etag)
            return body

    def put(self, etag: str, body: bytes) -> bytes:
        with self._lock:
            self._bodies[etag] = body
            self._bodies.move_to_end(etag)
            while len(self._bodies) > self.capacity:
                self._bodies.popitem(last=False)
        return body
