"""What every pipeline step needs, built once at the entrypoint (CLI, DAG task)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine

from core.config import Settings
from core.db import Database
from core.embedded import resolve_services
from core.errors import ConfigurationError
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
    _owns_embedder: bool = field(default=False, repr=False)

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
        """The embedding client: the remote gateway when one is configured, else the built-in embedder.

        With ``COPILOT_GATEWAY__URL`` (and ``__API_KEY``) every embedding call goes
        through the LLM gateway (keys, limits, metering, tracing, routing to the
        configured embedding model). Without it, batch jobs embed in process
        with the same local embedder the gateway's ``copilot-local-embed``
        alias serves, so vectors are identical either way.

        Raises:
            ConfigurationError: A gateway URL without an API key.
        """
        if self.embedder is None:
            gateway = self.settings.gateway
            if gateway.url:
                if gateway.api_key is None:
                    raise ConfigurationError("COPILOT_GATEWAY__URL is set but COPILOT_GATEWAY__API_KEY is not")
                from gateway.http_client import HttpGateway

                self.embedder = HttpGateway(gateway.url, gateway.api_key)
                self._owns_embedder = True
            else:
                from gateway.embedder import LocalEmbedder

                self.embedder = LocalEmbedder()
        return self.embedder

    async def release_embedder(self) -> None:
        """Close an embedding client this context opened (its connections belong to the running event loop).

        The next :meth:`get_embedder` opens a new one. A client passed in by
        the caller is left alone.
        """
        if self._owns_embedder and self.embedder is not None:
            aclose = getattr(self.embedder, "aclose", None)
            self.embedder, self._owns_embedder = None, False
            if aclose is not None:
                await aclose()

    def close(self) -> None:
        """Release pooled connections."""
        self.database.dispose()
