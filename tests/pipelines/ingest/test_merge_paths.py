"""The merge's shortcuts write exactly what the general merge writes.

A file without repeated ids skips the DISTINCT ON copy; ids with no stored
version go in with plain INSERTs (``fresh_merge``); a concurrent writer that
stores one of those ids first makes the file's rows be checked again against
what is stored now.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import pipelines.ingest.load as load
from pipelines.context import PipelineContext
from pipelines.ingest import ingest, ingest_dataset
from pipelines.ingest.datasets import SPECS
from tests.pipelines.ingest.conftest import TXN_HEADER, base_landing, txn, txn_rows, write_csv
from tests.pipelines.ingest.test_ingest import table_digest


def rows(ctx: PipelineContext, sql: str) -> list[tuple[Any, ...]]:
    with ctx.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def items(*lines: tuple[str, int, str]) -> str:
    return json.dumps([{"product_id": p, "quantity": q, "unit_price": u} for p, q, u in lines])


def queue(ctx: PipelineContext) -> list[tuple[Any, ...]]:
    return rows(ctx, "SELECT merchant_id, day::text FROM metric_refresh_queue ORDER BY 1, 2")


@pytest.fixture
def general_merge_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Transactions without the fresh-rows path: every row through ``merge``."""
    monkeypatch.setitem(SPECS, "transactions", dataclasses.replace(SPECS["transactions"], fresh="", fresh_merge=()))


def _two_days(root: Path) -> Path:
    base_landing(root)
    write_csv(root, "transactions", "2026-03-01", "t.csv", TXN_HEADER, txn_rows([
        txn("T1"), txn("T2", items=items(("P1", 1, "7.60"))),
        txn("T3", merchant="M2", occurred_at="2026-03-01T12:00:00+09:00"),
    ]))  # fmt: skip
    write_csv(root, "transactions", "2026-03-02", "t.csv", TXN_HEADER, txn_rows([
        txn("T1"),  # identical re-delivery: provenance moves, nothing changes
        # Correction: next day, new amount and items.
        txn("T2", occurred_at="2026-03-02T09:00:00+01:00", amount="9.00", items=items(("P2", 3, "3.00"))),
        txn("T4", occurred_at="2026-03-02T08:00:00+01:00", customer_id=None),
        txn("T_BAD", type="SALE"),
        txn("T5", type="REFUND", refund_of="T1", amount="1.00", tip_amount=None, items=None),
        txn("T6", merchant="M2", occurred_at="2026-03-02T12:00:00+09:00", items=None),
    ]))  # fmt: skip
    return root


def test_fresh_and_stored_rows_in_one_file_equal_the_general_merge(
    ctx: PipelineContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _two_days(tmp_path / "landing")
    summary = ingest(ctx, str(root))
    txns = next(d for d in summary.datasets if d.dataset == "transactions")
    first, second = txns.files
    assert (first.rows_read, first.rows_loaded, first.rows_changed) == (3, 3, 3)
    # T2 changed, T4-T6 new; T1 identical; T_BAD quarantined.
    assert (second.rows_read, second.rows_loaded, second.rows_quarantined, second.rows_changed) == (6, 5, 1, 4)
    assert rows(ctx, "SELECT line_no, left(reason, 16) FROM quarantined_rows") == [(5, "unknown type 'SA")]
    assert rows(ctx, "SELECT transaction_id, amount_minor, source_partition::text FROM transactions ORDER BY 1") == [
        ("T1", 760, "2026-03-02"), ("T2", 900, "2026-03-02"), ("T3", 900, "2026-03-01"),
        ("T4", 760, "2026-03-02"), ("T5", 100, "2026-03-02"), ("T6", 900, "2026-03-02"),
    ]  # fmt: skip
    assert rows(ctx, "SELECT transaction_id, line_no, product_id, quantity, unit_price_minor FROM transaction_items "
                     "ORDER BY 1, 2") == [
        ("T1", 1, "P1", 2, 350), ("T2", 1, "P2", 3, 300), ("T3", 1, "R1", 1, 900), ("T4", 1, "P1", 2, 350),
    ]  # fmt: skip
    assert queue(ctx) == [("M1", "2026-03-01"), ("M1", "2026-03-02"), ("M2", "2026-03-01"), ("M2", "2026-03-02")]
    fast = table_digest(ctx), queue(ctx)

    # The same landing through the general merge alone, on an emptied database.
    with ctx.engine.begin() as conn:
        conn.execute(text("TRUNCATE transactions, transaction_items, metric_refresh_queue, quarantined_rows"))
    monkeypatch.setitem(SPECS, "transactions", dataclasses.replace(SPECS["transactions"], fresh="", fresh_merge=()))
    again = ingest_dataset(ctx, str(root), "transactions")
    assert [f.rows_changed for f in again.files] == [3, 4]
    assert (table_digest(ctx), queue(ctx)) == fast


@pytest.mark.parametrize("path", ["fast", "general"])
def test_repeated_ids_in_one_file_keep_the_latest_version(
    ctx: PipelineContext, tmp_path: Path, request: pytest.FixtureRequest, path: str
) -> None:
    if path == "general":
        request.getfixturevalue("general_merge_only")
    root = base_landing(tmp_path)
    write_csv(root, "transactions", "2026-03-01", "t.csv", TXN_HEADER, txn_rows([
        txn("T1", amount="5.00", updated_at="2026-03-01T12:00:00Z"),
        txn("T1", amount="1.00", updated_at="2026-03-01T11:00:00Z"),  # older, though later in the file
        txn("T2", amount="2.00"),
        txn("T2", amount="3.00", items=items(("P9", 1, "3.00"))),  # no updated_at: the later line wins
        txn("T3", amount="4.00", updated_at="2026-03-01T10:00:00Z"),
        txn("T3", amount="6.00"),  # a version with updated_at beats one without
        txn("T4", amount="7.00"),
        txn("T4", amount="x"),  # quarantined; the valid version stays
    ]))  # fmt: skip
    ingest_dataset(ctx, str(root), "merchants")
    [file] = ingest_dataset(ctx, str(root), "transactions").files
    assert (file.rows_read, file.rows_loaded, file.rows_quarantined, file.rows_changed) == (8, 7, 1, 4)
    assert rows(ctx, "SELECT transaction_id, amount_minor FROM transactions ORDER BY 1") == [
        ("T1", 500), ("T2", 300), ("T3", 400), ("T4", 700),
    ]  # fmt: skip
    assert rows(ctx, "SELECT transaction_id, product_id FROM transaction_items ORDER BY 1") == [
        ("T1", "P1"), ("T2", "P9"), ("T3", "P1"), ("T4", "P1"),
    ]  # fmt: skip
    assert rows(ctx, "SELECT line_no FROM quarantined_rows") == [(9,)]


@pytest.mark.parametrize("owner", ["M1", "M2"])
def test_an_id_stored_concurrently_after_the_checks_is_checked_again(
    ctx: PipelineContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner: str
) -> None:
    root = base_landing(tmp_path)
    write_csv(root, "transactions", "2026-03-02", "t.csv", TXN_HEADER, txn_rows([
        txn("T1", amount="9.00", occurred_at="2026-03-02T10:00:00+01:00", updated_at="2026-03-02T08:00:00Z"),
        txn("T2", occurred_at="2026-03-03T10:00:00+01:00"),
    ]))  # fmt: skip
    ingest_dataset(ctx, str(root), "merchants")

    # Another loader commits T1 (an older version, with an item) after this
    # file was checked (T1 looked new) and before it is merged.
    original = load._build_valid
    raced: list[bool] = []

    def race(cur: Any, spec: Any, quarantined: int, **kwargs: Any) -> None:
        if spec.name == "transactions" and not raced:
            raced.append(True)
            with ctx.engine.begin() as other:
                other.execute(
                    text(
                        "INSERT INTO transactions (transaction_id, merchant_id, occurred_at, type, status, "
                        "amount_minor, tip_minor, currency, payment_method, updated_at, source_partition) "
                        "VALUES ('T1', :m, '2026-03-01T09:00:00Z', 'PAYMENT', 'SUCCESSFUL', 100, 0, 'EUR', "
                        "'CASH', '2026-03-01T08:00:00Z', '2026-03-01')"
                    ),
                    {"m": owner},
                )
                other.execute(
                    text(
                        "INSERT INTO transaction_items (transaction_id, line_no, merchant_id, product_id, quantity, "
                        "unit_price_minor) VALUES ('T1', 1, :m, 'OLD', 1, 100)"
                    ),
                    {"m": owner},
                )
        original(cur, spec, quarantined, **kwargs)

    monkeypatch.setattr(load, "_build_valid", race)
    [file] = ingest_dataset(ctx, str(root), "transactions", partition=date(2026, 3, 2)).files
    if owner == "M1":
        # The stored version is older: this file's version replaces it, items included.
        assert (file.status, file.rows_changed, file.rows_quarantined) == ("loaded", 2, 0)
        assert rows(ctx, "SELECT transaction_id, amount_minor, payment_method FROM transactions ORDER BY 1") == [
            ("T1", 900, "CARD"), ("T2", 760, "CARD"),
        ]  # fmt: skip
        assert rows(ctx, "SELECT transaction_id, product_id FROM transaction_items ORDER BY 1") == [
            ("T1", "P1"), ("T2", "P1"),
        ]  # fmt: skip
        # T1's old day (from the version stored meanwhile) and new day, T2's day.
        assert queue(ctx) == [("M1", "2026-03-01"), ("M1", "2026-03-02"), ("M1", "2026-03-03")]
    else:
        # T1 now belongs to another merchant: quarantined, M2's row untouched.
        assert (file.status, file.rows_changed, file.rows_quarantined) == ("loaded", 1, 1)
        assert rows(ctx, "SELECT reason FROM quarantined_rows") == [
            ("transaction_id already belongs to another merchant",)
        ]
        assert rows(ctx, "SELECT transaction_id, merchant_id, amount_minor FROM transactions ORDER BY 1") == [
            ("T1", "M2", 100), ("T2", "M1", 760),
        ]  # fmt: skip
        assert rows(ctx, "SELECT transaction_id, product_id FROM transaction_items ORDER BY 1") == [
            ("T1", "OLD"), ("T2", "P1"),
        ]  # fmt: skip
        assert queue(ctx) == [("M1", "2026-03-03")]
