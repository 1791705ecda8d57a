"""Nearest text chunks of one merchant (pgvector cosine distance over the HNSW index).

pgvector 0.6 has no iterative index scans: the HNSW scan yields at most
``hnsw.ef_search`` candidates from *all* merchants, and the merchant filter is
applied afterwards, so a merchant whose chunks are not among the nearest
candidates can get fewer than ``k`` rows, or none. The search therefore runs
with a raised ``ef_search`` and, when it still returns fewer than ``k`` rows,
repeats as an exact scan over the merchant's own chunks, which the planner
cannot answer from the HNSW index (a materialised CTE keeps it from trying).

Works for the owner and for the RLS-bound app role alike: the merchant filter
is explicit, and row-level security adds its own on top.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from core.config import EMBEDDING_DIM

MIN_EF_SEARCH = 100
MAX_EF_SEARCH = 1000  # pgvector's upper bound

_COLUMNS = "chunk_id, source_type, source_id, content, metadata, embedding <=> CAST(:q AS vector) AS distance"
_FILTER = "merchant_id = :merchant_id AND embedding IS NOT NULL"
_TYPES = " AND source_type = ANY(:source_types)"

_GET_EF = text("SELECT current_setting('hnsw.ef_search', true)")
_SET_EF = text("SELECT set_config('hnsw.ef_search', :value, true)")


@dataclass(frozen=True)
class ChunkHit:
    """One retrieved chunk and its cosine distance to the query (0 = same direction)."""

    chunk_id: int
    source_type: str
    source_id: str
    content: str
    metadata: dict[str, Any]
    distance: float


def ef_search_for(k: int) -> int:
    """The ``hnsw.ef_search`` used for a top-``k`` query."""
    return max(MIN_EF_SEARCH, min(MAX_EF_SEARCH, 10 * k))


def _ann_query(with_types: bool) -> TextClause:
    # ORDER BY the bare distance expression so the planner can use the HNSW index.
    where = _FILTER + (_TYPES if with_types else "")
    return text(f"SELECT {_COLUMNS} FROM text_chunks WHERE {where} ORDER BY embedding <=> CAST(:q AS vector) LIMIT :k")


def _exact_query(with_types: bool) -> TextClause:
    where = _FILTER + (_TYPES if with_types else "")
    return text(
        f"WITH mine AS MATERIALIZED (SELECT {_COLUMNS} FROM text_chunks WHERE {where}) "
        "SELECT * FROM mine WHERE distance <> 'NaN'::float8 ORDER BY distance, chunk_id LIMIT :k"
    )


def _params(
    merchant_id: str, query_vector: Sequence[float], k: int, source_types: Sequence[str] | None
) -> dict[str, Any] | None:
    """Validated bind parameters, or None when no chunk can match."""
    if k < 1:
        raise ValueError("k must be at least 1")
    if len(query_vector) != EMBEDDING_DIM:
        raise ValueError(f"query vector has {len(query_vector)} dimensions, expected {EMBEDDING_DIM}")
    values = [float(v) for v in query_vector]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("query vector has NaN or infinite values")
    if not any(values):
        return None  # cosine distance to the zero vector is undefined
    if source_types is not None and not source_types:
        return None
    params: dict[str, Any] = {
        "merchant_id": merchant_id,
        "q": "[" + ",".join(repr(v) for v in values) + "]",
        "k": k,
    }
    if source_types is not None:
        params["source_types"] = list(source_types)
    return params


def _hits(rows: Sequence[Any]) -> list[ChunkHit]:
    hits = [
        ChunkHit(
            chunk_id=int(row.chunk_id),
            source_type=row.source_type,
            source_id=row.source_id,
            content=row.content,
            metadata=dict(row.metadata or {}),
            distance=float(row.distance),
        )
        for row in rows
    ]
    # Zero vectors (texts without words) have no direction: never a match.
    hits = [hit for hit in hits if not math.isnan(hit.distance)]
    return sorted(hits, key=lambda hit: (hit.distance, hit.chunk_id))


def nearest_chunks(
    session_or_conn: Session | Connection,
    merchant_id: str,
    query_vector: Sequence[float],
    k: int = 5,
    source_types: Sequence[str] | None = None,
) -> list[ChunkHit]:
    """The merchant's ``k`` chunks nearest to ``query_vector``, nearest first.

    Must run inside a transaction (a Session or a Connection always is): the
    raised ``hnsw.ef_search`` is transaction-local and restored afterwards.

    Args:
        session_or_conn: Owner or app-role session/connection; for the app role
            the transaction's ``app.merchant_id`` must be ``merchant_id``.
        merchant_id: Whose chunks to search.
        query_vector: Embedding of the query, ``EMBEDDING_DIM`` long, from the
            same model as the stored embeddings.
        k: Number of chunks wanted.
        source_types: Only these source types (``review``, ``product``,
            ``attachment``, ``note``); None for all.

    Returns:
        Up to ``k`` hits; fewer only when the merchant has fewer matching chunks.

    Raises:
        ValueError: ``k`` < 1, or a query vector of the wrong size or with
            non-finite values.
    """
    params = _params(merchant_id, query_vector, k, source_types)
    if params is None:
        return []
    with_types = source_types is not None
    previous = session_or_conn.execute(_GET_EF).scalar()
    session_or_conn.execute(_SET_EF, {"value": str(ef_search_for(k))})
    rows = session_or_conn.execute(_ann_query(with_types), params).all()
    session_or_conn.execute(_SET_EF, {"value": previous})
    hits = _hits(rows)
    if len(hits) < k:
        hits = _hits(session_or_conn.execute(_exact_query(with_types), params).all())
    return hits


async def anearest_chunks(
    session_or_conn: AsyncSession | AsyncConnection,
    merchant_id: str,
    query_vector: Sequence[float],
    k: int = 5,
    source_types: Sequence[str] | None = None,
) -> list[ChunkHit]:
    """The async counterpart of :func:`nearest_chunks` (request path)."""
    params = _params(merchant_id, query_vector, k, source_types)
    if params is None:
        return []
    with_types = source_types is not None
    previous = (await session_or_conn.execute(_GET_EF)).scalar()
    await session_or_conn.execute(_SET_EF, {"value": str(ef_search_for(k))})
    rows = (await session_or_conn.execute(_ann_query(with_types), params)).all()
    await session_or_conn.execute(_SET_EF, {"value": previous})
    hits = _hits(rows)
    if len(hits) < k:
        hits = _hits((await session_or_conn.execute(_exact_query(with_types), params)).all())
    return hits
