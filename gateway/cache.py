"""Exact-match response cache in Redis, scoped to a tenant and a merchant.

A key is opted in per virtual key (the service decides when to use the
cache); this module only stores and finds answers. An entry is keyed by the
SHA-256 of a canonical JSON of everything that decides the answer: tenant,
merchant, endpoint, and the request body without the fields that do not
change the output (``stream``, ``stream_options``, ``user``, ``metadata``,
timeouts, ...). Two tenants, or two merchants of one tenant, never share an
entry, because both are inside the hashed material.

What is cached is the non-streamed response body (``chat.completion`` or
embeddings JSON). A streaming request served from the cache gets it as SSE
frames through :func:`completion_as_sse`.

The cache never breaks a request: every Redis error or timeout is a miss (or
a skipped store), counted in :attr:`ResponseCache.stats` and logged once per
outage; after a failure Redis is left alone for ``retry_after_s`` so an
outage costs no latency.

Redis keys: ``<prefix>:<tenant_id>:<sha256 hex>`` with the entry's TTL
(the tenant in clear lets an operator drop one tenant's entries with SCAN).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Final

import redis.asyncio
from redis import exceptions as redis_errors

logger = logging.getLogger(__name__)

#: Request fields that never change the answer, dropped from the key.
IGNORED_FIELDS: Final = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "timeout",
        "request_timeout",
        "extra_headers",
        "extra_query",
        "service_tier",
    }
)


def canonical_request(payload: Mapping[str, Any]) -> str:
    """The request as canonical JSON (sorted keys, no spaces), without :data:`IGNORED_FIELDS`."""
    kept = {k: v for k, v in payload.items() if k not in IGNORED_FIELDS}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class ResponseCache:
    """Cached response bodies in Redis, with a TTL and a size limit.

    Args:
        redis: An asyncio Redis client (its own socket timeouts apply too).
        ttl_s: Lifetime of an entry.
        prefix: Namespace of the Redis keys.
        max_entry_bytes: Bodies larger than this are not stored.
        op_timeout_s: Longest a get or set may take before it counts as a miss.
        retry_after_s: After a Redis failure, calls skip Redis for this long.
    """

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        *,
        ttl_s: int = 3600,
        prefix: str = "gateway:cache",
        max_entry_bytes: int = 1_000_000,
        op_timeout_s: float = 0.25,
        retry_after_s: float = 5.0,
    ) -> None:
        if ttl_s < 1:
            raise ValueError("ttl_s must be at least 1")
        self._redis = redis
        self.ttl_s = ttl_s
        self.prefix = prefix
        self.max_entry_bytes = max_entry_bytes
        self._op_timeout_s = op_timeout_s
        self._retry_after_s = retry_after_s
        self._down_until = 0.0
        self.stats: dict[str, int] = {"hits": 0, "misses": 0, "stores": 0, "oversize": 0, "errors": 0, "skipped": 0}

    def key_for(self, tenant_id: str, merchant_id: str | None, endpoint: str, payload: Mapping[str, Any]) -> str:
        """The Redis key of a request's answer.

        Args:
            tenant_id: The calling key's tenant.
            merchant_id: The merchant the call serves (None when not named).
            endpoint: ``chat`` or ``embeddings``.
            payload: The request body as sent (OpenAI shape).
        """
        material = json.dumps(
            [tenant_id, merchant_id, endpoint, canonical_request(payload)], separators=(",", ":"), ensure_ascii=False
        )
        digest = hashlib.sha256(material.encode()).hexdigest()
        return f"{self.prefix}:{tenant_id}:{digest}"

    async def get(self, key: str) -> bytes | None:
        """The cached body, or None on a miss or any Redis trouble (never raises)."""
        if self._skipping():
            self.stats["misses"] += 1
            return None
        try:
            async with asyncio.timeout(self._op_timeout_s):
                value = await self._redis.get(key)
        except (redis_errors.RedisError, OSError, TimeoutError) as exc:
            self._failed("get", exc)
            self.stats["misses"] += 1
            return None
        self._recovered()
        if value is None:
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        # A client built with decode_responses=True hands back str.
        return value.encode() if isinstance(value, str) else bytes(value)

    async def set(self, key: str, body: bytes) -> None:
        """Store ``body`` under ``key`` for ``ttl_s`` (no-op if too large or Redis is unavailable)."""
        if len(body) > self.max_entry_bytes:
            self.stats["oversize"] += 1
            return
        if self._skipping():
            return
        try:
            async with asyncio.timeout(self._op_timeout_s):
                await self._redis.set(key, body, ex=self.ttl_s)
        except (redis_errors.RedisError, OSError, TimeoutError) as exc:
            self._failed("set", exc)
            return
        self._recovered()
        self.stats["stores"] += 1

    def _skipping(self) -> bool:
        if self._down_until and time.monotonic() < self._down_until:
            self.stats["skipped"] += 1
            return True
        return False

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.stats["errors"] += 1
        if not self._down_until:
            logger.warning("cache.redis_unavailable", extra={"operation": operation, "error": type(exc).__name__})
        self._down_until = time.monotonic() + self._retry_after_s

    def _recovered(self) -> None:
        if self._down_until:
            logger.info("cache.redis_recovered")
            self._down_until = 0.0


def _frame(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def completion_as_sse(body: bytes, *, include_usage: bool = True, done: bool = False) -> list[bytes]:
    """A cached ``chat.completion`` body as the SSE frames of a stream of the same answer.

    Per choice: a first chunk with the role and the whole content (and
    refusal, if any), one chunk per tool call (id, type, name and arguments),
    then a chunk with ``finish_reason``. Then, with ``include_usage``, a last
    chunk with empty ``choices`` and the usage (as OpenAI sends when
    ``stream_options.include_usage`` is set), and with ``done`` the
    ``data: [DONE]`` terminator (off by default: the streaming path adds its own).

    Raises:
        ValueError: ``body`` is not a chat.completion JSON object.
    """
    try:
        completion = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a JSON body: {exc}") from exc
    if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list):
        raise ValueError("not a chat.completion body")
    base: dict[str, Any] = {
        "id": completion.get("id", ""),
        "object": "chat.completion.chunk",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
    }
    if completion.get("system_fingerprint") is not None:
        base["system_fingerprint"] = completion["system_fingerprint"]

    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _frame({**base, "choices": [choice]})

    frames: list[bytes] = []
    for position, choice in enumerate(completion["choices"]):
        index = choice.get("index", position)
        message = choice.get("message") or {}
        content = message.get("content")
        if content is None and not message.get("tool_calls"):
            content = ""
        first: dict[str, Any] = {"role": message.get("role", "assistant"), "content": content}
        if message.get("refusal"):
            first["refusal"] = message["refusal"]
        frames.append(chunk(index, first))
        for call_index, call in enumerate(message.get("tool_calls") or []):
            function = call.get("function") or {}
            delta_call = {
                "index": call_index,
                "id": call.get("id"),
                "type": call.get("type", "function"),
                "function": {"name": function.get("name"), "arguments": function.get("arguments", "")},
            }
            frames.append(chunk(index, {"tool_calls": [delta_call]}))
        frames.append(chunk(index, {}, choice.get("finish_reason") or "stop"))
    if include_usage and completion.get("usage") is not None:
        frames.append(_frame({**base, "choices": [], "usage": completion["usage"]}))
    if done:
        frames.append(b"data: [DONE]\n\n")
    return frames
