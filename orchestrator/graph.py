"""The co-pilot's graphs.

    graph = build_ask_graph(checkpointer)
    state = await graph.ainvoke(new_turn("How much did I make last week?"), config, context=AskContext(...))

The ask graph: understand → plan (model tool calls) → run tools (metrics SQL,
pgvector search) → narrate (model) → verify (numbers) → [repair once] → answer.
Refusals (another merchant's data) and questions no tool can answer go
straight to an honest answer. With a checkpointer, ``history`` persists per
``thread_id`` so follow-up questions use the conversation.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Checkpointer

from orchestrator.context import AskContext
from orchestrator.nodes import ask as nodes
from orchestrator.state import AskState

ASK_NODES = ("understand", "plan", "run_tools", "narrate", "verify", "answer")


def build_ask_graph(checkpointer: Checkpointer = None) -> Any:
    """The compiled ask graph (run with ``context=AskContext(...)``)."""
    graph = StateGraph(AskState, context_schema=AskContext)
    graph.add_node("understand", nodes.understand)
    graph.add_node("plan", nodes.plan)
    graph.add_node("run_tools", nodes.run_tools)
    graph.add_node("narrate", nodes.narrate)
    graph.add_node("verify", nodes.verify)
    graph.add_node("answer", nodes.answer)
    graph.add_edge(START, "understand")
    graph.add_conditional_edges("understand", nodes.after_understand, ["plan", "answer"])
    graph.add_conditional_edges("plan", nodes.after_plan, ["run_tools", "answer"])
    graph.add_conditional_edges("run_tools", nodes.after_tools, ["narrate", "answer"])
    graph.add_edge("narrate", "verify")
    graph.add_conditional_edges("verify", nodes.after_verify, ["narrate", "answer"])
    graph.add_edge("answer", END)
    return graph.compile(checkpointer=checkpointer, name="ask")
