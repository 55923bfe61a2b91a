"""The routers' route class: a plain `def` endpoint ends its database transaction on its own
thread, before its answer is serialised.

FastAPI runs a plain `def` endpoint on a threadpool thread, then serialises its answer (the
response_model) on another hop to the threadpool, then closes the request's session. A session
holds its pooled connection from its first query to the end of its transaction, so each request
held a connection across those hops without holding a thread. Under load the threads all waited
for a connection while the connections all waited for a thread, until the pool's 30-s timeout
(docs/benchmarks.md, "Load"; tests/app/test_api_event_loop.py). Ending the transaction where the
work ran gives the connection back before the request queues for a thread again. The sessions do
not expire on commit (app/db/session.py), so the rows stay readable for the serialisation.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from sqlalchemy.orm import Session


def ending_transactions(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """The endpoint, then commit (rollback if it raised) each Session it was given, same thread."""

    @functools.wraps(endpoint)  # FastAPI reads the parameters through __wrapped__
    def run(*args: Any, **kwargs: Any) -> Any:
        sessions = [value for value in kwargs.values() if isinstance(value, Session)]
        try:
            result = endpoint(*args, **kwargs)
        except BaseException:
            for session in sessions:
                session.rollback()
            raise
        for session in sessions:
            session.commit()
        return result

    run.ends_transactions = True  # type: ignore[attr-defined]
    return run


class DatabaseRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        # include_router builds each route again from the wrapped endpoint: wrap once
        if not inspect.iscoroutinefunction(endpoint) and not getattr(endpoint, "ends_transactions", False):
            endpoint = ending_transactions(endpoint)
        super().__init__(path, endpoint, **kwargs)
