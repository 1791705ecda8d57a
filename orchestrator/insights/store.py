"""Stored insights: history for cooldowns, idempotent writes, the delivery outbox.

``insights`` has a unique ``(merchant_id, dedup_key)``; writes use ``ON
CONFLICT DO NOTHING`` and only newly inserted insights get an outbox row, whose
``idempotency_key`` is unique too, so re-running a day writes nothing twice.
The insight model has no ``subject`` column: the subject and the signatures of
absorbed candidates live in ``evidence`` (``subject``, ``related``).
Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core.models import Insight as InsightRow
from core.models import NotificationOutbox
from orchestrator.insights.data import Executor
from orchestrator.insights.render import body, title
from orchestrator.insights.selection import StoredInsight
from orchestrator.insights.types import Insight, Signature

EVENT_TYPE = "insight.created"
HISTORY_DAYS = 21

_HISTORY = text(
    """
    SELECT merchant_id, kind, metric, direction, coalesce(evidence->>'subject', ''), as_of,
           period_start, period_end, dedup_key, coalesce(evidence->'related', CAST('[]' AS jsonb))
    FROM insights
    WHERE merchant_id = ANY(CAST(:ids AS text[])) AND as_of BETWEEN :since AND :as_of
    """
)


def load_history(
    executor: Executor, merchant_ids: Sequence[str], as_of: date, days: int = HISTORY_DAYS
) -> dict[str, list[StoredInsight]]:
    """Insights stored for these merchants with ``as_of`` in the ``days`` before (and on) ``as_of``."""
    out: dict[str, list[StoredInsight]] = {}
    params = {"ids": list(merchant_ids), "since": as_of - timedelta(days=days), "as_of": as_of}
    for mid, kind, metric, direction, subject, day, start, end, key, related in executor.execute(_HISTORY, params):
        sigs: set[Signature] = {(kind, metric, subject, direction)}
        for r in related or []:
            sigs.add((str(r["kind"]), str(r["metric"]), str(r.get("subject") or ""), str(r["direction"])))
        out.setdefault(mid, []).append(StoredInsight(kind, day, start, end, key, frozenset(sigs)))
    return out


def _related(i: Insight) -> list[dict[str, Any]]:
    return [
        {
            "kind": r.kind,
            "metric": r.metric,
            "subject": r.subject,
            "direction": r.direction,
            "observed": r.observed,
            "expected": r.expected,
            "impact_minor": r.impact_minor,
            "confidence": r.confidence,
            "dedup_key": r.dedup_key,
        }
        for r in i.related
    ]


def to_row(i: Insight, as_of: date) -> dict[str, Any]:
    """The ``insights`` row of a selected insight (status ``new``)."""
    evidence = {
        **i.evidence,
        "subject": i.subject,
        "observed": i.observed,
        "expected": i.expected,
        "unit": i.unit,
        "currency": i.currency,
        "related": _related(i),
    }
    return {
        "merchant_id": i.merchant_id,
        "kind": i.kind,
        "metric": i.metric,
        "direction": i.direction,
        "period_start": i.period_start,
        "period_end": i.period_end,
        "as_of": as_of,
        "impact_minor": i.impact_minor,
        "confidence": i.confidence,
        "score": i.score,
        "title": title(i),
        "body": body(i),
        "facts": [f.as_dict() for f in i.facts],
        "evidence": evidence,
        "dedup_key": i.dedup_key,
        "status": "new",
    }


def store_insights(executor: Executor, insights: Sequence[Insight], as_of: date) -> list[dict[str, Any]]:
    """Insert insights not stored yet and queue one ``insight.created`` outbox event for each.

    Args:
        executor: Connection or session inside the caller's transaction.
        insights: Selected insights.
        as_of: The analysed day.

    Returns:
        ``{"insight_id", "merchant_id", "dedup_key"}`` of the rows inserted by this call.
    """
    if not insights:
        return []
    rows = [to_row(i, as_of) for i in insights]
    stmt = (
        pg_insert(InsightRow)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["merchant_id", "dedup_key"])
        .returning(InsightRow.insight_id, InsightRow.merchant_id, InsightRow.dedup_key, InsightRow.kind)
    )
    inserted = [
        {"insight_id": r[0], "merchant_id": r[1], "dedup_key": r[2], "kind": r[3]} for r in executor.execute(stmt)
    ]
    if inserted:
        outbox = [
            {
                "merchant_id": r["merchant_id"],
                "event_type": EVENT_TYPE,
                "idempotency_key": f"{EVENT_TYPE}:{r['merchant_id']}:{r['dedup_key']}",
                "payload": {"insight_id": str(r["insight_id"]), "kind": r["kind"], "as_of": as_of.isoformat()},
            }
            for r in inserted
        ]
        executor.execute(
            pg_insert(NotificationOutbox).values(outbox).on_conflict_do_nothing(index_elements=["idempotency_key"])
        )
    return inserted


__all__ = ["EVENT_TYPE", "load_history", "store_insights", "to_row"]
