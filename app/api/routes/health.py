"""Liveness (/healthz: the process answers) and readiness (/readyz: it can do its work)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.problems import PROBLEM_JSON
from app.api.routing import DatabaseRoute
from app.worker_presence import PRESENCE_STALE_S, present_workers

router = APIRouter(tags=["health"], route_class=DatabaseRoute)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check_database(request: Request) -> str | None:
    try:
        with request.app.state.sessionmaker() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which
        return f"database unreachable: {type(exc).__name__}: {exc}"
    return None


@router.get("/readyz", responses={503: {"description": "a dependency failed; the body says which"}})
async def readyz(request: Request) -> JSONResponse:
    """Database reachable, broker reachable, at least one worker answers a ping (or, with a
    broker that cannot broadcast, has reported its presence recently)."""
    settings = request.app.state.settings
    queue = request.app.state.queue
    timeout = settings.readiness_timeout_s
    checks: dict[str, Any] = {}

    error = await run_in_threadpool(_check_database, request)
    checks["database"] = error or "ok"
    try:
        await run_in_threadpool(queue.check_broker, timeout)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"broker unreachable: {type(exc).__name__}: {exc}"
    if checks["broker"] == "ok":
        if not getattr(queue, "supports_ping", True):
            # The embedded SQLite broker has no broadcast: workers report through files instead.
            workers = await run_in_threadpool(present_workers, settings)
            checks["workers"] = workers or f"no worker has reported in the last {PRESENCE_STALE_S:g} s"
        else:
            try:
                workers = await run_in_threadpool(queue.ping_workers, timeout)
                checks["workers"] = workers or f"no worker answered a ping within {timeout:g} s"
            except Exception as exc:  # noqa: BLE001
                checks["workers"] = f"worker ping failed: {type(exc).__name__}: {exc}"
    else:
        checks["workers"] = "not checked: the broker is unreachable"

    failed = [name for name, value in checks.items() if isinstance(value, str) and value != "ok"]
    if not failed:
        return JSONResponse({"status": "ready", "checks": checks})
    body = {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "not ready: " + "; ".join(f"{name}: {checks[name]}" for name in failed),
        "instance": request.url.path,
        "checks": checks,
    }
    return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)
