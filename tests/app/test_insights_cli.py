"""``copilot insights run|list`` through Typer's runner, on the labelled dataset and the offline model."""

# The labelled dataset's fixtures are imported to be shared, so test parameters "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from app.cli import app
from core.config import get_settings
from orchestrator.insights.render import minor_exponent
from tests.conftest import TEST_APP_USER
from tests.orchestrator.insights.conftest import Labelled, clean, labelled  # noqa: F401  (fixtures)

ITEM_KEYS = {"id", "kind", "metric", "direction", "period", "impact", "title", "body", "facts"}


@pytest.fixture
def settings_env(
    monkeypatch: pytest.MonkeyPatch, labelled: Labelled, clean: Engine, redis_url: str, tmp_path: Path
) -> Iterator[None]:
    for key in ("COPILOT_ENVIRONMENT", "COPILOT_GATEWAY__URL", "COPILOT_GATEWAY__API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COPILOT_DATABASE__URL", labelled.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("COPILOT_DATABASE__APP_USER", TEST_APP_USER)
    monkeypatch.setenv("COPILOT_REDIS__URL", redis_url)
    monkeypatch.setenv("COPILOT_EMBEDDED__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COPILOT_GATEWAY__USAGE_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("COPILOT_LANGFUSE__ENABLED", "false")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["insights", *args])


def _event_day(labelled: Labelled, kind: str) -> tuple[str, date]:
    ev = next(e for e in labelled.events if e["kind"] == kind)
    return ev["merchant_id"], date.fromisoformat(ev["start_date"])


def test_run_all_then_list_as_json(settings_env: None, labelled: Labelled) -> None:
    merchant, day = _event_day(labelled, "outage")
    result = _invoke("run", "--as-of", day.isoformat(), "--json")
    assert result.exit_code == 0, result.output + result.stderr
    summary = json.loads(result.stdout)
    assert summary["as_of"] == day.isoformat()
    assert 1 <= summary["merchants"] <= len(labelled.merchant_ids)
    assert summary["candidates"] >= summary["stored"] >= 1
    assert summary["narrated"] == {"model": summary["stored"], "repaired": 0, "fallback": 0}

    listed = _invoke("list", "--merchant", merchant, "--json")
    assert listed.exit_code == 0, listed.output + listed.stderr
    items = json.loads(listed.stdout)
    assert items and all(set(item) >= ITEM_KEYS for item in items)
    outage = next(i for i in items if i["kind"] in {"outage", "transactions_anomaly", "sales_anomaly"})
    assert outage["direction"] == "down"
    assert outage["period"]["start"] == day.isoformat() <= outage["period"]["end"]
    for item in items:
        assert item["direction"] in {"up", "down"}
        assert set(item["impact"]) == {"amount", "currency"} and len(item["impact"]["currency"]) == 3
        assert item["title"] and item["body"]
        for fact in item["facts"]:
            assert {"name", "value", "unit", "period"} <= set(fact)
        # Money in major units: the impact fact equals the impact amount.
        impact = next(f for f in item["facts"] if f["name"] == "impact")
        assert impact["value"] == item["impact"]["amount"] and impact["unit"] == item["impact"]["currency"]
    # The same numbers as stored, in minor units there.
    with labelled.engine.connect() as conn:
        minor = conn.execute(
            text("SELECT impact_minor FROM insights WHERE insight_id = CAST(:i AS uuid)"), {"i": outage["id"]}
        ).scalar_one()
    exponent = minor_exponent(outage["impact"]["currency"])
    assert Decimal(str(outage["impact"]["amount"])).scaleb(exponent) == minor

    limited = json.loads(_invoke("list", "--merchant", merchant, "--json", "--limit", "1").stdout)
    assert len(limited) == 1

    again = _invoke("run", "--as-of", day.isoformat(), "--json")
    assert json.loads(again.stdout)["stored"] == 0


def test_run_one_merchant_in_text(settings_env: None, labelled: Labelled) -> None:
    merchant, day = _event_day(labelled, "refund_spike")
    result = _invoke("run", "--as-of", day.isoformat(), "--merchant", merchant)
    assert result.exit_code == 0, result.output + result.stderr
    assert result.stdout.startswith(f"insights {day.isoformat()} (merchant {merchant}): ")
    assert "stored; wording: " in result.stdout and "by the model" in result.stdout
    listed = _invoke("list", "--merchant", merchant)
    assert listed.exit_code == 0
    assert day.isoformat() in listed.stdout
    # Only that merchant was run.
    others = [m for m in labelled.merchant_ids if m != merchant]
    empty = _invoke("list", "--merchant", others[0], "--json")
    assert json.loads(empty.stdout) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("run", "--as-of", "31/10/2026"), "is not a date"),
        (("run", "--as-of", "2026-10-31", "--merchant", "NOPE"), "unknown merchant 'NOPE'"),
        (("list", "--merchant", "NOPE"), "unknown merchant 'NOPE'"),
    ],
)
def test_errors_are_one_line(settings_env: None, args: tuple[str, ...], needle: str) -> None:
    result = _invoke(*args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("copilot: error: ") and needle in lines[0], result.stderr
