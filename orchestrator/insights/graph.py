"""The proactive insights graph: one merchant, one day.

    detect ──► narrate ──► verify ──► store ──► END
       │                    │  ▲
       └─► END (nothing)    ▼  │
                           repair

``detect`` runs the deterministic detectors and selection (cooldown and
budget against stored insights); ``narrate`` asks the model for a title and
body per insight; ``verify`` checks every number against the computed
figures, sending rejected drafts to ``repair`` once and giving the
deterministic wording to those rejected twice; ``store`` writes the insights
with their wording and queues their ``insight.created`` outbox events.

The caller owns the unit of work: the context carries a session whose
transaction the caller commits after the run (nodes never commit), plus the
gateway and settings. Nothing is built at import time.

    with database.merchant_session("M0001") as session:      # the caller's unit of work
        context = InsightsContext("M0001", session, gateway, tracer=tracer)
        state, summary = await run_insights_graph(context, day)  # one trace, a span per node

``build_insights_graph().ainvoke({"as_of": day}, context=context)`` runs the
same graph without the root span.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal, TypedDict, cast

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from sqlalchemy.orm import Session

from gateway.types import LLMGateway
from orchestrator.insights.data import load_review_snippets
from orchestrator.insights.detectors import DEFAULT_CONFIG, DetectorConfig
from orchestrator.insights.narrate import Draft, NarrationSettings, review, write
from orchestrator.insights.run import select_many
from orchestrator.insights.selection import DEFAULT_SELECTION, SelectionConfig
from orchestrator.insights.store import Wording, store_insights
from orchestrator.insights.types import Insight
from orchestrator.tracing import GraphTracer


@dataclass(frozen=True)
class InsightsContext:
    """Run-scoped dependencies of the insights graph.

    Attributes:
        merchant_id: The merchant the run is for: the only scope, fixed by the caller.
        session: The caller's unit of work (reads and writes; the caller commits).
        gateway: Where narration calls go.
        narration: Model alias and limits of the narration calls.
        concurrency: Narration calls in flight at once.
        detector_config: Detector thresholds.
        selection_config: Budget, cooldowns and minimum score.
        tracer: Spans for the run and its nodes (a no-op tracer without Langfuse).
    """

    merchant_id: str
    session: Session
    gateway: LLMGateway
    narration: NarrationSettings = field(default_factory=NarrationSettings)
    concurrency: int = 4
    detector_config: DetectorConfig = DEFAULT_CONFIG
    selection_config: SelectionConfig = DEFAULT_SELECTION
    tracer: GraphTracer = field(default_factory=GraphTracer)


class InsightsState(TypedDict, total=False):
    """What flows between the nodes (``as_of`` is the input, ``trace_id`` optional)."""

    as_of: date
    trace_id: str | None
    candidates: int
    drafts: list[Draft]
    stored: list[dict[str, Any]]


def _detect_sync(ctx: InsightsContext, as_of: date) -> tuple[list[Draft], int]:
    selections, candidates = select_many(
        ctx.session, [ctx.merchant_id], as_of, ctx.detector_config, ctx.selection_config
    )
    selection = selections.get(ctx.merchant_id)
    drafts = []
    for insight in selection.selected if selection else []:
        snippets: list[str] = []
        if insight.kind == "review_shift":
            snippets = load_review_snippets(
                ctx.session, insight.merchant_id, insight.period_start, insight.period_end,
                low=insight.direction == "down",
            )  # fmt: skip
        drafts.append(Draft(insight, tuple(snippets)))
    return drafts, candidates


async def detect(state: InsightsState, runtime: Runtime[InsightsContext]) -> dict[str, Any]:
    """Detect and select today's insights for the context's merchant."""
    with runtime.context.tracer.span("detect", input={"as_of": state["as_of"].isoformat()}) as span:
        # The detectors are sync SQLAlchemy on the caller's session: off the event loop, one at a time.
        drafts, candidates = await asyncio.to_thread(_detect_sync, runtime.context, state["as_of"])
        span.update(output={"candidates": candidates, "selected": [d.insight.dedup_key for d in drafts]})
    return {"drafts": drafts, "candidates": candidates}


async def _each(drafts: list[Draft], limit: int, step: Callable[[Draft], Awaitable[Draft]]) -> list[Draft]:
    gate = asyncio.Semaphore(max(1, limit))

    async def one(d: Draft) -> Draft:
        if d.done:
            return d
        async with gate:
            return await step(d)

    return list(await asyncio.gather(*(one(d) for d in drafts)))


async def _write_all(name: str, state: InsightsState, ctx: InsightsContext) -> list[Draft]:
    with ctx.tracer.span(name) as span:
        # Generations of the calls nest under this node's span.
        parent = ctx.tracer.traceparent()
        drafts = await _each(state["drafts"], ctx.concurrency, lambda d: write(ctx.gateway, d, ctx.narration, parent))
        span.update(output=[{"key": d.insight.dedup_key, "title": d.title, "body": d.body} for d in drafts])
    return drafts


async def narrate(state: InsightsState, runtime: Runtime[InsightsContext]) -> dict[str, Any]:
    """First drafts, a few calls at a time."""
    return {"drafts": await _write_all("narrate", state, runtime.context)}


async def verify(state: InsightsState, runtime: Runtime[InsightsContext]) -> dict[str, Any]:
    """Check every number of every draft; accept, queue for repair, or fall back."""
    with runtime.context.tracer.span("verify") as span:
        drafts = [review(d) for d in state["drafts"]]
        span.update(output=[{"key": d.insight.dedup_key, "issues": list(d.issues),
                             "wording": d.wording.path if d.wording else None} for d in drafts])  # fmt: skip
    return {"drafts": drafts}


def after_verify(state: InsightsState) -> Literal["repair", "store"]:
    """Repair while a draft is undecided (``review`` falls back after the last attempt)."""
    return "repair" if any(not d.done for d in state["drafts"]) else "store"


async def repair(state: InsightsState, runtime: Runtime[InsightsContext]) -> dict[str, Any]:
    """Send each rejected draft back once with its issues."""
    return {"drafts": await _write_all("repair", state, runtime.context)}


def _store_sync(ctx: InsightsContext, state: InsightsState) -> list[dict[str, Any]]:
    drafts = state["drafts"]
    insights: list[Insight] = [d.insight for d in drafts]
    wording: dict[str, Wording] = {d.insight.dedup_key: d.wording for d in drafts if d.wording is not None}
    return store_insights(ctx.session, insights, state["as_of"], wording=wording, trace_id=state.get("trace_id"))


async def store(state: InsightsState, runtime: Runtime[InsightsContext]) -> dict[str, Any]:
    """Write the insights with their wording and queue their outbox events (no commit)."""
    with runtime.context.tracer.span("store") as span:
        stored = await asyncio.to_thread(_store_sync, runtime.context, state)
        span.update(output={"stored": len(stored)})
    return {"stored": stored}


def after_detect(state: InsightsState) -> str:
    """Nothing selected: done without a model call."""
    return "narrate" if state.get("drafts") else END


def build_insights_graph() -> CompiledStateGraph[InsightsState, InsightsContext, InsightsState, InsightsState]:
    """The compiled proactive insights graph (run per merchant and day with an :class:`InsightsContext`)."""
    graph = StateGraph(InsightsState, context_schema=InsightsContext)
    graph.add_node("detect", detect)
    graph.add_node("narrate", narrate)
    graph.add_node("verify", verify)
    graph.add_node("repair", repair)
    graph.add_node("store", store)
    graph.add_edge(START, "detect")
    graph.add_conditional_edges("detect", after_detect, ["narrate", END])
    graph.add_edge("narrate", "verify")
    graph.add_conditional_edges("verify", after_verify, ["repair", "store"])
    graph.add_edge("repair", "verify")
    graph.add_edge("store", END)
    return graph.compile(name="insights")


@dataclass
class GraphSummary:
    """What one run of the graph did."""

    merchant_id: str
    as_of: str
    candidates: int
    selected: int
    stored: int
    wording: dict[str, int]
    trace_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "merchant_id": self.merchant_id,
            "as_of": self.as_of,
            "candidates": self.candidates,
            "selected": self.selected,
            "stored": self.stored,
            "wording": dict(self.wording),
            "trace_id": self.trace_id,
        }


def summarize(merchant_id: str, state: InsightsState) -> GraphSummary:
    """Counts of a finished run; ``wording`` counts the paths of the insights it stored."""
    drafts = state.get("drafts", [])
    stored_keys = {r["dedup_key"] for r in state.get("stored", [])}
    paths = Counter(d.wording.path for d in drafts if d.wording is not None and d.insight.dedup_key in stored_keys)
    return GraphSummary(
        merchant_id=merchant_id,
        as_of=state["as_of"].isoformat(),
        candidates=state.get("candidates", 0),
        selected=len(drafts),
        stored=len(stored_keys),
        wording={p: paths.get(p, 0) for p in ("model", "repaired", "fallback")},
        trace_id=state.get("trace_id"),
    )


InsightsGraph = CompiledStateGraph[InsightsState, InsightsContext, InsightsState, InsightsState]


async def run_insights_graph(
    context: InsightsContext, as_of: date, graph: InsightsGraph | None = None
) -> tuple[InsightsState, GraphSummary]:
    """Run the graph for the context's merchant on ``as_of`` as one trace (the caller commits the session).

    Returns:
        The final state and its summary; stored insights carry the run's ``trace_id``.
    """
    compiled = graph if graph is not None else build_insights_graph()
    with context.tracer.run(
        "insights", input={"as_of": as_of.isoformat()}, metadata={"merchant_id": context.merchant_id}
    ) as (trace_id, root):
        state = cast(InsightsState, await compiled.ainvoke({"as_of": as_of, "trace_id": trace_id}, context=context))
        summary = summarize(context.merchant_id, state)
        root.update(output=summary.as_dict())
    return state, summary


__all__ = [
    "GraphSummary",
    "InsightsContext",
    "InsightsGraph",
    "InsightsState",
    "build_insights_graph",
    "run_insights_graph",
    "summarize",
]
