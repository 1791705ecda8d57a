"""Embedding pending chunks: batches, models, failures, one event loop per run."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from sqlalchemy import Engine, text

from core.config import EMBEDDING_DIM
from gateway.embedder import LocalEmbedder, embed_text
from gateway.types import CallContext, EmbeddingRequest, EmbeddingResponse
from pipelines.context import PipelineContext
from pipelines.text import embed_pending, extract_text

from .conftest import add_merchant, add_reviews, chunks_of


class RecordingEmbedder:
    """The local embedder, recording calls; fails the calls listed in ``fail_calls`` (1-based)."""

    def __init__(self, fail_calls: set[int] | None = None, dim: int = EMBEDDING_DIM) -> None:
        self.inner = LocalEmbedder()
        self.fail_calls = fail_calls or set()
        self.dim = dim
        self.calls: list[tuple[EmbeddingRequest, CallContext | None]] = []
        self.loops: set[int] = set()

    async def embed(self, request: EmbeddingRequest, context: CallContext | None = None) -> EmbeddingResponse:
        self.calls.append((request, context))
        self.loops.add(id(asyncio.get_running_loop()))
        if len(self.calls) in self.fail_calls:
            raise ConnectionError("provider unavailable")
        response = await self.inner.embed(request, context)
        if self.dim != EMBEDDING_DIM:
            response.data = [v[: self.dim] for v in response.data]
        return response


def _seed(ctx: PipelineContext, engine: Engine, merchants: dict[str, int]) -> None:
    for merchant, count in merchants.items():
        add_merchant(engine, merchant)
        add_reviews(engine, merchant, {f"R{i:03d}": f"Review {i} for {merchant}: tasty cake." for i in range(count)})
    extract_text(ctx, None)


def _pending(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM text_chunks WHERE embedding IS NULL")).scalar_one())


def test_embeds_in_batches_with_one_loop_and_merchant_attribution(ctx: PipelineContext, engine: Engine) -> None:
    _seed(ctx, engine, {"M1": 7, "M2": 5})
    embedder = RecordingEmbedder()
    ctx.embedder = embedder
    summary = embed_pending(ctx, batch_size=5)

    assert summary.embedded == 12 and summary.failed_batches == 0
    assert summary.batches == 3
    assert len(embedder.loops) == 1
    assert all(len(req.input) <= 5 for req, _ in embedder.calls)
    # Every call is for one merchant, and says which.
    assert {(ctx_.merchant_id if ctx_ else None) for _, ctx_ in embedder.calls} == {"M1", "M2"}
    for chunk in chunks_of(engine):
        assert chunk.embedding_model == ctx.embedding_model and chunk.embedded_at is not None
        stored = json.loads(chunk.embedding)  # raw SQL: pgvector's text form
        assert max(abs(a - b) for a, b in zip(stored, embed_text(chunk.content), strict=True)) < 1e-6
    assert summary.as_dict()["embedded"] == 12


def test_a_failing_batch_is_reported_and_left_for_the_next_run(ctx: PipelineContext, engine: Engine) -> None:
    _seed(ctx, engine, {"M1": 10})
    ctx.embedder = RecordingEmbedder(fail_calls={2})
    summary = embed_pending(ctx, batch_size=4)
    assert (summary.embedded, summary.failed_batches, summary.failed_chunks) == (6, 1, 4)
    assert "ConnectionError: provider unavailable" in summary.errors[0]
    assert _pending(engine) == 4

    ctx.embedder = RecordingEmbedder()
    assert embed_pending(ctx).embedded == 4
    assert _pending(engine) == 0


def test_repeated_failures_stop_the_run(ctx: PipelineContext, engine: Engine) -> None:
    _seed(ctx, engine, {"M1": 20})
    embedder = RecordingEmbedder(fail_calls=set(range(1, 100)))
    ctx.embedder = embedder
    summary = embed_pending(ctx, batch_size=2)
    assert summary.stopped_early and summary.failed_batches == 3 and len(embedder.calls) == 3
    assert summary.embedded == 0 and _pending(engine) == 20


def test_wrong_dimension_fails_the_batch(ctx: PipelineContext, engine: Engine) -> None:
    _seed(ctx, engine, {"M1": 2})
    ctx.embedder = RecordingEmbedder(dim=16)
    summary = embed_pending(ctx)
    assert summary.failed_batches == 1 and "16-dimensional" in summary.errors[0]
    assert _pending(engine) == 2


def test_a_new_model_re_embeds_everything_once(ctx: PipelineContext, engine: Engine) -> None:
    _seed(ctx, engine, {"M1": 3})
    assert embed_pending(ctx).embedded == 3
    ctx.embedding_model = "another-model"
    assert embed_pending(ctx, limit=2).embedded == 2
    assert embed_pending(ctx).embedded == 1
    assert embed_pending(ctx).embedded == 0
    assert {c.embedding_model for c in chunks_of(engine)} == {"another-model"}


def test_limit_zero_does_nothing(ctx: PipelineContext, engine: Engine) -> None:
    _seed(ctx, engine, {"M1": 2})
    summary: Any = embed_pending(ctx, limit=0)
    assert summary.embedded == 0 and summary.batches == 0


def test_concurrent_runs_embed_each_chunk_once(ctx: PipelineContext, engine: Engine) -> None:
    _seed(ctx, engine, {"M1": 60, "M2": 30})

    class Slow(RecordingEmbedder):
        async def embed(self, request: EmbeddingRequest, context: CallContext | None = None) -> EmbeddingResponse:
            await asyncio.sleep(0.02)
            return await super().embed(request, context)

    embedder = Slow()
    ctx.embedder = embedder
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(embed_pending(ctx, batch_size=7).embedded)) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 90 and _pending(engine) == 0
    assert sum(len(request.input) for request, _ in embedder.calls) == 90


def test_a_chunk_rewritten_while_embedding_is_not_overwritten(ctx: PipelineContext, engine: Engine) -> None:
    _seed(ctx, engine, {"M1": 3})

    class Rewriting(RecordingEmbedder):
        async def embed(self, request: EmbeddingRequest, context: CallContext | None = None) -> EmbeddingResponse:
            # Extraction rewrites R001 meanwhile, without waiting for this batch.
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '500ms'"))
                conn.execute(
                    text(
                        "UPDATE text_chunks SET content = 'rewritten', content_sha256 = 'x', embedding = NULL "
                        "WHERE source_id = 'R001'"
                    )
                )
            return await super().embed(request, context)

    ctx.embedder = Rewriting()
    summary = embed_pending(ctx)
    assert (summary.embedded, summary.changed_meanwhile) == (2, 1)
    ctx.embedder = RecordingEmbedder()
    assert embed_pending(ctx).embedded == 1
    assert [c.content for c in chunks_of(engine) if c.source_id == "R001"] == ["rewritten"]
    assert _pending(engine) == 0
