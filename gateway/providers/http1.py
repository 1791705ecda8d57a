"""A small HTTP/1.1 client for the OpenAI fast path: keep-alive pool, httptools parsing, streamed bodies.

aiohttp's client spends about 0.2 ms of CPU per call on this path (request
and response objects, header multidicts, payload writers, tracing hooks,
timer contexts). The fast path needs much less: a POST with a ready header
block, the status and headers, then the body at once or piece by piece as
it arrives. :class:`Http1Pool` does that on :class:`asyncio.Protocol`
connections parsed by ``httptools`` (the parser uvicorn uses), kept alive
per ``(scheme, host, port)``.

Behaviour
    - Requests carry ``Content-Length``; responses may use a length, chunked
      encoding or end at close. ``gzip``/``deflate`` bodies are decoded (the
      client never asks for them, a server may still send them).
    - A connection is reused only when its response was read to the end and
      both sides allow keep-alive; an idle connection is dropped after
      ``keepalive_s`` or as soon as the server closes it. A response cut
      short (client gone, error) closes its connection.
    - Connecting is bounded by ``connect_timeout_s``; every other wait is
      the caller's to bound (``asyncio.timeout``), and a timed-out response's
      connection is closed, never reused.
    - At most ``max_connections`` are open at once; a call that needs a new
      one then closes an idle connection (any host) or waits for one.
    - Failures are :class:`HttpClientError` subclasses
      (:class:`ConnectError`, :class:`ServerDisconnectedError`,
      :class:`ProtocolError`); timeouts are :class:`TimeoutError`.
    - Reading is paused while more than 1 MiB of a streamed body waits for
      its consumer.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncGenerator
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

_HIGH_WATER: Final = 1 << 20
_LOW_WATER: Final = 1 << 18


class HttpClientError(Exception):
    """The exchange failed below HTTP (connecting, the connection, or the bytes received)."""


class ConnectError(HttpClientError):
    """No connection could be made."""


class ServerDisconnectedError(HttpClientError):
    """The server closed or reset the connection before the response ended."""


class ProtocolError(HttpClientError):
    """The server sent something that is not a valid HTTP/1.1 response."""


class Target:
    """A URL split once: where to connect and the start of each request to it.

    Args:
        url: ``http://`` or ``https://`` URL, with path and query.
        headers: Request headers sent with every request (name → value).
    """

    __slots__ = ("head", "host", "key", "port", "tls")

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.key = (self.tls, self.host, self.port)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = self.port == (443 if self.tls else 80)
        host_header = self.host if default_port else f"{self.host}:{self.port}"
        if ":" in self.host and not default_port:  # IPv6 literal
            host_header = f"[{self.host}]:{self.port}"
        lines = [f"POST {path} HTTP/1.1", f"Host: {host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        for name, value in headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} holds a line break")
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


class _Connection(asyncio.Protocol):
    """One socket, one response at a time."""

    def __init__(self, pool: Http1Pool, key: tuple[bool, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.response: Response | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes on an idle connection: the server is not in step
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.response._fail(ProtocolError(f"invalid HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        response = self.response
        if response is not None and not response.complete:
            if response.status and response._until_close:
                response._finish()  # a body delimited by the end of the connection
            else:
                reason = f": {exc}" if exc else ""
                response._fail(ServerDisconnectedError(f"the server closed the connection{reason}"))

    def pause_writing(self) -> None:  # request bodies are small: the transport buffers them
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        assert response is not None
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = response.headers.get(key)
        response.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        response.status = self.parser.get_status_code()
        headers = response.headers
        response._until_close = (
            "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "").lower()
        )
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            response._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            response._decoder = zlib.decompressobj()
        elif encoding not in ("", "identity"):
            response._fail(ProtocolError(f"unsupported content-encoding {encoding!r}"))
            self.close()
            return
        waiter = response._headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        response._feed(body)

    def on_message_complete(self) -> None:
        response = self.response
        assert response is not None
        response._keep_alive = self.parser.should_keep_alive()
        response._finish()

    # -- helpers

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self.pool._forget(self)


class Response:
    """An HTTP response whose body is read at once (:meth:`read`) or as it comes (:meth:`chunks`).

    Call :meth:`release` after reading to the end (the connection goes back
    to the pool) or :meth:`close` to drop it; :meth:`read` and an exhausted
    :meth:`chunks` release it themselves.
    """

    __slots__ = (
        "_conn",
        "_decoder",
        "_discard",
        "_error",
        "_headers_waiter",
        "_keep_alive",
        "_parts",
        "_size",
        "_until_close",
        "_waiter",
        "complete",
        "headers",
        "status",
    )

    def __init__(self, conn: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        self._conn: _Connection | None = conn
        self.status = 0
        self.headers: dict[str, str] = {}
        self.complete = False
        self._parts: deque[bytes] = deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._headers_waiter: asyncio.Future[None] | None = loop.create_future()
        self._error: BaseException | None = None
        self._keep_alive = False
        self._until_close = False
        self._decoder: zlib._Decompress | None = None
        self._discard = False

    # -- fed by the connection

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        if self._discard:
            return
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self._fail(ProtocolError(f"undecodable body: {exc}"))
                return
            if not data:
                return
        self._parts.append(data)
        self._size += len(data)
        if self._size > _HIGH_WATER and self._conn is not None and self._conn.transport is not None:
            self._conn.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._parts.append(tail)
        self.complete = True
        if self._discard:
            self.release()
            return
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._discard:
            self.close()
            return
        if self._error is None:
            self._error = error
        waiter = self._headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
            waiter.exception()
        self._wake()

    # -- consumer side

    async def _headers(self) -> None:
        waiter = self._headers_waiter
        assert waiter is not None
        if not waiter.done():
            await waiter
        elif waiter.exception() is not None:
            raise waiter.exception()  # type: ignore[misc]
        self._headers_waiter = None

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool afterwards."""
        try:
            while not self.complete:
                if self._error is not None:
                    raise self._error
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
        except BaseException:
            self.close()
            raise
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        self.release()
        return body

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body's pieces as they arrive (each: all that arrived since the last one).

        The connection is released once the response is complete (also when
        the consumer stops after the last piece arrived, e.g. at an SSE
        ``[DONE]``), and closed when it stops earlier.
        """
        parts = self._parts
        conn = self._conn
        finished = False
        try:
            while True:
                if parts:
                    # Everything received so far in one piece (chunked bodies arrive a chunk per callback).
                    data = parts.popleft() if len(parts) == 1 else b"".join(parts)
                    parts.clear()
                    self._size = 0
                    if self._size < _LOW_WATER and conn is not None and conn.transport is not None:
                        conn.transport.resume_reading()
                    yield data
                    continue
                if self.complete:
                    finished = True
                    return
                if self._error is not None:
                    raise self._error
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
        finally:
            if self._discard:
                pass  # handed over: released when the response ends
            elif finished or (self.complete and self._error is None):
                self.release()
            else:
                self.close()

    def discard(self) -> None:
        """Stop reading: the rest of the body is dropped and the connection returns to the pool when it ends.

        For a caller that has all it needs before the body's last bytes
        arrived (an SSE ``[DONE]`` just before the chunked terminator): the
        connection stays reusable without waiting for them. A response that
        then fails closes its connection.
        """
        if self._conn is None:
            return
        self._parts.clear()
        self._size = 0
        if self.complete or self._error is not None:
            self.release()
            return
        self._discard = True
        conn = self._conn
        if conn.transport is not None:
            conn.transport.resume_reading()

    def release(self) -> None:
        """Hand the connection back (kept alive only if the response ended and both sides allow it)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.response = None
        if self.complete and self._keep_alive and self._error is None and not conn.closed:
            conn.pool._put_back(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drop the connection (the response was not read to the end)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.response = None
            conn.close()


class Http1Pool:
    """Keep-alive HTTP/1.1 connections per ``(scheme, host, port)``.

    Args:
        max_connections: Open connections at most, across hosts.
        connect_timeout_s: Bound on connecting (TCP and TLS).
        keepalive_s: Idle connections older than this are not reused.
        ssl_context: For ``https`` (default: the system's trust store).
    """

    def __init__(
        self,
        *,
        max_connections: int = 1000,
        connect_timeout_s: float = 5.0,
        keepalive_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._ssl = ssl_context
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._slots: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Connections open now (idle or serving a response)."""
        return len(self._open)

    async def post(self, target: Target, body: bytes) -> Response:
        """Send ``POST`` with ``body`` and wait for the response's status and headers.

        Raises:
            ConnectError: No connection could be made.
            ServerDisconnectedError: The connection ended before the headers.
            ProtocolError: The server's bytes are not an HTTP response.
        """
        loop = asyncio.get_running_loop()
        conn = self._reuse(target.key)
        if conn is None:
            conn = await self._connect(target, loop)
        response = Response(conn, loop)
        conn.response = response
        transport = conn.transport
        assert transport is not None
        transport.write(b"%s%d\r\n\r\n%s" % (target.head, len(body), body))
        try:
            await response._headers()
        except BaseException:
            response.close()
            raise
        return response

    async def aclose(self) -> None:
        """Close every connection."""
        self._closed = True
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let transports finish closing

    # -- pool bookkeeping

    def _reuse(self, key: tuple[bool, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        deadline = time.monotonic() - self._keepalive_s
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if conn.closed or transport is None or transport.is_closing():
                continue
            if conn.idle_since < deadline:
                conn.close()
                continue
            return conn
        return None

    async def _connect(self, target: Target, loop: asyncio.AbstractEventLoop) -> _Connection:
        while len(self._open) >= self._max:
            if self._evict_idle():
                continue  # an idle connection to another host made room
            slot: asyncio.Future[None] = loop.create_future()
            self._slots.append(slot)
            await slot
            reused = self._reuse(target.key)
            if reused is not None:
                return reused
        conn = _Connection(self, target.key)
        self._open.add(conn)
        context: ssl.SSLContext | None = None
        if target.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                transport, _ = await loop.create_connection(
                    lambda: conn,
                    target.host,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context else None,
                )
            # uvloop may call connection_made only after this returns: take the transport now.
            conn.connection_made(transport)
        except TimeoutError as exc:
            conn.close()
            raise ConnectError(f"connecting to {target.host}:{target.port} timed out") from exc
        except OSError as exc:
            conn.close()
            raise ConnectError(f"cannot connect to {target.host}:{target.port}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _evict_idle(self) -> bool:
        """Close one idle connection (the pool is full and a call needs another host)."""
        for idle in self._idle.values():
            if idle:
                idle.pop(0).close()  # the longest idle of that host
                return True
        return False

    def _put_back(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        if self._slots:  # someone waits for a connection: this one is free now
            self._idle.setdefault(conn.key, []).append(conn)
            self._wake_one()
            return
        self._idle.setdefault(conn.key, []).append(conn)

    def _forget(self, conn: _Connection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            idle = self._idle.get(conn.key)
            if idle and conn in idle:
                idle.remove(conn)
            self._wake_one()

    def _wake_one(self) -> None:
        while self._slots:
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_result(None)
                return


__all__ = [
    "ConnectError",
    "Http1Pool",
    "HttpClientError",
    "ProtocolError",
    "Response",
    "ServerDisconnectedError",
    "Target",
]
