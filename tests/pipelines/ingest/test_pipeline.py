"""Files are prepared on one session while the previous file is applied on another.

The tests force the overlap that makes this delicate: the next file is
staged and checked completely before the previous one commits, so its
checks cannot see what that file writes, and ``apply_file`` must check those
rows again.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import pipelines.ingest.load as load
from pipelines.context import PipelineContext
from pipelines.ingest import ingest_dataset
from pipelines.ingest.datasets import SPECS
from pipelines.landing import open_root
from tests.pipelines.ingest.conftest import TXN_HEADER, base_landing, txn, txn_rows, write_csv
from tests.pipelines.ingest.test_ingest import table_digest


def rows(ctx: PipelineContext, sql: str) -> list[tuple[Any, ...]]:
    with ctx.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def items(*lines: tuple[str, int, str]) -> str:
    return json.dumps([{"product_id": p, "quantity": q, "unit_price": u} for p, q, u in lines])


def work_schemas(ctx: PipelineContext) -> list[str]:
    return [
        r[0] for r in rows(ctx, f"SELECT nspname FROM pg_namespace WHERE nspname LIKE '{load.WORK_SCHEMA_PREFIX}%'")
    ]


@pytest.fixture
def next_file_checked_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Apply the first transactions file only once the next one is fully prepared (checked before it commits)."""
    prepared: list[str] = []
    ready = threading.Event()
    original_prepare, original_apply = load.prepare_file, load.apply_file

    def prepare_file(*args: Any, **kwargs: Any) -> load.PreparedFile:
        result = original_prepare(*args, **kwargs)
        if result.spec.name != "transactions":
            return result
        prepared.append(result.display)
        if len(prepared) >= 2:
            ready.set()
        return result

    def apply_file(conn: Any, file: load.PreparedFile, *args: Any, **kwargs: Any) -> load.FileResult:
        if file.spec.name == "transactions" and file.display == prepared[0]:
            assert ready.wait(30), "the second file was never prepared"
        return original_apply(conn, file, *args, **kwargs)

    monkeypatch.setattr(load, "prepare_file", prepare_file)
    monkeypatch.setattr(load, "apply_file", apply_file)


def _adjacent_days(root: Path) -> Path:
    base_landing(root)
    write_csv(root, "transactions", "2026-03-01", "t.csv", TXN_HEADER, txn_rows([
        txn("T1", items=items(("P1", 1, "7.60"))),
        txn("T2"),
        txn("T3", merchant="M2", occurred_at="2026-03-01T12:00:00+09:00"),
    ]))  # fmt: skip
    write_csv(root, "transactions", "2026-03-02", "t.csv", TXN_HEADER, txn_rows([
        # A correction of a transaction of the file still being applied.
        txn("T1", occurred_at="2026-03-02T09:00:00+01:00", amount="9.00", items=items(("P2", 3, "3.00"))),
        # A refund of a payment of that file.
        txn("T4", type="REFUND", refund_of="T2", amount="1.00", tip_amount=None, items=None),
        # Another merchant claiming an id that file stores for M2.
        txn("T3", occurred_at="2026-03-02T10:00:00+01:00"),
        txn("T5", occurred_at="2026-03-02T11:00:00+01:00"),
    ]))  # fmt: skip
    return root


def _state(ctx: PipelineContext) -> tuple[Any, ...]:
    return (
        table_digest(ctx),
        rows(ctx, "SELECT merchant_id, day::text FROM metric_refresh_queue ORDER BY 1, 2"),
        rows(ctx, "SELECT dataset, line_no, reason FROM quarantined_rows ORDER BY path, line_no"),
    )


@pytest.mark.usefixtures("next_file_checked_first")
def test_a_file_checked_before_the_previous_one_commits_loads_as_if_loaded_alone(
    ctx: PipelineContext, tmp_path: Path
) -> None:
    root = _adjacent_days(tmp_path / "landing")
    ingest_dataset(ctx, str(root), "merchants")
    summary = ingest_dataset(ctx, str(root), "transactions")
    assert [(f.rows_read, f.rows_loaded, f.rows_quarantined, f.rows_changed) for f in summary.files] == [
        (3, 3, 0, 3),
        (4, 3, 1, 3),
    ]
    assert rows(ctx, "SELECT reason FROM quarantined_rows") == [("transaction_id already belongs to another merchant",)]
    assert rows(ctx, "SELECT transaction_id, merchant_id, amount_minor FROM transactions ORDER BY 1") == [
        ("T1", "M1", 900), ("T2", "M1", 760), ("T3", "M2", 900), ("T4", "M1", 100), ("T5", "M1", 760),
    ]  # fmt: skip
    assert rows(ctx, "SELECT transaction_id, product_id, quantity FROM transaction_items ORDER BY 1, 2") == [
        ("T1", "P2", 3), ("T2", "P1", 2), ("T3", "R1", 1), ("T5", "P1", 2),
    ]  # fmt: skip
    pipelined = _state(ctx)

    # The same files one at a time, each checked after the previous committed.
    with ctx.engine.begin() as conn:
        conn.execute(text("TRUNCATE transactions, transaction_items, metric_refresh_queue, quarantined_rows"))
    landing = open_root(str(root))
    run_id = uuid.uuid4()
    with ctx.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO ingestion_runs (run_id, root, trigger, status) VALUES (:id, :root, 'test', 'running')"),
            {"id": run_id, "root": landing.uri},
        )
    for part in landing.partitions("transactions"):
        for file in landing.files("transactions", part):
            load.load_file(ctx.engine, landing, SPECS["transactions"], file, run_id)
    assert _state(ctx) == pipelined
    assert work_schemas(ctx) == []


@pytest.mark.usefixtures("next_file_checked_first")
def test_without_the_recheck_the_overlap_would_quarantine_a_valid_refund(
    ctx: PipelineContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the fixture really makes the second file's checks miss the first file's rows."""
    root = base_landing(tmp_path / "landing")
    write_csv(root, "transactions", "2026-03-01", "t.csv", TXN_HEADER, txn_rows([txn("T2")]))
    write_csv(root, "transactions", "2026-03-02", "t.csv", TXN_HEADER, txn_rows([
        txn("T4", type="REFUND", refund_of="T2", amount="1.00", tip_amount=None, items=None),
    ]))  # fmt: skip
    ingest_dataset(ctx, str(root), "merchants")
    monkeypatch.setitem(SPECS, "transactions", dataclasses.replace(SPECS["transactions"], recheck=""))
    ingest_dataset(ctx, str(root), "transactions")
    assert rows(ctx, "SELECT left(reason, 40) FROM quarantined_rows") == [("refund_of 'T2' points to no payment of t",)]


def test_a_crash_mid_run_keeps_committed_files_and_leaves_no_work_schemas(
    ctx: PipelineContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _adjacent_days(tmp_path / "landing")
    ingest_dataset(ctx, str(root), "merchants")
    original = load.apply_file
    applied: list[str] = []

    def apply_file(conn: Any, file: load.PreparedFile, *args: Any, **kwargs: Any) -> load.FileResult:
        if applied:
            raise RuntimeError("worker lost")
        applied.append(file.display)
        return original(conn, file, *args, **kwargs)

    monkeypatch.setattr(load, "apply_file", apply_file)
    with pytest.raises(RuntimeError, match="worker lost"):
        ingest_dataset(ctx, str(root), "transactions")
    assert rows(ctx, "SELECT count(*), min(source_partition)::text FROM transactions") == [(3, "2026-03-01")]
    assert rows(ctx, "SELECT status, error FROM ingestion_runs WHERE stats->>'dataset' = 'transactions'") == [
        ("failed", "RuntimeError: worker lost")
    ]
    assert work_schemas(ctx) == []


def test_work_schemas_of_runs_no_session_holds_are_swept(ctx: PipelineContext, tmp_path: Path) -> None:
    live, dead = uuid.uuid4(), uuid.uuid4()
    with ctx.engine.begin() as conn:
        for run_id in (live, dead):
            schema = load._work_schema(run_id, uuid.uuid4())
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            conn.execute(text(f'CREATE UNLOGGED TABLE "{schema}".ingest_stage (line_no int)'))
    root = base_landing(tmp_path / "landing")
    # Another process is still loading for ``live``: its session holds the run's lock.
    raw = ctx.engine.raw_connection()
    try:
        with load._run_lock(raw.driver_connection, live):
            ingest_dataset(ctx, str(root), "merchants")
            assert [s.split("_")[2] for s in work_schemas(ctx)] == [live.hex[:12]]
        ingest_dataset(ctx, str(root), "merchants")  # that process is gone now
        assert work_schemas(ctx) == []
    finally:
        raw.close()
