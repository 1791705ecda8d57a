"""Aggregate refresh benchmark: full and no-change refresh vs one GROUP BY pass.

Builds ~2M transactions (100 merchants x 365 days, 5 time zones) with items
directly in SQL on an embedded PostgreSQL, then times ``refresh_range`` over
every day twice (initial, then nothing changed) and, in the same run, a
baseline: one ``GROUP BY merchant, local day`` over the same rows (the least
any refresh must read). Prints a table, writes JSON.

    uv run python bench/aggregates.py                       # 100 x 365 x 55
    uv run python bench/aggregates.py --merchants 20 --days 60

Goal (issue 3 item 4, issue 5 bench): a full refresh of 2M transactions in
well under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import create_engine, pool, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIRST = date(2025, 11, 1)

_MERCHANTS = """
INSERT INTO merchants (merchant_id, name, category, country, currency, timezone, created_at)
SELECT format('B%s', lpad(g::text, 4, '0')), 'Bench', 'cafe', 'DE',
       (ARRAY['EUR', 'USD', 'JPY', 'AUD', 'GBP'])[g % 5 + 1],
       (ARRAY['Europe/Berlin', 'America/New_York', 'Asia/Tokyo', 'Australia/Sydney', 'Europe/London'])[g % 5 + 1],
       now()
FROM generate_series(1, :merchants) AS g
"""

_TRANSACTIONS = """
INSERT INTO transactions (transaction_id, merchant_id, occurred_at, type, status, amount_minor, tip_minor,
                          currency, payment_method, customer_id)
SELECT format('tx_%s_%s_%s', m.merchant_id, d, n), m.merchant_id,
       ((CAST(:first AS date) + d)::timestamp + interval '7 hours' + random() * interval '15 hours')
         AT TIME ZONE m.timezone,
       CASE WHEN random() < 0.03 THEN 'REFUND' ELSE 'PAYMENT' END,
       CASE WHEN random() < 0.05 THEN 'FAILED' ELSE 'SUCCESSFUL' END,
       100 + (random() * 5000)::int, 0, m.currency,
       (ARRAY['CARD', 'CONTACTLESS', 'WALLET', 'CASH', 'QR', 'OTHER'])[1 + (random() * 5)::int],
       CASE WHEN random() < 0.6 THEN 'C' || (random() * 500)::int END
FROM generate_series(0, :days - 1) AS d
CROSS JOIN merchants m
CROSS JOIN generate_series(1, :per_day) AS n
ORDER BY d, m.merchant_id, n
"""

_ITEMS = """
INSERT INTO transaction_items (transaction_id, line_no, merchant_id, product_id, quantity, unit_price_minor)
SELECT t.transaction_id, l, t.merchant_id, 'P' || (random() * 30)::int, 1 + (random() * 2)::int,
       100 + (random() * 900)::int
FROM transactions t
CROSS JOIN LATERAL generate_series(1, 1 + (random() * t.amount_minor / 2500)::int) AS l
ORDER BY t.transaction_id, l
"""


_BASELINE = """
SELECT count(*) FROM (
  SELECT t.merchant_id, (t.occurred_at AT TIME ZONE m.timezone)::date AS day,
         sum(t.amount_minor) FILTER (WHERE t.type = 'PAYMENT' AND t.status = 'SUCCESSFUL')
  FROM transactions t JOIN merchants m ON m.merchant_id = t.merchant_id
  GROUP BY 1, 2
) x
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--merchants", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=55)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "aggregates.json"))
    args = parser.parse_args()

    from bench._embedded import migrated_postgres
    from core.config import DatabaseSettings, Settings
    from core.db import Database
    from core.db.engine import normalize_url
    from pipelines.aggregates import refresh_range
    from pipelines.context import PipelineContext

    settings = DatabaseSettings(pool_size=4, statement_timeout_ms=0)
    with migrated_postgres("bench-agg-", "bench_aggregates", settings) as url:
        engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
        params = {"merchants": args.merchants, "days": args.days, "per_day": args.per_day, "first": FIRST}
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text(_MERCHANTS), params)
            conn.execute(text(_TRANSACTIONS), params)
            conn.execute(text(_ITEMS))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE transactions, transaction_items"))
            transactions = conn.execute(text("SELECT count(*) FROM transactions")).scalar_one()
        generated = time.perf_counter() - started

        started = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(text(_BASELINE)).scalar_one()
        baseline = time.perf_counter() - started

        ctx = PipelineContext(settings=Settings(database=settings), database=Database(url, settings))
        last = FIRST + timedelta(days=args.days)  # a day of margin for zones ahead of UTC
        initial = refresh_range(ctx, FIRST - timedelta(days=1), last)
        unchanged = refresh_range(ctx, FIRST - timedelta(days=1), last)
        ctx.close()
        engine.dispose()

    rows = [
        ("baseline GROUP BY", baseline, None),
        ("refresh (initial)", initial.seconds, initial.as_dict()),
        ("refresh (no change)", unchanged.seconds, unchanged.as_dict()),
    ]
    print(f"\n{transactions:,} transactions (generated in {generated:.0f}s)")
    print(f"{'run':<22} {'seconds':>8} {'tx/s':>10} {'x baseline':>11}")
    for name, seconds, _ in rows:
        print(f"{name:<22} {seconds:>8.1f} {transactions / seconds:>10,.0f} {seconds / baseline:>11.1f}")
    result = {
        "benchmark": "aggregates",
        "transactions": transactions,
        "baseline_seconds": round(baseline, 2),
        "initial": initial.as_dict(),
        "unchanged": unchanged.as_dict(),
        "initial_vs_baseline": round(initial.seconds / baseline, 2),
        "goal_seconds_for_2m": 60,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
