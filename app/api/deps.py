"""Request dependencies: settings, a database session per request, the caller, storage, queue; and
the lookup of a row the caller may see (404 otherwise)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from sqlalchemy.orm.interfaces import ORMOption

from app.api.auth import Principal, authenticate
from app.api.problems import not_found
from app.db.visibility import Row, find_visible
from app.queue import JobQueue
from app.settings import Settings
from app.storage import BlobStore

# Paging of every list. The offset is bounded too: past a 32-bit integer it would overflow the
# database's, and no list is that long.
MAX_PAGE_SIZE = 500
MAX_OFFSET = 2**31 - 1
PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="items per page")]
PageOffset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip, newest first")]


# The dependencies are `async def`: FastAPI runs a plain `def` dependency on a worker thread, a hop
# that costs CPU on every request and that those without I/O do not need. What touches the database
# goes to a thread itself, only when it must (get_principal with a key, get_session's close of a
# session still in a transaction); the session is made on the loop (no I/O until its first query).
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


# Closing a request's session gives its connection back to the pool, so it runs on threads of its
# own. On the shared threadpool the closes queued behind requests that were waiting for a pooled
# connection, which only those closes could give back: under load every thread waited for the pool
# until its timeout and the whole API stalled (docs/benchmarks.md, "Load").
SESSION_CLOSING_THREADS = 8


async def get_session(request: Request) -> AsyncIterator[Session]:
    session = request.app.state.sessionmaker()  # no I/O until the first query, on a worker thread
    try:
        yield session
    finally:
        if session.in_transaction():  # it holds a pooled connection: rolling back is I/O
            await anyio.to_thread.run_sync(session.close, limiter=request.app.state.session_closing)
        else:  # the endpoint ended its transaction (app/api/routing.py): nothing to give back
            session.close()


async def get_store(request: Request) -> BlobStore:
    return request.app.state.store


async def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
StoreDep = Annotated[BlobStore, Depends(get_store)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]


# Declares the scheme in OpenAPI (the Authorize button in /docs); the checking is ours, so a
# malformed header gets a 401 problem that says what is wrong rather than FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="an API key from `zooscope keys create`")


async def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> Principal:
    authorization = request.headers.get("authorization")
    if not authorization:  # anonymous, or a 401: no key to look up, so no I/O and no thread
        return authenticate(session, authorization, settings.auth_required)
    return await anyio.to_thread.run_sync(_look_up_key, session, authorization, settings.auth_required)


def _look_up_key(session: Session, authorization: str, auth_required: bool) -> Principal:
    principal = authenticate(session, authorization, auth_required)
    # The key's lookup ends its transaction here, on this thread: held until the endpoint's own
    # thread, its connection would wait out a hop to the threadpool (app/api/routing.py).
    session.commit()
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_visible(
    session: Session, principal: Principal, model: type[Row], row_id: str, *options: ORMOption
) -> Row:
    """The row of `model` with this id that the caller may see, else a 404 problem."""
    row = find_visible(session, model, row_id, principal.owner_id, *options)
    if row is None:
        raise not_found(model.__name__.lower(), row_id)
    return row
