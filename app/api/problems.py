"""Errors as application/problem+json (RFC 9457), for our errors and FastAPI's own.

Every error body has type, title, status, detail and instance; `detail` says what to do.
Library exceptions map to statuses here: bad input is 422, other library errors 400.
"""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError as DBAPIOperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from zooscope.errors import (
    ArchitectureMismatchError,
    InvalidCheckpointError,
    UnknownArchitectureError,
    ZooscopeError,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://zooscope.dev/problems/"  # stable identifiers; not fetched by clients

LIBRARY_STATUS: list[tuple[type[ZooscopeError], int, str]] = [
    (InvalidCheckpointError, 422, "invalid-checkpoint"),
    (UnknownArchitectureError, 422, "unknown-architecture"),
    (ArchitectureMismatchError, 422, "architecture-mismatch"),
    (ZooscopeError, 400, "bad-request"),
]


PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "a stable identifier of the kind of problem"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what went wrong and what to do"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}
# The error statuses any route may answer, declared once for the OpenAPI document (every route
# gets them): their bodies are application/problem+json.
PROBLEM_STATUSES = {
    400: "malformed request (e.g. a multipart body that cannot be parsed)",
    401: "an API key is required and missing or not valid",
    404: "no such resource, or it belongs to another key",
    409: "the resource is in a state that does not allow this (e.g. a report not ready yet)",
    413: "the upload is larger than the service accepts",
    415: "the body is not of a media type this route reads",
    422: "invalid input: the detail says which field and why",
    500: "a fault of the service (logged with the request's id), not of the request",
    503: "the database or the job queue is unreachable; try again later",
}
PROBLEM_RESPONSES: dict[int | str, dict] = {
    status: {"description": description, "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}}
    for status, description in PROBLEM_STATUSES.items()
}


class Problem(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type_: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type_
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers
        self.extra = extra


def not_found(what: str, ident: str) -> Problem:
    return Problem(404, f"no {what} with id {ident!r} (or it belongs to another key)", type_="not-found")


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    type_: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + type_ if type_ else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **(extra or {}),
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _validation_detail(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {error.get('msg')}" if loc else str(error.get("msg")))
    return "; ".join(parts) or "the request is invalid"


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and getattr(route, "methods", None) and pattern.match(request.url.path):
            methods |= set(route.methods)
    return sorted(methods)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request,
            exc.status,
            exc.detail,
            type_=exc.type,
            title=exc.title,
            headers=exc.headers,
            extra=exc.extra,
        )

    @app.exception_handler(ZooscopeError)
    async def _library(request: Request, exc: ZooscopeError) -> JSONResponse:
        for cls, status, type_ in LIBRARY_STATUS:
            if isinstance(exc, cls):
                return problem_response(request, status, str(exc), type_=type_)
        raise AssertionError("unreachable: ZooscopeError is in LIBRARY_STATUS")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()
        ]
        return problem_response(
            request, 422, _validation_detail(errors), type_="validation-error", extra={"errors": errors}
        )

    @app.exception_handler(DBAPIOperationalError)
    async def _database_unavailable(request: Request, exc: DBAPIOperationalError) -> JSONResponse:
        # The database went away (restarted, connections terminated, refusing connections): not a
        # bug, and the pool reconnects by itself once it is back (pre-ping), so no restart.
        log.warning("request %s %s: the database is unavailable: %s", request.method, request.url.path, exc)
        return problem_response(
            request,
            503,
            "the database is unavailable at the moment; try again in a few seconds",
            type_="database-unavailable",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug or a fault of ours: the traceback goes to the log under an id the client gets, the
        # client gets no traceback.
        request_id = uuid.uuid4().hex
        log.error("request %s %s %s failed", request_id, request.method, request.url.path, exc_info=exc)
        return problem_response(
            request,
            500,
            "an internal error of the service, not caused by the request; "
            f"it was logged as request {request_id}",
            type_="internal-error",
            headers={"X-Request-ID": request_id},
            extra={"request_id": request_id},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; see /docs for the API"
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; see /docs for the API"
            # Starlette names the methods of the first route matching the path only; a path
            # served by several routes (GET and POST /jobs) allows all of theirs.
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return problem_response(request, exc.status_code, detail, headers=headers)
