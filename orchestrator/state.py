"""The ask graph's state: JSON-friendly, so the Postgres checkpointer can keep conversations."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

AnswerSource = Literal["model", "repaired", "fallback", "refusal", "none"]


class Turn(TypedDict):
    """An earlier question and answer of the conversation, with what it computed."""

    question: str
    answer: str
    calls: list[dict[str, Any]]  # validated get_metric arguments of that turn


class AskState(TypedDict, total=False):
    """One turn of the ask graph (``history`` persists across turns of a conversation).

    Per-turn keys are reset by the input of each run; ``history`` is appended by
    the answer node and read by understand/plan.
    """

    question: str
    history: list[Turn]
    # understand
    language: str
    planning_question: str
    refusal: str | None  # "other_merchant" when the question asks about someone else's data
    # plan
    calls: list[dict[str, Any]]  # {"id", "tool", "args"} validated
    refused_calls: list[dict[str, str]]  # {"tool", "reason"}
    # tools and retrieval
    results: list[dict[str, Any]]  # MetricResult.model_dump(mode="json")
    tool_errors: list[str]
    citations: list[dict[str, Any]]  # {"chunk_id", "source_type", "source_id", "snippet", "distance"}
    # narrate / verify
    draft: str
    issues: list[str]
    attempts: int
    tokens_used: int
    # answer
    answer: str
    answer_source: AnswerSource
    facts: list[dict[str, Any]]
    chart: dict[str, Any] | None
    follow_ups: list[str]


def new_turn(question: str) -> AskState:
    """The input of a run: the question and every per-turn key at its start value."""
    return AskState(
        question=question,
        language="en",
        planning_question=question,
        refusal=None,
        calls=[],
        refused_calls=[],
        results=[],
        tool_errors=[],
        citations=[],
        draft="",
        issues=[],
        attempts=0,
        tokens_used=0,
        answer="",
        answer_source="none",
        facts=[],
        chart=None,
        follow_ups=[],
    )
