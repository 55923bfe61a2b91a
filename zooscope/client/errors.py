"""Typed errors of the HTTP client. The CLI maps each class to its own exit code."""

from __future__ import annotations

from typing import Any

from zooscope.errors import ZooscopeError


class ClientError(ZooscopeError):
    """The service answered with an error (4xx/5xx); carries its problem+json fields."""

    def __init__(
        self, status: int, title: str, detail: str, type_: str = "about:blank", body: Any = None
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_
        self.body = body
        super().__init__(f"HTTP {status} {title}: {detail}" if detail else f"HTTP {status} {title}")


class TransportError(ZooscopeError):
    """The request never got an HTTP answer (base of the two classes below)."""


class ClientConnectionError(TransportError):
    """The service could not be reached: wrong URL, not started, refused or unresolvable."""


class ClientTimeoutError(TransportError):
    """A request, or waiting for a job, took longer than the caller allowed."""
