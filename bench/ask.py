"""Ask latency benchmark: the whole ask graph with the offline model over ~1M transactions.

Builds ~1M transactions (50 merchants x 365 days x 55, five zones, items and a
catalogue) in SQL on an embedded PostgreSQL, refreshes the aggregates, starts
an embedded Redis and the in-process gateway (keys, limits, metering on; the
built-in offline model), then asks a fixed mix of questions round-robin over
the merchants and reports p50/p95 latency. In the same run, the baseline is
the metric queries alone (the SQL the answers need, through the metrics
layer), so the ratio shows what planning, narration and verification add.

    uv run python bench/ask.py                      # 50 x 365 x 55, 120 questions
    uv run python bench/ask.py --merchants 10 --days 120 --questions 40

Goal (issue 5): ask p50 <= 150 ms, p95 <= 400 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import create_engine, pool, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.aggregates import _ITEMS, _MERCHANTS, _TRANSACTIONS  # noqa: E402  (same generated facts)

FIRST = date(2025, 1, 1)
QUESTIONS = [
    "How much did I make last week?",
    "What were my net sales yesterday?",
    "How many transactions did I have last month?",
    "What's my average ticket this month?",
    "How much did I refund last month?",
    "Sales by day last week",
    "Top 5 products last month",
    "Which hour is busiest for sales last month?",
    "How did revenue last week compare with the week before?",
    "Were sales last week better than usual?",
    "How many unique customers came last month?",
    "What was my payment method mix last month?",
    "Quel est mon chiffre d'affaires la semaine dernière ?",
    "¿Cuántas propinas recibí el mes pasado?",
]
_PRODUCTS = """
INSERT INTO products (merchant_id, product_id, name, category, price_minor, currency)
SELECT m.merchant_id, 'P' || p, 'Product ' || p, (ARRAY['Coffee', 'Food', 'Retail'])[p % 3 + 1], 100 + p * 10,
       m.currency
FROM merchants m CROSS JOIN generate_series(0, 30) AS p
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--merchants", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=55)
    parser.add_argument("--questions", type=int, default=120, help="questions asked (after 5 warm-up ones)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ask.json"))
    args = parser.parse_args()

    from bench._embedded import migrated_postgres
    from core.config import DatabaseSettings, GatewaySettings, LangfuseSettings, Settings
    from core.db import Database
    from core.db.engine import create_async_db_engine, normalize_url
    from core.db.session import async_session_scope, make_async_sessionmaker
    from core.embedded import EmbeddedRedis
    from core.metrics import arun_metric_query
    from gateway.inprocess import Gateway
    from orchestrator.service import Copilot
    from orchestrator.tools import parse_metric_call
    from pipelines.aggregates import refresh_range
    from pipelines.context import PipelineContext

    db_settings = DatabaseSettings(pool_size=4, statement_timeout_ms=0)
    redis_dir = Path(tempfile.mkdtemp(prefix="bench-ask-redis-", dir="/tmp"))
    redis_server = EmbeddedRedis(redis_dir)
    with migrated_postgres("bench-ask-", "bench_ask", db_settings) as url:
        engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
        params = {"merchants": args.merchants, "days": args.days, "per_day": args.per_day, "first": FIRST}
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text(_MERCHANTS), params)
            conn.execute(text(_PRODUCTS))
            conn.execute(text(_TRANSACTIONS), params)
            conn.execute(text(_ITEMS))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
            transactions = conn.execute(text("SELECT count(*) FROM transactions")).scalar_one()
            merchants = list(conn.execute(text("SELECT merchant_id FROM merchants ORDER BY 1")).scalars())
        database = Database(url, db_settings)
        ctx = PipelineContext(settings=Settings(database=db_settings), database=database)
        refresh_range(ctx, FIRST - timedelta(days=1), FIRST + timedelta(days=args.days))
        generated = time.perf_counter() - started
        as_of = FIRST + timedelta(days=args.days - 1)
        redis_url = redis_server.start()
        spool = Path(tempfile.mkdtemp(prefix="bench-ask-spool-", dir="/tmp"))
        settings = Settings(
            database=db_settings,
            gateway=GatewaySettings(usage_spool_dir=spool),
            langfuse=LangfuseSettings(enabled=False),
        )

        async def run() -> tuple[list[float], list[float], dict[str, int]]:
            gateway = await Gateway.start(settings, database_url=url, redis_url=redis_url)
            app_engine = create_async_db_engine(database.app_url, db_settings)
            sessions = make_async_sessionmaker(app_engine)
            copilot = Copilot(gateway=gateway, sessions=sessions, settings=settings.orchestrator)
            latencies: list[float] = []
            sql_only: list[float] = []
            sources: dict[str, int] = {}
            try:
                for i in range(5):  # warm-up: imports, pools, caches
                    await copilot.ask(merchants[i % len(merchants)], QUESTIONS[i], as_of=as_of)
                for i in range(args.questions):
                    merchant = merchants[i % len(merchants)]
                    question = QUESTIONS[i % len(QUESTIONS)]
                    t0 = time.perf_counter()
                    reply = await copilot.ask(merchant, question, as_of=as_of)
                    latencies.append((time.perf_counter() - t0) * 1000)
                    sources[reply.source] = sources.get(reply.source, 0) + 1
                    # Baseline: the same metric queries, straight through the metrics layer.
                    t0 = time.perf_counter()
                    if reply.facts:
                        first = reply.facts[0]
                        query = parse_metric_call(
                            {"metric": first["name"], "start_date": first["period"]["start"],
                             "end_date": (date.fromisoformat(first["period"]["end"]) - timedelta(days=1)).isoformat()},
                            as_of,
                        )  # fmt: skip
                        async with async_session_scope(sessions, merchant) as session:
                            await arun_metric_query(session, merchant, query, as_of=as_of)
                    sql_only.append((time.perf_counter() - t0) * 1000)
            finally:
                await gateway.aclose()
                await app_engine.dispose()
            return latencies, sql_only, sources

        try:
            latencies, sql_only, sources = asyncio.run(run())
        finally:
            ctx.close()
            engine.dispose()
            redis_server.stop()
            shutil.rmtree(redis_dir, ignore_errors=True)
            shutil.rmtree(spool, ignore_errors=True)

    p50, p95 = _pct(latencies, 0.5), _pct(latencies, 0.95)
    b50, b95 = _pct(sql_only, 0.5), _pct(sql_only, 0.95)
    print(f"\n{transactions:,} transactions, {len(merchants)} merchants (generated in {generated:.0f}s)")
    print(f"{'path':<28} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    print(f"{'ask (whole graph)':<28} {p50:>8.1f} {p95:>8.1f} {statistics.mean(latencies):>8.1f}")
    print(f"{'metric query alone':<28} {b50:>8.1f} {b95:>8.1f} {statistics.mean(sql_only):>8.1f}")
    print(f"ask / query at p50: {p50 / max(b50, 0.001):.1f}x   wording: {sources}")
    print(
        f"goal p50 <= 150 ms: {'met' if p50 <= 150 else 'NOT met'};  p95 <= 400 ms: {'met' if p95 <= 400 else 'NOT met'}"
    )
    result = {
        "benchmark": "ask",
        "transactions": transactions,
        "merchants": len(merchants),
        "questions": len(latencies),
        "ask_ms": {"p50": round(p50, 1), "p95": round(p95, 1), "mean": round(statistics.mean(latencies), 1)},
        "metric_query_ms": {"p50": round(b50, 1), "p95": round(b95, 1)},
        "ask_vs_query_p50": round(p50 / max(b50, 0.001), 1),
        "wording": sources,
        "goal_ms": {"p50": 150, "p95": 400},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
