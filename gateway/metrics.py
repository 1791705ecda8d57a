"""Prometheus metrics of the gateway, exposed at ``/metrics``.

:class:`GatewayMetrics` owns its own ``CollectorRegistry`` (tests build
several). The request path calls small methods that look labelled children up
in a plain dict, so a call costs a few microseconds and no lock beyond the
value's own.

Labels are bounded: model aliases, deployments and tenants come from
configuration or keys, but a client can name any model, so every open-ended
label keeps at most ``max_label_values`` distinct values and folds the rest
into ``"other"``. Merchants are never a label (traces carry them).

Several uvicorn workers: when ``PROMETHEUS_MULTIPROC_DIR`` is set for the
processes (before ``prometheus_client`` is imported, which is when it picks
its value storage), values live in memory-mapped files in that folder and
:meth:`GatewayMetrics.render` aggregates every worker's files with
``prometheus_client``'s multiprocess collector. The entrypoint should empty the
folder before the workers start and call :meth:`GatewayMetrics.mark_process_dead`
when a worker exits.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from enum import IntEnum
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.multiprocess import mark_process_dead as _mark_process_dead

from core.config import environment_variable

logger = logging.getLogger(__name__)

PREFIX: Final = "copilot_gateway"
OTHER: Final = "other"
# prometheus_client's own switch for multi-process mode (not one of our settings).
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class CircuitState(IntEnum):
    """Values of the circuit breaker gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


def _multiprocess_storage() -> bool:
    # prometheus_client picks MutexValue (one process) or a mmap-backed class at import time.
    return values.ValueClass is not values.MutexValue


class _Labels:
    """Keeps at most ``limit`` distinct values of one open-ended label; later ones become ``"other"``."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if value is None or value == "":
            return "none"
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


class GatewayMetrics:
    """The gateway's counters, histograms and gauges, and their exposition.

    Args:
        registry: Registry to register into; a new one by default.
        multiproc_dir: Folder of the multi-process value files. Defaults to
            ``PROMETHEUS_MULTIPROC_DIR`` when set (prometheus_client's own
            variable, which must be set before it is imported).
        max_label_values: Distinct values kept per open-ended label (model,
            deployment, tenant, limit, reason); the rest are ``"other"``.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        multiproc_dir: str | Path | None = None,
        max_label_values: int = 200,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        if multiproc_dir is None:
            multiproc_dir = environment_variable(MULTIPROC_ENV) or None
        self.multiproc_dir = Path(multiproc_dir) if multiproc_dir is not None else None
        self._exposition_registry = self.registry
        if self.multiproc_dir is not None:
            if not _multiprocess_storage():
                logger.warning(
                    "metrics.multiprocess_misconfigured",
                    extra={"dir": str(self.multiproc_dir), "hint": f"set {MULTIPROC_ENV} before the process starts"},
                )
            self._exposition_registry = CollectorRegistry()
            MultiProcessCollector(self._exposition_registry, path=str(self.multiproc_dir))  # type: ignore[no-untyped-call]

        self._model = _Labels(max_label_values)
        self._deployment = _Labels(max_label_values)
        self._tenant = _Labels(max_label_values)
        self._misc = _Labels(max_label_values)
        self._children: dict[Hashable, Any] = {}

        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Gateway requests by endpoint, model alias and HTTP status.",
            ["endpoint", "model", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from request received to response finished.",
            ["endpoint", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            f"{PREFIX}_upstream_duration_seconds",
            "Duration of one upstream (provider) attempt.",
            ["deployment", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Time to the first streamed token.",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            f"{PREFIX}_tokens",
            "Tokens by model alias and kind (prompt, completion).",
            ["model", "kind"],
            registry=r,
        )
        self.cost = Counter(
            f"{PREFIX}_cost_usd",
            "Cost in US dollars by model alias and tenant.",
            ["model", "tenant"],
            registry=r,
        )
        self.cache = Counter(
            f"{PREFIX}_cache_lookups",
            "Response cache lookups by endpoint and result (hit, miss).",
            ["endpoint", "result"],
            registry=r,
        )
        self.rate_limited = Counter(
            f"{PREFIX}_rate_limited",
            "Requests refused by a rate limit or budget, by limit name.",
            ["limit"],
            registry=r,
        )
        self.upstream_errors = Counter(
            f"{PREFIX}_upstream_errors",
            "Failed upstream attempts by deployment and reason.",
            ["deployment", "reason"],
            registry=r,
        )
        self.upstream_retries = Counter(
            f"{PREFIX}_upstream_retries",
            "Upstream retries by deployment.",
            ["deployment"],
            registry=r,
        )
        self.fallbacks = Counter(
            f"{PREFIX}_fallbacks",
            "Calls served by a fallback alias, by the alias asked for.",
            ["model"],
            registry=r,
        )
        self.circuit_state = Gauge(
            f"{PREFIX}_circuit_state",
            "Circuit breaker state by deployment: 0 closed, 1 half-open, 2 open.",
            ["deployment"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_in_flight_requests",
            "Requests being served, by endpoint.",
            ["endpoint"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.usage_pending = Gauge(
            f"{PREFIX}_usage_pending",
            "Usage records buffered and not yet written.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.tracing_dropped_total = Counter(
            f"{PREFIX}_tracing_dropped",
            "Trace records dropped because the tracing queue was full.",
            registry=r,
        )

    # -- labelled children, cached -----------------------------------------------

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            self._children[key] = child
        return child

    # -- request path --------------------------------------------------------------

    def request_started(self, endpoint: str) -> None:
        """One more request in flight on ``endpoint``."""
        self._child(self.in_flight, endpoint).inc()

    def request_finished(self, endpoint: str, model: str | None, status: int | str, duration_s: float) -> None:
        """A request finished: counts it, observes its latency and leaves the in-flight gauge."""
        alias = self._model(model)
        self._child(self.in_flight, endpoint).dec()
        self._child(self.requests, endpoint, alias, str(status)).inc()
        self._child(self.request_latency, endpoint, alias).observe(duration_s)

    def observe_upstream(self, deployment: str, duration_s: float, *, ok: bool = True) -> None:
        """One upstream attempt took ``duration_s``."""
        self._child(self.upstream_latency, self._deployment(deployment), "ok" if ok else "error").observe(duration_s)

    def observe_ttft(self, model: str | None, seconds: float) -> None:
        """Time to the first streamed token."""
        self._child(self.ttft, self._model(model)).observe(seconds)

    def add_usage(
        self, model: str | None, *, prompt_tokens: int, completion_tokens: int, cost_usd: float, tenant: str | None
    ) -> None:
        """Tokens and cost of one call."""
        alias = self._model(model)
        if prompt_tokens:
            self._child(self.tokens, alias, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self._child(self.tokens, alias, "completion").inc(completion_tokens)
        if cost_usd:
            self._child(self.cost, alias, self._tenant(tenant)).inc(cost_usd)

    def cache_lookup(self, endpoint: str, *, hit: bool) -> None:
        """A response cache lookup and its result."""
        self._child(self.cache, endpoint, "hit" if hit else "miss").inc()

    def rate_limit_refused(self, limit: str) -> None:
        """A request refused by the limit named ``limit`` (e.g. ``rpm``, ``tpm``, ``budget``)."""
        self._child(self.rate_limited, self._misc(limit)).inc()

    def upstream_error(self, deployment: str, reason: str) -> None:
        """A failed upstream attempt; ``reason`` is a small fixed vocabulary (``timeout``, ``429``, ``5xx``...)."""
        self._child(self.upstream_errors, self._deployment(deployment), self._misc(reason)).inc()

    def upstream_retry(self, deployment: str) -> None:
        """A retry of ``deployment``."""
        self._child(self.upstream_retries, self._deployment(deployment)).inc()

    def fallback_used(self, model: str | None) -> None:
        """The alias ``model`` was served by one of its fallbacks."""
        self._child(self.fallbacks, self._model(model)).inc()

    def set_circuit_state(self, deployment: str, state: CircuitState | int) -> None:
        """The breaker of ``deployment`` changed state."""
        self._child(self.circuit_state, self._deployment(deployment)).set(int(state))

    def set_usage_pending(self, count: int) -> None:
        """Usage records waiting in the buffer."""
        self.usage_pending.set(count)

    def tracing_dropped(self, count: int = 1) -> None:
        """Trace records dropped (pass as ``Tracer(on_drop=metrics.tracing_dropped)``)."""
        self.tracing_dropped_total.inc(count)

    # -- exposition ------------------------------------------------------------------

    @property
    def multiprocess(self) -> bool:
        """True when rendering aggregates the files of several worker processes."""
        return self.multiproc_dir is not None

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type (OpenMetrics when the ``Accept`` header asks for it)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._exposition_registry), content_type

    @staticmethod
    def mark_process_dead(pid: int, multiproc_dir: str | Path | None = None) -> None:
        """Forget the live gauges of an exited worker (call from the server's child-exit hook)."""
        path = multiproc_dir if multiproc_dir is not None else environment_variable(MULTIPROC_ENV)
        if path:
            _mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
