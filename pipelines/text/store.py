"""Writing a source's chunks into ``text_chunks`` so that only real changes cost an embedding.

Chunks are keyed by (merchant_id, source_type, source_id, chunk_index). A
chunk whose ``content_sha256`` is unchanged keeps its embedding; a changed one
gets the new content and a NULL embedding (the embed step picks it up);
chunks past the new count are deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, case, delete, func, null, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core.models import TextChunk
from pipelines.text.chunk import content_sha256

CHUNKS: Table = TextChunk.__table__  # type: ignore[assignment]

SourceKey = tuple[str, str, str]  # merchant_id, source_type, source_id


@dataclass(frozen=True)
class SourceChunks:
    """The complete, current chunk list of one source (empty: the source has no text)."""

    merchant_id: str
    source_type: str
    source_id: str
    chunks: Sequence[str]
    language: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> SourceKey:
        """The source's identity in ``text_chunks``."""
        return (self.merchant_id, self.source_type, self.source_id)


@dataclass
class WriteStats:
    """How many chunk rows one write changed."""

    written: int = 0
    unchanged: int = 0
    deleted: int = 0


@dataclass(frozen=True)
class _Existing:
    sha: str
    language: str | None
    meta: dict[str, Any]


def _existing(conn: Connection, keys: Sequence[SourceKey]) -> dict[SourceKey, dict[int, _Existing]]:
    found: dict[SourceKey, dict[int, _Existing]] = {key: {} for key in keys}
    rows = conn.execute(
        select(
            CHUNKS.c.merchant_id,
            CHUNKS.c.source_type,
            CHUNKS.c.source_id,
            CHUNKS.c.chunk_index,
            CHUNKS.c.content_sha256,
            CHUNKS.c.language,
            CHUNKS.c["metadata"],
        ).where(tuple_(CHUNKS.c.merchant_id, CHUNKS.c.source_type, CHUNKS.c.source_id).in_(list(keys)))
    )
    for merchant_id, source_type, source_id, index, sha, language, meta in rows:
        found[(merchant_id, source_type, source_id)][index] = _Existing(sha, language, meta or {})
    return found


def _upsert_statement() -> Any:
    stmt = pg_insert(CHUNKS)
    excluded = stmt.excluded
    same = CHUNKS.c.content_sha256 == excluded.content_sha256
    return stmt.on_conflict_do_update(
        index_elements=[CHUNKS.c.merchant_id, CHUNKS.c.source_type, CHUNKS.c.source_id, CHUNKS.c.chunk_index],
        set_={
            "content": excluded.content,
            "content_sha256": excluded.content_sha256,
            "language": excluded.language,
            "metadata": excluded["metadata"],
            # Decided in SQL as well, so an embedding written after we read the
            # old hash is still dropped when the text really changed.
            "embedding": case((same, CHUNKS.c.embedding), else_=null()),
            "embedding_model": case((same, CHUNKS.c.embedding_model), else_=null()),
            "embedded_at": case((same, CHUNKS.c.embedded_at), else_=null()),
            "updated_at": func.now(),
        },
    )


_DELETE_TAIL = delete(CHUNKS).where(
    and_(
        CHUNKS.c.merchant_id == bindparam("m"),
        CHUNKS.c.source_type == bindparam("t"),
        CHUNKS.c.source_id == bindparam("s"),
        CHUNKS.c.chunk_index >= bindparam("n"),
    )
)


def write_chunks(conn: Connection, sources: Sequence[SourceChunks]) -> WriteStats:
    """Make ``text_chunks`` hold exactly ``sources``' chunks, touching only what changed.

    The caller holds the sources' rows locked (``FOR UPDATE``) and commits.
    """
    stats = WriteStats()
    latest: dict[SourceKey, SourceChunks] = {source.key: source for source in sources}
    if not latest:
        return stats
    existing = _existing(conn, list(latest))
    upserts: list[dict[str, Any]] = []
    deletes: list[dict[str, Any]] = []
    for key, source in latest.items():
        old = existing[key]
        for index, content in enumerate(source.chunks):
            sha = content_sha256(content)
            before = old.get(index)
            if before is not None and before.sha == sha:
                stats.unchanged += 1
                if before.language == source.language and before.meta == source.meta:
                    continue
            else:
                stats.written += 1
            upserts.append(
                {
                    "merchant_id": source.merchant_id,
                    "source_type": source.source_type,
                    "source_id": source.source_id,
                    "chunk_index": index,
                    "content": content,
                    "content_sha256": sha,
                    "language": source.language,
                    "metadata": source.meta,
                }
            )
        stale = sum(1 for index in old if index >= len(source.chunks))
        if stale:
            stats.deleted += stale
            deletes.append({"m": key[0], "t": key[1], "s": key[2], "n": len(source.chunks)})
    if upserts:
        conn.execute(_upsert_statement(), upserts)
    if deletes:
        conn.execute(_DELETE_TAIL, deletes)
    return stats
