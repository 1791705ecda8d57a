"""A fast local OpenAI-compatible upstream for the gateway tests and benchmarks.

It stands in for paid model APIs (never call them from tests): a raw asyncio
HTTP/1.1 server (``httptools`` parser, keep-alive, chunked SSE) on 127.0.0.1
serving

- ``POST /v1/chat/completions`` (JSON, or SSE when ``stream`` is true: N
  content chunks, a finish chunk, a usage chunk with empty ``choices`` when
  ``stream_options.include_usage`` is true, then ``data: [DONE]``),
- ``POST /v1/embeddings`` (deterministic unit vectors, float or base64),
- ``GET /v1/models``,
- the Azure shapes ``/openai/deployments/{name}/chat/completions`` and
  ``.../embeddings`` (``api-version`` query and ``api-key`` header required).

The reply is deterministic (words picked by a hash of the prompt), prompt
tokens are estimated from the input size (~4 characters a token) and
completion tokens equal the chunks produced, capped by ``max_tokens``.

Behaviour is set per model name (the ``model`` field the gateway sends, the
deployment name for Azure) or for every model (``"*"``): latency before the
response and between stream chunks, a status code error on every request,
"fail the next N requests then succeed", hang (never answer), a connection
reset after K stream chunks, the number of chunks. Every request is logged
(count per model, recent bodies and headers) for assertions.

In tests, a background thread runs its own event loop::

    with UpstreamServer() as up:
        up.behave("gpt-4o-mini", latency_s=0.05)
        up.fail_next("gpt-4o-mini", 2, status=429, retry_after=1)
        ...  # point a deployment at up.api_base
        assert up.count("gpt-4o-mini") == 3

For benchmarks, a separate process (uvloop when installed, no body log)::

    uv run python -m tests.gateway.upstream --port 8011 --chunks 20

Over HTTP (any mode): ``POST /_upstream/behaviour`` with ``{"model": ..., <Behaviour fields>}``,
``POST /_upstream/fail_next`` with ``{"model", "n", "status", "retry_after"}``,
``POST /_upstream/reset`` and ``GET /_upstream/stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import dataclasses
import hashlib
import math
import socket
import struct
import threading
import time
import typing
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httptools
import orjson

ANY_MODEL = "*"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

# OpenAI's error ``type`` for each status it returns.
_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("service_unavailable", None),
}

_VOCABULARY = (
    "sales",
    "revenue",
    "grew",
    "steadily",
    "this",
    "week",
    "while",
    "refunds",
    "stayed",
    "low",
    "and",
    "the",
    "best",
    "product",
    "was",
    "coffee",
    "beans",
    "customers",
    "returned",
    "often",
    "on",
    "weekends",
    "average",
    "basket",
    "rose",
    "slightly",
    "compared",
    "with",
    "last",
    "month",
)


@dataclass(frozen=True)
class Behaviour:
    """How the upstream answers requests for one model.

    Attributes:
        latency_s: Sleep before the response head.
        chunk_latency_s: Sleep between stream chunks.
        status: When set, every request fails with this status (OpenAI error shape).
        retry_after: ``Retry-After`` seconds sent with errors (429 always gets one, default 1).
        error_message: Message of the error body.
        error_code: ``error.code`` of the error body (default per status, e.g. ``rate_limit_exceeded``).
        hang: Never answer (the client times out); the connection stays open.
        reset_after_chunks: Stream K content chunks, then reset the connection (TCP RST).
        chunks: Content chunks of the reply (stream and non-stream); None = the server default.
    """

    latency_s: float = 0.0
    chunk_latency_s: float = 0.0
    status: int | None = None
    retry_after: float | None = None
    error_message: str | None = None
    error_code: str | None = None
    hang: bool = False
    reset_after_chunks: int | None = None
    chunks: int | None = None

    @property
    def is_async(self) -> bool:
        """Whether answering needs the event loop (sleeps, hang or reset)."""
        return bool(self.latency_s or self.chunk_latency_s or self.hang or self.reset_after_chunks is not None)


@dataclass
class RecordedRequest:
    """One request as the upstream saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    model: str | None
    received_at: float = field(default_factory=time.time)


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    keep_alive: bool


class _Failure(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def prompt_tokens(messages: Iterable[dict[str, Any]]) -> int:
    """The prompt tokens the upstream reports: ~4 characters a token plus 3 per message and 3 for the reply."""
    return sum(3 + _tokens(_text_of(m.get("content"))) for m in messages if isinstance(m, dict)) + 3


def reply_chunks(messages: list[dict[str, Any]], n: int) -> list[str]:
    """The deterministic reply, as the ``n`` content pieces a stream carries (joined = the full text)."""
    seed = hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).digest()
    words = [_VOCABULARY[(seed[i % 32] + i) % len(_VOCABULARY)] for i in range(n)]
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def embedding_vector(text: str, dimensions: int = 16) -> list[float]:
    """The deterministic unit vector the upstream returns for ``text``."""
    values: list[float] = []
    block = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{block}:{text}".encode()).digest()
        values.extend(v / 2**31 - 1.0 for v in struct.unpack("<8I", digest))
        block += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _error_body(status: int, message: str, code: str | None) -> dict[str, Any]:
    kind, default_code = _ERROR_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code or default_code}}


class _State:
    """Behaviours, counters and the request log, shared by the loop and the test thread."""

    def __init__(self, chunks: int, log_size: int, record: bool, models: list[str]) -> None:
        self.default_chunks = chunks
        self.record = record
        self.models = models
        self.lock = threading.Lock()
        self.behaviours: dict[str, Behaviour] = {}
        self.fail_next: dict[str, tuple[int, int, float | None]] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        self.log: collections.deque[RecordedRequest] = collections.deque(maxlen=log_size)
        self.total = 0
        self.ids = 0
        self.connections_opened = 0

    def behaviour(self, model: str | None) -> Behaviour:
        found = self.behaviours.get(model or "") or self.behaviours.get(ANY_MODEL)
        return found or _DEFAULT

    def take_failure(self, model: str | None) -> tuple[int, float | None] | None:
        key = model if model in self.fail_next else ANY_MODEL
        if key not in self.fail_next:
            return None
        with self.lock:
            entry = self.fail_next.get(key)
            if entry is None:
                return None
            remaining, status, retry_after = entry
            if remaining <= 1:
                del self.fail_next[key]
            else:
                self.fail_next[key] = (remaining - 1, status, retry_after)
            return status, retry_after

    def note(self, request: _Request, body: Any, model: str | None) -> None:
        self.total += 1
        self.counts[model or ""] += 1
        if self.record:
            self.log.append(RecordedRequest(request.method, request.path, request.query, request.headers, body, model))

    def next_id(self) -> int:
        self.ids += 1
        return self.ids


_DEFAULT = Behaviour()


class _Connection(asyncio.Protocol):
    """One keep-alive client connection; requests are answered in order."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.pending: collections.deque[_Request] | None = None
        self.task: asyncio.Task[None] | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.connections.add(self)
        self.server.state.connections_opened += 1
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(400, _error_body(400, "malformed HTTP request", None), keep_alive=False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        parsed = httptools.parse_url(self.url)
        query = {k: v[0] for k, v in parse_qs(parsed.query.decode()).items()} if parsed.query else {}
        request = _Request(
            method=self.parser.get_method().decode(),
            path=parsed.path.decode(),
            query=query,
            headers=self.headers,
            raw=b"".join(self.body),
            keep_alive=self.parser.should_keep_alive(),
        )
        if self.pending is not None:
            self.pending.append(request)
            return
        step = self.server.handle(request, self)
        if step is not None:
            self.pending = collections.deque()
            self.task = asyncio.get_running_loop().create_task(self._drain(step))

    async def _drain(self, step: Awaitable[None]) -> None:
        try:
            await step
            while self.pending:
                following = self.server.handle(self.pending.popleft(), self)
                if following is not None:
                    await following
        finally:
            self.pending = None
            self.task = None

    # writing
    def _write(self, status: int, payload: Any, *, keep_alive: bool, headers: Iterable[tuple[str, str]] = ()) -> None:
        if self.transport is None:
            return
        body = orjson.dumps(payload)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        close = "" if keep_alive else "connection: close\r\n"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}{close}\r\n"
        )
        self.transport.write(head.encode() + body)
        if not keep_alive:
            self.transport.close()

    def _write_stream_head(self, keep_alive: bool) -> None:
        close = "" if keep_alive else "connection: close\r\n"
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n" + close.encode() + b"\r\n"
        )

    def _write_events(self, events: list[bytes]) -> None:
        if self.transport is None:
            return
        parts = []
        for event in events:
            frame = b"data: " + event + b"\n\n"
            parts.append(b"%x\r\n%s\r\n" % (len(frame), frame))
        self.transport.write(b"".join(parts))

    def _end_stream(self, keep_alive: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(b"0\r\n\r\n")
        if not keep_alive:
            self.transport.close()

    def _reset(self) -> None:
        """Abort with a TCP RST, as a crashed upstream or a dropped proxy would."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


class _Server:
    """Routing and answers; ``handle`` answers at once or returns the coroutine that will."""

    def __init__(self, state: _State, api_key: str | None) -> None:
        self.state = state
        self.api_key = api_key
        self.connections: set[_Connection] = set()

    def handle(self, request: _Request, conn: _Connection) -> Awaitable[None] | None:
        try:
            return self._route(request, conn)
        except _Failure as failure:
            conn._write(
                failure.status,
                _error_body(failure.status, str(failure), failure.code),
                keep_alive=request.keep_alive,
            )
            return None

    def _route(self, request: _Request, conn: _Connection) -> Awaitable[None] | None:
        path = request.path.rstrip("/")
        if path.startswith("/_upstream/"):
            self._control(request, conn, path)
            return None
        azure_deployment: str | None = None
        if path.startswith("/openai/deployments/"):
            parts = path.split("/")
            if len(parts) < 5:
                raise _Failure(404, f"no route for {request.path}")
            azure_deployment = parts[3]
            operation = "/".join(parts[4:])
            if "api-version" not in request.query:
                raise _Failure(400, "api-version query parameter is required", "missing_api_version")
            if not request.headers.get("api-key") or (self.api_key and request.headers["api-key"] != self.api_key):
                raise _Failure(401, "Access denied due to invalid subscription key or wrong API endpoint.", "401")
        else:
            operation = path.removeprefix("/v1").lstrip("/")
            if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
                raise _Failure(401, "Incorrect API key provided.")
        if operation == "models":
            if request.method != "GET":
                raise _Failure(405, "use GET")
            names = list(dict.fromkeys([*self.state.models, *(m for m in self.state.behaviours if m != ANY_MODEL)]))
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "upstream"} for m in names]
            conn._write(200, {"object": "list", "data": data}, keep_alive=request.keep_alive)
            return None
        if operation not in ("chat/completions", "embeddings"):
            raise _Failure(404, f"no route for {request.path}")
        if request.method != "POST":
            raise _Failure(405, "use POST")
        try:
            body = orjson.loads(request.raw)
        except orjson.JSONDecodeError:
            self.state.note(request, None, azure_deployment)
            raise _Failure(400, "We could not parse the JSON body of your request.") from None
        if not isinstance(body, dict):
            raise _Failure(400, "the body must be a JSON object")
        model = azure_deployment or body.get("model")
        self.state.note(request, body, model)
        if not model:
            raise _Failure(400, "you must provide a model parameter")
        behaviour = self.state.behaviour(model)
        if operation == "embeddings":
            answer = self._embeddings(body, model)
            if behaviour.is_async:
                return self._later(request, conn, behaviour, model, lambda: self._send(request, conn, answer))
            if self._fail(request, conn, behaviour, model):
                return None
            self._send(request, conn, answer)
            return None
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise _Failure(400, "'messages' must be a non-empty array")
        if behaviour.is_async:
            return self._chat_async(request, conn, behaviour, body, model)
        if self._fail(request, conn, behaviour, model):
            return None
        self._chat_now(request, conn, behaviour, body, model)
        return None

    # failures
    def _fail(self, request: _Request, conn: _Connection, behaviour: Behaviour, model: str) -> bool:
        taken = self.state.take_failure(model)
        if taken is not None:
            status, retry_after = taken
        elif behaviour.status is not None:
            status, retry_after = behaviour.status, behaviour.retry_after
        else:
            return False
        headers = []
        if retry_after is not None or status == 429:
            headers.append(("retry-after", f"{retry_after if retry_after is not None else 1:g}"))
        message = behaviour.error_message or f"upstream says {status} for {model}"
        conn._write(
            status, _error_body(status, message, behaviour.error_code), keep_alive=request.keep_alive, headers=headers
        )
        return True

    # chat
    def _completion(self, body: dict[str, Any], model: str, behaviour: Behaviour) -> tuple[list[str], str, int]:
        n = behaviour.chunks if behaviour.chunks is not None else self.state.default_chunks
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "stop"
        if isinstance(cap, int) and 0 < cap < n:
            n, finish = cap, "length"
        return reply_chunks(body["messages"], n), finish, prompt_tokens(body["messages"])

    def _chat_now(
        self, request: _Request, conn: _Connection, behaviour: Behaviour, body: dict[str, Any], model: str
    ) -> None:
        chunks, finish, prompt = self._completion(body, model, behaviour)
        usage = {"prompt_tokens": prompt, "completion_tokens": len(chunks), "total_tokens": prompt + len(chunks)}
        ident = f"chatcmpl-up{self.state.next_id()}"
        created = int(time.time())
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(chunks), "refusal": None}
            conn._write(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                    "usage": usage,
                    "system_fingerprint": "fp_upstream",
                },
                keep_alive=request.keep_alive,
            )
            return
        conn._write_stream_head(request.keep_alive)
        frames = [_chunk(ident, created, model, i, text) for i, text in enumerate(chunks)]
        frames.extend(self._stream_tail(ident, created, model, finish, usage, body))
        conn._write_events(frames)
        conn._end_stream(request.keep_alive)

    @staticmethod
    def _stream_tail(
        ident: str, created: int, model: str, finish: str, usage: dict[str, int], body: dict[str, Any]
    ) -> list[bytes]:
        tail = [
            orjson.dumps(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}],
                }
            )
        ]
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            tail.append(
                orjson.dumps(
                    {
                        "id": ident,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        tail.append(b"[DONE]")
        return tail

    async def _chat_async(
        self, request: _Request, conn: _Connection, behaviour: Behaviour, body: dict[str, Any], model: str
    ) -> None:
        if behaviour.latency_s:
            await asyncio.sleep(behaviour.latency_s)
        if behaviour.hang:
            await asyncio.Future()  # cancelled when the client gives up or the server stops
        if self._fail(request, conn, behaviour, model):
            return
        if not body.get("stream"):
            self._chat_now(request, conn, dataclasses.replace(behaviour, latency_s=0.0), body, model)
            return
        chunks, finish, prompt = self._completion(body, model, behaviour)
        usage = {"prompt_tokens": prompt, "completion_tokens": len(chunks), "total_tokens": prompt + len(chunks)}
        ident = f"chatcmpl-up{self.state.next_id()}"
        created = int(time.time())
        conn._write_stream_head(request.keep_alive)
        for i, text in enumerate(chunks):
            if behaviour.reset_after_chunks is not None and i >= behaviour.reset_after_chunks:
                break
            if i and behaviour.chunk_latency_s:
                await asyncio.sleep(behaviour.chunk_latency_s)
            conn._write_events([_chunk(ident, created, model, i, text)])
        if behaviour.reset_after_chunks is not None and behaviour.reset_after_chunks < len(chunks):
            await asyncio.sleep(0.02)  # let the client read what was sent before the RST
            conn._reset()
            return
        conn._write_events(self._stream_tail(ident, created, model, finish, usage, body))
        conn._end_stream(request.keep_alive)

    # embeddings
    def _embeddings(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        raw = body.get("input")
        inputs: list[Any] = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
        if not inputs or any(i is None or i == "" for i in inputs):
            raise _Failure(400, "'input' must be a non-empty string or array")
        requested = body.get("dimensions")
        dimensions = requested if isinstance(requested, int) and requested > 0 else 16
        texts = [i if isinstance(i, str) else " ".join(map(str, i)) for i in inputs]
        data = []
        for index, text in enumerate(texts):
            vector = embedding_vector(text, dimensions)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(_tokens(t) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _send(self, request: _Request, conn: _Connection, payload: dict[str, Any]) -> None:
        conn._write(200, payload, keep_alive=request.keep_alive)

    async def _later(self, request: _Request, conn: _Connection, behaviour: Behaviour, model: str, answer: Any) -> None:
        if behaviour.latency_s:
            await asyncio.sleep(behaviour.latency_s)
        if behaviour.hang:
            await asyncio.Future()
        if not self._fail(request, conn, behaviour, model):
            answer()

    # control over HTTP (bench, other processes)
    def _control(self, request: _Request, conn: _Connection, path: str) -> None:
        action = path.removeprefix("/_upstream/")
        body = orjson.loads(request.raw) if request.raw else {}
        state = self.state
        if action == "stats":
            stats = {"total": state.total, "counts": dict(state.counts), "connections_opened": state.connections_opened}
            conn._write(200, stats, keep_alive=request.keep_alive)
            return
        if action == "reset":
            _reset_state(state)
        elif action == "behaviour":
            model = body.pop("model", ANY_MODEL)
            state.behaviours[model] = Behaviour(**body)
        elif action == "fail_next":
            _set_fail_next(
                state, body.get("model", ANY_MODEL), body["n"], body.get("status", 500), body.get("retry_after")
            )
        else:
            raise _Failure(404, f"no control {action}")
        conn._write(200, {"ok": True}, keep_alive=request.keep_alive)


def _chunk(ident: str, created: int, model: str, index: int, text: str) -> bytes:
    delta = {"role": "assistant", "content": text} if index == 0 else {"content": text}
    return orjson.dumps(
        {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
        }
    )


def _reset_state(state: _State) -> None:
    with state.lock:
        state.behaviours.clear()
        state.fail_next.clear()
        state.counts.clear()
        state.log.clear()
        state.total = 0


def _set_fail_next(state: _State, model: str, n: int, status: int, retry_after: float | None) -> None:
    with state.lock:
        if n > 0:
            state.fail_next[model] = (n, status, retry_after)
        else:
            state.fail_next.pop(model, None)


class UpstreamServer:
    """The upstream on 127.0.0.1, run by a background thread with its own event loop.

    Args:
        port: TCP port; 0 picks a free one.
        chunks: Default content chunks per reply (stream and non-stream).
        api_key: When set, requests must carry ``Authorization: Bearer <api_key>``
            (Azure: ``api-key: <api_key>``); Azure paths always need some ``api-key``.
        log_size: How many recent requests keep their bodies and headers.
        models: Names listed by ``GET /v1/models`` (models with a behaviour are added).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        chunks: int = 5,
        api_key: str | None = None,
        log_size: int = 1000,
        models: list[str] | None = None,
    ) -> None:
        self._port = port
        self._state = _State(chunks, log_size, record=log_size > 0, models=models or ["bench-model", "gpt-4o-mini"])
        self._api_key = api_key
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._impl: _Server | None = None
        self.port = 0

    # lifecycle
    def start(self) -> UpstreamServer:
        """Start serving in a background thread; return self once the port is bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._close())
                loop.close()

        self._thread = threading.Thread(target=run, name="upstream-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    async def _bind(self) -> None:
        self._impl = _Server(self._state, self._api_key)
        impl = self._impl
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(impl), "127.0.0.1", self._port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._impl is not None:
            for conn in list(self._impl.connections):
                if conn.transport is not None:
                    conn.transport.abort()
        await asyncio.sleep(0)

    def stop(self) -> None:
        """Stop serving, drop open connections (hanging requests included) and join the thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> UpstreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # addresses
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """The OpenAI ``api_base`` (``<url>/v1``)."""
        return f"{self.url}/v1"

    # behaviour
    def behave(self, model: str = ANY_MODEL, **fields: Any) -> Behaviour:
        """Set how ``model`` (``"*"``: every model without its own) is answered; unset fields keep their value.

        Fields are those of `Behaviour`, e.g. ``latency_s=0.2``, ``status=503``, ``hang=True``,
        ``reset_after_chunks=2``, ``chunks=20``.
        """
        with self._state.lock:
            current = self._state.behaviours.get(model, _DEFAULT)
            updated = dataclasses.replace(current, **fields)
            self._state.behaviours[model] = updated
        return updated

    def fail_next(self, model: str, n: int, *, status: int = 500, retry_after: float | None = None) -> None:
        """Fail the next ``n`` requests for ``model`` with ``status`` (429 sends ``Retry-After``), then succeed."""
        _set_fail_next(self._state, model, n, status, retry_after)

    def reset(self) -> None:
        """Forget behaviours, pending failures, counts and the log."""
        _reset_state(self._state)

    # log
    def count(self, model: str | None = None) -> int:
        """Requests received for ``model`` (every model when None), failed ones included."""
        return self._state.total if model is None else self._state.counts[model]

    def requests(self, model: str | None = None) -> list[RecordedRequest]:
        """Recent requests (oldest first), optionally only those for ``model``."""
        return [r for r in list(self._state.log) if model is None or r.model == model]

    def last(self, model: str | None = None) -> RecordedRequest:
        """The most recent request (for ``model``); raises LookupError when there is none."""
        found = self.requests(model)
        if not found:
            raise LookupError(f"no request for {model or 'any model'}")
        return found[-1]


async def serve(port: int, chunks: int, api_key: str | None = None) -> None:
    """Serve forever in this process (the benchmark's upstream: no body log)."""
    state = _State(chunks, log_size=0, record=False, models=["bench-model"])
    impl = _Server(state, api_key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(impl), "127.0.0.1", port, backlog=4096)
    print(f"upstream listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local OpenAI-compatible upstream (tests, benchmarks).")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--chunks", type=int, default=5, help="content chunks per reply")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.port, args.chunks, args.api_key))


if __name__ == "__main__":
    main()
