"""Loading the landing zone: counts, idempotency, latest-wins, queues, formats."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from pipelines.context import PipelineContext
from pipelines.ingest import ingest, ingest_dataset
from pipelines.synthetic import GenerateConfig, generate
from tests.pipelines.ingest.conftest import TXN_HEADER, base_landing, txn, txn_rows, write_csv, write_jsonl

FACT_TABLES = ("merchants", "products", "transactions", "transaction_items", "reviews", "attachments")


def table_digest(ctx: PipelineContext) -> dict[str, str]:
    """A content hash per fact table, ignoring load timestamps."""
    digests = {}
    with ctx.engine.connect() as conn:
        for table in FACT_TABLES:
            rows = conn.execute(text(f"SELECT to_jsonb(t) - 'loaded_at' FROM {table} t ORDER BY 1::text")).scalars()
            payload = "\n".join(sorted(json.dumps(r, sort_keys=True) for r in rows))
            digests[table] = hashlib.sha256(payload.encode()).hexdigest()
    return digests


def count(ctx: PipelineContext, sql: str) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "landing"
    generate(GenerateConfig(merchants=3, days=6, seed=7, out=out))
    return out


def test_generated_data_loads_cleanly_and_counts_balance(ctx: PipelineContext, generated: Path) -> None:
    summary = ingest(ctx, str(generated))
    assert summary.failed_files == []
    for dataset in summary.datasets:
        assert dataset.rows_read > 0
        assert dataset.rows_quarantined == 0, dataset.as_dict()
        for file in dataset.files:
            assert file.rows_read == file.rows_loaded + file.rows_quarantined
    # The database agrees with the summary, file by file.
    assert count(ctx, "SELECT count(*) FROM ingestion_files WHERE rows_read <> rows_loaded + rows_quarantined") == 0
    assert count(ctx, "SELECT count(*) FROM ingestion_files WHERE status <> 'loaded'") == 0
    labels = json.loads((generated / "labels.json").read_text())
    redelivered = len(labels.get("redelivered", []))
    read = next(d.rows_read for d in summary.datasets if d.dataset == "transactions")
    assert count(ctx, "SELECT count(*) FROM transactions") == read - redelivered
    # Every merchant-day with transactions is queued for aggregation.
    assert count(ctx, "SELECT count(*) FROM metric_refresh_queue") >= 3 * 6


def test_reloading_and_redelivery_change_nothing(ctx: PipelineContext, generated: Path, tmp_path: Path) -> None:
    ingest(ctx, str(generated))
    before = table_digest(ctx)
    with ctx.engine.begin() as conn:
        conn.execute(text("DELETE FROM metric_refresh_queue"))

    again = ingest(ctx, str(generated))
    assert table_digest(ctx) == before
    assert all(f.rows_changed == 0 for d in again.datasets for f in d.files)
    assert count(ctx, "SELECT count(*) FROM metric_refresh_queue") == 0  # nothing changed, nothing queued

    # The same records re-delivered in a later partition: still identical facts.
    copy = tmp_path / "landing"
    shutil.copytree(generated, copy)
    last = sorted((copy / "transactions").iterdir())[-1]
    shutil.copytree(last, copy / "transactions" / "dt=2026-12-31")
    ingest_dataset(ctx, str(copy), "transactions")
    after = table_digest(ctx)
    assert after["transaction_items"] == before["transaction_items"]
    moved = count(ctx, "SELECT count(*) FROM transactions WHERE source_partition = '2026-12-31'")
    assert moved > 0  # provenance moves to the newest delivery; amounts, items, days do not
    assert count(ctx, "SELECT count(*) FROM metric_refresh_queue") == 0
    assert count(ctx, "SELECT count(*) FROM transactions") == count(
        ctx, "SELECT count(DISTINCT transaction_id) FROM transactions"
    )


def test_latest_updated_at_wins_and_corrections_queue_both_days(ctx: PipelineContext, tmp_path: Path) -> None:
    root = base_landing(tmp_path)
    write_csv(root, "transactions", "2026-03-01", "t.csv", TXN_HEADER, txn_rows([
        txn("T1", updated_at="2026-03-01T12:00:00Z"),
    ]))  # fmt: skip
    write_csv(root, "transactions", "2026-03-03", "t.csv", TXN_HEADER, txn_rows([
        # Correction: moved to the next local day, new amount.
        txn("T1", occurred_at="2026-03-02T23:30:00Z", amount="9.00", updated_at="2026-03-03T08:00:00Z"),
    ]))  # fmt: skip
    write_csv(root, "transactions", "2026-03-02", "t.csv", TXN_HEADER, txn_rows([
        # A stale copy delivered in between must not win.
        txn("T1", amount="1.00", updated_at="2026-03-01T13:00:00Z"),
    ]))  # fmt: skip
    ingest(ctx, str(root))
    with ctx.engine.connect() as conn:
        amount, partition = conn.execute(
            text("SELECT amount_minor, source_partition::text FROM transactions WHERE transaction_id = 'T1'")
        ).one()
        days = conn.execute(text("SELECT day::text FROM metric_refresh_queue ORDER BY day")).scalars().all()
    assert (amount, partition) == (900, "2026-03-03")
    # 2026-03-02T23:30Z is 00:30 on 03-03 in Berlin; the first version was on 03-01.
    assert days == ["2026-03-01", "2026-03-03"]

    # Re-running the stale partition alone changes nothing.
    ingest_dataset(ctx, str(root), "transactions", partition=__import__("datetime").date(2026, 3, 2))
    assert count(ctx, "SELECT amount_minor FROM transactions WHERE transaction_id = 'T1'") == 900


def test_money_in_minor_units_and_items(ctx: PipelineContext, tmp_path: Path) -> None:
    root = base_landing(tmp_path)
    write_csv(root, "transactions", "2026-03-01", "t.csv", TXN_HEADER, txn_rows([
        txn("T1"), txn("T2", merchant="M2", occurred_at="2026-03-01T12:00:00+09:00"),
    ]))  # fmt: skip
    ingest(ctx, str(root))
    with ctx.engine.connect() as conn:
        rows = conn.execute(text("SELECT transaction_id, amount_minor, tip_minor FROM transactions ORDER BY 1")).all()
        items = conn.execute(
            text(
                "SELECT transaction_id, line_no, product_id, quantity, unit_price_minor FROM transaction_items ORDER BY 1"
            )
        ).all()
    assert [tuple(r) for r in rows] == [("T1", 760, 60), ("T2", 900, 0)]
    assert [tuple(r) for r in items] == [("T1", 1, "P1", 2, 350), ("T2", 1, "R1", 1, 900)]


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "jsonl", "jsonl.gz", "parquet"])
def test_every_format_loads_the_same(ctx: PipelineContext, tmp_path: Path, fmt: str) -> None:
    root = base_landing(tmp_path)
    records = [txn("T1"), txn("T2", type="REFUND", refund_of="T1", amount="2.00", tip_amount=None, items=None),
               txn("T3", merchant="M2", occurred_at="2026-03-01T12:00:00+09:00", customer_id=None)]  # fmt: skip
    if fmt.startswith("csv"):
        write_csv(root, "transactions", "2026-03-01", f"t.{fmt}", TXN_HEADER, txn_rows(records))
    elif fmt.startswith("jsonl"):
        # JSONL: numbers as numbers and items as a real list, as exporters write them.
        native = []
        for r in records:
            record = {k: v for k, v in r.items() if v is not None}
            record["amount"] = json.loads(record["amount"])
            if "items" in record:
                record["items"] = json.loads(record["items"])
            native.append(record)
        write_jsonl(root, "transactions", "2026-03-01", f"t.{fmt}", native)
    else:
        folder = root / "transactions" / "dt=2026-03-01"
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in TXN_HEADER} for r in records]), folder / "t.parquet")
    summary = ingest(ctx, str(root))
    txns = next(d for d in summary.datasets if d.dataset == "transactions")
    assert (txns.rows_read, txns.rows_loaded, txns.rows_quarantined) == (3, 3, 0), txns.as_dict()
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT transaction_id, type, amount_minor, tip_minor, refund_of FROM transactions ORDER BY 1")
        ).all()
        units = conn.execute(text("SELECT coalesce(sum(quantity), 0) FROM transaction_items")).scalar_one()
    assert [tuple(r) for r in rows] == [
        ("T1", "PAYMENT", 760, 60, None), ("T2", "REFUND", 200, 0, "T1"), ("T3", "PAYMENT", 900, 0, None),
    ]  # fmt: skip
    assert units == 3


def test_files_load_in_partition_then_name_order_and_gz_is_streamed(ctx: PipelineContext, tmp_path: Path) -> None:
    root = base_landing(tmp_path)
    write_csv(root, "transactions", "2026-03-01", "a.csv.gz", TXN_HEADER, txn_rows([txn("T1")]))
    write_csv(
        root,
        "transactions",
        "2026-03-01",
        "b.csv",
        TXN_HEADER,
        txn_rows([txn("T2", type="REFUND", refund_of="T1", amount="1.00", tip_amount=None, items=None)]),
    )
    (root / "transactions" / "dt=2026-03-01" / "_SUCCESS").write_text("")  # markers are not data
    ingest_dataset(ctx, str(root), "merchants")
    summary = ingest_dataset(ctx, str(root), "transactions")
    assert [Path(f.path).name for f in summary.files] == ["a.csv.gz", "b.csv"]
    assert summary.rows_quarantined == 0
    assert gzip.decompress((root / "transactions" / "dt=2026-03-01" / "a.csv.gz").read_bytes())
