"""Settings come from COPILOT_* variables, nested with __, and refuse unsafe defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import Environment, Settings


@pytest.fixture(autouse=True)
def _no_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("COPILOT_DATABASE__URL", "COPILOT_REDIS__URL", "COPILOT_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_use_embedded_services() -> None:
    settings = Settings()
    assert settings.database.url is None and settings.redis.url is None
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.data_dir.is_absolute()


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPILOT_DATABASE__URL", "postgresql://owner:s3cret@db.internal/copilot")
    monkeypatch.setenv("COPILOT_DATABASE__POOL_SIZE", "25")
    monkeypatch.setenv("COPILOT_EMBEDDED__DATA_DIR", "/var/lib/copilot")
    settings = Settings()
    assert settings.database.url is not None
    assert settings.database.url.get_secret_value().endswith("@db.internal/copilot")
    assert settings.database.pool_size == 25
    assert settings.data_dir == Path("/var/lib/copilot")
    # Secrets never appear in reprs (and so never in logs of the object).
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())


def test_invalid_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPILOT_DATABASE__POOL_SIZE", "0")
    with pytest.raises(ValidationError, match="pool_size"):
        Settings()


def test_production_refuses_embedded_and_default_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPILOT_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="embedded services are for development"):
        Settings()
    monkeypatch.setenv("COPILOT_DATABASE__URL", "postgresql://o:p@db/copilot")
    monkeypatch.setenv("COPILOT_REDIS__URL", "redis://cache:6379/0")
    with pytest.raises(ValidationError, match="APP_PASSWORD"):
        Settings()
    monkeypatch.setenv("COPILOT_DATABASE__APP_PASSWORD", "a-real-secret")
    with pytest.raises(ValidationError, match="KEY_PEPPER"):
        Settings()
    monkeypatch.setenv("COPILOT_GATEWAY__KEY_PEPPER", "a-server-pepper")
    assert Settings().environment is Environment.PRODUCTION


def test_only_config_reads_the_environment() -> None:
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("core", "gateway", "orchestrator", "pipelines", "dags", "app", "evals"):
        for path in (root / package).rglob("*.py"):
            if path == root / "core" / "config.py":
                continue
            source = path.read_text()
            # ``os.environ/NAME`` is the routing YAML's secret reference syntax, not a read.
            if re.search(r"os\.environ\b(?!/)", source) or "os.getenv" in source:
                offenders.append(str(path.relative_to(root)))
    assert offenders == []
