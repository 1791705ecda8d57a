"""A Copilot over the shared metrics dataset, the in-process gateway (offline model) and Redis.

The event loop runs in a background thread for the module so the gateway
(litellm warm-up, Redis, the usage writer) starts once; tests call
``harness.ask(...)`` synchronously.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from core.config import DatabaseSettings, GatewaySettings, LangfuseSettings, Settings
from core.db import Database
from core.db.engine import create_async_db_engine
from core.db.session import make_async_sessionmaker
from gateway.inprocess import Gateway
from gateway.types import LLMGateway
from orchestrator.service import AskReply, Copilot
from orchestrator.tracing import GraphTracer

T = TypeVar("T")
AS_OF = date(2026, 1, 5)  # the dataset's last day (Monday)


class Harness:
    """A loop thread, a started gateway and a Copilot factory."""

    def __init__(self, database: Database, db_settings: DatabaseSettings, redis_url: str, spool: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.settings = Settings(
            database=db_settings,
            gateway=GatewaySettings(usage_spool_dir=spool, usage_flush_interval_s=0.05),
            langfuse=LangfuseSettings(enabled=False),
        )
        self.database = database
        self.redis_url = redis_url
        self.engine = create_async_db_engine(database.app_url, db_settings)
        self.sessions = make_async_sessionmaker(self.engine)
        self.gateway: Gateway = self.run(
            Gateway.start(
                self.settings,
                database_url=database.admin_url.render_as_string(hide_password=False),
                redis_url=redis_url,
            )
        )
        self.saver = InMemorySaver()
        self.copilot = self.make()

    def make(self, gateway: LLMGateway | None = None, tracer: GraphTracer | None = None, **kw: Any) -> Copilot:
        settings = self.settings.orchestrator.model_copy(update=kw)
        return Copilot(gateway=gateway or self.gateway, sessions=self.sessions, settings=settings,
                       tracer=tracer, checkpointer=self.saver)  # fmt: skip

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def ask(self, question: str, merchant: str = "M0001", copilot: Copilot | None = None, **kw: Any) -> AskReply:
        kw.setdefault("as_of", AS_OF)
        return self.run((copilot or self.copilot).ask(merchant, question, **kw))

    def close(self) -> None:
        self.run(self.gateway.aclose())
        self.run(self.engine.dispose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def harness(
    metrics_db: Database, db_settings: DatabaseSettings, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    h = Harness(metrics_db, db_settings, redis_url, tmp_path_factory.mktemp("spool"))
    try:
        yield h
    finally:
        h.close()
