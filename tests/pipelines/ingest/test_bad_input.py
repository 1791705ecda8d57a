"""Bad input: every quarantine reason, every file-level failure; nothing valid is lost."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from pipelines.context import PipelineContext
from pipelines.ingest import ingest, ingest_dataset
from tests.pipelines.ingest.conftest import MERCHANT_HEADER, TXN_HEADER, base_landing, txn, txn_rows, write_csv

DT = "2026-03-01"


def quarantined(ctx: PipelineContext) -> list[dict[str, Any]]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT dataset, path, line_no, raw_record, reason FROM quarantined_rows ORDER BY dataset, line_no")
        ).mappings()
        return [dict(r) for r in rows]


def assert_identity(ctx: PipelineContext) -> None:
    with ctx.engine.connect() as conn:
        bad = conn.execute(
            text("SELECT count(*) FROM ingestion_files WHERE status = 'loaded' "
                 "AND rows_read <> rows_loaded + rows_quarantined")
        ).scalar_one()  # fmt: skip
    assert bad == 0


TXN_CASES = [
    ("unknown merchant", {"merchant_id": "M404"}, "unknown merchant 'M404'"),
    ("currency mismatch", {"currency": "USD"}, "currency 'USD' differs from the merchant's EUR"),
    ("zero amount", {"amount": "0.00"}, "amount must be > 0"),
    ("negative amount", {"amount": "-5.00"}, "amount is not a decimal"),
    ("three decimals", {"amount": "1.005"}, "amount is not a decimal with at most 2 places"),
    ("comma decimal", {"amount": "7,60"}, "amount is not a decimal"),
    ("unknown type", {"type": "SALE"}, "unknown type 'SALE'"),
    ("unknown status", {"status": "PENDING"}, "unknown status 'PENDING'"),
    ("unknown method", {"payment_method": "CHEQUE"}, "unknown payment_method 'CHEQUE'"),
    ("refund to nowhere", {"type": "REFUND", "refund_of": "T404", "items": None}, "refund_of 'T404' points to no payment"),
    ("refund_of on a payment", {"refund_of": "T_OK"}, "refund_of is only allowed on REFUND or CHARGEBACK"),
    ("unparseable timestamp", {"occurred_at": "yesterday"}, "occurred_at is not an ISO 8601 timestamp"),
    ("timestamp without offset", {"occurred_at": "2026-03-01T10:00:00"}, "occurred_at is not an ISO 8601 timestamp"),
    ("impossible date", {"occurred_at": "2026-02-30T10:00:00Z"}, "occurred_at is not an ISO 8601 timestamp"),
    ("tip above amount", {"tip_amount": "9.00"}, "tip_amount 9.00 exceeds amount 7.60"),
    ("missing required value", {"payment_method": None}, "payment_method is required"),
    ("items not JSON", {"items": "[{"}, "items is not valid JSON"),
    ("items bad quantity", {"items": json.dumps([{"product_id": "P1", "quantity": 0, "unit_price": "1"}])},
     "items: each item needs"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "overrides", "reason"), TXN_CASES, ids=[c[0] for c in TXN_CASES])
def test_transaction_quarantine_reasons(
    ctx: PipelineContext, tmp_path: Path, case: str, overrides: dict[str, Any], reason: str
) -> None:
    root = base_landing(tmp_path)
    write_csv(root, "transactions", DT, "t.csv", TXN_HEADER, txn_rows([txn("T_OK"), txn("T_BAD", **overrides)]))
    summary = ingest(ctx, str(root))
    txns = next(d for d in summary.datasets if d.dataset == "transactions")
    assert (txns.rows_read, txns.rows_loaded, txns.rows_quarantined) == (2, 1, 1)
    [row] = quarantined(ctx)
    assert reason in row["reason"], row["reason"]
    assert row["line_no"] == 3  # header is line 1
    assert row["path"].endswith("transactions/dt=2026-03-01/t.csv")
    assert "T_BAD" in row["raw_record"]
    with ctx.engine.connect() as conn:
        assert conn.execute(text("SELECT transaction_id FROM transactions")).scalars().all() == ["T_OK"]
    assert_identity(ctx)


def test_jpy_rejects_fractions_and_refund_cannot_cross_merchants(ctx: PipelineContext, tmp_path: Path) -> None:
    root = base_landing(tmp_path)
    write_csv(root, "transactions", DT, "t.csv", TXN_HEADER, txn_rows([
        txn("T1"),
        txn("T2", merchant="M2", amount="900.50"),
        txn("T3", merchant="M2", type="REFUND", refund_of="T1", amount="100", items=None),
    ]))  # fmt: skip
    ingest(ctx, str(root))
    reasons = [r["reason"] for r in quarantined(ctx)]
    assert any("amount 900.50 has more decimals than JPY allows" in r for r in reasons)
    assert any("refund_of 'T1' points to no payment of this merchant" in r for r in reasons)


def test_transaction_cannot_be_moved_to_another_merchant(ctx: PipelineContext, tmp_path: Path) -> None:
    root = base_landing(tmp_path)
    write_csv(root, "transactions", DT, "t.csv", TXN_HEADER, txn_rows([txn("T1")]))
    write_csv(root, "transactions", "2026-03-02", "t.csv", TXN_HEADER,
              txn_rows([txn("T1", merchant="M2", amount="500", items=None)]))  # fmt: skip
    ingest(ctx, str(root))
    [row] = quarantined(ctx)
    assert "already belongs to another merchant" in row["reason"]


def test_multiple_reasons_are_all_reported(ctx: PipelineContext, tmp_path: Path) -> None:
    root = base_landing(tmp_path)
    write_csv(
        root, "transactions", DT, "t.csv", TXN_HEADER, txn_rows([txn("T1", type="SALE", status="MAYBE", amount="x")])
    )
    ingest(ctx, str(root))
    [row] = quarantined(ctx)
    for part in ("unknown type", "unknown status", "amount is not a decimal"):
        assert part in row["reason"]


def test_other_dataset_rules(ctx: PipelineContext, tmp_path: Path) -> None:
    root = tmp_path
    write_csv(root, "merchants", DT, "m.csv", MERCHANT_HEADER, [
        ("M1", "Ok", "cafe", "DE", "EUR", "Europe/Berlin", "2025-01-01T00:00:00Z", None),
        ("M9", "Bad tz", "cafe", "DE", "EUR", "Europe/Atlantis", "2025-01-01T00:00:00Z", None),
        ("M8", "Bad country", "cafe", "Germany", "EUR", "Europe/Berlin", "2025-01-01T00:00:00Z", None),
    ])  # fmt: skip
    write_csv(root, "products", DT, "p.csv", ("product_id", "merchant_id", "name", "price", "active"), [
        ("P1", "M1", "Espresso", "2.20", "true"), ("P2", "M1", "Latte", "abc", "true"),
        ("P3", "M1", "Tea", "2.00", "maybe"),
    ])  # fmt: skip
    write_csv(root, "reviews", DT, "r.csv", ("review_id", "merchant_id", "created_at", "rating", "text"), [
        ("R1", "M1", "2026-03-01T10:00:00Z", "5", "Great"), ("R2", "M1", "2026-03-01T10:00:00Z", "6", "Off scale"),
        ("R3", "M1", "2026-03-01T10:00:00Z", "4.5", "Half"),
    ])  # fmt: skip
    att_header = ("attachment_id", "merchant_id", "created_at", "kind", "content_type", "path", "note")
    own = root / "attachments" / f"dt={DT}" / "M1"
    own.mkdir(parents=True)
    (own / "A1.txt").write_text("invoice 42")
    write_csv(root, "attachments", DT, "manifest.csv", att_header, [
        ("A1", "M1", "2026-03-01T10:00:00Z", "document", "text/plain", f"attachments/dt={DT}/M1/A1.txt", None),
        ("A2", "M1", "2026-03-01T10:00:00Z", "document", "text/plain", f"attachments/dt={DT}/M2/A9.txt", None),
        ("A3", "M1", "2026-03-01T10:00:00Z", "document", "text/plain", "../../etc/passwd", None),
        ("A4", "M1", "2026-03-01T10:00:00Z", "video", "video/mp4", f"attachments/dt={DT}/M1/A4.mp4", None),
        ("A5", "M1", "2026-03-01T10:00:00Z", "image", "image/png", f"attachments/dt={DT}/M1/missing.png", None),
    ])  # fmt: skip
    ingest(ctx, str(root))
    by_line = {(r["dataset"], r["line_no"]): r["reason"] for r in quarantined(ctx)}
    assert "unknown timezone 'Europe/Atlantis'" in by_line[("merchants", 3)]
    assert "country is not an ISO 3166-1 alpha-2 code" in by_line[("merchants", 4)]
    assert "price is not a decimal" in by_line[("products", 3)]
    assert "active must be true or false" in by_line[("products", 4)]
    assert "rating must be an integer from 1 to 5" in by_line[("reviews", 3)]
    assert "rating must be an integer from 1 to 5" in by_line[("reviews", 4)]
    assert "is not under attachments/dt=YYYY-MM-DD/M1/" in by_line[("attachments", 3)]
    assert "is not under attachments/dt=YYYY-MM-DD/M1/" in by_line[("attachments", 4)]
    assert "unknown kind 'video'" in by_line[("attachments", 5)]
    assert "not found" in by_line[("attachments", 6)]
    with ctx.engine.connect() as conn:
        loaded = {
            t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("merchants", "products", "reviews", "attachments")
        }
    assert loaded == {"merchants": 1, "products": 1, "reviews": 1, "attachments": 1}
    assert_identity(ctx)


def _file_failure(ctx: PipelineContext, root: Path, broken: Path) -> str:
    write_csv(root, "transactions", DT, "z_good.csv", TXN_HEADER, txn_rows([txn("T_GOOD")]))
    ingest_dataset(ctx, str(root), "merchants")
    summary = ingest_dataset(ctx, str(root), "transactions")
    failed = summary.failed_files
    assert len(failed) == 1 and failed[0].path == str(broken)
    assert failed[0].error is not None and str(broken) in failed[0].error
    with ctx.engine.connect() as conn:
        ids = conn.execute(text("SELECT transaction_id FROM transactions")).scalars().all()
        recorded = conn.execute(
            text("SELECT status, error FROM ingestion_files WHERE path = :p"), {"p": str(broken)}
        ).one()
    assert ids == ["T_GOOD"]  # the broken file loaded nothing; the good file is not lost
    assert recorded.status == "failed" and recorded.error == failed[0].error
    return failed[0].error


def test_missing_required_column_fails_the_file(ctx: PipelineContext, tmp_path: Path) -> None:
    root = base_landing(tmp_path)
    header = [c for c in TXN_HEADER if c != "amount"]
    broken = write_csv(root, "transactions", DT, "a.csv", header, [["x"] * len(header)])
    assert "missing required column(s): amount" in _file_failure(ctx, root, broken)


def test_bad_encoding_fails_the_file_and_loads_nothing_from_it(ctx: PipelineContext, tmp_path: Path) -> None:
    root = base_landing(tmp_path)
    broken = write_csv(root, "transactions", DT, "a.csv", TXN_HEADER, txn_rows([txn("T_A1"), txn("T_A2")]))
    broken.write_bytes(broken.read_bytes() + b"T_A3,M1,\xff\xfe bad bytes\n")
    assert "not valid UTF-8" in _file_failure(ctx, root, broken)


def test_corrupt_gzip_fails_the_file(ctx: PipelineContext, tmp_path: Path) -> None:
    root = base_landing(tmp_path)
    broken = write_csv(root, "transactions", DT, "a.csv.gz", TXN_HEADER, txn_rows([txn(f"T{i}") for i in range(500)]))
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    assert "corrupt gzip archive" in _file_failure(ctx, root, broken)


def test_corrupt_parquet_fails_the_file(ctx: PipelineContext, tmp_path: Path) -> None:
    root = base_landing(tmp_path)
    broken = root / "transactions" / f"dt={DT}" / "a.parquet"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"PAR1 this is not parquet")
    assert "corrupt parquet file" in _file_failure(ctx, root, broken)


def test_empty_file_fails_the_file(ctx: PipelineContext, tmp_path: Path) -> None:
    root = base_landing(tmp_path)
    broken = root / "transactions" / f"dt={DT}" / "a.csv.gz"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(gzip.compress(b""))
    assert "empty file" in _file_failure(ctx, root, broken)


def test_jsonl_bad_lines_are_quarantined_with_their_text(ctx: PipelineContext, tmp_path: Path) -> None:
    root = base_landing(tmp_path)
    folder = root / "transactions" / f"dt={DT}"
    folder.mkdir(parents=True)
    good = {k: v for k, v in txn("T1").items() if v is not None}
    (folder / "t.jsonl").write_text(json.dumps(good) + "\n{not json\n[1, 2]\n")
    summary = ingest(ctx, str(root))
    txns = next(d for d in summary.datasets if d.dataset == "transactions")
    assert (txns.rows_read, txns.rows_loaded, txns.rows_quarantined) == (3, 1, 2)
    rows = quarantined(ctx)
    assert [(r["line_no"], r["raw_record"]) for r in rows] == [(2, "{not json"), (3, "[1, 2]")]
    assert "invalid JSON" in rows[0]["reason"] and "not a JSON object" in rows[1]["reason"]


def test_extra_columns_are_ignored_with_a_warning(ctx: PipelineContext, tmp_path: Path) -> None:
    root = base_landing(tmp_path)
    write_csv(root, "transactions", DT, "t.csv", (*TXN_HEADER, "loyalty_tier"), [(*txn_rows([txn("T1")])[0], "gold")])
    summary = ingest(ctx, str(root))
    file = next(d for d in summary.datasets if d.dataset == "transactions").files[0]
    assert file.rows_loaded == 1 and file.warnings == ["ignored extra column(s): loyalty_tier"]
