"""The ``search_merchant_text`` tool: the merchant's own reviews, notes and documents from pgvector.

The query is embedded through the :class:`~gateway.types.LLMGateway` (the
same embedding model the pipelines used) and searched with
:func:`core.repositories.chunks.anearest_chunks` in the merchant's RLS-bound
session. What comes back is merchant-supplied text: the graph hands it to
the model fenced as data, never as instructions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from orchestrator.tools.metrics import ToolArgumentError

SEARCH_TOOL = "search_merchant_text"
MAX_QUERY_CHARS = 500
SOURCE_TYPES = ("review", "product", "attachment", "note")


class SearchCall(BaseModel):
    """A validated search: what to look for, and in which kinds of text."""

    query: str
    source_types: list[str] | None = None


def search_tool_spec() -> dict[str, Any]:
    """The OpenAI function spec of ``search_merchant_text``."""
    return {
        "type": "function",
        "function": {
            "name": SEARCH_TOOL,
            "description": (
                "Search what customers say or write about the business: reviews, comments, complaints, "
                "feedback, opinions, mentions; and the merchant's own notes and documents. Returns snippets "
                "with their ids; it computes no numbers."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for, in a few words."},
                    "source_types": {
                        "type": "array",
                        "items": {"type": "string", "enum": list(SOURCE_TYPES)},
                        "description": "Only these kinds of text. review: reviews | customers say | feedback; "
                        "note: notes | documents | receipts",
                    },
                },
                "required": ["query"],
            },
        },
    }


def parse_search_call(arguments: str | Mapping[str, Any], question: str) -> SearchCall:
    """Validate a ``search_merchant_text`` call.

    Raises:
        ToolArgumentError: Unknown arguments or an empty query.
    """
    try:
        raw = json.loads(arguments or "{}") if isinstance(arguments, str) else dict(arguments)
    except json.JSONDecodeError as exc:
        raise ToolArgumentError(f"arguments are not JSON: {exc.msg}") from exc
    if not isinstance(raw, dict):
        raise ToolArgumentError("arguments must be an object")
    unknown = sorted(set(raw) - {"query", "source_types"})
    if unknown:
        raise ToolArgumentError(f"unknown arguments: {', '.join(unknown)}")
    query = str(raw.get("query") or question).strip()[:MAX_QUERY_CHARS]
    if not query:
        raise ToolArgumentError("query is empty")
    types = raw.get("source_types")
    if types is not None:
        if not isinstance(types, list) or any(t not in SOURCE_TYPES for t in types):
            raise ToolArgumentError(f"source_types must be among {', '.join(SOURCE_TYPES)}")
        types = list(dict.fromkeys(types)) or None
    return SearchCall(query=query, source_types=types)
