"""Errors as application/problem+json (RFC 9457), for our errors and FastAPI's own.

Every error body has type, title, status, detail and instance; `detail` says what to do.
Library exceptions map to statuses here: bad input is 422, other library errors 400.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from zooscope.errors import (
    ArchitectureMismatchError,
    InvalidCheckpointError,
    UnknownArchitectureError,
    ZooscopeError,
)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://zooscope.dev/problems/"  # stable identifiers; not fetched by clients

LIBRARY_STATUS: list[tuple[type[ZooscopeError], int, str]] = [
    (InvalidCheckpointError, 422, "invalid-checkpoint"),
    (UnknownArchitectureError, 422, "unknown-architecture"),
    (ArchitectureMismatchError, 422, "architecture-mismatch"),
    (ZooscopeError, 400, "bad-request"),
]


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

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; see /docs for the API"
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; see /docs for the API"
        return problem_response(request, exc.status_code, detail, headers=getattr(exc, "headers", None))
