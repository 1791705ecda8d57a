"""Stored insights: history for cooldowns, idempotent writes, the delivery outbox.

``insights`` has a unique ``(merchant_id, dedup_key)``; writes use ``ON
CONFLICT DO NOTHING`` and only newly inserted insights get an outbox row, whose
``idempotency_key`` is unique too, so re-running a day writes nothing twice.
The insight model has no ``subject`` column: the subject and the signatures of
absorbed candidates live in ``evidence`` (``subject``, ``related``).
Nothing here commits: the caller owns the transaction.

Wording: an insight stored with its narrated and verified title/body carries
``evidence.wording`` = ``model``, ``repaired`` or ``fallback`` (and the
details in ``evidence.narration``). The bulk run stores first with the
deterministic wording and ``wording`` = ``pending``, holding its outbox event
back (``available_at`` in the future) until :func:`save_wording` releases it,
so delivery sends the narrated text; if narration never happens the event is
still delivered once the hold expires, with the deterministic text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core.models import Insight as InsightRow
from core.models import NotificationOutbox
from orchestrator.insights.data import Executor
from orchestrator.insights.render import body, title
from orchestrator.insights.selection import StoredInsight
from orchestrator.insights.types import Insight, Signature

EVENT_TYPE = "insight.created"
HISTORY_DAYS = 21
PENDING = "pending"

WordingPath = Literal["model", "repaired", "fallback"]


@dataclass(frozen=True)
class Wording:
    """The title and body to store, and how they were obtained.

    Attributes:
        title: Headline shown to the merchant.
        body: One to three sentences.
        path: ``model`` (first draft verified), ``repaired`` (second draft verified)
            or ``fallback`` (deterministic wording from :mod:`render`).
        detail: What happened (model, issues of rejected drafts, errors), kept in ``evidence.narration``.
    """

    title: str
    body: str
    path: WordingPath
    detail: dict[str, Any] = field(default_factory=dict)


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


def to_row(i: Insight, as_of: date, wording: Wording | None = None, trace_id: str | None = None) -> dict[str, Any]:
    """The ``insights`` row of a selected insight (status ``new``); without ``wording``, the deterministic one."""
    evidence = {
        **i.evidence,
        "subject": i.subject,
        "observed": i.observed,
        "expected": i.expected,
        "unit": i.unit,
        "currency": i.currency,
        "related": _related(i),
        "wording": wording.path if wording else PENDING,
    }
    if wording is not None:
        evidence["narration"] = wording.detail
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
        "title": wording.title if wording else title(i),
        "body": wording.body if wording else body(i),
        "facts": [f.as_dict() for f in i.facts],
        "evidence": evidence,
        "dedup_key": i.dedup_key,
        "status": "new",
        "trace_id": trace_id,
    }


def store_insights(
    executor: Executor,
    insights: Sequence[Insight],
    as_of: date,
    *,
    wording: Mapping[str, Wording] | None = None,
    hold_delivery: timedelta | None = None,
    trace_id: str | None = None,
) -> list[dict[str, Any]]:
    """Insert insights not stored yet and queue one ``insight.created`` outbox event for each.

    Args:
        executor: Connection or session inside the caller's transaction.
        insights: Selected insights.
        as_of: The analysed day.
        wording: Verified wording by ``dedup_key``; insights without one get the
            deterministic wording and ``evidence.wording`` = ``pending``.
        hold_delivery: Make the outbox events available only after this delay
            (narration of pending insights releases them earlier).
        trace_id: The trace of the run that produced them.

    Returns:
        ``{"insight_id", "merchant_id", "dedup_key", "kind"}`` of the rows inserted by this call.
    """
    if not insights:
        return []
    chosen = wording or {}
    rows = [to_row(i, as_of, chosen.get(i.dedup_key), trace_id) for i in insights]
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
        if hold_delivery is not None:
            available = func.now() + hold_delivery
            for row in outbox:
                row["available_at"] = available
        executor.execute(
            pg_insert(NotificationOutbox).values(outbox).on_conflict_do_nothing(index_elements=["idempotency_key"])
        )
    return inserted


_SAVE_WORDING = text(
    """
    UPDATE insights
    SET title = :title, body = :body, evidence = evidence || CAST(:patch AS jsonb),
        trace_id = coalesce(CAST(:trace_id AS text), trace_id)
    WHERE insight_id = :insight_id AND evidence->>'wording' = 'pending'
    RETURNING merchant_id, dedup_key
    """
).bindparams(bindparam("patch", type_=JSONB))
_RELEASE = text(
    """
    UPDATE notification_outbox SET available_at = least(available_at, now())
    WHERE idempotency_key = :key AND dispatched_at IS NULL
    """
)


def save_wording(executor: Executor, wordings: Mapping[Any, Wording], trace_id: str | None = None) -> int:
    """Store narrated wording of pending insights and release their held outbox events.

    Args:
        executor: Connection or session inside the caller's transaction.
        wordings: Wording by ``insight_id``.
        trace_id: The trace of the narration run.

    Returns:
        How many insights were still pending and got their wording (a re-run updates none).
    """
    updated = 0
    for insight_id, w in wordings.items():
        params = {"insight_id": insight_id, "title": w.title, "body": w.body, "trace_id": trace_id,
                  "patch": {"wording": w.path, "narration": w.detail}}  # fmt: skip
        row = executor.execute(_SAVE_WORDING, params).first()
        if row is None:
            continue
        updated += 1
        executor.execute(_RELEASE, {"key": f"{EVENT_TYPE}:{row[0]}:{row[1]}"})
    return updated


__all__ = [
    "EVENT_TYPE",
    "PENDING",
    "Wording",
    "WordingPath",
    "load_history",
    "save_wording",
    "store_insights",
    "to_row",
]
