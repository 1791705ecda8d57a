"""Which :class:`~gateway.types.LLMGateway` an app process talks to.

With ``COPILOT_GATEWAY__URL`` (and ``__API_KEY``) every model call goes over
HTTP to the gateway service; otherwise the gateway runs in process on the
same Postgres and Redis (the embedded default), with the same keys, limits,
metering and tracing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core.config import Settings
from core.errors import ConfigurationError
from gateway.types import LLMGateway


@asynccontextmanager
async def open_gateway(settings: Settings, *, database_url: str, redis_url: str | None) -> AsyncIterator[LLMGateway]:
    """The gateway for this process, closed on exit.

    Raises:
        ConfigurationError: A gateway URL without an API key, or no Redis for the in-process gateway.
    """
    config = settings.gateway
    if config.url:
        if config.api_key is None:
            raise ConfigurationError("COPILOT_GATEWAY__URL is set but COPILOT_GATEWAY__API_KEY is not")
        from gateway.http_client import HttpGateway

        remote = HttpGateway(config.url, config.api_key)
        try:
            yield remote
        finally:
            await remote.aclose()
        return
    if redis_url is None:
        raise ConfigurationError("the in-process LLM gateway needs Redis (COPILOT_REDIS__URL or the embedded one)")
    from gateway.inprocess import Gateway

    local = await Gateway.start(settings, database_url=database_url, redis_url=redis_url)
    try:
        yield local
    finally:
        await local.aclose()
