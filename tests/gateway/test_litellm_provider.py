"""LitellmProvider: the offline model and embedder through litellm, and a local OpenAI-compatible upstream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
import pytest
from aiohttp import web
from pydantic import SecretStr

from gateway.offline import OFFLINE_PROVIDER, register_offline_provider
from gateway.providers.base import Deployment, ProviderResult, UpstreamError
from gateway.providers.litellm_provider import LitellmProvider, litellm_model, load_litellm

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_metric",
            "description": "Compute a sales metric of the merchant over a date range",
            "parameters": {
                "type": "object",
                "properties": {
                    "metric": {"type": "string", "enum": ["net_sales", "orders", "refunds"]},
                    "start_date": {"type": "string", "format": "date"},
                    "end_date": {"type": "string", "format": "date"},
                },
                "required": ["metric", "start_date", "end_date"],
            },
        },
    }
]
SYSTEM = {"role": "system", "content": "You answer merchants. Today is 2026-11-22."}

# litellm queues its own success logging on the running loop; each test's loop closes before it runs.
pytestmark = pytest.mark.filterwarnings("ignore:coroutine 'Logging.async_success_handler' was never awaited")

OFFLINE = Deployment(name="offline-1", alias="copilot-offline", provider="offline", model="copilot-offline")
EMBED = Deployment(
    name="embed-1", alias="copilot-local-embed", provider="local-embed", model="copilot-local-embed", mode="embedding"
)


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


async def collect(stream: AsyncIterator[bytes]) -> list[dict[str, Any]]:
    chunks = []
    async for frame in stream:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        assert frame != b"data: [DONE]\n\n"
        chunks.append(orjson.loads(frame[len(b"data: ") : -2]))
    return chunks


# --------------------------------------------------------------------------- the offline model through litellm


def test_offline_model_string_and_registration_is_idempotent() -> None:
    litellm = load_litellm()
    register_offline_provider()
    register_offline_provider()
    entries = [p for p in litellm.custom_provider_map if p["provider"] == OFFLINE_PROVIDER]
    assert len(entries) == 1
    assert OFFLINE_PROVIDER in litellm.provider_list
    assert litellm_model(OFFLINE) == "copilot-offline/copilot-offline"
    assert litellm_model(EMBED) == "copilot-offline/copilot-local-embed"
    assert litellm_model(Deployment(name="a", alias="a", provider="litellm", model="anthropic/claude-x")) == (
        "anthropic/claude-x"
    )


def test_offline_chat_answers_from_tool_facts_with_alias_and_usage() -> None:
    tool_result = {"metric": "net_sales", "value": 1234.5, "currency": "EUR", "period": "last week"}
    payload = {
        "model": "my-alias",
        "messages": [
            SYSTEM,
            {"role": "user", "content": "What were my net sales last week?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_metric", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": json.dumps(tool_result)},
        ],
        "metadata": {"merchant_id": "m-1"},
    }
    result: ProviderResult = run(lambda: LitellmProvider().chat(OFFLINE, payload))
    body = orjson.loads(result.body)
    assert body["model"] == "my-alias"
    assert body["object"] == "chat.completion"
    content = body["choices"][0]["message"]["content"]
    assert "1234.5" in content and "EUR" in content and "Net sales" in content
    assert body["choices"][0]["finish_reason"] == "stop"
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert body["usage"]["prompt_tokens"] == result.usage.prompt_tokens


def test_offline_chat_tool_calls() -> None:
    payload = {
        "model": "copilot-offline",
        "messages": [SYSTEM, {"role": "user", "content": "What were my refunds last week?"}],
        "tools": TOOLS,
    }
    result: ProviderResult = run(lambda: LitellmProvider().chat(OFFLINE, payload))
    body = orjson.loads(result.body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_metric"
    assert json.loads(call["function"]["arguments"]) == {
        "metric": "refunds",
        "start_date": "2026-11-09",
        "end_date": "2026-11-15",
    }


def test_offline_stream_frames_parse_and_last_carries_usage() -> None:
    payload = {
        "model": "copilot-offline",
        "messages": [
            {"role": "user", "content": "Summarise.\n```facts\nOrders: 42 this week\nNet sales: 980 EUR\n```"}
        ],
    }
    chunks = run(lambda: collect(LitellmProvider().stream_chat(OFFLINE, payload)))
    assert len(chunks) >= 3
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "copilot-offline" for c in chunks)
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert "42" in text and "980 EUR" in text
    assert chunks[-1]["usage"]["completion_tokens"] > 0 and chunks[-1]["usage"]["prompt_tokens"] > 0
    assert chunks[-1]["choices"] == []
    assert all("usage" not in c for c in chunks[:-1])
    assert any(ch.get("finish_reason") == "stop" for c in chunks for ch in c["choices"])


def test_offline_stream_tool_calls() -> None:
    payload = {
        "model": "copilot-offline",
        "messages": [SYSTEM, {"role": "user", "content": "net sales and refunds yesterday"}],
        "tools": TOOLS,
    }
    chunks = run(lambda: collect(LitellmProvider().stream_chat(OFFLINE, payload)))
    calls = [tc for c in chunks for ch in c["choices"] for tc in ch["delta"].get("tool_calls") or []]
    assert [json.loads(tc["function"]["arguments"])["metric"] for tc in calls] == ["net_sales", "refunds"]
    assert [tc["index"] for tc in calls] == [0, 1]
    assert any(ch.get("finish_reason") == "tool_calls" for c in chunks for ch in c["choices"])
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_local_embeddings_through_litellm() -> None:
    from gateway.embedder import embed_text

    result: ProviderResult = run(
        lambda: LitellmProvider().embeddings(EMBED, {"model": "copilot-local-embed", "input": ["late delivery", "x"]})
    )
    body = orjson.loads(result.body)
    assert body["model"] == "copilot-local-embed" and body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][0]["embedding"] == pytest.approx(embed_text("late delivery"))
    assert result.usage.prompt_tokens == 3 and result.usage.completion_tokens == 0


# --------------------------------------------------------------------------- a local OpenAI-compatible upstream


class Upstream:
    """A few lines of OpenAI-compatible server: behaviour picked by the requested model name."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[Mapping[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        model = body["model"]
        if model == "limited":
            return web.json_response(
                {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}},
                status=429,
                headers={"Retry-After": "7"},
            )
        if model == "bad":
            return web.json_response(
                {"error": {"message": "bad request", "type": "invalid_request_error", "code": None}}, status=400
            )
        if model == "slow":
            await asyncio.sleep(5)
        usage = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
        if body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            base = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": model}
            for piece in ("Hello", " there"):
                chunk = {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            done = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            await response.write(b"data: " + orjson.dumps(done) + b"\n\n")
            if (body.get("stream_options") or {}).get("include_usage"):
                await response.write(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            return response
        return web.json_response(
            {
                "id": "chatcmpl-up",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}
                ],
                "usage": usage,
            }
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response(
            {
                "object": "list",
                "model": body["model"],
                "data": [{"object": "embedding", "index": i, "embedding": [0.5, 0.25]} for i in range(len(inputs))],
                "usage": {"prompt_tokens": 5, "total_tokens": 5},
            }
        )

    async def __aenter__(self) -> Upstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def deployment(self, model: str, **overrides: Any) -> Deployment:
        fields: dict[str, Any] = {
            "name": f"up-{model}",
            "alias": "client-alias",
            "provider": "litellm",
            "model": f"openai/{model}",
            "api_base": self.base,
            "api_key": SecretStr("sk-test-upstream"),
            "timeout_s": 10.0,
        }
        fields.update(overrides)
        return Deployment(**fields)


def test_upstream_200_sends_deployment_model_key_and_headers() -> None:
    async def main() -> tuple[ProviderResult, Upstream]:
        async with Upstream() as upstream:
            deployment = upstream.deployment("gpt-up", extra_headers={"X-Team": "copilot"}, params={"seed": 7})
            payload = {
                "model": "client-alias",
                "messages": [{"role": "user", "content": "hi"}],
                "temperature": 0,
                "metadata": {"merchant_id": "m-1"},
            }
            return await LitellmProvider().chat(deployment, payload), upstream

    result, upstream = run(main)
    body = orjson.loads(result.body)
    assert body["model"] == "client-alias"
    assert body["choices"][0]["message"]["content"] == "Hello there"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, 2)
    [sent] = upstream.requests
    assert sent["model"] == "gpt-up" and sent["temperature"] == 0 and sent["seed"] == 7
    assert "metadata" not in sent
    assert upstream.headers[0]["authorization"] == "Bearer sk-test-upstream"
    assert upstream.headers[0]["x-team"] == "copilot"


def test_upstream_stream_asks_for_usage_and_relays_it() -> None:
    async def main() -> tuple[list[dict[str, Any]], Upstream]:
        async with Upstream() as upstream:
            payload = {"model": "client-alias", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            chunks = await collect(LitellmProvider().stream_chat(upstream.deployment("gpt-up"), payload))
            return chunks, upstream

    chunks, upstream = run(main)
    assert upstream.requests[0]["stream"] is True
    assert upstream.requests[0]["stream_options"] == {"include_usage": True}
    assert "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"]) == "Hello there"
    assert chunks[-1]["usage"]["prompt_tokens"] == 11 and chunks[-1]["usage"]["completion_tokens"] == 2
    assert all(c["model"] == "client-alias" for c in chunks)


def test_upstream_embeddings() -> None:
    async def main() -> ProviderResult:
        async with Upstream() as upstream:
            deployment = upstream.deployment("emb-up", mode="embedding")
            return await LitellmProvider().embeddings(deployment, {"model": "client-alias", "input": ["a", "b"]})

    result = run(main)
    body = orjson.loads(result.body)
    assert [d["embedding"] for d in body["data"]] == [[0.5, 0.25], [0.5, 0.25]]
    assert result.usage.prompt_tokens == 5


def _failure(model: str, timeout_s: float = 10.0) -> tuple[UpstreamError, int]:
    async def main() -> tuple[UpstreamError, int]:
        async with Upstream() as upstream:
            deployment = upstream.deployment(model, timeout_s=timeout_s)
            payload = {"model": "client-alias", "messages": [{"role": "user", "content": "hi"}]}
            with pytest.raises(UpstreamError) as info:
                await LitellmProvider().chat(deployment, payload)
            return info.value, len(upstream.requests)

    return run(main)


def test_upstream_429_is_retryable_once_with_retry_after() -> None:
    error, calls = _failure("limited")
    assert error.status == 429 and error.retryable
    assert error.retry_after == 7.0
    assert error.deployment == "up-limited"
    assert calls == 1  # litellm's and the OpenAI SDK's own retries are off
    assert orjson.loads(error.body or b"{}")["error"]["message"]


def test_upstream_400_is_not_retryable() -> None:
    error, calls = _failure("bad")
    assert error.status == 400 and not error.retryable
    assert calls == 1


def test_upstream_timeout_is_retryable_504() -> None:
    error, calls = _failure("slow", timeout_s=0.5)
    assert error.status == 504 and error.retryable
    assert calls == 1


def test_stream_failure_before_first_chunk_is_mapped() -> None:
    async def main() -> UpstreamError:
        async with Upstream() as upstream:
            payload = {"model": "client-alias", "messages": [{"role": "user", "content": "hi"}]}
            with pytest.raises(UpstreamError) as info:
                await collect(LitellmProvider().stream_chat(upstream.deployment("limited"), payload))
            return info.value

    error = run(main)
    assert error.status == 429 and error.retryable


def test_connection_refused_is_retryable() -> None:
    deployment = Deployment(
        name="nowhere",
        alias="a",
        provider="litellm",
        model="openai/x",
        api_base="http://127.0.0.1:9/v1",
        api_key=SecretStr("k"),
        timeout_s=5,
    )
    payload = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(UpstreamError) as info:
        run(lambda: LitellmProvider().chat(deployment, payload))
    assert info.value.retryable and info.value.status in {502, 503, 504}
