"""The engine's stream relay on the local upstream: pieces of several frames, one frame per item in process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from gateway.engine import GatewayEngine, RequestMeta
from gateway.router import Router
from gateway.routing import load_routing
from gateway.runtime import build_providers
from tests.gateway.conftest import make_ctx
from tests.gateway.upstream import UpstreamServer

ROUTING = """
models:
  - alias: up-model
    deployments:
      - name: up-main
        provider: openai
        model: gpt-4o-mini
        api_base: {base}
        api_key: upstream-secret
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer(chunks=6, api_key="upstream-secret") as server:
        yield server


def body(*, include_usage: bool) -> dict[str, object]:
    payload: dict[str, object] = {
        "model": "up-model",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
    }
    if include_usage:
        payload["stream_options"] = {"include_usage": True}
    return payload


def test_pieces_and_frames_carry_the_same_stream(upstream: UpstreamServer, tmp_path: Path) -> None:
    config = tmp_path / "routing.yaml"
    config.write_text(ROUTING.format(base=upstream.api_base))
    ctx = make_ctx(scopes=None)

    async def main() -> tuple[list[bytes], list[bytes], list[bytes]]:
        providers = build_providers()
        engine = GatewayEngine(Router(load_routing(config), providers))
        try:
            started = await engine.stream_chat(ctx, body(include_usage=False), RequestMeta())
            writes = [piece async for piece in started.writes] if started.writes is not None else []
            started = await engine.stream_chat(ctx, body(include_usage=False), RequestMeta())
            frames = [frame async for frame in started.frames]
            started = await engine.stream_chat(ctx, body(include_usage=True), RequestMeta())
            with_usage = [frame async for frame in started.frames]
            await engine.drain()
        finally:
            await providers["openai"].aclose()
        return writes, frames, with_usage

    writes, frames, with_usage = asyncio.run(main())
    # The local upstream writes its whole reply at once: fewer pieces than frames.
    assert len(writes) < len(frames)

    def choices(stream: bytes) -> list[object]:
        events = [e for e in stream.split(b"\n\n") if e and e != b"data: [DONE]"]
        return [orjson.loads(e[6:])["choices"] for e in events]

    assert choices(b"".join(writes)) == choices(b"".join(frames))  # same frames (ids aside)
    for frame in frames:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n") and frame.count(b"\n\n") == 1
    decoded = [orjson.loads(f[6:]) for f in frames[:-1]]
    assert frames[-1] == b"data: [DONE]\n\n"
    # The usage chunk the gateway asked for on the caller's behalf is left out ...
    assert all(d.get("choices") for d in decoded)
    assert len(decoded) == 6 + 1  # content chunks and the finish chunk
    # ... and passed on when the caller asked for it.
    usage = [orjson.loads(f[6:]) for f in with_usage[:-1] if b'"usage":{' in f]
    assert len(usage) == 1 and usage[0]["usage"]["completion_tokens"] == 6
