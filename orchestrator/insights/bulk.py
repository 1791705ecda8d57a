"""The proactive run for many merchants: bulk detection, then narration of what was stored.

Detection reuses :func:`detect_all` (set-based loads, commit per chunk) and
stores every new insight with the deterministic wording, ``evidence.wording``
= ``pending`` and its outbox event held back. :func:`narrate_pending` then
words the pending insights of the day through the gateway, a bounded number
of calls at a time, verifies them like the per-merchant graph does, saves the
wording and releases the events (one transaction per batch). A run that is
interrupted resumes where it stopped: pending rows are found in the table, and
saving only touches rows still pending, so a re-run never narrates twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine, text

from gateway.types import LLMGateway
from orchestrator.insights.data import load_review_snippets
from orchestrator.insights.detectors import DEFAULT_CONFIG, DetectorConfig
from orchestrator.insights.narrate import NarrationSettings, narrate_insight
from orchestrator.insights.run import RunSummary, detect_all
from orchestrator.insights.selection import DEFAULT_SELECTION, SelectionConfig
from orchestrator.insights.store import Wording, save_wording
from orchestrator.insights.types import Fact, Insight
from orchestrator.tracing import GraphTracer

DEFAULT_CONCURRENCY = 8
DEFAULT_BATCH = 200
# Long enough for narration of a whole day's run; delivery goes ahead with the deterministic wording after it.
DEFAULT_HOLD = timedelta(minutes=30)

_PENDING = text(
    """
    SELECT insight_id, merchant_id, kind, metric, direction, period_start, period_end, impact_minor,
           confidence, score, facts, evidence, dedup_key
    FROM insights
    WHERE as_of = :d AND evidence->>'wording' = 'pending'
      AND (CAST(:ids AS text[]) IS NULL OR merchant_id = ANY(CAST(:ids AS text[])))
    ORDER BY merchant_id, dedup_key
    """
)


def insight_from_row(row: Mapping[str, Any]) -> Insight:
    """Rebuild the :class:`Insight` a stored row was made from (facts, evidence, numbers)."""
    evidence = dict(row["evidence"])
    facts = [
        Fact(
            name=str(f["name"]),
            value=f["value"],
            unit=str(f["unit"]),
            period_start=date.fromisoformat(f["period"]["start"]),
            period_end=date.fromisoformat(f["period"]["end"]),
            source=dict(f.get("source") or {}),
            currency=f.get("currency"),
        )
        for f in row["facts"]
    ]
    return Insight(
        merchant_id=str(row["merchant_id"]),
        kind=str(row["kind"]),
        metric=str(row["metric"]),
        direction="up" if row["direction"] == "up" else "down",
        period_start=row["period_start"],
        period_end=row["period_end"],
        observed=float(evidence.get("observed", 0.0)),
        expected=float(evidence.get("expected", 0.0)),
        unit=str(evidence.get("unit", "minor")),
        impact_minor=int(row["impact_minor"]),
        currency=str(evidence.get("currency", "")),
        confidence=float(row["confidence"]),
        subject=evidence.get("subject"),
        dedup_key=str(row["dedup_key"]),
        facts=facts,
        evidence=evidence,
        score=float(row["score"]),
    )


@dataclass
class NarrationSummary:
    """What a narration pass did: ``wording`` counts the saved insights by path."""

    pending: int = 0
    narrated: int = 0
    wording: dict[str, int] = field(default_factory=lambda: {"model": 0, "repaired": 0, "fallback": 0})
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class BulkSummary:
    """Detection and narration of one bulk run."""

    detection: RunSummary
    narration: NarrationSummary

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"detection": self.detection.as_dict(), "narration": self.narration.as_dict()}


def _load_pending(engine: Engine, as_of: date, merchant_ids: Sequence[str] | None) -> list[dict[str, Any]]:
    ids = sorted(set(merchant_ids)) if merchant_ids is not None else None
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(_PENDING, {"d": as_of, "ids": ids})]


def _snippets(engine: Engine, insights: Sequence[Insight]) -> dict[str, list[str]]:
    wanted = [i for i in insights if i.kind == "review_shift"]
    if not wanted:
        return {}
    with engine.connect() as conn:
        return {
            i.dedup_key: load_review_snippets(conn, i.merchant_id, i.period_start, i.period_end,
                                              low=i.direction == "down")
            for i in wanted
        }  # fmt: skip


def _save(engine: Engine, wordings: Mapping[Any, Wording], trace_id: str | None) -> int:
    with engine.begin() as conn:
        return save_wording(conn, wordings, trace_id)


async def narrate_pending(
    engine: Engine,
    gateway: LLMGateway,
    as_of: date,
    merchant_ids: Sequence[str] | None = None,
    *,
    settings: NarrationSettings | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    batch_size: int = DEFAULT_BATCH,
    tracer: GraphTracer | None = None,
) -> NarrationSummary:
    """Word, verify and save the insights of ``as_of`` still pending narration.

    Args:
        engine: An owner engine (the batch writes every merchant's rows).
        gateway: Where narration calls go (each call is attributed to its insight's merchant).
        as_of: The analysed day.
        merchant_ids: Only these merchants (default: all).
        settings: Model alias and limits.
        concurrency: Narration calls in flight at once.
        batch_size: Insights saved per transaction.
        tracer: Spans (a ``narrate_pending`` span with the generations under it); default: none.

    Returns:
        Counts by wording path and timing.
    """
    tracer = tracer or GraphTracer()
    with tracer.span("narrate_pending", input={"as_of": as_of.isoformat()}) as span:
        summary = await _narrate_pending(
            engine, gateway, as_of, merchant_ids, settings, concurrency, batch_size,
            tracer.traceparent(), tracer.trace_id(),
        )  # fmt: skip
        span.update(output=summary.as_dict())
    return summary


async def _narrate_pending(
    engine: Engine,
    gateway: LLMGateway,
    as_of: date,
    merchant_ids: Sequence[str] | None,
    settings: NarrationSettings | None,
    concurrency: int,
    batch_size: int,
    traceparent: str | None,
    trace_id: str | None,
) -> NarrationSummary:
    started = time.perf_counter()
    summary = NarrationSummary()
    rows = await asyncio.to_thread(_load_pending, engine, as_of, merchant_ids)
    summary.pending = len(rows)
    gate = asyncio.Semaphore(max(1, concurrency))
    paths: Counter[str] = Counter()

    async def one(insight: Insight, snippets: Sequence[str]) -> Wording:
        async with gate:
            return await narrate_insight(
                gateway, insight, snippets=snippets, settings=settings, traceparent=traceparent
            )

    for offset in range(0, len(rows), max(1, batch_size)):
        batch = rows[offset : offset + batch_size]
        insights = [insight_from_row(r) for r in batch]
        snippets = await asyncio.to_thread(_snippets, engine, insights)
        wordings = await asyncio.gather(*(one(i, snippets.get(i.dedup_key, ())) for i in insights))
        by_id = {r["insight_id"]: w for r, w in zip(batch, wordings, strict=True)}
        summary.narrated += await asyncio.to_thread(_save, engine, by_id, trace_id)
        paths.update(w.path for w in wordings)
    summary.wording = {p: paths.get(p, 0) for p in ("model", "repaired", "fallback")}
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


async def run_all(
    engine: Engine,
    gateway: LLMGateway,
    as_of: date,
    merchant_ids: Sequence[str] | None = None,
    *,
    settings: NarrationSettings | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    hold_delivery: timedelta = DEFAULT_HOLD,
    detector_config: DetectorConfig = DEFAULT_CONFIG,
    selection_config: SelectionConfig = DEFAULT_SELECTION,
    tracer: GraphTracer | None = None,
) -> BulkSummary:
    """The proactive run for many merchants: :func:`detect_all`, then :func:`narrate_pending`.

    Args:
        engine: An owner engine.
        gateway: Where narration calls go.
        as_of: The merchant-local day analysed.
        merchant_ids: Merchants to run (default: every merchant with metrics on ``as_of``).
        settings: Narration model and limits.
        concurrency: Narration calls in flight at once.
        hold_delivery: How long outbox events wait for narration at most.
        detector_config: Detector thresholds.
        selection_config: Budget, cooldowns, minimum score.
        tracer: Spans for the run (one trace: ``detect_all``, then ``narrate_pending``).

    Returns:
        Detection and narration summaries.
    """
    tracer = tracer or GraphTracer()
    with tracer.run("insights.bulk", input={"as_of": as_of.isoformat()}) as (_, root):
        with tracer.span("detect_all") as span:
            detection = await asyncio.to_thread(
                detect_all, engine, as_of, merchant_ids, detector_config=detector_config,
                selection_config=selection_config, hold_delivery=hold_delivery,
            )  # fmt: skip
            span.update(output=detection.as_dict())
        narration = await narrate_pending(
            engine, gateway, as_of, merchant_ids, settings=settings, concurrency=concurrency, tracer=tracer
        )
        summary = BulkSummary(detection, narration)
        root.update(output=summary.as_dict())
    return summary


__all__ = ["BulkSummary", "NarrationSummary", "insight_from_row", "narrate_pending", "run_all"]
