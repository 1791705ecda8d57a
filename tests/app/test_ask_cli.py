"""``copilot ask`` through the CLI: JSON answer, facts, citations and trace id; one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from app.cli import app, main
from core.config import DatabaseSettings, get_settings
from core.db import Database

runner = CliRunner()


@pytest.fixture
def ask_env(
    monkeypatch: pytest.MonkeyPatch, metrics_db: Database, db_settings: DatabaseSettings, redis_url: str,
    tmp_path: Path,
) -> Iterator[None]:  # fmt: skip
    monkeypatch.setenv("COPILOT_DATABASE__URL", metrics_db.admin_url.render_as_string(hide_password=False))
    monkeypatch.setenv("COPILOT_DATABASE__APP_USER", db_settings.app_user)
    monkeypatch.setenv("COPILOT_REDIS__URL", redis_url)
    monkeypatch.setenv("COPILOT_LANGFUSE__ENABLED", "false")
    monkeypatch.setenv("COPILOT_GATEWAY__USAGE_SPOOL_DIR", str(tmp_path / "spool"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_ask_prints_answer_facts_citations_and_trace_id_as_json(ask_env: None) -> None:
    result = runner.invoke(
        app, ["ask", "--merchant", "M0001", "--as-of", "2026-01-05", "--json", "How much did I make last week?"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"answer", "facts", "citations", "trace_id"} <= set(data)
    assert len(data["trace_id"]) == 32
    fact = data["facts"][0]
    assert fact["name"] == "net_sales" and fact["period"]["start"] == "2025-12-29"
    assert {"sql", "params", "source"} <= set(fact["query"])
    assert data["answer"]


def test_ask_text_output(ask_env: None) -> None:
    result = runner.invoke(app, ["ask", "-m", "M0001", "--as-of", "2026-01-05", "refunds last month"])
    assert result.exit_code == 0, result.output
    assert "Refunds" in result.stdout and "trace" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["ask", "--merchant", "M9999", "sales last week"], "merchant M9999 not found"),
        (["ask", "--merchant", "M0001", "--as-of", "yesterday", "sales"], "--as-of must be a date"),
        (["ask", "--merchant", "M0001", "   "], "the question is empty"),
    ],
)
def test_errors_are_one_line(ask_env: None, capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("copilot: error:") and needle in err and "\n" not in err


def test_conversations_continue_across_processes_through_the_postgres_checkpointer(
    ask_env: None, metrics_db: Database
) -> None:
    conversation = "3d0c7a52-5b8e-4b61-9a3c-0f6f5a7f2e01"
    base = ["ask", "-m", "M0001", "--as-of", "2026-01-05", "--conversation", conversation, "--json"]
    first = runner.invoke(app, [*base, "How much did I make last week?"])
    second = runner.invoke(app, [*base, "And the week before?"])
    assert first.exit_code == 0 and second.exit_code == 0, (first.output, second.output)
    earlier = json.loads(second.stdout)["facts"][0]
    assert (earlier["name"], earlier["period"]["start"]) == ("net_sales", "2025-12-22")
    # Both turns of both questions are stored in the merchant's conversation.
    with metrics_db.admin_engine.connect() as conn:
        roles = (
            conn.execute(
                text("SELECT role FROM conversation_messages WHERE conversation_id = :c ORDER BY message_id"),
                {"c": conversation},
            )
            .scalars()
            .all()
        )
    assert roles == ["user", "assistant", "user", "assistant"]
