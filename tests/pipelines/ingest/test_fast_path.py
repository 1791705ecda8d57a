"""The CSV COPY fast path reads exactly what the row-by-row reader reads, or hands the file to it."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import pipelines.ingest.load as load
from pipelines.context import PipelineContext
from pipelines.ingest import ingest, ingest_dataset
from tests.pipelines.ingest.conftest import TXN_HEADER, base_landing, txn, txn_rows, write_csv

DT = "2026-03-01"


@pytest.fixture
def row_path_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = load._stage_rows

    def spy(cur: Any, columns: list[str], spec: Any, reader: Any) -> int:
        calls.append(reader.file.relpath)
        return original(cur, columns, spec, reader)

    monkeypatch.setattr(load, "_stage_rows", spy)
    return calls


def rows(ctx: PipelineContext, sql: str) -> list[tuple[Any, ...]]:
    with ctx.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def test_clean_csv_takes_the_fast_path_with_line_numbers_and_nulls(
    ctx: PipelineContext, tmp_path: Path, row_path_calls: list[str]
) -> None:
    root = base_landing(tmp_path)
    records = [txn(f"T{i}") for i in range(5)] + [txn("T_BAD", amount="0.00")]
    path = write_csv(root, "transactions", DT, "t.csv.gz", TXN_HEADER, txn_rows(records))
    ingest_dataset(ctx, str(root), "merchants")
    row_path_calls.clear()
    summary = ingest_dataset(ctx, str(root), "transactions")
    assert row_path_calls == []
    assert (summary.rows_read, summary.rows_loaded, summary.rows_quarantined) == (6, 5, 1)
    assert rows(ctx, "SELECT line_no FROM quarantined_rows") == [(7,)]
    assert rows(ctx, "SELECT count(*) FROM transactions WHERE location_id IS NULL AND refund_of IS NULL") == [(5,)]
    assert path.exists()


def test_quoted_empty_values_are_null_and_extra_columns_ignored(
    ctx: PipelineContext, tmp_path: Path, row_path_calls: list[str]
) -> None:
    root = base_landing(tmp_path)
    header = (*TXN_HEADER, "note")
    body = io.StringIO()
    csv.writer(body, quoting=csv.QUOTE_ALL).writerow(["" if v is None else v for v in txn_rows([txn("T1")])[0]] + ["x"])
    folder = root / "transactions" / f"dt={DT}"
    folder.mkdir(parents=True)
    (folder / "t.csv").write_text("\ufeff" + ",".join(header) + "\r\n" + body.getvalue())
    ingest_dataset(ctx, str(root), "merchants")
    row_path_calls.clear()
    [result] = ingest_dataset(ctx, str(root), "transactions").files
    assert row_path_calls == []
    assert result.warnings == ["ignored extra column(s): note"]
    assert rows(ctx, "SELECT location_id, refund_of, updated_at FROM transactions") == [(None, None, None)]


@pytest.mark.parametrize(
    ("case", "content"),
    [
        ("record spanning lines", 'T2,M1,2026-03-01T10:00:00Z,PAYMENT,SUCCESSFUL,1.00,0,EUR,CARD,,c1,"loc\nA",,,\n'),
        ("blank line", "\n"),
        (
            "quote inside an unquoted value",
            'T2,M1,2026-03-01T10:00:00Z,PAYMENT,SUCCESSFUL,1.00,0,EUR,CARD,,c"1"x,,,,\n',
        ),
        ("too few fields", "T2,M1\n"),
    ],
)
def test_files_the_fast_path_cannot_read_exactly_take_the_row_path(
    ctx: PipelineContext, tmp_path: Path, row_path_calls: list[str], case: str, content: str
) -> None:
    root = base_landing(tmp_path)
    path = write_csv(root, "transactions", DT, "t.csv", TXN_HEADER, txn_rows([txn("T1")]))
    bad = "T3,M1,2026-03-01T10:00:00Z,SALE,SUCCESSFUL,1.00,0,EUR,CARD,,,,,,\n"
    path.write_text(path.read_text() + content + bad)
    summary = ingest(ctx, str(root))
    txns = next(d for d in summary.datasets if d.dataset == "transactions")
    assert row_path_calls[-1].endswith("t.csv")
    assert txns.rows_read == txns.rows_loaded + txns.rows_quarantined
    # Line numbers are physical lines, as the row-by-row reader counts them.
    last_line = path.read_text().count("\n")
    assert (last_line, "unknown type 'SALE'") in [
        (r[0], r[1][: len("unknown type 'SALE'")]) for r in rows(ctx, "SELECT line_no, reason FROM quarantined_rows")
    ]
    if case == "quote inside an unquoted value":
        assert rows(ctx, "SELECT customer_id FROM transactions WHERE transaction_id = 'T2'") == [('c"1"x',)]
