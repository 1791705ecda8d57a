"""With a gateway URL configured, batch embeddings go through the real gateway service over HTTP."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import uvicorn
from pydantic import SecretStr
from sqlalchemy import Engine, text

from core.config import GatewaySettings, LangfuseSettings, Settings
from core.db import Database
from core.errors import ConfigurationError
from gateway.embedder import embed_text
from gateway.http_client import HttpGateway
from gateway.keys import KeyStore
from gateway.service import create_app
from pipelines.context import PipelineContext
from pipelines.text import embed_pending, extract_text

from .conftest import add_merchant, add_reviews, chunks_of


@pytest.fixture
def gateway_url(text_db: Database, redis_url: str, tmp_path: Path) -> Iterator[str]:
    """The gateway service (built-in models) under uvicorn in a thread, on the text tests' database."""
    database_url = text_db.admin_engine.url.render_as_string(hide_password=False)
    settings = Settings(
        gateway=GatewaySettings(usage_spool_dir=tmp_path / "spool", usage_flush_interval_s=0.05),
        langfuse=LangfuseSettings(enabled=False),
    )
    app = create_app(settings, database_url=database_url, redis_url=redis_url)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(30)
    sock.close()


def test_pending_chunks_are_embedded_through_the_gateway(
    text_db: Database, engine: Engine, gateway_url: str, redis_url: str
) -> None:
    store = KeyStore(engine, redis_client=redis.Redis.from_url(redis_url))
    _, key = store.create("pipelines", "batch", scopes={"models": ["copilot-local-embed"]})
    settings = Settings(gateway=GatewaySettings(url=gateway_url, api_key=SecretStr(key)))
    ctx = PipelineContext(settings=settings, database=text_db)
    for merchant in ("G1", "G2"):
        add_merchant(engine, merchant)
        add_reviews(
            engine, merchant, {f"R{i}": f"Review {i} of {merchant}: the croissants were great." for i in range(3)}
        )
    extract_text(ctx, None)

    assert isinstance(ctx.get_embedder(), HttpGateway)
    summary = embed_pending(ctx)

    assert summary.embedded == 6 and summary.failed_batches == 0
    for chunk in chunks_of(engine):
        if chunk.merchant_id in ("G1", "G2"):
            assert chunk.embedded_at is not None
    deadline = time.monotonic() + 10
    while True:  # the gateway writes usage records off the request path
        with engine.connect() as conn:
            merchants = set(
                conn.execute(
                    text("SELECT merchant_id FROM usage_records WHERE tenant_id = 'batch' AND endpoint = 'embeddings'")
                ).scalars()
            )
        if merchants >= {"G1", "G2"} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert merchants >= {"G1", "G2"}
    # Same vectors as the in-process embedder: the alias serves the same local model.
    with engine.connect() as conn:
        content, vector = conn.execute(
            text("SELECT content, embedding::text FROM text_chunks WHERE merchant_id = 'G1' LIMIT 1")
        ).one()
    stored = [float(x) for x in vector.strip("[]").split(",")]
    assert max(abs(a - b) for a, b in zip(stored, embed_text(content), strict=True)) < 1e-5

    # A later run with the same context (a new event loop) gets a client of its own.
    add_reviews(engine, "G1", {"R9": "Review 9 of G1: the coffee was cold."})
    extract_text(ctx, None)
    again = embed_pending(ctx)
    assert (again.embedded, again.failed_batches) == (1, 0)


def test_a_gateway_url_needs_a_key(text_db: Database) -> None:
    ctx = PipelineContext(settings=Settings(gateway=GatewaySettings(url="http://127.0.0.1:9")), database=text_db)
    with pytest.raises(ConfigurationError, match="API_KEY"):
        ctx.get_embedder()
