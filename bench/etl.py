"""ETL benchmark: transactions ingest end to end vs a raw COPY of the same rows.

For each scale (default 1M, 2M and 4M transactions) it generates a landing
folder, loads merchants, then times ``ingest_dataset(..., "transactions")``
(parse, stage, validate in SQL, quarantine, upsert with indexes, items,
metric queue) against a plain ``COPY ... FROM STDIN (FORMAT csv)`` of the
same decompressed files into an unindexed all-text table, in the same run on
the same server. Each scale runs in a child process so its peak RSS is its
own. Prints a table and writes JSON.

Three references, all measured in the same run:

- ``copy``: the goal's baseline, COPY into a plain (logged) unindexed table;
- ``copy_unlogged``: the same into an UNLOGGED table (no WAL at all);
- ``store``: the cost of storing alone, with no parsing or validation: the
  rows the ingest loaded, already typed, inserted into empty copies of
  ``transactions`` and ``transaction_items`` with the same indexes and
  constraints. No loader of this schema can be faster than this, so
  ``store / copy`` bounds the reachable ratio and ``ingest / store`` is the
  loader's own overhead.

    uv run python bench/etl.py                 # 1M, 2M, 4M
    uv run python bench/etl.py --scales 200000 # quick check

Goal (issue 3): ingest >= 0.5x raw COPY rows/s; peak memory flat as input grows.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# About 245 transactions per merchant-day at volume 1.0 with 100 merchants.
_ROWS_PER_MERCHANT_DAY = 245


def _generate(out: Path, rows: int) -> dict[str, Any]:
    from pipelines.synthetic import GenerateConfig, generate

    merchants = 100
    days = max(2, round(rows / (merchants * _ROWS_PER_MERCHANT_DAY)))
    started = time.perf_counter()
    summary = generate(GenerateConfig(merchants=merchants, days=days, seed=1, out=out, events=False))
    return {
        "transactions": summary.rows["transactions"],
        "files": summary.files,
        "generate_seconds": round(time.perf_counter() - started, 1),
    }


def _conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _raw_copy(url: str, landing: Path, *, unlogged: bool) -> tuple[int, float]:
    import psycopg

    columns = None
    rows = 0
    with psycopg.connect(_conninfo(url)) as conn:
        files = sorted((landing / "transactions").rglob("*.csv.gz"))
        with gzip.open(files[0], "rt") as handle:
            columns = handle.readline().strip().split(",")
        definitions = ", ".join(f'"{c}" text' for c in columns)
        conn.execute("DROP TABLE IF EXISTS raw_copy")
        conn.execute(f"CREATE {'UNLOGGED ' if unlogged else ''}TABLE raw_copy ({definitions})")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur:
            for path in files:
                with gzip.open(path, "rb") as handle, cur.copy("COPY raw_copy FROM STDIN (FORMAT csv, HEADER)") as copy:
                    while chunk := handle.read(1 << 20):
                        copy.write(chunk)
        conn.commit()
        elapsed = time.perf_counter() - started
        rows = conn.execute("SELECT count(*) FROM raw_copy").fetchone()[0]  # type: ignore[index]
        conn.execute("DROP TABLE raw_copy")
        conn.commit()
    return rows, elapsed


def _store_only(url: str) -> tuple[int, float]:
    """Insert the loaded, typed rows into empty indexed copies of the fact tables (the schema's floor)."""
    import psycopg

    with psycopg.connect(_conninfo(url)) as conn:
        for table in ("transactions", "transaction_items"):
            conn.execute(f"CREATE TABLE store_{table} (LIKE {table} INCLUDING ALL)")
        conn.execute("CHECKPOINT")
        conn.commit()
        started = time.perf_counter()
        # A sequential scan returns them in the order the ingest wrote them.
        conn.execute("INSERT INTO store_transactions SELECT * FROM transactions")
        conn.execute("INSERT INTO store_transaction_items SELECT * FROM transaction_items")
        conn.commit()
        elapsed = time.perf_counter() - started
        rows = conn.execute("SELECT count(*) FROM store_transactions").fetchone()[0]  # type: ignore[index]
        for table in ("transactions", "transaction_items"):
            conn.execute(f"DROP TABLE store_{table}")
        conn.commit()
    return rows, elapsed


def _run_scale(rows: int, server_url: str, workdir: str, queue: Any) -> None:
    """Child process: raw COPY, then ingest; report timings and peak RSS."""
    from core.config import DatabaseSettings, Settings
    from core.db import Database
    from core.db.admin import create_database
    from core.db.migrate import migrate
    from pipelines.context import PipelineContext
    from pipelines.ingest import ingest_dataset

    landing = Path(workdir) / f"landing-{rows}"
    url = create_database(server_url, f"bench_etl_{rows}")
    settings = DatabaseSettings(pool_size=2)
    migrate(url, settings)
    copy_rows, copy_seconds = _raw_copy(url, landing, unlogged=False)
    unlogged_rows, unlogged_seconds = _raw_copy(url, landing, unlogged=True)

    ctx = PipelineContext(settings=Settings(database=settings), database=Database(url, settings))
    ingest_dataset(ctx, str(landing), "merchants")
    ingest_dataset(ctx, str(landing), "products")
    started = time.perf_counter()
    summary = ingest_dataset(ctx, str(landing), "transactions")
    ingest_seconds = time.perf_counter() - started
    ctx.close()
    # Measured after the ingest (it needs the loaded rows); RSS is already recorded below.
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    store_rows, store_seconds = _store_only(url)
    ingest_rate = summary.rows_read / ingest_seconds
    copy_rate = copy_rows / copy_seconds
    store_rate = store_rows / store_seconds
    queue.put(
        {
            "target_rows": rows,
            "rows_read": summary.rows_read,
            "rows_quarantined": summary.rows_quarantined,
            "failed_files": len(summary.failed_files),
            "ingest_seconds": round(ingest_seconds, 2),
            "ingest_rows_per_s": round(summary.rows_read / ingest_seconds),
            "copy_rows": copy_rows,
            "copy_seconds": round(copy_seconds, 2),
            "copy_rows_per_s": round(copy_rate),
            "ratio_vs_copy": round(ingest_rate / copy_rate, 3),
            "copy_unlogged_seconds": round(unlogged_seconds, 2),
            "copy_unlogged_rows_per_s": round(unlogged_rows / unlogged_seconds),
            "ratio_vs_copy_unlogged": round(ingest_rate / (unlogged_rows / unlogged_seconds), 3),
            "store_rows": store_rows,
            "store_seconds": round(store_seconds, 2),
            "store_rows_per_s": round(store_rate),
            "store_ratio_vs_copy": round(store_rate / copy_rate, 3),
            "ratio_vs_store": round(ingest_rate / store_rate, 3),
            # ru_maxrss is KiB on Linux; this child only streamed COPY and ingested.
            "peak_rss_mb_ingest": round(peak_rss, 1),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1000000,2000000,4000000", help="comma-separated transaction counts")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "etl.json"))
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]

    from core.embedded import EmbeddedPostgres

    workdir = tempfile.mkdtemp(prefix="bench-etl-", dir="/tmp")
    server = EmbeddedPostgres(Path(workdir), database="postgres")
    server_url = server.start()
    ctx = mp.get_context("spawn")
    results = []
    try:
        for rows in scales:
            # Generated here, so the child's peak RSS is the ingest's alone.
            landing = Path(workdir) / f"landing-{rows}"
            generated = _generate(landing, rows)
            queue = ctx.Queue()
            child = ctx.Process(target=_run_scale, args=(rows, server_url, workdir, queue))
            child.start()
            result = {**generated, **queue.get()}
            child.join()
            shutil.rmtree(landing, ignore_errors=True)
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    header = (
        f"{'rows':>10} {'ingest rows/s':>14} {'COPY rows/s':>12} {'ratio':>6} {'unlogged':>9} {'ratio':>6} "
        f"{'store rows/s':>13} {'store/COPY':>10} {'ingest/store':>12} {'ingest s':>9} {'peak RSS MB':>12}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['rows_read']:>10,} {r['ingest_rows_per_s']:>14,} {r['copy_rows_per_s']:>12,} "
            f"{r['ratio_vs_copy']:>6.3f} {r['copy_unlogged_rows_per_s']:>9,} {r['ratio_vs_copy_unlogged']:>6.3f} "
            f"{r['store_rows_per_s']:>13,} {r['store_ratio_vs_copy']:>10.3f} {r['ratio_vs_store']:>12.3f} "
            f"{r['ingest_seconds']:>9.1f} {r['peak_rss_mb_ingest']:>12.1f}"
        )
    print(
        "\nratio = ingest / COPY into a plain unindexed table (goal >= 0.5); store = typed rows inserted into\n"
        "empty indexed copies of the fact tables, no parsing or validation: store/COPY bounds any loader."
    )
    if len(results) > 1:
        first, last = results[0], results[-1]
        growth = last["peak_rss_mb_ingest"] / first["peak_rss_mb_ingest"]
        print(f"\npeak RSS {last['rows_read']:,} vs {first['rows_read']:,} rows: x{growth:.2f} (flat = ~1.0)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "etl", "goal_ratio": 0.5, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
