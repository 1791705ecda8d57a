"""The refresh as a batch job: corrections, idempotency, concurrency, atomicity, repair."""

from __future__ import annotations

import json
import threading
import time
from datetime import date, timedelta

import pytest
from sqlalchemy import Engine, text

from core.config import DatabaseSettings, Settings
from core.db import Database, app_url
from core.errors import ConfigurationError
from pipelines.aggregates import AggregateSummary, _sql, refresh_pending, refresh_range
from pipelines.context import PipelineContext
from tests.oracle import Expected, diff
from tests.pipelines.aggregates.scenario import QUEUE_DAY, Scenario

JUNE_1 = date(2026, 6, 1)


def _month(s: Scenario, merchants: int = 3, days: int = 30) -> set[tuple[str, date]]:
    """A few merchants in different zones with a handful of transactions a day."""
    zones = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Tokyo"]
    for n in range(merchants):
        m = s.merchant(f"M{n + 1}", zones[n % len(zones)], "JPY" if zones[n % len(zones)] == "Asia/Tokyo" else "EUR")
        for d in range(days):
            day = JUNE_1 + timedelta(days=d)
            for k in range(1 + (d + n) % 4):
                paid = s.txn(m, f"{day}T{8 + 3 * k:02d}:15:00+00:00", 500 + 100 * k + d, tip=10 * k,
                             customer=f"C{(d * k) % 5}", method=("CARD", "CASH", "QR")[k % 3],
                             items=[(f"P{k}", 1 + k % 2, 250)])  # fmt: skip
            if d % 7 == 3:
                s.txn(m, f"{day}T23:30:00+00:00", 200, type="REFUND", refund_of=paid.transaction_id)
            if d % 5 == 1:
                s.txn(m, f"{day}T21:00:00+00:00", 300, status="FAILED")
    return s.commit()


def _snapshot(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every metric row including computed_at, for exact before/after comparisons."""
    out = {}
    with engine.connect() as conn:
        for table in ("daily_metrics", "hourly_metrics", "daily_product_metrics"):
            rows = conn.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2, 3")).all()
            out[table] = [tuple(r) for r in rows]
    return out


def test_a_corrected_transaction_moves_to_another_day(ctx: PipelineContext, scenario: Scenario) -> None:
    m = scenario.merchant("M1", "Europe/Berlin")
    stays = scenario.txn(m, "2026-06-01T10:00:00+02:00", 1000, items=[("latte", 1, 1000)])
    moves = scenario.txn(m, "2026-06-01T23:30:00+02:00", 700, customer="C1", items=[("cake", 1, 700)])
    scenario.commit()
    refresh_pending(ctx)
    assert scenario.actual().daily[(m, JUNE_1)]["transactions"] == 2

    # Re-delivered with a corrected time on the next local day (both days queued).
    scenario.update(moves, occurred_at=moves.occurred_at + timedelta(hours=1))
    assert scenario.queued() == {(m, JUNE_1), (m, date(2026, 6, 2))}
    summary = refresh_pending(ctx)

    actual = scenario.actual()
    assert summary.merchant_days == 2
    assert actual.daily[(m, JUNE_1)]["transactions"] == 1
    assert actual.daily[(m, JUNE_1)]["gross_sales_minor"] == stays.amount_minor
    assert actual.daily[(m, date(2026, 6, 2))]["gross_sales_minor"] == 700
    assert set(actual.products) == {(m, JUNE_1, "latte"), (m, date(2026, 6, 2), "cake")}
    assert set(actual.hourly) == {(m, JUNE_1, 10), (m, date(2026, 6, 2), 0)}
    assert diff(scenario.expected(), actual) == []
    assert scenario.queued() == set()


def test_a_day_whose_last_transaction_went_away_loses_its_rows(ctx: PipelineContext, scenario: Scenario) -> None:
    m = scenario.merchant("M1", "Europe/Berlin")
    only = scenario.txn(m, "2026-06-01T10:00:00+02:00", 1000, items=[("latte", 1, 1000)])
    scenario.commit()
    refresh_pending(ctx)
    assert scenario.actual().daily

    scenario.delete(only)
    summary = refresh_pending(ctx)

    assert summary.deleted_rows == 3  # the day, its one hour, its one product
    assert scenario.actual() == Expected()


def test_a_voided_payment_changes_only_what_it_must(ctx: PipelineContext, scenario: Scenario, engine: Engine) -> None:
    m = scenario.merchant("M1", "Europe/Berlin")
    scenario.txn(m, "2026-06-01T10:00:00+02:00", 1000, items=[("latte", 1, 1000)])
    voided = scenario.txn(m, "2026-06-01T15:00:00+02:00", 700, items=[("cake", 1, 700)])
    scenario.commit()
    refresh_pending(ctx)
    before = _snapshot(engine)

    scenario.update(voided, status="CANCELLED")
    summary = refresh_pending(ctx)

    after = _snapshot(engine)
    assert (summary.daily_rows, summary.hourly_rows, summary.product_rows) == (1, 1, 0)
    assert summary.deleted_rows == 3  # old day row, old 15:00 row, the cake
    # The untouched hour and product keep their rows as they were (same computed_at).
    assert after["hourly_metrics"][0] == before["hourly_metrics"][0]
    assert after["daily_product_metrics"] == [before["daily_product_metrics"][1]]
    assert diff(scenario.expected(), scenario.actual()) == []


def test_refreshing_again_rewrites_nothing(ctx: PipelineContext, scenario: Scenario, engine: Engine) -> None:
    days = _month(scenario)
    first = refresh_pending(ctx)
    before = _snapshot(engine)

    scenario.queue(days)  # e.g. a partition loaded again
    second = refresh_pending(ctx)

    assert first.merchant_days == second.merchant_days == len(days)
    assert (second.daily_rows, second.hourly_rows, second.product_rows, second.deleted_rows) == (0, 0, 0, 0)
    assert _snapshot(engine) == before  # identical rows, computed_at included
    assert diff(scenario.expected(), scenario.actual()) == []


def test_two_concurrent_refreshes_compute_each_day_once(ctx: PipelineContext, scenario: Scenario) -> None:
    days = _month(scenario, merchants=4, days=30)
    start = threading.Barrier(2)
    results: list[AggregateSummary] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait()
            results.append(refresh_pending(ctx, batch_size=7, workers=1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert errors == []
    assert sum(r.merchant_days for r in results) == len(days)
    assert sum(r.daily_rows for r in results) == len(days)
    assert scenario.queued() == set()
    assert diff(scenario.expected(), scenario.actual()) == []


def test_parallel_workers_of_one_call(ctx: PipelineContext, scenario: Scenario) -> None:
    days = _month(scenario)

    summary = refresh_pending(ctx, batch_size=5, workers=3)

    assert summary.merchant_days == len(days)
    assert summary.batches == -(-len(days) // 5)
    assert scenario.queued() == set()
    assert diff(scenario.expected(), scenario.actual()) == []


def test_a_failing_batch_leaves_its_work_queued_and_the_metrics_untouched(
    ctx: PipelineContext, scenario: Scenario, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = scenario.merchant("M1", "Europe/Berlin")
    scenario.txn(m, "2026-06-01T10:00:00+02:00", 1000)
    scenario.commit()
    refresh_pending(ctx)
    before = _snapshot(engine)
    scenario.txn(m, "2026-06-01T11:00:00+02:00", 500)
    scenario.txn(m, "2026-06-02T11:00:00+02:00", 500)
    queued = scenario.commit()

    # Crash after the stale rows were deleted, before the new ones are written.
    monkeypatch.setattr(_sql, "INSERT_MISSING", text("SELECT 1 / 0"))
    with pytest.raises(Exception, match="division by zero"):
        refresh_pending(ctx)

    assert scenario.queued() == queued
    assert _snapshot(engine) == before
    monkeypatch.undo()
    assert refresh_pending(ctx).merchant_days == 2
    assert diff(scenario.expected(), scenario.actual()) == []


def test_a_day_queued_again_while_claimed_is_refreshed_again(
    ctx: PipelineContext, scenario: Scenario, engine: Engine
) -> None:
    m = scenario.merchant("M1", "Europe/Berlin")
    scenario.txn(m, "2026-06-01T10:00:00+02:00", 1000)
    scenario.commit()
    done = threading.Event()

    with engine.connect() as worker:
        claim = worker.begin()
        assert worker.execute(_sql.CLAIM, {"limit": 10}).all() == [(m, JUNE_1)]

        def loader() -> None:
            # A loader changing that day while the worker holds it (see the writer protocol).
            with engine.begin() as conn:
                conn.execute(QUEUE_DAY, {"merchant_id": m, "day": JUNE_1})
            done.set()

        thread = threading.Thread(target=loader)
        thread.start()
        time.sleep(0.3)
        assert not done.is_set(), "the upsert must wait for the worker's transaction"
        claim.commit()
        thread.join(timeout=10)

    assert done.is_set()
    assert scenario.queued() == {(m, JUNE_1)}


def test_a_day_queued_by_an_open_writer_is_not_claimed(scenario: Scenario, engine: Engine) -> None:
    m = scenario.merchant("M1", "Europe/Berlin")
    scenario.queue([(m, JUNE_1)])  # queued earlier, not yet refreshed

    with engine.connect() as writer, engine.connect() as worker:
        writing = writer.begin()
        writer.execute(QUEUE_DAY, {"merchant_id": m, "day": JUNE_1})  # with a change not yet committed
        with worker.begin():
            # With ON CONFLICT DO NOTHING the worker would take the day now and miss the change.
            assert worker.execute(_sql.CLAIM, {"limit": 10}).all() == []
        writing.commit()

    assert scenario.queued() == {(m, JUNE_1)}


def test_refresh_range_repairs_and_backfills(ctx: PipelineContext, scenario: Scenario, engine: Engine) -> None:
    _month(scenario, merchants=2, days=10)
    refresh_pending(ctx)
    with engine.begin() as conn:  # damage: a wrong value, a missing row, a row for a day without data
        conn.execute(text("UPDATE daily_metrics SET gross_sales_minor = 1 WHERE merchant_id = 'M1' AND day = :d"),
                     {"d": JUNE_1})  # fmt: skip
        conn.execute(text("DELETE FROM hourly_metrics WHERE merchant_id = 'M2' AND day = :d"), {"d": JUNE_1})
        conn.execute(text("INSERT INTO daily_metrics (merchant_id, day, currency) VALUES ('M1', '2026-05-20', 'EUR')"))

    only_m2 = refresh_range(ctx, date(2026, 5, 15), date(2026, 6, 12), ["M2"])
    assert only_m2.merchant_days == 29
    assert scenario.actual().daily[("M1", JUNE_1)]["gross_sales_minor"] == 1  # M1 not touched

    everything = refresh_range(ctx, date(2026, 5, 15), date(2026, 6, 12))

    assert everything.merchant_days == 2 * 29
    assert everything.deleted_rows == 2  # the wrong M1 day row and the one without data
    assert diff(scenario.expected(), scenario.actual()) == []
    assert scenario.queued() == set()


def test_arguments_are_checked(ctx: PipelineContext) -> None:
    with pytest.raises(ValueError, match="before start"):
        refresh_range(ctx, date(2026, 6, 2), date(2026, 6, 1))
    with pytest.raises(ValueError, match="batch_size"):
        refresh_pending(ctx, batch_size=0)
    with pytest.raises(ValueError, match="workers"):
        refresh_pending(ctx, workers=0)


def test_refuses_a_role_under_row_level_security(
    aggregates_database_url: str, db_settings: DatabaseSettings, scenario: Scenario
) -> None:
    m = scenario.merchant("M1", "Europe/Berlin")
    scenario.txn(m, "2026-06-01T10:00:00+02:00", 1000)
    queued = scenario.commit()
    # A context whose "owner" engine is really the merchant-facing app role.
    database = Database(app_url(aggregates_database_url, db_settings), db_settings)
    try:
        with pytest.raises(ConfigurationError, match="row-level security"):
            refresh_pending(PipelineContext(settings=Settings(), database=database))
    finally:
        database.dispose()
    assert scenario.queued() == queued


def test_an_empty_queue_is_a_cheap_no_op(ctx: PipelineContext) -> None:
    summary = refresh_pending(ctx)

    assert (summary.merchant_days, summary.batches) == (0, 0)
    as_dict = summary.as_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert set(as_dict) == {
        "merchant_days",
        "batches",
        "daily_rows",
        "hourly_rows",
        "product_rows",
        "deleted_rows",
        "seconds",
    }
