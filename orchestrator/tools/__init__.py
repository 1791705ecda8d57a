"""Tools the ask graph offers a model: metrics (SQL in code) and merchant-text search (pgvector)."""

from orchestrator.tools.metrics import METRIC_TOOL, ToolArgumentError, infer_period, metric_tool_spec, parse_metric_call
from orchestrator.tools.retrieval import SEARCH_TOOL, SearchCall, parse_search_call, search_tool_spec

__all__ = [
    "METRIC_TOOL",
    "SEARCH_TOOL",
    "SearchCall",
    "ToolArgumentError",
    "infer_period",
    "metric_tool_spec",
    "parse_metric_call",
    "parse_search_call",
    "search_tool_spec",
]
