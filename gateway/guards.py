"""Request guards: what a call may ask for before anything is reserved or sent.

Checks are cheap and run on every request: the body's size (checked by the
service before it is read), its shape, the parameters allowed per endpoint,
``max_tokens`` against the gateway's cap, the number of choices and
embedding inputs. Failures are :class:`InvalidRequestError` (400, OpenAI's
``invalid_request_error`` with ``param``), so no provider is called and no
budget is touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.errors import InvalidRequestError

CHAT_PARAMS: Final = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stream",
        "stream_options",
        "stop",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "response_format",
        "user",
        "metadata",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "reasoning_effort",
    }
)
EMBEDDING_PARAMS: Final = frozenset({"model", "input", "encoding_format", "dimensions", "user", "metadata"})
_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_CHOICES: Final = 4
MAX_EMBEDDING_INPUTS: Final = 2048


@dataclass(frozen=True, slots=True)
class Guards:
    """Limits on what one request may ask for.

    Attributes:
        max_request_bytes: Largest accepted body.
        max_tokens_cap: Largest ``max_tokens`` / ``max_completion_tokens``.
        default_completion_tokens: Completion tokens reserved when the request
            sets no ``max_tokens`` (the reservation is reconciled afterwards).
    """

    max_request_bytes: int = 1_048_576
    max_tokens_cap: int = 16_384
    default_completion_tokens: int = 1024


@dataclass(frozen=True, slots=True)
class ChatShape:
    """What the guards learned about a chat request."""

    model: str
    stream: bool
    max_completion_tokens: int
    choices: int


def _bad(message: str, param: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _model(payload: Mapping[str, Any]) -> str:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required and must be a non-empty string.", "model")
    return model


def _unknown(payload: Mapping[str, Any], allowed: frozenset[str]) -> None:
    for name in payload:
        if name not in allowed:
            raise _bad(f"Unrecognized request argument supplied: {name}", name)


def _positive_int(payload: Mapping[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(f"'{name}' must be a positive integer.", name)
    return value


def check_chat(payload: Any, guards: Guards) -> ChatShape:
    """Validate a chat completion request body (already JSON-decoded).

    Raises:
        InvalidRequestError: With the offending ``param``.
    """
    if not isinstance(payload, dict):
        raise _bad("The request body must be a JSON object.")
    _unknown(payload, CHAT_PARAMS)
    model = _model(payload)
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array.", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise _bad(f"messages[{i}] must be an object with a valid 'role'.", f"messages[{i}].role")
    tools = payload.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _bad("'tools' must be an array.", "tools")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean.", "stream")
    max_tokens = _positive_int(payload, "max_completion_tokens") or _positive_int(payload, "max_tokens")
    if max_tokens is not None and max_tokens > guards.max_tokens_cap:
        param = "max_completion_tokens" if "max_completion_tokens" in payload else "max_tokens"
        raise _bad(f"'{param}' is {max_tokens}; this gateway allows at most {guards.max_tokens_cap}.", param)
    choices = _positive_int(payload, "n") or 1
    if choices > MAX_CHOICES:
        raise _bad(f"'n' may be at most {MAX_CHOICES}.", "n")
    metadata = payload.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _bad("'metadata' must be an object.", "metadata")
    return ChatShape(model, stream, max_tokens or guards.default_completion_tokens, choices)


def check_embeddings(payload: Any) -> tuple[str, int]:
    """Validate an embeddings request; return the model and the number of inputs.

    Raises:
        InvalidRequestError: With the offending ``param``.
    """
    if not isinstance(payload, dict):
        raise _bad("The request body must be a JSON object.")
    _unknown(payload, EMBEDDING_PARAMS)
    model = _model(payload)
    value = payload.get("input")
    if isinstance(value, str):
        count = 1
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        count = len(value)
    elif isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        count = 1  # one pre-tokenised input
    else:
        raise _bad("'input' must be a string or a non-empty array of strings.", "input")
    if count > MAX_EMBEDDING_INPUTS:
        raise _bad(f"'input' may hold at most {MAX_EMBEDDING_INPUTS} items.", "input")
    metadata = payload.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _bad("'metadata' must be an object.", "metadata")
    return model, count
