"""The ask graph's nodes: understand → plan → run tools → narrate → verify → answer.

Each node is a small async function of the state and the run-time
:class:`~orchestrator.context.AskContext`; it returns the keys it changes.
Numbers are computed by the tools (SQL in :mod:`core.metrics`), worded by a
model through the :class:`~gateway.types.LLMGateway`, and checked by
:mod:`orchestrator.grounding` before anything is answered.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

from langgraph.runtime import Runtime
from sqlalchemy import text

from core.db.session import async_session_scope
from core.errors import CopilotError
from core.metrics import MetricQuery, MetricResult, Period, arun_metric_query, find_metrics
from core.repositories.chunks import anearest_chunks
from gateway.errors import GatewayError
from gateway.types import CallContext, ChatMessage, ChatRequest, ChatResponse, EmbeddingRequest
from orchestrator.context import AskContext
from orchestrator.grounding import fold, numbers_in, verify_draft
from orchestrator.language import detect_language, word
from orchestrator.prompts import fence, narrate_messages, plan_messages, repair_message
from orchestrator.render import chart_spec, context_texts, fact_records, figures, follow_ups, render_answer
from orchestrator.state import AskState, Turn
from orchestrator.tools import (
    METRIC_TOOL,
    SEARCH_TOOL,
    ToolArgumentError,
    metric_tool_spec,
    parse_metric_call,
    parse_search_call,
    search_tool_spec,
)
from orchestrator.tools.metrics import _METRIC_GLOSS

Node = Callable[[AskState, Runtime[AskContext]], Awaitable[dict[str, Any]]]
SNIPPET_CHARS = 300


def traced(name: str) -> Callable[[Node], Any]:
    """Run the node inside a span named after it (its output summarised on the span)."""

    def wrap(fn: Node) -> Any:
        @functools.wraps(fn)
        async def node(state: AskState, runtime: Runtime[AskContext]) -> dict[str, Any]:
            with runtime.context.tracer.span(name) as span:
                update = await fn(state, runtime)
                span.update(output={k: _summary(v) for k, v in update.items()})
                return update

        return node

    return wrap


def _summary(value: Any) -> Any:
    if isinstance(value, list):
        return f"{len(value)} items"
    if isinstance(value, str) and len(value) > 500:
        return value[:500] + "…"
    return value


def _call_context(ctx: AskContext, name: str) -> CallContext:
    return CallContext(
        merchant_id=ctx.merchant_id,
        user_id=ctx.user_id,
        session_id=ctx.conversation_id,
        trace_name=name,
        tags=["ask"],
        traceparent=ctx.tracer.traceparent(),
    )


# -------------------------------------------------------------------------- understand

# Other merchants' ids look like ours (M0001); naming one, or competitors, asks outside the scope.
_MERCHANT_ID = re.compile(r"\b[mM]\d{3,}\b")
_OTHER_MERCHANT = re.compile(
    r"\b(?:other|another|different)\s+(?:merchants?|shops?|stores?|businesses|business|caf[eé]s?|salons?)\b"
    r"|\bcompetitors?\b|\bmerchant\s+id\b|\bautres?\s+commer[cç]ants?\b|\bconcurrents?\b"
    r"|\botros?\s+comercios?\b|\bcompetencia\b|\banderen?\s+h[aä]ndlers?\b|\bkonkurrenz\b",
    re.IGNORECASE,
)
_PERIOD_WORDS = re.compile(
    r"\d{4}-\d{2}-\d{2}|\b(?:today|yesterday|tonight|day|days|week|weeks|month|months|year|years|weekend|"
    r"january|february|march|april|may|june|july|august|september|october|november|december|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    r"aujourd'?hui|hier|jour|jours|semaine|semaines|mois|annee|an|"
    r"hoy|ayer|dia|dias|semana|semanas|mes|meses|ano|"
    r"heute|gestern|tag|tage|woche|wochen|monat|monate|jahr)\b",
    re.IGNORECASE,
)
_BEFORE = re.compile(
    r"\b(?:the\s+)?(?:day|week|month|year)\s+before\b|\bprevious\s+(?:day|week|month|year|one)\b|\bbefore\s+that\b"
    r"|\b(?:la\s+)?(?:semaine|journee|veille|mois|annee)\s+(?:d'avant|precedente?|davant)\b|\bavant\s+(?:ca|cela)\b"
    r"|\b(?:la\s+|el\s+)?(?:semana|mes|dia|ano)\s+anterior\b|\b(?:die|der|den|das)\s+(?:woche|monat|tag|jahr)\s+davor\b"
    r"|\bvorwoche\b|\bvormonat\b|\bvortag\b",
    re.IGNORECASE,
)
_GLOSS_TERMS = sorted(
    {fold(alt.strip()) for words in _METRIC_GLOSS.values() for alt in words.split("|") if len(alt.strip()) > 2},
    key=len,
    reverse=True,
)
_GLOSS_RE = re.compile(r"\b(?:" + "|".join(re.escape(t) for t in _GLOSS_TERMS) + r")\b")


def mentions_metric(question: str) -> bool:
    """Whether the question names a metric in any supported language."""
    return bool(find_metrics(question)) or bool(_GLOSS_RE.search(fold(question)))


def _previous_period(call: dict[str, Any]) -> tuple[date, date]:
    """The comparable period before a call's (same length, calendar-aware for whole months)."""
    start, end = date.fromisoformat(call["start_date"]), date.fromisoformat(call["end_date"])
    if start.day == 1 and (end + timedelta(days=1)).day == 1:
        prev_end = start - timedelta(days=1)
        months = (end.year - start.year) * 12 + end.month - start.month + 1
        index = prev_end.year * 12 + prev_end.month - months
        return date(index // 12, index % 12 + 1, 1), prev_end
    days = (end - start).days + 1
    return start - timedelta(days=days), start - timedelta(days=1)


def resolve_follow_up(question: str, history: list[Turn]) -> str:
    """A standalone version of a follow-up ("and the week before?") from the last turn's calls.

    Slots the question leaves open (the metric, the period) are filled from
    the previous turn; "the week before" becomes explicit dates. A question
    that stands on its own is returned unchanged.
    """
    previous = next((turn["calls"] for turn in reversed(history) if turn["calls"]), None)
    if not previous:
        return question
    call = previous[0]
    text_out = question
    has_metric = mentions_metric(question)
    relative = _BEFORE.search(question)
    source = question
    if relative is None:
        source = fold(question)  # the patterns are accent-free
        relative = _BEFORE.search(source)
    if relative is not None:
        start, end = _previous_period(call)
        explicit = f"from {start.isoformat()} to {end.isoformat()}"
        text_out = f"{source[: relative.start()]}{explicit}{source[relative.end() :]}"
    elif not _PERIOD_WORDS.search(fold(question)):
        text_out = f"{question} (from {call['start_date']} to {call['end_date']})"
    if not has_metric:
        label = str(call["metric"]).replace("_", " ")
        text_out = f"{label}: {text_out}"
    return text_out


@traced("understand")
async def understand(state: AskState, runtime: Runtime[AskContext]) -> dict[str, Any]:
    """Language, scope and a standalone question (follow-ups resolved from the conversation)."""
    ctx = runtime.context
    question = state["question"]
    ids = {m.upper() for m in _MERCHANT_ID.findall(question)}
    other = bool(ids - {ctx.merchant_id.upper()}) or bool(_OTHER_MERCHANT.search(fold(question)))
    return {
        "language": detect_language(question),
        "refusal": "other_merchant" if other else None,
        "planning_question": resolve_follow_up(question, state.get("history") or []),
    }


# -------------------------------------------------------------------------- plan

_PRODUCT_NAMES = text("SELECT name FROM products WHERE merchant_id = :merchant_id ORDER BY name LIMIT 201")


async def _product_names(ctx: AskContext) -> list[str]:
    async with async_session_scope(ctx.sessions, ctx.merchant_id) as session:
        rows = (await session.execute(_PRODUCT_NAMES, {"merchant_id": ctx.merchant_id})).scalars().all()
    return [str(r) for r in rows] if len(rows) <= 200 else []


async def _chat(ctx: AskContext, request: ChatRequest, name: str) -> ChatResponse:
    return await ctx.gateway.chat(request, _call_context(ctx, name))


@traced("plan")
async def plan(state: AskState, runtime: Runtime[AskContext]) -> dict[str, Any]:
    """Ask the model which tools to call; keep only valid calls, within the cap."""
    ctx = runtime.context
    limits = ctx.settings
    tools = [metric_tool_spec(await _product_names(ctx)), search_tool_spec()]
    messages = plan_messages(state, ctx.as_of, limits.history_turns)
    response = await _chat(
        ctx,
        ChatRequest(
            model=limits.chat_model,
            messages=messages,
            tools=tools,
            tool_choice="auto",
            max_tokens=limits.max_output_tokens,
            temperature=0,
        ),
        "ask.plan",
    )
    calls: list[dict[str, Any]] = []
    refused: list[dict[str, str]] = []
    seen: set[str] = set()
    for raw in response.message.tool_calls or []:
        function = raw.get("function") or {}
        name = str(function.get("name") or "")
        arguments = function.get("arguments") or "{}"
        try:
            if name == METRIC_TOOL:
                query = parse_metric_call(arguments, ctx.as_of)
                args = _canonical(query)
            elif name == SEARCH_TOOL:
                args = parse_search_call(arguments, state["question"]).model_dump(exclude_none=True)
            else:
                raise ToolArgumentError(f"unknown tool {name!r}")
        except ToolArgumentError as exc:
            refused.append({"tool": name, "reason": str(exc)})
            continue
        key = json.dumps([name, args], sort_keys=True)
        if key in seen:
            continue
        if len(calls) >= limits.max_tool_calls:
            refused.append({"tool": name, "reason": f"more than {limits.max_tool_calls} tool calls in one turn"})
            continue
        seen.add(key)
        calls.append({"id": str(raw.get("id") or f"call_{len(calls)}"), "tool": name, "args": args})
    return {"calls": calls, "refused_calls": refused, "tokens_used": state.get("tokens_used", 0) + _tokens(response)}


def _tokens(response: ChatResponse) -> int:
    return response.usage.total_tokens or response.usage.prompt_tokens + response.usage.completion_tokens


def _canonical(query: MetricQuery) -> dict[str, Any]:
    """The call's arguments as the tool schema names them (what history and facts keep)."""
    period = query.period
    assert isinstance(period, Period)  # parse_metric_call always resolves the period
    compare = {"previous_period": "previous_period", "same_weekday": "usual"}.get(query.compare.value, "none")
    out: dict[str, Any] = {
        "metric": query.metric.value,
        "start_date": period.start.isoformat(),
        "end_date": period.last_day.isoformat(),
        "group_by": query.group_by.value,
        "compare": compare,
        "order": query.order.value,
    }
    if query.top_n is not None:
        out["top_n"] = query.top_n
    if query.products:
        out["products"] = list(query.products)
    return out


# -------------------------------------------------------------------------- tools


@traced("run_tools")
async def run_tools(state: AskState, runtime: Runtime[AskContext]) -> dict[str, Any]:
    """Run the planned metric queries and text searches in the merchant's scope."""
    ctx = runtime.context
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    citations: list[dict[str, Any]] = []
    for call in state.get("calls") or []:
        with ctx.tracer.span(call["tool"], input=call["args"], as_type="tool") as span:
            try:
                if call["tool"] == METRIC_TOOL:
                    result = await _metric(ctx, call["args"])
                    results.append(result.model_dump(mode="json"))
                    span.update(output={"total": str(result.total), "rows": len(result.rows)})
                else:
                    found = await _search(ctx, call["args"], state["question"])
                    citations.extend(c for c in found if c["chunk_id"] not in {x["chunk_id"] for x in citations})
                    span.update(output={"chunks": [c["chunk_id"] for c in found]})
            except (CopilotError, ToolArgumentError) as exc:
                errors.append(str(exc))
                span.update(level="WARNING", status_message=str(exc))
    return {"results": results, "tool_errors": errors, "citations": citations}


async def _metric(ctx: AskContext, args: dict[str, Any]) -> MetricResult:
    query = parse_metric_call(args, ctx.as_of)
    async with async_session_scope(ctx.sessions, ctx.merchant_id) as session:
        return await arun_metric_query(session, ctx.merchant_id, query, as_of=ctx.as_of)


async def _search(ctx: AskContext, args: dict[str, Any], question: str) -> list[dict[str, Any]]:
    call = parse_search_call(args, question)
    try:
        embedded = await ctx.gateway.embed(
            EmbeddingRequest(model=ctx.settings.embedding_model, input=[call.query]), _call_context(ctx, "ask.embed")
        )
    except GatewayError as exc:
        raise ToolArgumentError(f"search is unavailable: {exc}") from exc
    async with async_session_scope(ctx.sessions, ctx.merchant_id) as session:
        hits = await anearest_chunks(session, ctx.merchant_id, embedded.data[0], ctx.settings.retrieval_k,
                                     call.source_types)  # fmt: skip
    return [
        {
            "chunk_id": hit.chunk_id,
            "source_type": hit.source_type,
            "source_id": hit.source_id,
            "snippet": hit.content[:SNIPPET_CHARS],
            "distance": round(hit.distance, 4),
        }
        for hit in hits
        if hit.distance <= ctx.settings.retrieval_max_distance
    ]


# -------------------------------------------------------------------------- narrate and verify


def _results(state: AskState) -> list[MetricResult]:
    return [MetricResult.model_validate(r) for r in state.get("results") or []]


@traced("narrate")
async def narrate(state: AskState, runtime: Runtime[AskContext]) -> dict[str, Any]:
    """Have the model word the computed facts (and repair a draft the verifier refused)."""
    ctx = runtime.context
    lang = state.get("language", "en")
    records = fact_records(_results(state), lang)
    messages = narrate_messages(state["question"], lang, records, state.get("citations") or [])
    if state.get("issues"):
        messages += [ChatMessage(role="assistant", content=state["draft"]), repair_message(state["issues"])]
    response = await _chat(
        ctx,
        ChatRequest(
            model=ctx.settings.chat_model, messages=messages, max_tokens=ctx.settings.max_output_tokens, temperature=0
        ),
        "ask.narrate",
    )
    return {
        "draft": (response.message.content or "").strip(),
        "tokens_used": state.get("tokens_used", 0) + _tokens(response),
    }


@traced("verify")
async def verify(state: AskState, runtime: Runtime[AskContext]) -> dict[str, Any]:
    """Check every number of the draft against the computed values; decide repair or fallback."""
    ctx = runtime.context
    lang = state.get("language", "en")
    results = _results(state)
    context_numbers = numbers_in([state["question"], *context_texts(results, lang)])
    draft = state.get("draft", "")
    # A verbatim quote of the merchant's own text is not a claim of ours: its numbers are not checked.
    for citation in state.get("citations") or []:
        draft = draft.replace(citation["snippet"], " ").replace(fence(citation["snippet"]), " ")
    verdict = verify_draft(draft, figures(results, lang), context_numbers=context_numbers)
    attempts = state.get("attempts", 0) + 1
    if verdict.ok and state.get("draft"):
        return {"issues": [], "attempts": attempts, "answer_source": "model" if attempts == 1 else "repaired"}
    issues = [i.describe() for i in verdict.issues] or ["the draft is empty"]
    can_repair = attempts < 2 and state.get("tokens_used", 0) < ctx.settings.max_turn_tokens
    return {"issues": issues, "attempts": attempts, "answer_source": "none" if can_repair else "fallback"}


def after_verify(state: AskState) -> str:
    """Route: answer when verified or falling back, narrate again to repair."""
    return "narrate" if state.get("answer_source") == "none" else "answer"


def after_understand(state: AskState) -> str:
    """Route: a refusal answers at once."""
    return "answer" if state.get("refusal") else "plan"


def after_plan(state: AskState) -> str:
    """Route: nothing to run means nothing to compute from."""
    return "run_tools" if state.get("calls") else "answer"


def after_tools(state: AskState) -> str:
    """Route: narrate what was found; answer honestly when nothing was."""
    if not state.get("results") and not state.get("citations"):
        return "answer"
    return "narrate"


# -------------------------------------------------------------------------- answer


@traced("answer")
async def answer(state: AskState, runtime: Runtime[AskContext]) -> dict[str, Any]:
    """The final text, facts, citations, chart and follow-ups; the turn joins the history."""
    lang = state.get("language", "en")
    results = _results(state)
    citations = state.get("citations") or []
    searched = any(c["tool"] == SEARCH_TOOL for c in state.get("calls") or [])
    source = state.get("answer_source", "none")
    if state.get("refusal"):
        text_out, source = f"{word('other_merchant', lang)} {word('can_do', lang)}", "refusal"
    elif not results and not citations:
        reason = f" ({state['tool_errors'][0]})" if state.get("tool_errors") else ""
        if searched and not state.get("tool_errors"):
            text_out = f"{word('cannot', lang)} {word('no_text', lang)} {word('can_do', lang)}"
        else:
            text_out = f"{word('cannot', lang)}{reason} {word('can_do', lang)}"
        source = "refusal"
    elif source == "fallback":
        text_out = render_answer(results, [c["snippet"] for c in citations], lang)
    else:
        text_out = state.get("draft", "")
    facts = [f.model_dump(mode="json") for r in results for f in r.facts()]
    turn = Turn(
        question=state["question"],
        answer=text_out,
        calls=[c["args"] for c in state.get("calls") or [] if c["tool"] == METRIC_TOOL],
    )
    return {
        "answer": text_out,
        "answer_source": source,
        "facts": facts,
        "chart": chart_spec(results, lang),
        "follow_ups": follow_ups(results, searched, lang),
        "history": [*(state.get("history") or []), turn][-20:],
    }
