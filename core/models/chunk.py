"""Text chunks with embeddings for retrieval (pgvector)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.config import EMBEDDING_DIM
from core.db.base import Base
from core.models._types import check_in

CHUNK_SOURCES = ("review", "product", "attachment", "note")


class TextChunk(Base):
    """A piece of merchant text, where it came from, and its embedding.

    ``content_sha256`` lets the embed step skip chunks whose text did not
    change; ``embedding`` is NULL until embedded.
    """

    __tablename__ = "text_chunks"
    __table_args__ = (
        CheckConstraint(check_in("source_type", CHUNK_SOURCES), name="source_type_valid"),
        UniqueConstraint("merchant_id", "source_type", "source_id", "chunk_index"),
        Index(
            "ix_text_chunks_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        Index("ix_text_chunks_merchant_source", "merchant_id", "source_type", "created_at"),
    )

    chunk_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(64))
    source_type: Mapped[str] = mapped_column(String(16))
    source_id: Mapped[str] = mapped_column(String(128))
    chunk_index: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    content_sha256: Mapped[str] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(16))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default="{}")
    embedding: Mapped[list[float] | None] = mapped_column(Vector(EMBEDDING_DIM))
    embedding_model: Mapped[str | None] = mapped_column(String(128))
    embedded_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
