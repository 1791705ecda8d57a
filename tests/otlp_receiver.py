"""A local stand-in for Langfuse's OTLP/HTTP trace endpoint, for tests that assert spans.

Usage::

    with OtlpReceiver(public_key="pk-test", secret_key="sk-test") as receiver:
        settings = LangfuseSettings(host=receiver.url, public_key="pk-test", secret_key=SecretStr("sk-test"))
        ...
        span = receiver.wait_for(lambda s: s["name"] == "chat")[0]
        assert span["attributes"]["langfuse.observation.type"] == "generation"

It accepts ``POST /api/public/otel/v1/traces`` (protobuf, gzip or not), checks
basic auth (401 otherwise), parses ``ExportTraceServiceRequest`` with
``opentelemetry-proto`` and keeps each span as a plain dict. Every other path
answers ``200 {}`` so SDK start-up calls do not error. ``mode`` switches it to
answering 500 (``"fail"``) to simulate a broken Langfuse; :meth:`stop` closes
the port to simulate a host that is down.
"""

from __future__ import annotations

import base64
import gzip
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

TRACES_PATH = "/api/public/otel/v1/traces"

Span = dict[str, Any]


def any_value(value: AnyValue) -> Any:
    """A Python value for an OTLP ``AnyValue``."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(items: Any) -> dict[str, Any]:
    """Flatten repeated ``KeyValue`` into a dict."""
    result: dict[str, Any] = {}
    item: KeyValue
    for item in items:
        result[item.key] = any_value(item.value)
    return result


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1 (random port) in a background thread."""

    def __init__(self, public_key: str = "pk-test", secret_key: str = "sk-test") -> None:
        self.public_key = public_key
        self.secret_key = secret_key
        self.mode: Literal["ok", "fail"] = "ok"
        self.spans: list[Span] = []
        self.requests: list[dict[str, Any]] = []
        self.unauthorized = 0
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # silence stderr
                return

            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                receiver._note(self, b"")
                self._reply(200, b"{}")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver._note(self, body)
                if self.path.split("?")[0] != TRACES_PATH:
                    self._reply(200, b"{}")
                    return
                if not receiver._authorized(self.headers.get("Authorization")):
                    with receiver._cond:
                        receiver.unauthorized += 1
                    self._reply(401, b'{"message":"unauthorized"}')
                    return
                if receiver.mode == "fail":
                    self._reply(500, b'{"message":"simulated failure"}')
                    return
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._store(request)
                self._reply(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="otlp-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port (the host is then "down"); :meth:`start` reopens it on the same port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to configure as the Langfuse host."""
        return f"http://127.0.0.1:{self.port}"

    # -- captured data -----------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.public_key}:{self.secret_key}".encode()).decode()
        return header == expected

    def _note(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._cond:
            self.requests.append(
                {
                    "method": handler.command,
                    "path": handler.path,
                    "headers": dict(handler.headers.items()),
                    "size": len(body),
                }
            )

    def _store(self, request: ExportTraceServiceRequest) -> None:
        spans: list[Span] = []
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                scope = scope_spans.scope
                for span in scope_spans.spans:
                    spans.append(
                        {
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex() or None,
                            "start_ns": span.start_time_unix_nano,
                            "end_ns": span.end_time_unix_nano,
                            "kind": span.kind,
                            "status_code": span.status.code,
                            "status_message": span.status.message,
                            "attributes": attributes(span.attributes),
                            "scope": scope.name,
                            "scope_attributes": attributes(scope.attributes),
                            "resource": resource,
                        }
                    )
        with self._cond:
            self.spans.extend(spans)
            self._cond.notify_all()

    def trace_posts(self) -> list[dict[str, Any]]:
        """The requests made to the traces endpoint (successful or not)."""
        with self._cond:
            return [r for r in self.requests if r["method"] == "POST" and r["path"].split("?")[0] == TRACES_PATH]

    def clear(self) -> None:
        with self._cond:
            self.spans.clear()
            self.requests.clear()

    def wait_for(self, predicate: Callable[[Span], bool], *, count: int = 1, timeout: float = 10.0) -> list[Span]:
        """Wait until at least ``count`` captured spans match ``predicate``; return the matches.

        Raises:
            AssertionError: On timeout, listing what was captured.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matches = [s for s in self.spans if predicate(s)]
                if len(matches) >= count:
                    return matches
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = [s["name"] for s in self.spans]
                    raise AssertionError(f"{len(matches)}/{count} matching spans after {timeout}s; captured: {names}")
                self._cond.wait(remaining)
