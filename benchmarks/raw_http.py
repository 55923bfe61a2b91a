"""A bare HTTP/1.1 client for the load benchmark's polls: what a browser tab does for a GET, at a
small fraction of httpx's cost per request.

The load generator shares the machine's cores with the service it measures. With httpx each poll
cost the generator about 3 ms of CPU (68-81 % of a core for 200 tabs polling once a second,
docs/benchmarks.md "Load"), so the service got less CPU than it would with real, remote
browsers. This client writes the request line and headers itself and reads the answer by its
Content-Length (or chunks), on asyncio streams (uvloop's where installed).

What it does as a browser does:
- keeps each connection alive and reuses it, at most MAX_CONNECTIONS a client (a browser's limit
  for one host); a request finds an idle connection or opens one, and waits when all are busy;
- retries an idempotent request once on a new connection when a reused one turns out closed before
  any byte of the answer came back: the server may close an idle keep-alive connection at the
  moment the client sends on it, and browsers resend then (RFC 9112, 9.3.1). Such retries are
  counted (`retries`), never hidden.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

MAX_CONNECTIONS = 6


class ConnectionFailed(Exception):
    """The request got no complete answer: refused, reset, closed mid-answer or timed out."""


@dataclass
class RawResponse:
    status_code: int
    headers: dict[str, str]  # lower-cased names
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    used: bool = False  # has answered a request before: may have been closed by the server since

    def close(self) -> None:
        self.writer.close()


class _Closed(Exception):
    """The connection ended before any byte of the answer."""


@dataclass
class RawClient:
    base_url: str
    timeout_s: float = 30.0
    retries: int = 0  # requests resent once because a kept-alive connection had been closed
    _idle: list[_Connection] = field(default_factory=list)
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_CONNECTIONS))

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._host_header = f"{self._host}:{self._port}"

    async def get(
        self, path: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None
    ) -> RawResponse:
        target = f"{path}?{urlencode(params)}" if params else path
        lines = [f"GET {target} HTTP/1.1", f"Host: {self._host_header}", "Accept: application/json"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await self._send(request)
            except TimeoutError as error:
                raise ConnectionFailed("timed out") from error
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                raise ConnectionFailed(f"{type(error).__name__}: {error}") from error

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def _send(self, request: bytes) -> RawResponse:
        connection = self._idle.pop() if self._idle else await self._open()
        for attempt in (1, 2):
            try:
                response = await self._exchange(connection, request)
                break
            except _Closed:
                connection.close()
                if not connection.used or attempt == 2:
                    raise ConnectionFailed("closed before answering") from None
                self.retries += 1  # a stale keep-alive connection: once more on a fresh one
                connection = await self._open()
            except BaseException:
                connection.close()
                raise
        connection.used = True
        if response.headers.get("connection", "").lower() == "close":
            connection.close()
        else:
            self._idle.append(connection)
        return response

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, request: bytes) -> RawResponse:
        connection.writer.write(request)
        try:
            await connection.writer.drain()
            head = await connection.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as error:
            if not error.partial:
                raise _Closed from error
            raise
        except (ConnectionResetError, BrokenPipeError) as error:
            raise _Closed from error
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status == 304 or status < 200 or status == 204:
            body = b""
        elif "content-length" in headers:
            body = await connection.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunks(connection.reader)
        else:
            raise ValueError("an answer with neither Content-Length nor chunks")
        return RawResponse(status, headers, body)


async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are sent to us: the empty line
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
