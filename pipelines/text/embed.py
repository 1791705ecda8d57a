"""Embed chunks that have no embedding for the configured model.

Chunks are claimed in ``chunk_id`` order (advisory locks, see
:mod:`pipelines.text.claims`: concurrent runs split the work, and no row lock
is held while the provider answers), embedded through the
:class:`~gateway.types.EmbeddingClient`, and written in a short transaction
per batch, only where the chunk's text is still the one embedded. A batch the
embedder rejects is reported and left NULL for the next run, and the run goes
on with the next batch. Each call is attributed to one merchant (the gateway
meters and limits per merchant), so a batch is split by merchant.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, Engine, Table, or_, select, text

from core.config import EMBEDDING_DIM
from core.models import TextChunk
from gateway.types import CallContext, EmbeddingClient, EmbeddingRequest
from pipelines.context import PipelineContext
from pipelines.text.claims import CHUNK_CLAIMS, release_all, release_quietly, try_claim

logger = logging.getLogger(__name__)

CHUNKS: Table = TextChunk.__table__  # type: ignore[assignment]
MAX_CONSECUTIVE_FAILURES = 3
MAX_REPORTED_ERRORS = 20


class EmbeddingBatchError(Exception):
    """The embedder's answer cannot be stored (wrong count, dimension or values)."""


@dataclass
class EmbedSummary:
    """What one :func:`embed_pending` run did."""

    model: str
    embedded: int = 0
    batches: int = 0
    failed_batches: int = 0
    failed_chunks: int = 0
    changed_meanwhile: int = 0  # rewritten by extraction while being embedded: left for the next run
    stopped_early: bool = False
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable counts (for XCom and the CLI)."""
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


def _vectors(data: list[list[float]], expected: int) -> list[list[float]]:
    if len(data) != expected:
        raise EmbeddingBatchError(f"embedder returned {len(data)} vectors for {expected} texts")
    for vector in data:
        if len(vector) != EMBEDDING_DIM:
            raise EmbeddingBatchError(f"embedder returned a {len(vector)}-dimensional vector, expected {EMBEDDING_DIM}")
        if not all(math.isfinite(v) for v in vector):
            raise EmbeddingBatchError("embedder returned a vector with NaN or infinite values")
    return data


# Lands only where the text is still what was embedded; a chunk rewritten
# meanwhile keeps its NULL embedding for the next run.
_WRITE = text(
    "UPDATE text_chunks AS t SET embedding = CAST(v.vec AS vector), embedding_model = :model, embedded_at = now() "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:shas AS text[]), CAST(:vecs AS text[])) AS v(id, sha, vec) "
    "WHERE t.chunk_id = v.id AND t.content_sha256 = v.sha "
    "RETURNING t.chunk_id"
)


def _needs_embedding(model: str) -> Any:
    return or_(CHUNKS.c.embedding.is_(None), CHUNKS.c.embedding_model.is_distinct_from(model))


def _claim(claims: Connection, model: str, cursor: int, size: int) -> tuple[int | None, int, list[Any]]:
    """Claim chunks to embed among the next ``size`` after ``cursor`` (see :mod:`pipelines.text.claims`)."""
    candidates = list(
        claims.execute(
            select(CHUNKS.c.chunk_id)
            .where(CHUNKS.c.chunk_id > cursor, _needs_embedding(model))
            .order_by(CHUNKS.c.chunk_id)
            .limit(size)
        ).scalars()
    )
    if not candidates:
        claims.commit()
        return None, 0, []
    claimed = try_claim(claims, CHUNK_CLAIMS, [str(chunk_id) for chunk_id in candidates])
    rows: list[Any] = []
    if claimed:
        rows = list(
            claims.execute(
                select(CHUNKS.c.chunk_id, CHUNKS.c.merchant_id, CHUNKS.c.content, CHUNKS.c.content_sha256)
                .where(CHUNKS.c.chunk_id.in_([int(k) for k in claimed]), _needs_embedding(model))
                .order_by(CHUNKS.c.chunk_id)
            )
        )
    claims.commit()
    return candidates[-1], len(candidates), rows


async def _embed_group(embedder: EmbeddingClient, model: str, merchant_id: str, rows: list[Any]) -> list[list[float]]:
    response = await embedder.embed(
        EmbeddingRequest(model=model, input=[row.content for row in rows]),
        CallContext(merchant_id=merchant_id, trace_name="pipelines.text.embed", tags=["batch", "embed"]),
    )
    return _vectors(response.data, len(rows))


async def _embed_batch(embedder: EmbeddingClient, model: str, rows: list[Any]) -> dict[str, Any]:
    ids: list[int] = []
    shas: list[str] = []
    vecs: list[str] = []
    for merchant_id, group in groupby(rows, key=lambda row: row.merchant_id):
        members = list(group)
        vectors = await _embed_group(embedder, model, merchant_id, members)
        for row, vector in zip(members, vectors, strict=True):
            ids.append(row.chunk_id)
            shas.append(row.content_sha256)
            vecs.append("[" + ",".join(repr(float(v)) for v in vector) + "]")
    # The model recorded is the one asked for: providers may answer with a
    # dated alias, which would make every chunk look stale on the next run.
    return {"ids": ids, "shas": shas, "vecs": vecs, "model": model}


async def _embed_all(
    engine: Engine,
    embedder: EmbeddingClient,
    model: str,
    batch_size: int,
    limit: int | None,
    summary: EmbedSummary,
) -> None:
    cursor = 0
    taken = 0
    consecutive_failures = 0
    with engine.connect() as claims:
        try:
            while limit is None or taken < limit:
                size = batch_size if limit is None else min(batch_size, limit - taken)
                next_cursor, looked_at, rows = _claim(claims, model, cursor, size)
                if next_cursor is None:
                    return
                cursor = next_cursor
                taken += looked_at
                if rows:
                    summary.batches += 1
                    try:
                        params = await _embed_batch(embedder, model, rows)
                    except Exception as exc:  # provider and transport errors have no common base
                        summary.failed_batches += 1
                        summary.failed_chunks += len(rows)
                        first, last = rows[0].chunk_id, rows[-1].chunk_id
                        message = f"chunks {first}..{last} ({len(rows)}): {type(exc).__name__}: {exc}"[:500]
                        logger.warning("text.embed_batch_failed", extra={"error": message})
                        if len(summary.errors) < MAX_REPORTED_ERRORS:
                            summary.errors.append(message)
                        consecutive_failures += 1
                        if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                            summary.stopped_early = True
                            return
                    else:
                        consecutive_failures = 0
                        with engine.begin() as conn:
                            written = conn.execute(_WRITE, params).all()
                        summary.embedded += len(written)
                        summary.changed_meanwhile += len(rows) - len(written)
                release_all(claims)
                if looked_at < size:
                    return
        finally:
            release_quietly(claims)


def embed_pending(ctx: PipelineContext, *, batch_size: int | None = None, limit: int | None = None) -> EmbedSummary:
    """Embed every chunk whose embedding is missing or from another model.

    Args:
        ctx: Pipeline context: owner engine, embedder and model name.
        batch_size: Chunks per transaction (default ``ctx.embedding_batch_size``).
        limit: At most this many chunks in this run (None: all).

    Returns:
        Counts of embedded chunks and failed batches. After
        ``MAX_CONSECUTIVE_FAILURES`` failed batches in a row the run stops
        (``stopped_early``): the embedder is most likely down.
    """
    size = batch_size or ctx.embedding_batch_size
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")
    summary = EmbedSummary(model=ctx.embedding_model)
    started = time.perf_counter()

    async def run() -> None:
        try:
            await _embed_all(ctx.engine, ctx.get_embedder(), ctx.embedding_model, size, limit, summary)
        finally:
            await ctx.release_embedder()

    # One event loop for the whole run: a remote client's connections live and
    # are closed in it; a later run opens its own.
    asyncio.run(run())
    summary.seconds = time.perf_counter() - started
    logger.info("text.embedded", extra={k: v for k, v in summary.as_dict().items() if k != "errors"})
    return summary
