"""benchmarks/raw_http.py, the load benchmark's bare HTTP/1.1 client: its numbers are only as true
as its reading of answers and its handling of closed connections, checked here against a small
asyncio server on loopback that behaves as uvicorn does at the edges (keep-alive, closing an idle
connection, chunks)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.benchmark_scripts import benchmark_module


@pytest.fixture(scope="module")
def raw_http():
    with benchmark_module("raw_http") as module:
        yield module


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


def serve(handler: Handler) -> Callable[[], Awaitable[tuple[asyncio.Server, list[int]]]]:
    """A server calling `handler(reader, writer, n)` for the n-th request of each connection
    (after its head was read) until it returns False; counts the connections opened."""

    async def start() -> tuple[asyncio.Server, list[int]]:
        opened: list[int] = []

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            opened.append(1)
            n = 0
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    if not await handler(reader, writer, n):
                        break
                    n += 1
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()

        server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
        return server, opened

    return start


def answer(writer: asyncio.StreamWriter, body: bytes, extra: str = "") -> None:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    writer.write(head.encode() + body)


def test_it_reads_answers_and_keeps_one_connection(raw_http) -> None:
    async def handler(reader, writer, n) -> bool:
        if n == 1:
            writer.write(b'HTTP/1.1 304 Not Modified\r\netag: "a"\r\n\r\n')
        elif n == 2:
            writer.write(
                b'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{"a\r\n5\r\n": 1}\r\n0\r\n\r\n'
            )
        else:
            answer(writer, b'{"state": "queued"}', 'etag: "a"\r\n')
        await writer.drain()
        return True

    async def main() -> None:
        server, opened = await serve(handler)()
        port = server.sockets[0].getsockname()[1]
        client = raw_http.RawClient(f"http://127.0.0.1:{port}")
        first = await client.get("/api/v1/jobs", params={"limit": 50})
        assert (first.status_code, first.json(), first.headers["etag"]) == (200, {"state": "queued"}, '"a"')
        second = await client.get("/api/v1/jobs", headers={"If-None-Match": '"a"'})
        assert (second.status_code, second.content, second.is_success) == (304, b"", False)
        third = await client.get("/x")
        assert third.json() == {"a": 1}
        assert (len(opened), client.retries) == (1, 0)  # all three on one kept-alive connection
        await client.aclose()
        server.close()

    asyncio.run(main())


def test_a_closed_kept_alive_connection_is_retried_once_and_counted(raw_http) -> None:
    async def handler(reader, writer, n) -> bool:
        answer(writer, b"{}")
        await writer.drain()
        return False  # the server closes every connection after one answer, as after a keep-alive timeout

    async def main() -> None:
        server, opened = await serve(handler)()
        port = server.sockets[0].getsockname()[1]
        client = raw_http.RawClient(f"http://127.0.0.1:{port}")
        for _ in range(3):
            assert (await client.get("/")).status_code == 200
            await asyncio.sleep(0.05)  # the close reaches the client's side
        assert (len(opened), client.retries) == (3, 2)
        await client.aclose()
        server.close()

    asyncio.run(main())


def test_a_fresh_connection_closed_unanswered_is_an_error_not_a_retry(raw_http) -> None:
    async def handler(reader, writer, n) -> bool:
        return False  # closes without answering

    async def main() -> None:
        server, _ = await serve(handler)()
        port = server.sockets[0].getsockname()[1]
        client = raw_http.RawClient(f"http://127.0.0.1:{port}")
        with pytest.raises(raw_http.ConnectionFailed, match="closed before answering"):
            await client.get("/")
        assert client.retries == 0
        server.close()

    asyncio.run(main())


def test_an_answer_that_never_comes_times_out(raw_http) -> None:
    async def handler(reader, writer, n) -> bool:
        await asyncio.sleep(5)
        return False

    async def main() -> None:
        server, _ = await serve(handler)()
        port = server.sockets[0].getsockname()[1]
        client = raw_http.RawClient(f"http://127.0.0.1:{port}", timeout_s=0.2)
        with pytest.raises(raw_http.ConnectionFailed, match="timed out"):
            await client.get("/")
        server.close()

    asyncio.run(main())
