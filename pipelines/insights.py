"""Ask for proactive-insight runs once a day's data is in.

Requests go into the transactional outbox (``notification_outbox``) keyed by
merchant and day, so a re-run of the DAG or the CLI never queues a merchant's
day twice; the insight workers consume them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from sqlalchemy import text

from pipelines.context import PipelineContext

EVENT_TYPE = "insights.requested"


@dataclass
class TriggerSummary:
    """How many merchants had data on the day and how many requests were new."""

    as_of: str
    merchants: int
    requested: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def request_insight_runs(ctx: PipelineContext, as_of: date) -> TriggerSummary:
    """Queue an insights run for every merchant with metrics on ``as_of``."""
    started = time.perf_counter()
    with ctx.engine.begin() as conn:
        merchants = conn.execute(
            text("SELECT count(DISTINCT merchant_id) FROM daily_metrics WHERE day = :d"), {"d": as_of}
        ).scalar_one()
        requested = conn.execute(
            text(
                """
                INSERT INTO notification_outbox (merchant_id, event_type, idempotency_key, payload)
                SELECT DISTINCT merchant_id, :event, :event || ':' || merchant_id || ':' || :d,
                       jsonb_build_object('as_of', :d)
                FROM daily_metrics WHERE day = CAST(:d AS date)
                ON CONFLICT (idempotency_key) DO NOTHING
                """
            ),
            {"event": EVENT_TYPE, "d": as_of.isoformat()},
        ).rowcount
    return TriggerSummary(as_of.isoformat(), int(merchants), int(requested), round(time.perf_counter() - started, 3))
