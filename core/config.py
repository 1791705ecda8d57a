"""Typed settings for every process: one nested object, environment prefix ``COPILOT_``.

This is the only module that reads the environment. Entrypoints call
:func:`get_settings` once and pass the object (or parts of it) down.

Nested values use ``__``: ``COPILOT_DATABASE__URL``, ``COPILOT_REDIS__URL``,
``COPILOT_EMBEDDED__DATA_DIR``.
"""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The dimension is part of the schema (a pgvector column type), so it is a
# constant rather than a setting: changing it needs a migration.
EMBEDDING_DIM = 384

_DEV_APP_PASSWORD = "copilot-dev-only"  # noqa: S105 (refused in production)


class Environment(StrEnum):
    """Where the process runs; production refuses development defaults."""

    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class DatabaseSettings(BaseModel):
    """PostgreSQL connection settings.

    ``url`` is the owner/administrative connection (migrations, batch ETL). The
    merchant-facing processes connect as ``app_user``, a login role that is a
    member of the ``copilot_app`` group: neither the tables' owner nor
    BYPASSRLS, so row-level security applies to it. Leave ``url`` unset to use
    the embedded server.
    """

    url: SecretStr | None = None
    app_url: SecretStr | None = Field(
        default=None,
        description="Explicit URL for the app role; derived from `url` when unset.",
    )
    app_user: str = "copilot_api"
    app_password: SecretStr = SecretStr(_DEV_APP_PASSWORD)
    pool_size: int = Field(default=10, ge=1, le=200)
    max_overflow: int = Field(default=10, ge=0, le=200)
    connect_timeout_s: int = Field(default=5, ge=1, le=120)
    statement_timeout_ms: int = Field(default=30_000, ge=0)
    echo: bool = False


class RedisSettings(BaseModel):
    """Redis connection settings; leave ``url`` unset to use the embedded server."""

    url: SecretStr | None = None
    socket_timeout_s: float = Field(default=5.0, gt=0)


class EmbeddedSettings(BaseModel):
    """Where the embedded PostgreSQL and Redis keep their data and sockets."""

    data_dir: Path = Path(".copilot")
    database: str = "copilot"


class PipelineSettings(BaseModel):
    """Batch ETL settings."""

    landing_root: str = Field(default="data/landing", description="A folder or s3://bucket/prefix.")
    max_quarantine_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    embedding_batch_size: int = Field(default=64, ge=1, le=2048)


class LangfuseSettings(BaseModel):
    """Where traces go (Langfuse's OpenTelemetry endpoint). Off unless keys are set."""

    enabled: bool = True
    host: str = "http://127.0.0.1:3000"
    public_key: str | None = None
    secret_key: SecretStr | None = None
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    export_timeout_s: float = Field(default=5.0, gt=0)
    max_queue_size: int = Field(default=10_000, ge=1)

    @property
    def active(self) -> bool:
        """True when tracing is enabled and has credentials."""
        return self.enabled and self.public_key is not None and self.secret_key is not None


class GatewaySettings(BaseModel):
    """The LLM gateway service and its clients.

    ``config_file`` is the routing YAML (model aliases → deployments); without
    it the built-in offline model and local embedder serve every call.
    ``url``/``api_key`` are what clients (orchestrator, pipelines, evals) use to
    reach a remote gateway; without ``url`` they call it in-process.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=4000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    config_file: Path | None = None
    key_pepper: SecretStr | None = None
    admin_token: SecretStr | None = Field(
        default=None, description="Bootstrap secret allowed to create the first admin key."
    )
    url: str | None = None
    api_key: SecretStr | None = None
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    max_tokens_cap: int = Field(default=16_384, ge=1)
    cache_ttl_s: int = Field(default=3600, ge=1)
    usage_spool_dir: Path = Path(".copilot/usage-spool")
    usage_batch_size: int = Field(default=500, ge=1)
    usage_flush_interval_s: float = Field(default=1.0, gt=0)


class OrchestratorSettings(BaseModel):
    """The co-pilot's graphs: which models they use and what one turn may spend."""

    chat_model: str = Field(default="copilot-offline", description="Gateway model alias for planning and wording.")
    embedding_model: str = Field(default="copilot-local-embed", description="Alias the pipelines embedded with.")
    max_tool_calls: int = Field(default=4, ge=1, le=16, description="Tool calls one turn may run.")
    max_turn_tokens: int = Field(default=12_000, ge=500, description="Prompt + completion tokens one turn may use.")
    max_output_tokens: int = Field(default=800, ge=50, le=8_000)
    retrieval_k: int = Field(default=4, ge=1, le=20)
    retrieval_max_distance: float = Field(
        default=0.8, gt=0, le=2, description="Cosine distance above which a chunk is not relevant."
    )
    history_turns: int = Field(default=4, ge=0, le=20, description="Earlier turns given to the model.")


class Settings(BaseSettings):
    """Root settings object shared by every entrypoint."""

    model_config = SettingsConfigDict(
        env_prefix="COPILOT_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    environment: Environment = Environment.DEVELOPMENT
    log_level: str = "INFO"
    log_json: bool = False
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    embedded: EmbeddedSettings = EmbeddedSettings()
    pipelines: PipelineSettings = PipelineSettings()
    gateway: GatewaySettings = GatewaySettings()
    langfuse: LangfuseSettings = LangfuseSettings()
    orchestrator: OrchestratorSettings = OrchestratorSettings()

    @model_validator(mode="after")
    def _refuse_dev_defaults_in_production(self) -> Settings:
        if self.environment is Environment.PRODUCTION:
            if self.database.url is None or self.redis.url is None:
                raise ValueError(
                    "production needs COPILOT_DATABASE__URL and COPILOT_REDIS__URL; "
                    "embedded services are for development"
                )
            if self.database.app_url is None and self.database.app_password.get_secret_value() == _DEV_APP_PASSWORD:
                raise ValueError(
                    "COPILOT_DATABASE__APP_PASSWORD must be set in production (the development default is refused)"
                )
            if self.gateway.key_pepper is None:
                raise ValueError("COPILOT_GATEWAY__KEY_PEPPER must be set in production (API key hashes use it)")
        return self

    @property
    def data_dir(self) -> Path:
        """The embedded data folder as an absolute path."""
        return self.embedded.data_dir.expanduser().resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read settings from the environment (and ``.env``) once per process."""
    return Settings()


def process_environment() -> dict[str, str]:
    """A copy of this process's environment, for starting child processes."""
    return dict(os.environ)


def environment_variable(name: str) -> str | None:
    """One variable that a third-party library defines by name (not a project setting)."""
    return os.environ.get(name)


def export_to_children(name: str, value: str, *, overwrite: bool = True) -> None:
    """Set a variable that child processes (server workers) or a library read at start."""
    if overwrite or name not in os.environ:
        os.environ[name] = value
