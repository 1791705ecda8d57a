"""The fast path's HTTP/1.1 client against the local upstream and a few hand-written servers."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import orjson
import pytest

from gateway.providers.http1 import (
    ConnectError,
    Http1Pool,
    ProtocolError,
    ServerDisconnectedError,
    Target,
)
from tests.gateway.upstream import UpstreamServer

KEY = "upstream-secret"


Runner = Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Run a test's coroutine on the standard loop and on uvloop (the server's loop)."""
    if request.param == "uvloop":
        import uvloop

        return lambda main: uvloop.run(main())
    return lambda main: asyncio.run(main())


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer(chunks=4, api_key=KEY) as server:
        yield server


def chat_target(up: UpstreamServer, *, stream: bool = False) -> Target:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    if stream:
        headers["Accept"] = "text/event-stream"
    return Target(f"{up.api_base}/chat/completions", headers)


def chat_body(model: str = "gpt-4o-mini", *, stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return orjson.dumps(body)


def test_target_prepares_the_request_head() -> None:
    target = Target("https://api.example.com/v1/chat/completions?api-version=1", {"api-key": "k"})
    assert (target.tls, target.host, target.port) == (True, "api.example.com", 443)
    assert target.head == (
        b"POST /v1/chat/completions?api-version=1 HTTP/1.1\r\nHost: api.example.com\r\napi-key: k\r\nContent-Length: "
    )
    assert b"Host: 127.0.0.1:8011\r\n" in Target("http://127.0.0.1:8011/v1/x", {}).head
    with pytest.raises(ValueError, match="line break"):
        Target("http://h/x", {"x-evil": "a\r\nInjected: yes"})
    with pytest.raises(ValueError, match="http"):
        Target("ftp://h/x", {})


def test_sequential_calls_reuse_one_connection(upstream: UpstreamServer, run: Runner) -> None:
    upstream.reset()

    async def main() -> None:
        pool = Http1Pool()
        try:
            for _ in range(3):
                response = await pool.post(chat_target(upstream), chat_body())
                assert response.status == 200
                assert response.headers["content-type"].startswith("application/json")
                assert orjson.loads(await response.read())["usage"]["completion_tokens"] == 4
            assert pool.open_connections == 1
        finally:
            await pool.aclose()

    run(main)
    assert upstream.count("gpt-4o-mini") == 3


def test_a_stream_arrives_in_pieces_and_its_connection_is_reused(upstream: UpstreamServer, run: Runner) -> None:
    async def main() -> None:
        pool = Http1Pool()
        try:
            for _ in range(2):
                response = await pool.post(chat_target(upstream, stream=True), chat_body(stream=True))
                assert response.status == 200
                received = b"".join([piece async for piece in response.chunks()])
                assert received.count(b"data: ") == 4 + 2 + 1  # content, finish, usage, [DONE]
                assert received.rstrip().endswith(b"data: [DONE]")
            assert pool.open_connections == 1
        finally:
            await pool.aclose()

    run(main)


def test_a_discarded_response_hands_its_connection_back_when_it_ends(upstream: UpstreamServer, run: Runner) -> None:
    upstream.behave("trickle-model", chunk_latency_s=0.01)

    async def main() -> None:
        pool = Http1Pool()
        try:
            response = await pool.post(chat_target(upstream, stream=True), chat_body("trickle-model", stream=True))
            pieces = response.chunks()
            await anext(pieces)  # the caller has what it needs ...
            assert not response.complete
            response.discard()  # ... and stops reading
            await pieces.aclose()
            assert pool.open_connections == 1  # not closed
            for _ in range(200):  # the rest of the body still arrives (bounded wait)
                if response.complete:
                    break
                await asyncio.sleep(0.01)
            assert response.complete and pool.open_connections == 1
            again = await pool.post(chat_target(upstream), chat_body())
            assert again.status == 200 and await again.read()
            assert pool.open_connections == 1  # the discarded response's connection was reused
        finally:
            await pool.aclose()

    try:
        run(main)
    finally:
        upstream.behave("trickle-model", chunk_latency_s=0.0)


def test_concurrent_calls_stay_within_the_pool_limit(upstream: UpstreamServer, run: Runner) -> None:
    upstream.behave("slow-model", latency_s=0.02)

    async def call(pool: Http1Pool) -> int:
        response = await pool.post(chat_target(upstream), chat_body("slow-model"))
        await response.read()
        return response.status

    async def main() -> None:
        pool = Http1Pool(max_connections=2)
        try:
            statuses = await asyncio.gather(*(call(pool) for _ in range(8)))
            assert statuses == [200] * 8
            assert pool.open_connections <= 2
        finally:
            await pool.aclose()

    try:
        run(main)
    finally:
        upstream.behave("slow-model", latency_s=0.0)


def test_a_full_pool_makes_room_by_closing_an_idle_connection_to_another_host(
    upstream: UpstreamServer, run: Runner
) -> None:
    async def main() -> None:
        pool = Http1Pool(max_connections=1)
        try:
            first = await pool.post(chat_target(upstream), chat_body())
            await first.read()  # idle now, to 127.0.0.1
            other = Target(f"http://localhost:{upstream.port}/v1/chat/completions", {"Authorization": f"Bearer {KEY}"})
            async with asyncio.timeout(5):  # would wait forever for a slot without the eviction
                second = await pool.post(other, chat_body())
            assert second.status == 200 and await second.read()
            assert pool.open_connections == 1
        finally:
            await pool.aclose()

    run(main)


def test_error_statuses_come_back_with_body_and_headers(upstream: UpstreamServer, run: Runner) -> None:
    upstream.behave("limited-model", status=429, retry_after=3)

    async def main() -> None:
        pool = Http1Pool()
        try:
            response = await pool.post(chat_target(upstream), chat_body("limited-model"))
            assert response.status == 429
            assert response.headers["retry-after"] == "3"
            assert orjson.loads(await response.read())["error"]["code"] == "rate_limit_exceeded"
        finally:
            await pool.aclose()

    try:
        run(main)
    finally:
        upstream.behave("limited-model", status=None, retry_after=None)


def test_a_reset_mid_stream_is_a_disconnect_and_the_connection_is_dropped(
    upstream: UpstreamServer, run: Runner
) -> None:
    upstream.behave("reset-model", reset_after_chunks=2)

    async def main() -> None:
        pool = Http1Pool()
        try:
            response = await pool.post(chat_target(upstream, stream=True), chat_body("reset-model", stream=True))
            pieces: list[bytes] = []

            async def read_all() -> None:
                async for piece in response.chunks():
                    pieces.append(piece)

            with pytest.raises(ServerDisconnectedError):
                await read_all()
            assert b"data: " in b"".join(pieces)
            assert pool.open_connections == 0
        finally:
            await pool.aclose()

    try:
        run(main)
    finally:
        upstream.behave("reset-model", reset_after_chunks=None)


def test_a_caller_timeout_closes_the_connection(upstream: UpstreamServer, run: Runner) -> None:
    upstream.behave("hang-model", hang=True)

    async def main() -> None:
        pool = Http1Pool()
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await pool.post(chat_target(upstream), chat_body("hang-model"))
            assert pool.open_connections == 0  # never reused: its answer could still come
            response = await pool.post(chat_target(upstream), chat_body())
            assert response.status == 200 and await response.read()
        finally:
            await pool.aclose()

    try:
        run(main)
    finally:
        upstream.behave("hang-model", hang=False)


def test_nothing_listening_is_a_connect_error(run: Runner) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused

        async def main() -> None:
            pool = Http1Pool(connect_timeout_s=1)
            with pytest.raises(ConnectError):
                await pool.post(Target(f"http://127.0.0.1:{port}/v1/x", {}), b"{}")
            assert pool.open_connections == 0

        run(main)


async def _raw_server(reply: bytes) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_gzip_body_until_close_is_decoded_and_not_kept_alive(run: Runner) -> None:
    payload = orjson.dumps({"ok": True, "text": "x" * 500})
    packed = gzip.compress(payload)
    reply = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\n" + packed

    async def main() -> None:
        server, port = await _raw_server(reply)
        pool = Http1Pool()
        try:
            response = await pool.post(Target(f"http://127.0.0.1:{port}/v1/x", {}), b"{}")
            assert await response.read() == payload
            assert pool.open_connections == 0
        finally:
            await pool.aclose()
            server.close()
            await server.wait_closed()

    run(main)


def test_bytes_that_are_not_http_are_a_protocol_error(run: Runner) -> None:
    async def main() -> None:
        server, port = await _raw_server(b"SSH-2.0-OpenSSH\r\n\r\n")
        pool = Http1Pool()
        try:
            with pytest.raises(ProtocolError):
                await pool.post(Target(f"http://127.0.0.1:{port}/v1/x", {}), b"{}")
            assert pool.open_connections == 0
        finally:
            await pool.aclose()
            server.close()
            await server.wait_closed()

    run(main)
