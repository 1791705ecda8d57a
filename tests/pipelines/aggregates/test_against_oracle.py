"""The SQL aggregates against the independent Python oracle (tests/oracle.py).

The landing files are parsed by the oracle and the resulting rows inserted
directly (the real loader is tested elsewhere); the metrics computed by
PostgreSQL must then equal the oracle's to the minor unit.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from pipelines.aggregates import refresh_pending, refresh_range
from pipelines.context import PipelineContext
from tests.oracle import Expected, Merchant, Txn, actual_metrics, compute_metrics, diff, expected_metrics, read_facts
from tests.pipelines.aggregates.scenario import QUEUE_DAY, insert_facts


def _load_and_refresh(ctx: PipelineContext, engine: Engine, root: Path) -> None:
    facts = read_facts(root)
    insert_facts(engine, facts.merchants.values(), facts.transactions.values())
    days = {
        (t.merchant_id, t.occurred_at.astimezone(ZoneInfo(facts.merchants[t.merchant_id].timezone)).date())
        for t in facts.transactions.values()
    }
    with engine.begin() as conn:
        conn.execute(QUEUE_DAY, [{"merchant_id": m, "day": d} for m, d in sorted(days)])
    summary = refresh_pending(ctx, batch_size=50)
    assert summary.merchant_days == len(days)


def _actual(engine: Engine) -> Expected:
    with engine.connect() as conn:
        return actual_metrics(conn)


def test_a_generated_landing_zone_matches_the_oracle(ctx: PipelineContext, engine: Engine, tmp_path: Path) -> None:
    synthetic = pytest.importorskip(
        "pipelines.synthetic", reason="pipelines.synthetic (the generator) is not ready yet; skipping"
    )
    root = tmp_path / "landing"
    # Ten days across both autumn DST changes (Europe 25 Oct, US 1 Nov), six
    # merchants from Los Angeles to Sydney and Tokyo (JPY), with refunds,
    # failures and corrected re-deliveries.
    synthetic.generate(
        synthetic.GenerateConfig(merchants=6, days=10, end_date=date(2026, 11, 2), volume=0.2, seed=11, out=root)
    )
    facts = read_facts(root)
    assert facts.rejected == []
    zones = {m.timezone for m in facts.merchants.values()}
    assert {"Asia/Tokyo", "Australia/Sydney", "America/New_York", "Europe/Berlin"} <= zones
    kinds = {(t.type, t.status) for t in facts.transactions.values()}
    assert {("PAYMENT", "SUCCESSFUL"), ("PAYMENT", "FAILED"), ("REFUND", "SUCCESSFUL")} <= kinds

    _load_and_refresh(ctx, engine, root)

    expected = expected_metrics(root)
    assert len(expected.daily) >= 50 and expected.products
    assert diff(expected, _actual(engine)) == []
    # A backfill over the same range changes nothing.
    again = refresh_range(ctx, date(2026, 10, 20), date(2026, 11, 5))
    assert (again.daily_rows, again.hourly_rows, again.product_rows, again.deleted_rows) == (0, 0, 0, 0)


# --------------------------------------------------------------------------
# The oracle's own reading of the contract, on a hand-made landing zone
# --------------------------------------------------------------------------

TX_HEADER = (
    "transaction_id,merchant_id,occurred_at,type,status,amount,tip_amount,currency,payment_method,"
    "card_scheme,customer_id,location_id,refund_of,items,updated_at"
)


def _write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def _handmade(root: Path) -> None:
    _write(root / "merchants/dt=2026-06-01/part-0.csv", (
        "merchant_id,name,category,country,currency,timezone,created_at,updated_at\n"
        "M1,Café,cafe,DE,EUR,Europe/Berlin,2025-01-01T00:00:00Z,\n"
        "M2,Sushi,restaurant,JP,JPY,Asia/Tokyo,2025-01-01T00:00:00Z,\n"
        "M3,Broken,cafe,DE,EUR,Mars/Olympus,2025-01-01T00:00:00Z,\n"
    ))  # fmt: skip
    items = '"[{""product_id"": ""latte"", ""quantity"": 2, ""unit_price"": ""4.50""}]"'
    _write(root / "transactions/dt=2026-06-01/part-0.csv", "\n".join([
        TX_HEADER,
        f"T1,M1,2026-06-01T10:00:00+02:00,PAYMENT,SUCCESSFUL,9.50,0.50,EUR,CARD,VISA,C1,,,{items},2026-06-01T08:05:00Z",
        "T2,M1,2026-06-01T11:00:00+02:00,PAYMENT,SUCCESSFUL,3.00,,EUR,CASH,,,,,,",
        "T3,M1,2026-06-01T12:00:00+02:00,REFUND,SUCCESSFUL,3.00,0,EUR,CASH,,,,T2,,",
        "T4,M2,2026-06-01T23:30:00+09:00,PAYMENT,SUCCESSFUL,1200,100,JPY,QR,,K1,,,,2026-06-01T15:00:00Z",
        # rejected: unknown merchant, currency mismatch, amount not > 0, yen with decimals,
        # refund of nothing, refund_of on a payment, bad items, tip above amount, bad timestamp
        "X1,M9,2026-06-01T10:00:00+02:00,PAYMENT,SUCCESSFUL,1.00,,EUR,CARD,,,,,,",
        "X2,M1,2026-06-01T10:00:00+02:00,PAYMENT,SUCCESSFUL,1.00,,USD,CARD,,,,,,",
        "X3,M1,2026-06-01T10:00:00+02:00,PAYMENT,SUCCESSFUL,0.00,,EUR,CARD,,,,,,",
        "X4,M2,2026-06-01T10:00:00+09:00,PAYMENT,SUCCESSFUL,12.50,,JPY,CARD,,,,,,",
        "X5,M1,2026-06-01T10:00:00+02:00,REFUND,SUCCESSFUL,1.00,,EUR,CARD,,,,NOPE,,",
        "X6,M1,2026-06-01T10:00:00+02:00,PAYMENT,SUCCESSFUL,1.00,,EUR,CARD,,,,T1,,",
        'X7,M1,2026-06-01T10:00:00+02:00,PAYMENT,SUCCESSFUL,1.00,,EUR,CARD,,,,,"[{""product_id"": ""a""}]",',
        "X8,M1,2026-06-01T10:00:00+02:00,PAYMENT,SUCCESSFUL,1.00,2.00,EUR,CARD,,,,,,",
        "X9,M1,yesterday,PAYMENT,SUCCESSFUL,1.00,,EUR,CARD,,,,,,",
    ]) + "\n")  # fmt: skip
    # A file without a required column loads nothing.
    _write(root / "transactions/dt=2026-06-01/part-1.csv", "transaction_id,merchant_id\nY1,M1\n")
    later = [
        # T1 corrected (newer updated_at): moved to the next day, tip adjusted.
        {"transaction_id": "T1", "merchant_id": "M1", "occurred_at": "2026-06-02T00:30:00+02:00", "type": "PAYMENT",
         "status": "SUCCESSFUL", "amount": 10.5, "tip_amount": "1.50", "currency": "EUR", "payment_method": "CARD",
         "customer_id": "C1", "items": [{"product_id": "latte", "quantity": 2, "unit_price": 4.5}],
         "updated_at": "2026-06-02T09:00:00Z"},
        # An older version of T4 arriving late loses to the stored one.
        {"transaction_id": "T4", "merchant_id": "M2", "occurred_at": "2026-06-01T23:30:00+09:00", "type": "PAYMENT",
         "status": "CANCELLED", "amount": "1200", "currency": "JPY", "payment_method": "QR",
         "updated_at": "2026-05-01T00:00:00Z"},
        # No updated_at on either side: the later partition wins (T2 voided).
        {"transaction_id": "T2", "merchant_id": "M1", "occurred_at": "2026-06-01T11:00:00+02:00", "type": "PAYMENT",
         "status": "CANCELLED", "amount": "3.00", "currency": "EUR", "payment_method": "CASH"},
    ]  # fmt: skip
    _write(
        root / "transactions/dt=2026-06-02/part-0.jsonl.gz",
        "\n".join(json.dumps(r) for r in later) + "\nnot json\n",
    )


def test_the_oracle_applies_the_contract(tmp_path: Path) -> None:
    _handmade(tmp_path)

    facts = read_facts(tmp_path)

    assert set(facts.merchants) == {"M1", "M2"}  # M3's timezone does not exist
    t1, t2, t4 = facts.transactions["T1"], facts.transactions["T2"], facts.transactions["T4"]
    assert (t1.amount_minor, t1.tip_minor, t1.occurred_at.day, t1.partition) == (1050, 150, 2, date(2026, 6, 2))
    assert [(i.product_id, i.quantity, i.unit_price_minor) for i in t1.items] == [("latte", 2, 450)]
    assert t2.status == "CANCELLED"
    assert (t4.status, t4.amount_minor, t4.tip_minor) == ("SUCCESSFUL", 1200, 100)
    assert set(facts.transactions) == {"T1", "T2", "T3", "T4"}
    rejected_lines = {(Path(r.file).name, r.line) for r in facts.rejected if r.dataset == "transactions"}
    assert rejected_lines == {
        *(("part-0.csv", n) for n in range(6, 15)),
        ("part-1.csv", 0),
        ("part-0.jsonl.gz", 4),
    }

    expected = compute_metrics(facts.merchants, facts.transactions.values())
    june_1, june_2 = date(2026, 6, 1), date(2026, 6, 2)
    assert expected.daily[("M1", june_1)]["gross_sales_minor"] == 0
    assert expected.daily[("M1", june_1)]["refunds_minor"] == 300
    assert expected.daily[("M1", june_1)]["failed_count"] == 1
    assert expected.daily[("M1", june_2)]["tips_minor"] == 150
    assert expected.products[("M1", june_2, "latte")] == {
        "currency": "EUR",
        "units_sold": 2,
        "gross_sales_minor": 900,
        "transactions": 1,
    }
    assert expected.daily[("M2", june_1)]["currency"] == "JPY"
    assert expected.hourly[("M2", june_1, 23)]["gross_sales_minor"] == 1200


def test_the_hand_made_landing_zone_matches_the_oracle(ctx: PipelineContext, engine: Engine, tmp_path: Path) -> None:
    _handmade(tmp_path)

    _load_and_refresh(ctx, engine, tmp_path)

    assert diff(expected_metrics(tmp_path), _actual(engine)) == []


def test_diff_names_what_differs() -> None:
    facts_day = ("M1", date(2026, 6, 1))
    txn = Txn("T", "M1", datetime(2026, 6, 1, 10, tzinfo=UTC), "PAYMENT", "SUCCESSFUL", 100, 0, "EUR", "CARD",
              None, None, None, None, (), None, date(2026, 6, 1))  # fmt: skip
    expected = compute_metrics({"M1": Merchant("M1", "EUR", "UTC", {})}, [txn])
    actual = compute_metrics({"M1": Merchant("M1", "EUR", "UTC", {})}, [])
    problems = diff(expected, actual)
    assert problems and str(facts_day) in problems[0] and "missing" in problems[0]
