"""Every gateway call becomes a Langfuse generation, off the request path.

The request path calls :meth:`Tracer.record` with a finished
:class:`GenerationRecord`: one bounded ``deque`` append, nothing else. A
background thread turns records into OpenTelemetry spans carrying Langfuse's
attributes (observation type, model, usage and cost details, input/output,
user/session ids, metadata) with the call's real start/end timestamps, and the
Langfuse SDK's span processor batches and exports them over OTLP/HTTP.

Why not ``Langfuse.start_observation``: the v5 client cannot set an
observation's start time (it always starts "now"), and the records are turned
into spans after the call finished. So the worker uses an OpenTelemetry tracer
named and scoped like the SDK's (``langfuse-sdk``, ``public_key`` scope
attribute) with :class:`langfuse.LangfuseOtelSpanAttributes` names, and an
OTLP/HTTP exporter configured as the SDK configures its own (endpoint, basic
auth, ``x-langfuse-*`` headers, gzip). The spans are exported by a plain
``BatchSpanProcessor``: the SDK's ``LangfuseSpanProcessor`` doubled the CPU
cost of each span (context propagation and app-root bookkeeping), and for
these spans its only effect is ``langfuse.internal.is_app_root = true`` (none
has a parent exported by the same processor), which we set ourselves. Each
:class:`Tracer` owns its ``TracerProvider``: nothing global is registered, so
several tracers can live in one process (tests), and the ``Langfuse`` client
singleton (one per public key) is not involved.

Tracing never fails or slows a call: ``record`` never raises, a full queue
drops the record and counts it, and exporter failures (Langfuse down, 5xx)
are logged at most once per interval by the worker threads.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from langfuse import Langfuse, LangfuseOtelSpanAttributes
from langfuse._client.resource_manager import LangfuseResourceManager
from langfuse._version import __version__ as _langfuse_version
from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from core.config import LangfuseSettings

logger = logging.getLogger(__name__)

A = LangfuseOtelSpanAttributes
# The Langfuse SDK's tracer name: its span processor only forwards spans of
# this scope whose ``public_key`` scope attribute matches its own key.
LANGFUSE_TRACER_NAME = "langfuse-sdk"
OTLP_TRACES_PATH = "/api/public/otel/v1/traces"
DEFAULT_MAX_FIELD_CHARS = 16_000
_TRUNCATED = "…[truncated {n} chars]"
_ENVIRONMENT_RE = re.compile(r"^(?!langfuse)[a-z0-9_-]{1,40}$")
_PROPAGATOR = TraceContextTextMapPropagator()
_OTLP_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"

ObservationType = Literal["generation", "embedding"]


@dataclass(slots=True)
class GenerationRecord:
    """One finished gateway call, as the request path hands it to :meth:`Tracer.record`.

    Building it costs only the references: ``input``/``output`` are serialized
    and truncated by the worker thread, so the caller must not mutate them
    after recording.

    Attributes:
        name: Observation name, e.g. ``"chat"`` or ``"embeddings"``.
        model: The model alias the client asked for.
        deployment: The deployment that served the call (None when refused/cached).
        provider_model: The upstream model name; Langfuse shows it as the model.
        input: Request messages or embedding inputs (JSON-able; truncated on export).
        output: Completion text, message or tool calls (JSON-able; truncated).
        prompt_tokens: Input tokens.
        completion_tokens: Output tokens.
        cost_usd: Cost of the call in US dollars.
        start_ns: Wall-clock start, ``time.time_ns()``.
        end_ns: Wall-clock end, ``time.time_ns()``.
        status: ``"ok"`` or ``"error"``.
        error: Error message when ``status == "error"``.
        key_id: The virtual key that made the call.
        tenant_id: The key's tenant.
        merchant_id: The merchant the call was made for, when given.
        user_id: End-user id (Langfuse trace user), when given.
        session_id: Session id (Langfuse trace session), when given.
        trace_name: Trace name, when given (only meaningful for root generations).
        tags: Trace tags.
        stream: Whether the response was streamed.
        cache_hit: Whether the response came from the gateway cache.
        ttft_ns: Time to first token in nanoseconds after ``start_ns`` (streaming).
        request_id: The gateway's request id.
        traceparent: The caller's W3C ``traceparent`` header: the generation
            becomes a child of that span. Without it the generation is its own trace.
        model_parameters: Sampling parameters (temperature, max_tokens, ...).
        observation_type: ``"generation"`` (default) or ``"embedding"``.
    """

    name: str
    model: str
    start_ns: int
    end_ns: int
    deployment: str | None = None
    provider_model: str | None = None
    input: Any = None
    output: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    key_id: str | None = None
    tenant_id: str | None = None
    merchant_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    trace_name: str | None = None
    tags: Sequence[str] = ()
    stream: bool = False
    cache_hit: bool = False
    ttft_ns: int | None = None
    request_id: str | None = None
    traceparent: str | None = None
    model_parameters: Mapping[str, Any] | None = None
    observation_type: ObservationType = "generation"


@dataclass(slots=True)
class TracerStats:
    """Counters of a :class:`Tracer` (read them for metrics and tests)."""

    recorded: int = 0
    dropped: int = 0
    exported_spans: int = 0
    failed_spans: int = 0
    errors: int = 0
    sampled_out: int = 0


class _RateLimitFilter(logging.Filter):
    """Let each message template through at most once per interval (exporter errors while Langfuse is down)."""

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._last: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                return False
            if len(self._last) > 256:
                self._last.clear()
            self._last[key] = now
        return True


_LOG_FILTER_LOCK = threading.Lock()
_LOG_FILTER_INSTALLED = False


def _install_exporter_log_filter(interval_s: float) -> None:
    """Rate-limit the OTLP exporter's own error/retry logs once per process."""
    global _LOG_FILTER_INSTALLED
    with _LOG_FILTER_LOCK:
        if not _LOG_FILTER_INSTALLED:
            logging.getLogger(_OTLP_LOGGER).addFilter(_RateLimitFilter(interval_s))
            _LOG_FILTER_INSTALLED = True


class _GuardedExporter(SpanExporter):
    """Counts export failures, logs them at most once per interval, and never raises."""

    def __init__(self, inner: SpanExporter, stats: TracerStats, *, log_interval_s: float) -> None:
        self._inner = inner
        self._stats = stats
        self._log_interval_s = log_interval_s
        self._last_log = -float("inf")
        self._failing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        error: str | None = None
        try:
            result = self._inner.export(spans)
        except Exception as exc:  # an exporter bug must not kill the batch thread
            result, error = SpanExportResult.FAILURE, repr(exc)
        if result is SpanExportResult.SUCCESS:
            self._stats.exported_spans += len(spans)
            if self._failing:
                self._failing = False
                logger.info("tracing.export_recovered")
            return result
        self._stats.failed_spans += len(spans)
        self._failing = True
        now = time.monotonic()
        if now - self._last_log >= self._log_interval_s:
            self._last_log = now
            logger.warning(
                "tracing.export_failed",
                extra={"spans": len(spans), "failed_total": self._stats.failed_spans, "error": error},
            )
        return result

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):  # shutting down: nothing useful to do with it
            self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _auth_header(public_key: str, secret_key: str) -> str:
    return "Basic " + base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")


def _langfuse_environment(environment: str | None) -> str | None:
    """Langfuse accepts lowercase ``[a-z0-9_-]`` environments not starting with "langfuse"."""
    if environment is None:
        return None
    value = str(environment).lower()
    return value if _ENVIRONMENT_RE.match(value) else None


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _serialize_field(value: Any, max_chars: int) -> str | None:
    """JSON text of an input/output, cut to ``max_chars`` (strings are kept as they are, like the SDK)."""
    if value is None:
        return None
    try:
        text = value if isinstance(value, str) else _json(value)
    except Exception:  # a value orjson cannot serialize even with default=str
        text = repr(value)
    if len(text) > max_chars:
        text = text[:max_chars] + _TRUNCATED.format(n=len(text) - max_chars)
    return text


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def _span_attributes(rec: GenerationRecord, *, max_field_chars: int, environment: str | None) -> dict[str, Any]:
    """The Langfuse attributes of one generation (names from ``LangfuseOtelSpanAttributes``)."""
    attrs: dict[str, Any] = {
        A.IS_APP_ROOT: True,  # what LangfuseSpanProcessor marks on a span without a locally exported parent
        A.OBSERVATION_TYPE: rec.observation_type,
        A.OBSERVATION_MODEL: rec.provider_model or rec.model,
        A.OBSERVATION_USAGE_DETAILS: _json(
            {
                "input": rec.prompt_tokens,
                "output": rec.completion_tokens,
                "total": rec.prompt_tokens + rec.completion_tokens,
            }
        ),
        A.OBSERVATION_COST_DETAILS: _json({"total": float(rec.cost_usd)}),
    }
    if environment is not None:
        attrs[A.ENVIRONMENT] = environment
    text_in = _serialize_field(rec.input, max_field_chars)
    if text_in is not None:
        attrs[A.OBSERVATION_INPUT] = text_in
    text_out = _serialize_field(rec.output, max_field_chars)
    if text_out is not None:
        attrs[A.OBSERVATION_OUTPUT] = text_out
    if rec.model_parameters:
        attrs[A.OBSERVATION_MODEL_PARAMETERS] = _json(dict(rec.model_parameters))
    if rec.ttft_ns is not None:
        attrs[A.OBSERVATION_COMPLETION_START_TIME] = _json(_iso(rec.start_ns + rec.ttft_ns))
    if rec.status == "error":
        attrs[A.OBSERVATION_LEVEL] = "ERROR"
        if rec.error:
            attrs[A.OBSERVATION_STATUS_MESSAGE] = rec.error[:max_field_chars]
    if rec.user_id:
        attrs[A.TRACE_USER_ID] = rec.user_id
    if rec.session_id:
        attrs[A.TRACE_SESSION_ID] = rec.session_id
    if rec.trace_name:
        attrs[A.TRACE_NAME] = rec.trace_name
    if rec.tags:
        attrs[A.TRACE_TAGS] = [str(tag) for tag in rec.tags]
    metadata: dict[str, Any] = {
        "model_alias": rec.model,
        "deployment": rec.deployment,
        "key_id": rec.key_id,
        "tenant_id": rec.tenant_id,
        "merchant_id": rec.merchant_id,
        "request_id": rec.request_id,
        "stream": rec.stream,
        "cache_hit": rec.cache_hit,
    }
    # The SDK JSON-encodes every metadata value (strings included); the server decodes them.
    for key, value in metadata.items():
        if value is not None:
            attrs[f"{A.OBSERVATION_METADATA}.{key}"] = _json(value)
    return attrs


class Tracer:
    """Turns :class:`GenerationRecord` values into Langfuse generations in a background thread.

    Args:
        settings: Langfuse host, keys, sampling, export timeout and queue bound.
            When ``settings.active`` is False the tracer is a no-op and creates
            no SDK object or thread.
        service_name: OpenTelemetry ``service.name`` of the spans.
        environment: Langfuse environment (lowercase ``[a-z0-9_-]``; others are ignored).
        release: Langfuse release, e.g. the deployed version.
        max_field_chars: Bound on the serialized input, output and error message.
        flush_interval_s: How often the batch span processor exports.
        log_interval_s: Exporter failures are logged at most once per this interval.
        on_drop: Called (on the request path) each time a record is dropped
            because the queue is full, e.g. to count it in Prometheus.

    The caller's W3C ``traceparent`` decides sampling when present (parent
    based); ``settings.sample_rate`` applies to traces that start here.
    Memory is bounded by two queues of ``settings.max_queue_size``: records
    waiting for the worker (full: dropped and counted in ``dropped``) and
    spans waiting for export (full while Langfuse is slow or down: the
    OpenTelemetry batch processor drops the oldest and logs it).
    """

    def __init__(
        self,
        settings: LangfuseSettings,
        *,
        service_name: str = "copilot-gateway",
        environment: str | None = None,
        release: str | None = None,
        max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
        flush_interval_s: float = 1.0,
        log_interval_s: float = 60.0,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self._active = settings.active
        self._max_queue = settings.max_queue_size
        self._max_field_chars = max_field_chars
        self._environment = _langfuse_environment(environment)
        self._on_drop = on_drop
        self._sample_rate = settings.sample_rate
        self.stats = TracerStats()
        self._queue: deque[GenerationRecord | threading.Event] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._provider: TracerProvider | None = None
        self._otel: otel_trace.Tracer | None = None
        if not self._active:
            return
        assert settings.public_key is not None and settings.secret_key is not None  # guaranteed by .active
        public_key = settings.public_key
        secret_key = settings.secret_key.get_secret_value()
        host = settings.host.rstrip("/")
        _install_exporter_log_filter(log_interval_s)

        resource_attrs: dict[str, str] = {"service.name": service_name}
        if self._environment is not None:
            resource_attrs[A.ENVIRONMENT] = self._environment
        if release:
            resource_attrs[A.RELEASE] = release
        self._provider = TracerProvider(
            resource=Resource.create(resource_attrs),
            sampler=ParentBased(root=TraceIdRatioBased(settings.sample_rate)),
        )
        exporter = OTLPSpanExporter(
            endpoint=f"{host}{OTLP_TRACES_PATH}",
            headers={
                "Authorization": _auth_header(public_key, secret_key),
                "x-langfuse-sdk-name": "python",
                "x-langfuse-sdk-version": _langfuse_version,
                "x-langfuse-public-key": public_key,
                "x-langfuse-ingestion-version": "4",
            },
            timeout=settings.export_timeout_s,
            compression=Compression.Gzip,
        )
        self._provider.add_span_processor(
            BatchSpanProcessor(
                _GuardedExporter(exporter, self.stats, log_interval_s=log_interval_s),
                max_queue_size=settings.max_queue_size,
                schedule_delay_millis=flush_interval_s * 1000,
                max_export_batch_size=min(512, settings.max_queue_size),
                export_timeout_millis=settings.export_timeout_s * 1000,
            )
        )
        self._otel = self._provider.get_tracer(
            LANGFUSE_TRACER_NAME, _langfuse_version, attributes={"public_key": public_key}
        )
        self._start_worker()
        if hasattr(os, "register_at_fork"):
            weak_restart = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: (m := weak_restart()) and m())

    @property
    def enabled(self) -> bool:
        """True when records are exported (settings active and not shut down)."""
        return self._active and not self._closed

    @property
    def dropped(self) -> int:
        """Records dropped because the queue was full."""
        return self.stats.dropped

    @property
    def pending(self) -> int:
        """Records waiting for the worker thread."""
        return len(self._queue)

    def record(self, rec: GenerationRecord) -> None:
        """Queue one finished call for export: O(1), never raises, never blocks."""
        if not self._active or self._closed:
            return
        try:
            if self._sample_rate <= 0.0 and rec.traceparent is None:
                self.stats.sampled_out += 1
                return
            queue = self._queue
            if len(queue) >= self._max_queue:
                self.stats.dropped += 1
                if self._on_drop is not None:
                    self._on_drop()
                return
            queue.append(rec)
            self.stats.recorded += 1
            if not self._wake.is_set():
                self._wake.set()
        except Exception:  # noqa: S110 (tracing must never fail a call)
            pass

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Export everything recorded so far; True when done within ``timeout_s``.

        Never raises. With Langfuse down the export fails (and is counted) and
        this returns once the exporter gave up or the timeout passed.
        """
        if not self._active or self._closed or self._provider is None:
            return True
        deadline = time.monotonic() + timeout_s
        marker = threading.Event()
        self._queue.append(marker)
        self._wake.set()
        if not marker.wait(max(0.0, deadline - time.monotonic())):
            return False
        return self._bounded(self._provider.force_flush, deadline)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Export what is queued (within ``timeout_s``), stop the worker, and release the exporter."""
        if not self._active or self._closed:
            self._closed = True
            return
        deadline = time.monotonic() + timeout_s
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._closed = True
        provider = self._provider
        if provider is not None:
            self._bounded(provider.shutdown, deadline)

    # -- worker ---------------------------------------------------------------

    def _start_worker(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-tracing", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # Threads do not survive fork(): records queued in the parent belong to it.
        if self._active and not self._closed:
            self._queue = deque()
            self._wake = threading.Event()
            self._start_worker()

    def _run(self) -> None:
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            self._drain()
            if self._stopping:
                self._drain()
                return

    def _drain(self) -> None:
        queue = self._queue
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                self._export(item)
            except Exception:
                self.stats.errors += 1
                if self.stats.errors == 1 or self.stats.errors % 1000 == 0:
                    logger.exception("tracing.record_failed", extra={"errors": self.stats.errors})
            # Release the GIL after each record: a waiting event loop gets it now
            # rather than after the interpreter's 5 ms switch interval.
            time.sleep(0)

    def _export(self, rec: GenerationRecord) -> None:
        assert self._otel is not None
        context: Context | None = None
        if rec.traceparent:
            context = _PROPAGATOR.extract({"traceparent": rec.traceparent})
        span = self._otel.start_span(rec.name, context=context, kind=SpanKind.CLIENT, start_time=rec.start_ns)
        if span.is_recording():
            span.set_attributes(
                _span_attributes(rec, max_field_chars=self._max_field_chars, environment=self._environment)
            )
            if rec.status == "error":
                span.set_status(Status(StatusCode.ERROR, rec.error))
        else:
            self.stats.sampled_out += 1
        span.end(end_time=max(rec.end_ns, rec.start_ns))

    @staticmethod
    def _bounded(fn: Callable[[], Any], deadline: float) -> bool:
        """Run a possibly slow SDK call (export retries while Langfuse is down) for at most until ``deadline``."""
        outcome: list[bool] = []

        def target() -> None:
            try:
                result = fn()
                outcome.append(result is not False)
            except Exception:
                logger.warning("tracing.flush_failed", exc_info=True)
                outcome.append(False)

        worker = threading.Thread(target=target, name="gateway-tracing-flush", daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
        return bool(outcome and outcome[0])


# -- a shared Langfuse client for other components (orchestrator, evals) ------

_CLIENTS: dict[tuple[str, str], Langfuse] = {}
_CLIENTS_LOCK = threading.Lock()


def get_langfuse(settings: LangfuseSettings, *, environment: str | None = None) -> Langfuse | None:
    """A configured ``Langfuse`` client for these settings, or None when tracing is not active.

    One client per (host, public key) per process. The client gets its own
    ``TracerProvider`` so the global OpenTelemetry provider is left alone.
    Langfuse 5 keeps one resource manager per *public key* (its exporter and
    host included); asking for the same key with another host (tests with two
    receivers) shuts the old one down and replaces it instead of silently
    exporting to the old host.

    Args:
        settings: Langfuse settings.
        environment: Langfuse environment name (lowercase ``[a-z0-9_-]``).

    Returns:
        The client, or None when ``settings.active`` is False.
    """
    if not settings.active:
        return None
    assert settings.public_key is not None and settings.secret_key is not None
    host = settings.host.rstrip("/")
    key = (host, settings.public_key)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is not None:
            return client
        with LangfuseResourceManager._lock:
            existing = LangfuseResourceManager._instances.get(settings.public_key)
            if existing is not None and existing.base_url.rstrip("/") != host:
                existing.shutdown()
                del LangfuseResourceManager._instances[settings.public_key]
                for stale in [k for k in _CLIENTS if k[1] == settings.public_key]:
                    del _CLIENTS[stale]
        env = _langfuse_environment(environment)
        provider = TracerProvider(
            resource=Resource.create({A.ENVIRONMENT: env} if env else {}),
            sampler=ParentBased(root=TraceIdRatioBased(settings.sample_rate)),
        )
        client = Langfuse(
            public_key=settings.public_key,
            secret_key=settings.secret_key.get_secret_value(),
            base_url=host,
            timeout=max(1, round(settings.export_timeout_s)),
            environment=env,
            sample_rate=settings.sample_rate,
            tracer_provider=provider,
        )
        _CLIENTS[key] = client
        return client
