"""What every pipeline step needs, built once at the entrypoint (CLI, DAG task)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine

from core.config import Settings
from core.db import Database
from core.embedded import resolve_services
from gateway.types import EmbeddingClient


@dataclass
class PipelineContext:
    """Settings, the owner database connection and the embedding client.

    Batch steps run as the schema owner (they write every merchant's rows);
    merchant-facing code never does.
    """

    settings: Settings
    database: Database
    embedder: EmbeddingClient | None = None
    embedding_model: str = "copilot-local-embed"
    embedding_batch_size: int = 64
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, *, start_embedded: bool = True) -> PipelineContext:
        """Resolve the database (starting the embedded one if needed)."""
        urls = resolve_services(settings, start=start_embedded, redis=False)
        return cls(settings=settings, database=Database(urls.database_url, settings.database))

    @cached_property
    def engine(self) -> Engine:
        """The owner engine batch steps write with."""
        return self.database.admin_engine

    def get_embedder(self) -> EmbeddingClient:
        """The configured embedding client, else the built-in local embedder."""
        if self.embedder is None:
            from gateway.embedder import LocalEmbedder

            self.embedder = LocalEmbedder()
        return self.embedder

    def close(self) -> None:
        """Release pooled connections."""
        self.database.dispose()
