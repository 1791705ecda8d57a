"""The response cache against the real Redis; SSE conversion checked with the OpenAI SDK's stream accumulator."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from gateway.cache import ResponseCache, canonical_request, completion_as_sse

T = TypeVar("T")

REQUEST: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "What were my sales yesterday?"}],
    "temperature": 0,
}
BODY = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[]}'


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


async def with_cache(url: str, body: Callable[[ResponseCache], Coroutine[Any, Any, T]], **kwargs: Any) -> T:
    client = redis.asyncio.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return await body(ResponseCache(client, **kwargs))
    finally:
        await client.aclose()


def test_miss_then_hit_with_ttl(redis_url: str, redis_client: redis.Redis) -> None:
    async def main(cache: ResponseCache) -> tuple[bytes | None, bytes | None, str]:
        key = cache.key_for("tenant-a", "m-1", "chat", REQUEST)
        before = await cache.get(key)
        await cache.set(key, BODY)
        return before, await cache.get(key), key

    before, after, key = run(lambda: with_cache(redis_url, main, ttl_s=120))
    assert before is None and after == BODY
    assert 0 < redis_client.ttl(key) <= 120
    assert key.startswith("gateway:cache:tenant-a:")


def test_stats_count_hits_misses_and_stores(redis_url: str, redis_client: redis.Redis) -> None:
    async def main(cache: ResponseCache) -> dict[str, int]:
        key = cache.key_for("t", None, "chat", REQUEST)
        await cache.get(key)
        await cache.set(key, BODY)
        await cache.get(key)
        await cache.get(key)
        return cache.stats

    stats = run(lambda: with_cache(redis_url, main))
    assert (stats["misses"], stats["stores"], stats["hits"], stats["errors"]) == (1, 1, 2, 0)


def test_tenants_and_merchants_never_share_entries(redis_url: str, redis_client: redis.Redis) -> None:
    async def main(cache: ResponseCache) -> list[bytes | None]:
        await cache.set(cache.key_for("tenant-a", "m-1", "chat", REQUEST), b"a-m1")
        return [
            await cache.get(cache.key_for("tenant-b", "m-1", "chat", REQUEST)),
            await cache.get(cache.key_for("tenant-a", "m-2", "chat", REQUEST)),
            await cache.get(cache.key_for("tenant-a", None, "chat", REQUEST)),
            await cache.get(cache.key_for("tenant-a", "m-1", "embeddings", REQUEST)),
            await cache.get(cache.key_for("tenant-a", "m-1", "chat", REQUEST)),
        ]

    assert run(lambda: with_cache(redis_url, main)) == [None, None, None, None, b"a-m1"]


def test_key_ignores_transport_fields_but_not_answer_fields(redis_url: str) -> None:
    cache = ResponseCache(redis.asyncio.Redis.from_url(redis_url))
    base = cache.key_for("t", "m", "chat", REQUEST)
    same = {
        **{k: REQUEST[k] for k in reversed(list(REQUEST))},  # key order does not matter
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u-42",
        "metadata": {"merchant_id": "m", "trace": "x"},
    }
    assert cache.key_for("t", "m", "chat", same) == base
    changes: list[dict[str, Any]] = [
        {"temperature": 0.7},
        {"model": "other"},
        {"max_tokens": 5},
        {"tools": []},
        {"n": 2},
    ]
    for change in changes:
        assert cache.key_for("t", "m", "chat", {**REQUEST, **change}) != base, change
    changed_message = {**REQUEST, "messages": [{"role": "user", "content": "What were my sales today?"}]}
    assert cache.key_for("t", "m", "chat", changed_message) != base
    # A tenant id cannot be forged into another tenant's key through separators.
    assert cache.key_for("a:b", "c", "chat", REQUEST) != cache.key_for("a", "b:c", "chat", REQUEST)
    assert canonical_request({"b": 1, "a": [1, 2], "stream": True}) == '{"a":[1,2],"b":1}'


def test_oversize_bodies_are_not_stored(redis_url: str, redis_client: redis.Redis) -> None:
    async def main(cache: ResponseCache) -> tuple[bytes | None, bytes | None, dict[str, int]]:
        big, small = cache.key_for("t", None, "chat", {"n": 1}), cache.key_for("t", None, "chat", {"n": 2})
        await cache.set(big, b"x" * 101)
        await cache.set(small, b"x" * 100)
        return await cache.get(big), await cache.get(small), cache.stats

    big, small, stats = run(lambda: with_cache(redis_url, main, max_entry_bytes=100))
    assert big is None and small == b"x" * 100
    assert stats["oversize"] == 1 and stats["stores"] == 1
    assert len(redis_client.keys("gateway:cache:*")) == 1


def test_redis_down_is_a_miss_not_an_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def main() -> tuple[bytes | None, bytes | None, dict[str, int]]:
        client = redis.asyncio.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
        cache = ResponseCache(client, retry_after_s=60)
        key = cache.key_for("t", "m", "chat", REQUEST)
        try:
            first = await cache.get(key)
            await cache.set(key, BODY)
            second = await cache.get(key)  # within retry_after_s: Redis is not even tried
            return first, second, cache.stats
        finally:
            await client.aclose()

    first, second, stats = run(main)
    assert first is None and second is None
    assert stats["errors"] == 1 and stats["misses"] == 2 and stats["skipped"] == 2 and stats["stores"] == 0


def test_cache_comes_back_after_retry_after(redis_url: str, redis_client: redis.Redis) -> None:
    async def main(cache: ResponseCache) -> tuple[bytes | None, bytes | None]:
        key = cache.key_for("t", "m", "chat", REQUEST)
        await cache.set(key, BODY)
        cache._down_until = 1.0  # as after a failure long ago: the next call tries Redis again
        return await cache.get(key), await cache.get(key)

    assert run(lambda: with_cache(redis_url, main, retry_after_s=0)) == (BODY, BODY)


def completion(message: dict[str, Any], finish_reason: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-abc",
            "object": "chat.completion",
            "created": 1_790_000_000,
            "model": "gpt-4o-mini",
            "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        }
    ).encode()


def accumulate(frames: list[bytes]) -> Any:
    """Parse SSE frames as an OpenAI client would and rebuild the completion."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    assert frames[-1] == b"data: [DONE]\n\n"
    chunks = []
    for frame in frames[:-1]:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        chunk = ChatCompletionChunk.model_validate_json(frame[len(b"data: ") : -2])
        assert chunk.object == "chat.completion.chunk" and chunk.id == "chatcmpl-abc"
        chunks.append(chunk)
        state.handle_chunk(chunk)
    return state.get_final_completion(), chunks


def test_sse_round_trips_content_and_usage() -> None:
    text = "Yesterday you sold 1,234.50 EUR across 87 orders — up 12% on the week. «ok»"
    final, chunks = accumulate(completion_as_sse(completion({"role": "assistant", "content": text}, "stop"), done=True))
    assert final.choices[0].message.content == text
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and (final.usage.prompt_tokens, final.usage.completion_tokens) == (12, 7)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert final.model == "gpt-4o-mini" and final.system_fingerprint == "fp_1"


def test_sse_round_trips_tool_calls() -> None:
    calls: list[dict[str, Any]] = [
        {"id": "call_1", "type": "function", "function": {"name": "daily_sales", "arguments": '{"day":"2026-11-01"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "top_products", "arguments": '{"limit":3}'}},
    ]
    body = completion({"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls")
    final, _ = accumulate(completion_as_sse(body, done=True))
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls
    ]


def test_sse_options_and_bad_bodies() -> None:
    body = completion({"role": "assistant", "content": "hi"}, "length")
    frames = completion_as_sse(body, include_usage=False)
    assert [json.loads(f[6:])["choices"][0]["finish_reason"] for f in frames] == [None, "length"]
    assert b"[DONE]" not in b"".join(completion_as_sse(body))
    for bad in (b"not json", b"[]", b'{"object":"list","data":[]}'):
        with pytest.raises(ValueError):
            completion_as_sse(bad)
