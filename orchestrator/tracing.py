"""Graph runs as Langfuse traces: one span per node, the gateway's generations nested inside.

A :class:`GraphTracer` wraps the Langfuse client (OpenTelemetry underneath).
The run opens a root observation; each node opens a child span; model calls
carry the current span as a W3C ``traceparent`` so the gateway's generation
for that call lands under the node that made it. Without Langfuse the tracer
still mints a trace id (returned to callers, passed to the gateway) and does
nothing else. Tracing never fails a run: every SDK call is guarded.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace as otel_trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

logger = logging.getLogger(__name__)
_PROPAGATOR = TraceContextTextMapPropagator()
# The local trace id of the run in progress when Langfuse is off.
_LOCAL_TRACE: ContextVar[str | None] = ContextVar("copilot_local_trace", default=None)


class Observation:
    """A handle on the current span: record its output (never raises)."""

    def __init__(self, inner: Any = None) -> None:
        self._inner = inner

    def update(self, **fields: Any) -> None:
        """Set output/metadata/level of the span."""
        if self._inner is None:
            return
        try:
            self._inner.update(**fields)
        except Exception:  # tracing must never break the run
            logger.debug("tracing.update_failed", exc_info=True)


class GraphTracer:
    """Spans for graph runs and their nodes.

    Args:
        langfuse: A configured ``langfuse.Langfuse`` client, or None to trace nothing.
    """

    def __init__(self, langfuse: Any = None) -> None:
        self._langfuse = langfuse

    @property
    def enabled(self) -> bool:
        """Whether spans are exported."""
        return self._langfuse is not None

    @contextlib.contextmanager
    def run(
        self,
        name: str,
        *,
        input: Any = None,
        user_id: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Iterator[tuple[str, Observation]]:
        """The root observation of a run; yields ``(trace_id, observation)``."""
        if self._langfuse is None:
            trace_id = secrets.token_hex(16)
            token = _LOCAL_TRACE.set(trace_id)
            try:
                yield trace_id, Observation()
            finally:
                _LOCAL_TRACE.reset(token)
            return
        stack = contextlib.ExitStack()
        observation: Any = None
        try:
            from langfuse import propagate_attributes

            stack.enter_context(
                propagate_attributes(
                    user_id=user_id, session_id=session_id, trace_name=name, metadata=_flat(metadata or {})
                )
            )
            observation = stack.enter_context(
                self._langfuse.start_as_current_observation(name=name, as_type="agent", input=input)
            )
        except Exception:
            logger.warning("tracing.start_failed", exc_info=True)
        with stack:
            trace_id = self.trace_id() or secrets.token_hex(16)
            yield trace_id, Observation(observation)

    @contextlib.contextmanager
    def span(self, name: str, *, input: Any = None, as_type: str = "span") -> Iterator[Observation]:
        """A child span of the current one (a graph node, a tool call)."""
        if self._langfuse is None:
            yield Observation()
            return
        stack = contextlib.ExitStack()
        observation: Any = None
        try:
            observation = stack.enter_context(
                self._langfuse.start_as_current_observation(name=name, as_type=as_type, input=input)
            )
        except Exception:
            logger.warning("tracing.span_failed", exc_info=True)
        with stack:
            yield Observation(observation)

    def trace_id(self) -> str | None:
        """The id of the trace in progress."""
        local = _LOCAL_TRACE.get()
        if local is not None:
            return local
        span = otel_trace.get_current_span()
        ctx = span.get_span_context()
        return f"{ctx.trace_id:032x}" if ctx.is_valid else None

    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` of the current span, for calls made from it."""
        local = _LOCAL_TRACE.get()
        if local is not None:
            return f"00-{local}-{secrets.token_hex(8)}-01"
        carrier: dict[str, str] = {}
        try:
            _PROPAGATOR.inject(carrier)
        except Exception:
            return None
        return carrier.get("traceparent")

    def flush(self) -> None:
        """Export what is buffered (CLI runs before exit)."""
        if self._langfuse is not None:
            with contextlib.suppress(Exception):
                self._langfuse.flush()


def _flat(metadata: dict[str, Any]) -> dict[str, str]:
    # Langfuse propagates string metadata values of bounded length only.
    return {str(k)[:64]: str(v)[:200] for k, v in metadata.items() if v is not None}
