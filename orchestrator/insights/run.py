"""Run detection for one merchant (a service) or for many (a batch boundary).

``detect_for_merchant`` reads through the caller's session and writes
nothing; ``run_for_merchant`` also stores, still inside the caller's
transaction. ``detect_all`` is a batch entrypoint: it loads merchants in
chunks with a handful of set-based queries per chunk, detects and selects in
Python, stores each chunk's insights and outbox rows and commits per chunk,
so an interrupted run resumes cleanly (a re-run skips what was stored).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from orchestrator.insights.data import Executor, load_merchant_data
from orchestrator.insights.detectors import DEFAULT_CONFIG, DetectorConfig, detect
from orchestrator.insights.selection import DEFAULT_SELECTION, Selection, SelectionConfig, select
from orchestrator.insights.store import load_history, store_insights
from orchestrator.insights.types import Insight

DEFAULT_CHUNK = 500


def select_many(
    executor: Executor,
    merchant_ids: Sequence[str],
    as_of: date,
    detector_config: DetectorConfig = DEFAULT_CONFIG,
    selection_config: SelectionConfig = DEFAULT_SELECTION,
) -> tuple[dict[str, Selection], int]:
    """Detect and select for ``merchant_ids`` (nothing is written).

    Returns:
        The selection per known merchant, and how many candidates the detectors found in all.
    """
    data = load_merchant_data(executor, merchant_ids, as_of)
    history = load_history(executor, list(data), as_of)
    out: dict[str, Selection] = {}
    candidates = 0
    for mid, md in data.items():
        found = detect(md, detector_config)
        candidates += len(found)
        out[mid] = select(found, as_of, history.get(mid, ()), selection_config)
    return out, candidates


def detect_for_merchant(
    session: Session,
    merchant_id: str,
    as_of: date,
    *,
    detector_config: DetectorConfig = DEFAULT_CONFIG,
    selection_config: SelectionConfig = DEFAULT_SELECTION,
) -> list[Insight]:
    """The insights to report for one merchant on ``as_of`` (nothing is written).

    Args:
        session: Any session that can read the merchant's rows (a tenant session works).
        merchant_id: The merchant.
        as_of: The merchant-local day analysed.
        detector_config: Detector thresholds.
        selection_config: Budget, cooldowns, minimum score.

    Returns:
        Selected insights, best first, after dedup, cooldown (against stored insights) and budget.
    """
    selections, _ = select_many(session, [merchant_id], as_of, detector_config, selection_config)
    selection = selections.get(merchant_id)
    return selection.selected if selection else []


def run_for_merchant(
    session: Session,
    merchant_id: str,
    as_of: date,
    *,
    detector_config: DetectorConfig = DEFAULT_CONFIG,
    selection_config: SelectionConfig = DEFAULT_SELECTION,
) -> list[Insight]:
    """:func:`detect_for_merchant`, then store the insights and their outbox events (no commit)."""
    found = detect_for_merchant(
        session, merchant_id, as_of, detector_config=detector_config, selection_config=selection_config
    )
    store_insights(session, found, as_of)
    return found


@dataclass
class RunSummary:
    """What a bulk run did."""

    as_of: str
    merchants: int = 0
    candidates: int = 0
    selected: int = 0
    stored: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


_MERCHANTS_WITH_DATA = text("SELECT DISTINCT merchant_id FROM daily_metrics WHERE day = :d ORDER BY merchant_id")


def detect_all(
    engine: Engine,
    as_of: date,
    merchant_ids: Sequence[str] | None = None,
    *,
    store: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    detector_config: DetectorConfig = DEFAULT_CONFIG,
    selection_config: SelectionConfig = DEFAULT_SELECTION,
    hold_delivery: timedelta | None = None,
) -> RunSummary:
    """Detect, select and (by default) store insights for many merchants.

    Args:
        engine: An owner engine (the batch reads and writes every merchant's rows).
        as_of: The merchant-local day analysed.
        merchant_ids: Merchants to run; default: every merchant with metrics on ``as_of``
            (the ones the day's data has arrived for, as ``pipelines.insights`` requests them).
        store: Write insights and outbox rows (one transaction per chunk).
        chunk_size: Merchants loaded per set-based query.
        detector_config: Detector thresholds.
        selection_config: Budget, cooldowns, minimum score.
        hold_delivery: Hold the stored insights' outbox events back this long (while they are narrated).

    Returns:
        Counts and timings.
    """
    started = time.perf_counter()
    summary = RunSummary(as_of.isoformat())
    if merchant_ids is None:
        with engine.connect() as conn:
            ids = list(conn.execute(_MERCHANTS_WITH_DATA, {"d": as_of}).scalars())
    else:
        ids = sorted(set(merchant_ids))
    for offset in range(0, len(ids), chunk_size):
        chunk = ids[offset : offset + chunk_size]
        with engine.begin() as conn:
            selections, candidates = select_many(conn, chunk, as_of, detector_config, selection_config)
            selected = [i for s in selections.values() for i in s.selected]
            if store:
                summary.stored += len(store_insights(conn, selected, as_of, hold_delivery=hold_delivery))
        summary.merchants += len(selections)
        summary.candidates += candidates
        summary.selected += len(selected)
        for s in selections.values():
            for i in s.selected:
                summary.by_kind[i.kind] = summary.by_kind.get(i.kind, 0) + 1
            for _, reason in s.suppressed:
                summary.suppressed[reason] = summary.suppressed.get(reason, 0) + 1
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary
