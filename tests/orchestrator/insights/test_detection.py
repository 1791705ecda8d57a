"""Detectors and the whole run on generated data with labelled events (real PostgreSQL)."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

from orchestrator.insights import detect_all, detect_for_merchant
from orchestrator.insights.data import load_merchant_data
from orchestrator.insights.detectors import detect
from orchestrator.insights.selection import DEFAULT_SELECTION
from tests.conftest import TEST_APP_USER
from tests.orchestrator.insights.conftest import Labelled

BUDGET = DEFAULT_SELECTION.budget_per_day

# Which insight kinds report each injected event kind.
MATCHES: dict[str, set[str]] = {
    "outage": {"outage", "transactions_anomaly", "sales_anomaly", "payment_failures"},
    "demand_surge": {"transactions_anomaly", "sales_anomaly", "new_best_hour"},
    "refund_spike": {"refund_spike"},
    "payment_failures": {"payment_failures"},
    "product_stops_selling": {"stock_out"},
    "rating_drop": {"review_shift"},
}


def _day(s: str) -> date:
    return date.fromisoformat(s)


def _matches(ev: dict[str, Any], kind: str, direction: str, start: date, end: date, subject: str | None) -> bool:
    if kind not in MATCHES[ev["kind"]]:
        return False
    if ev["kind"] == "product_stops_selling":
        return subject == ev["product_id"] and start == _day(ev["start_date"])
    expected_direction = "down" if kind in {"outage", "stock_out"} else ev["direction"]
    if ev["kind"] == "outage" and kind == "payment_failures":
        expected_direction = "up"
    return direction == expected_direction and start <= _day(ev["end_date"]) and _day(ev["start_date"]) <= end


def test_every_labelled_event_is_a_candidate_on_its_first_day(labelled: Labelled) -> None:
    missing = []
    with labelled.engine.connect() as conn:
        for ev in labelled.events:
            start, end = _day(ev["start_date"]), _day(ev["end_date"])
            # A rating drop needs a few reviews: any day of the event will do.
            days = (
                [start + timedelta(days=k) for k in range((end - start).days + 1)]
                if ev["kind"] == "rating_drop"
                else [start]
            )
            found = False
            for d in days:
                md = load_merchant_data(conn, [ev["merchant_id"]], d)[ev["merchant_id"]]
                if any(_matches(ev, c.kind, c.direction, c.period_start, c.period_end, c.subject) for c in detect(md)):
                    found = True
                    break
            if not found:
                missing.append(ev["event_id"])
    assert not missing


@pytest.fixture(scope="module")
def daily_run(labelled: Labelled) -> list[dict[str, Any]]:
    """detect_all day after day over the range, as the daily DAG would (cooldown reads earlier days)."""
    with labelled.engine.begin() as conn:
        conn.execute(text("TRUNCATE insights, notification_outbox, notifications"))
    d = labelled.first_day + timedelta(days=7)
    while d <= labelled.last_day:
        detect_all(labelled.engine, d)
        d += timedelta(days=1)
    with labelled.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM insights ORDER BY as_of, merchant_id"))]
        outbox = conn.execute(text("SELECT count(*) FROM notification_outbox WHERE event_type = 'insight.created'"))
        assert outbox.scalar_one() == len(rows)
    return rows


def _stored_matches(ev: dict[str, Any], row: dict[str, Any]) -> bool:
    candidates = [(row["kind"], row["direction"], row["evidence"].get("subject"))]
    candidates += [(r["kind"], r["direction"], r.get("subject")) for r in row["evidence"]["related"]]
    return row["merchant_id"] == ev["merchant_id"] and any(
        _matches(ev, k, dr, row["period_start"], row["period_end"], s) for k, dr, s in candidates
    )


def test_the_daily_run_reports_every_labelled_event(labelled: Labelled, daily_run: list[dict[str, Any]]) -> None:
    missing = [ev["event_id"] for ev in labelled.events if not any(_stored_matches(ev, r) for r in daily_run)]
    assert not missing
    # Each is reported on a day of the event (stock-outs: their first day).
    for ev in labelled.events:
        first = min(r["as_of"] for r in daily_run if _stored_matches(ev, r))
        assert _day(ev["start_date"]) <= first <= _day(ev["end_date"]), ev


def test_budget_holds_for_every_merchant_and_day(labelled: Labelled, daily_run: list[dict[str, Any]]) -> None:
    per_day = Counter((r["merchant_id"], r["as_of"]) for r in daily_run)
    assert max(per_day.values()) <= BUDGET
    quiet = [r for r in daily_run if r["merchant_id"] in labelled.quiet]
    # Quiet merchants (no events) stay within the budget and get little: at most a couple of findings in 7 weeks.
    assert len(quiet) <= 2, [(r["merchant_id"], r["as_of"], r["kind"]) for r in quiet]


def test_cooldown_reports_a_multi_day_event_once(labelled: Labelled, daily_run: list[dict[str, Any]]) -> None:
    for ev in labelled.events:
        if ev["kind"] in {"demand_surge", "product_stops_selling", "rating_drop"}:
            hits = [r for r in daily_run if _stored_matches(ev, r)]
            assert len(hits) == 1, (ev["event_id"], [(r["as_of"], r["kind"]) for r in hits])


def test_one_root_cause_one_insight(labelled: Labelled, daily_run: list[dict[str, Any]]) -> None:
    # A full-day outage moves transactions, net sales and failed payments: one insight, the rest related.
    for ev in labelled.events:
        if ev["kind"] == "outage":
            day = _day(ev["start_date"])
            rows = [r for r in daily_run if r["merchant_id"] == ev["merchant_id"] and r["as_of"] == day]
            volume = [r for r in rows if r["kind"] in MATCHES["outage"]]
            assert len(volume) == 1, rows
            assert volume[0]["direction"] == "down" or volume[0]["kind"] == "payment_failures"


def test_facts_carry_the_numbers(daily_run: list[dict[str, Any]]) -> None:
    assert daily_run
    for r in daily_run:
        facts = {f["name"]: f for f in r["facts"]}
        assert facts["impact"]["value"] == r["impact_minor"]
        for f in r["facts"]:
            assert {"name", "value", "unit", "period", "source"} <= set(f)
            assert f["period"]["start"] <= f["period"]["end"]
        assert r["evidence"]["p_value"] < 1e-3
        assert 0.0 <= r["confidence"] <= 1.0
        assert r["title"] and r["body"]


def test_rerunning_a_day_writes_nothing_twice(labelled: Labelled, clean: Engine) -> None:
    day = _day(next(ev for ev in labelled.events if ev["kind"] == "outage")["start_date"])
    first = detect_all(clean, day)
    second = detect_all(clean, day)
    assert first.stored > 0
    assert second.stored == 0
    with clean.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM insights")).scalar_one() == first.stored
        assert conn.execute(text("SELECT count(*) FROM notification_outbox")).scalar_one() == first.stored
        keys = conn.execute(text("SELECT idempotency_key FROM notification_outbox")).scalars().all()
    assert all(k.startswith("insight.created:") for k in keys)


def test_detection_for_one_merchant_reads_only_that_merchant(labelled: Labelled, clean: Engine) -> None:
    ev = next(ev for ev in labelled.events if ev["kind"] == "demand_surge")
    merchant, day = ev["merchant_id"], _day(ev["start_date"])
    statements: list[Any] = []

    def spy(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        statements.append(params)

    with clean.connect() as conn:
        owner = detect_for_merchant(Session(bind=conn), merchant, day)
        conn.rollback()
        # The same run as the app role under row-level security, scoped to the merchant.
        tx = conn.begin()
        conn.execute(text(f"SET LOCAL ROLE {TEST_APP_USER}"))
        conn.execute(text("SELECT set_config('app.merchant_id', :m, true)"), {"m": merchant})
        event.listen(conn, "before_cursor_execute", spy)
        try:
            scoped = detect_for_merchant(Session(bind=conn), merchant, day)
        finally:
            event.remove(conn, "before_cursor_execute", spy)
            tx.rollback()
    assert [i.dedup_key for i in scoped] == [i.dedup_key for i in owner]
    assert owner and all(i.merchant_id == merchant for i in owner)
    ids = [p["ids"] for p in statements if isinstance(p, dict) and "ids" in p]
    assert ids and all(list(x) == [merchant] for x in ids)


def test_detect_all_covers_merchants_with_data_or_the_given_ones(labelled: Labelled) -> None:
    day = labelled.last_day
    everyone = detect_all(labelled.engine, day, store=False)
    one = detect_all(labelled.engine, day, [labelled.merchant_ids[0], "NOPE"], store=False)
    assert everyone.merchants == len(labelled.merchant_ids)
    assert one.merchants == 1
    assert everyone.stored == 0
