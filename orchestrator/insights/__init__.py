"""Proactive insights: deterministic detectors, selection and storage.

    from orchestrator.insights import detect_all, detect_for_merchant, run_for_merchant

    insights = detect_for_merchant(session, "M0001", date(2026, 10, 5))   # reads only
    run_for_merchant(session, "M0001", date(2026, 10, 5))                  # + store, caller commits
    summary = detect_all(engine, date(2026, 10, 5))                        # bulk, commits per chunk

The insights graph (narration through the LLM gateway, verification, repair,
fallback) is in :mod:`orchestrator.insights.graph` (``build_insights_graph``,
``run_insights_graph``) and the bulk run with narration in
:mod:`orchestrator.insights.bulk` (``run_all``, ``narrate_pending``); they are
not imported here, so detection alone stays free of LangGraph and the gateway.

Numbers come only from code: each insight carries ``facts`` (name, value,
unit, period, source) and ``evidence`` (baseline days and values, the test
used, the p-value) for the narrator and the verifier.
"""

from orchestrator.insights.detectors import DEFAULT_CONFIG, DetectorConfig, detect
from orchestrator.insights.run import RunSummary, detect_all, detect_for_merchant, run_for_merchant
from orchestrator.insights.selection import DEFAULT_SELECTION, Selection, SelectionConfig, select
from orchestrator.insights.store import EVENT_TYPE, load_history, store_insights
from orchestrator.insights.types import Fact, Insight

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_SELECTION",
    "EVENT_TYPE",
    "DetectorConfig",
    "Fact",
    "Insight",
    "RunSummary",
    "Selection",
    "SelectionConfig",
    "detect",
    "detect_all",
    "detect_for_merchant",
    "load_history",
    "run_for_merchant",
    "select",
    "store_insights",
]
