"""Everything one gateway process holds, built from settings and torn down once.

:class:`GatewayRuntime` wires the key store and authenticator (Postgres and
Redis), the rate limiter, the router with its providers, the response cache,
the usage recorder, the tracer and the metrics into one
:class:`~gateway.engine.GatewayEngine`. The HTTP service builds one per
worker process in its lifespan; the in-process :class:`~gateway.inprocess.Gateway`
builds one for callers that skip HTTP.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
from redis import Redis
from sqlalchemy import Engine

from core.config import Settings
from core.db.engine import create_sync_engine
from gateway import pricing
from gateway.cache import ResponseCache
from gateway.engine import GatewayEngine
from gateway.guards import Guards
from gateway.keys import KeyAuthenticator, KeyStore
from gateway.metering import UsageRecorder
from gateway.metrics import CircuitState, GatewayMetrics
from gateway.providers.base import Provider
from gateway.providers.litellm_provider import LitellmProvider
from gateway.providers.openai import OpenAIProvider
from gateway.ratelimit import RateLimiter
from gateway.router import Router
from gateway.routing import RoutingConfig, load_routing
from gateway.tracing_process import ProcessTracer

logger = logging.getLogger(__name__)


def router_metrics_hook(metrics: GatewayMetrics) -> Callable[[str, Mapping[str, Any]], None]:
    """Turn the router's events into Prometheus samples."""
    states = {"closed": CircuitState.CLOSED, "open": CircuitState.OPEN, "half-open": CircuitState.HALF_OPEN}

    def hook(event: str, fields: Mapping[str, Any]) -> None:
        deployment = str(fields.get("deployment") or "")
        if event == "router.attempt.succeeded":
            metrics.observe_upstream(deployment, float(fields.get("duration_s") or 0.0))
        elif event == "router.attempt.failed":
            metrics.upstream_error(deployment, str(fields.get("reason") or fields.get("status")))
        elif event == "router.retry":
            metrics.upstream_retry(deployment)
        elif event == "router.fallback.used":
            metrics.fallback_used(str(fields.get("alias") or ""))
        elif event.startswith("router.circuit."):
            metrics.set_circuit_state(deployment, states.get(str(fields.get("state")), CircuitState.CLOSED))

    return hook


def warm_up(routing: RoutingConfig) -> None:
    """Load what the first call would otherwise load: prices, litellm and its custom providers."""
    deployments = routing.deployments()
    for deployment in deployments:
        pricing.prices_micros(deployment)
    if any(d.provider in ("litellm", "offline", "local-embed") for d in deployments):
        from gateway.offline import register_offline_provider
        from gateway.providers.litellm_provider import load_litellm

        load_litellm()
        register_offline_provider()
    pricing.count_tokens("warm up", "gpt-4o-mini")  # loads the tiktoken encoding used for cut streams


def build_providers() -> dict[str, Provider]:
    """One adapter instance per kind of upstream (litellm is imported on first use)."""
    fast = OpenAIProvider()
    via_litellm = LitellmProvider()
    return {"openai": fast, "azure": fast, "litellm": via_litellm, "offline": via_litellm, "local-embed": via_litellm}


@dataclass
class GatewayRuntime:
    """The live components of one gateway process."""

    settings: Settings
    engine: GatewayEngine
    store: KeyStore
    authenticator: KeyAuthenticator
    db_engine: Engine
    redis: redis.asyncio.Redis
    sync_redis: Redis
    recorder: UsageRecorder
    tracer: ProcessTracer
    metrics: GatewayMetrics
    providers: dict[str, Provider] = field(default_factory=dict)

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        database_url: str,
        redis_url: str,
        routing: RoutingConfig | None = None,
        providers: dict[str, Provider] | None = None,
    ) -> GatewayRuntime:
        """Connect to Postgres and Redis and start the background writers.

        Args:
            settings: Process settings (``settings.gateway``, ``settings.langfuse``).
            database_url: Owner URL of the database holding keys and usage.
            redis_url: Redis for limits, cache and the revocation signal.
            routing: The routing config; by default read from
                ``settings.gateway.config_file`` (built-ins without one).
            providers: Adapters by provider kind (tests may pass their own).
        """
        gw = settings.gateway
        routing = routing or load_routing(gw.config_file)
        providers = providers or build_providers()
        # Resolve prices (and import litellm when a deployment needs it) now, in a thread:
        # the first request must not pay a multi-second import on the event loop.
        await asyncio.to_thread(warm_up, routing)
        metrics = GatewayMetrics()
        db_engine = create_sync_engine(database_url, settings.database)
        async_redis = redis.asyncio.Redis.from_url(
            redis_url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
        )
        sync_redis = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        store = KeyStore(db_engine, pepper=gw.key_pepper, redis_client=sync_redis)
        authenticator = KeyAuthenticator(store, async_redis)
        limiter = RateLimiter(async_redis)
        router = Router(routing, providers, on_event=router_metrics_hook(metrics))
        recorder = UsageRecorder(
            database_url,
            spool_dir=gw.usage_spool_dir,
            batch_size=gw.usage_batch_size,
            flush_interval_s=gw.usage_flush_interval_s,
        )
        await recorder.start()
        tracer = ProcessTracer(
            settings.langfuse, environment=settings.environment.value, on_drop=metrics.tracing_dropped
        )
        engine = GatewayEngine(
            router,
            limiter=limiter,
            cache=ResponseCache(async_redis, ttl_s=gw.cache_ttl_s),
            recorder=recorder,
            tracer=tracer,
            metrics=metrics,
            guards=Guards(max_request_bytes=gw.max_request_bytes, max_tokens_cap=gw.max_tokens_cap),
        )
        logger.info("gateway.started", extra={"aliases": router.aliases(), "tracing": tracer.enabled})
        return cls(
            settings=settings,
            engine=engine,
            store=store,
            authenticator=authenticator,
            db_engine=db_engine,
            redis=async_redis,
            sync_redis=sync_redis,
            recorder=recorder,
            tracer=tracer,
            metrics=metrics,
            providers=providers,
        )

    def health(self) -> dict[str, Any]:
        """What ``/health`` reports (no secrets)."""
        return {
            "status": "ok",
            "rate_limiter_redis": self.engine.limiter.redis_available if self.engine.limiter else None,
            "usage_pending": self.recorder.pending,
            "deployments": self.engine.router.health(),
        }

    async def aclose(self) -> None:
        """Flush what is pending and close every connection."""
        await self.engine.drain()
        if self.engine.limiter is not None:
            await self.engine.limiter.flush_pending()
            await self.engine.limiter.aclose()
        await self.authenticator.aclose()
        await self.recorder.aclose()
        self.tracer.shutdown()
        closed: set[int] = set()
        for provider in self.providers.values():
            if id(provider) not in closed:
                closed.add(id(provider))
                await provider.aclose()
        await self.redis.aclose()
        self.sync_redis.close()
        self.db_engine.dispose()
