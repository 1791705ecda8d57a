"""The LLMGateway protocol in process and over HTTP, on the built-in offline model and local embedder."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import Engine, text

from core.config import EMBEDDING_DIM, GatewaySettings, LangfuseSettings, Settings
from gateway.http_client import HttpGateway, RemoteGatewayError
from gateway.inprocess import INTERNAL_TENANT, Gateway
from gateway.keys import KeyStore
from gateway.routing import load_routing
from gateway.runtime import GatewayRuntime
from gateway.service import create_app
from gateway.types import CallContext, ChatMessage, ChatRequest, EmbeddingRequest, LLMGateway

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_metric",
            "description": "Look up a sales metric of the merchant for a period.",
            "parameters": {
                "type": "object",
                "properties": {
                    "metric": {"type": "string", "enum": ["net_sales", "refunds", "transactions"]},
                    "period": {"type": "string", "enum": ["yesterday", "last_week", "this_month"]},
                },
                "required": ["metric", "period"],
            },
        },
    }
]


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        gateway=GatewaySettings(usage_spool_dir=tmp_path / "spool", usage_flush_interval_s=0.05),
        langfuse=LangfuseSettings(enabled=False),
    )


async def _exercise(gateway: LLMGateway) -> None:
    context = CallContext(merchant_id="m-42", user_id="u-1", session_id="s-1")
    # Tool calling: the offline model picks the tool and fills the enum arguments from the question.
    planned = await gateway.chat(
        ChatRequest(
            model="copilot-offline",
            messages=[ChatMessage(role="user", content="What were my refunds yesterday?")],
            tools=TOOLS,
        ),
        context,
    )
    assert planned.message.tool_calls, planned
    call = planned.message.tool_calls[0]["function"]
    assert call["name"] == "get_metric"
    assert json.loads(call["arguments"]) == {"metric": "refunds", "period": "yesterday"}
    assert planned.usage.prompt_tokens > 0
    # Narration: only numbers it was given.
    facts = [
        ChatMessage(role="user", content="How were net sales last week?"),
        ChatMessage(role="assistant", tool_calls=[{**planned.message.tool_calls[0]}]),
        ChatMessage(
            role="tool",
            tool_call_id=planned.message.tool_calls[0]["id"],
            content=json.dumps({"metric": "net_sales", "value": 1234.5, "unit": "EUR", "period": "last week"}),
        ),
    ]
    answer = await gateway.chat(ChatRequest(model="copilot-offline", messages=facts), context)
    content = answer.message.content or ""
    assert "1234.5" in content or "1,234.5" in content
    assert not {w for w in content.replace(",", "").split() if any(ch.isdigit() for ch in w)} - {"1234.5", "1234.5."}
    chunks = [c async for c in gateway.stream_chat(ChatRequest(model="copilot-offline", messages=facts), context)]
    assert "".join(c.delta for c in chunks) == answer.message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    vectors = await gateway.embed(EmbeddingRequest(model="copilot-local-embed", input=["flat white", "card tips"]))
    assert len(vectors.data) == 2 and all(len(v) == EMBEDDING_DIM for v in vectors.data)


def test_in_process_gateway_meters_to_the_internal_identity(
    database_url: str, redis_url: str, tmp_path: Path, admin_engine: Engine
) -> None:
    async def main() -> None:
        gateway = await Gateway.start(_settings(tmp_path), database_url=database_url, redis_url=redis_url)
        try:
            assert isinstance(gateway, LLMGateway)
            await _exercise(gateway)
            await gateway.engine.drain()
        finally:
            await gateway.aclose()

    asyncio.run(main())
    with admin_engine.connect() as conn:
        rows = conn.execute(
            text("SELECT endpoint, model, status, merchant_id FROM usage_records WHERE tenant_id = :t"),
            {"t": INTERNAL_TENANT},
        ).all()
    assert {("chat", "copilot-offline", "ok", "m-42"), ("embeddings", "copilot-local-embed", "ok", None)} <= set(rows)


def test_http_gateway_speaks_to_the_service(
    database_url: str, redis_url: str, tmp_path: Path, admin_engine: Engine, redis_client: redis.Redis, tenant: str
) -> None:
    store = KeyStore(admin_engine, redis_client=redis_client)
    _, key = store.create("http-client", tenant, scopes={"models": ["copilot-*"]})
    _, limited = store.create("limited", tenant, limits={"rpm": 1})

    async def main() -> None:
        settings = _settings(tmp_path)
        runtime = await GatewayRuntime.start(
            settings, database_url=database_url, redis_url=redis_url, routing=load_routing(None)
        )
        app = create_app(settings, runtime=runtime)
        transport = httpx.ASGITransport(app=app)
        client = HttpGateway("http://gateway", key, transport=transport)
        other = HttpGateway("http://gateway", limited, transport=transport)
        try:
            assert isinstance(client, LLMGateway)
            await _exercise(client)
            assert sorted(await client.models()) == ["copilot-local-embed", "copilot-offline"]
            request = ChatRequest(model="copilot-offline", messages=[ChatMessage(role="user", content="hi")])
            await other.chat(request)
            with pytest.raises(RemoteGatewayError) as refused:
                await other.chat(request)
            assert refused.value.status == 429 and refused.value.code == "rate_limit_exceeded"
            assert refused.value.retry_after is not None
        finally:
            await client.aclose()
            await other.aclose()
            await runtime.aclose()

    asyncio.run(main())
    with admin_engine.connect() as conn:
        merchants = conn.execute(
            text("SELECT DISTINCT merchant_id FROM usage_records WHERE tenant_id = :t AND endpoint = 'chat'"),
            {"t": tenant},
        ).scalars()
        assert "m-42" in set(merchants)
