"""Prices and token counts: what a call costs, and what a request may cost before it runs.

- :func:`cost_micros` prices a finished call in micro-USD (integer). Prices
  come from the deployment (``input_cost_per_token``/``output_cost_per_token``)
  or else from litellm's bundled catalogue (``litellm.model_cost``) for
  ``deployment.cost_model or deployment.model``, trying the name as given,
  ``azure/<name>`` for Azure deployments, then the name without each leading
  ``provider/`` segment (``openai/gpt-4o-mini`` → ``gpt-4o-mini``,
  ``bedrock/anthropic.claude...`` → ``anthropic.claude...``). Unknown models
  cost 0, with one warning per model. Tiered (long-context) catalogue prices
  are not applied: the base per-token price is. The built-in offline model
  and local embedder cost 0.
- Prices are resolved once per deployment and cached, so the hot path is two
  multiplications; cost is rounded to the nearest micro-USD.
- :func:`estimate_prompt_tokens` is a tokenizer-free upper-ish estimate for
  admission; :func:`estimate_cost_micros` turns it into a budget reservation
  (rounded up).
- :func:`count_tokens` counts with tiktoken's bundled encodings (``o200k_base``
  for the GPT-4o/4.1/5 and o-series families, ``cl100k_base`` otherwise):
  for streams cut before the usage chunk arrived.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import orjson

from gateway.providers.base import Deployment, TokenUsage

logger = logging.getLogger(__name__)

_FREE_PROVIDERS = frozenset({"offline", "local-embed"})
_MICROS = 1_000_000

# (name, provider, model, cost_model, input override, output override) → micro-USD per token.
_PriceKey = tuple[str, str, str, str | None, float | None, float | None]
_prices: dict[_PriceKey, tuple[float, float]] = {}
_warned: set[str] = set()


def _catalogue() -> Mapping[str, Mapping[str, Any]]:
    from gateway.providers.litellm_provider import load_litellm

    model_cost: Mapping[str, Mapping[str, Any]] = load_litellm().model_cost
    return model_cost


def catalogue_entry(model: str, *, azure: bool = False) -> tuple[str, Mapping[str, Any]] | None:
    """The catalogue name and entry that price ``model``, if litellm knows it."""
    catalogue = _catalogue()
    candidates: list[str] = []
    if azure and not model.startswith("azure/"):
        candidates.append(f"azure/{model}")
    name = model
    while True:
        candidates.append(name)
        if "/" not in name:
            break
        name = name.split("/", 1)[1]
    for candidate in candidates:
        entry = catalogue.get(candidate)
        if entry is not None and (entry.get("input_cost_per_token") is not None or entry.get("output_cost_per_token")):
            return candidate, entry
    return None


def _resolve(deployment: Deployment) -> tuple[float, float]:
    if deployment.provider in _FREE_PROVIDERS:
        return 0.0, 0.0
    inp, out = deployment.input_cost_per_token, deployment.output_cost_per_token
    if inp is None or out is None:
        model = deployment.cost_model or deployment.model
        found = catalogue_entry(model, azure=deployment.provider == "azure")
        if found is None:
            if model not in _warned:
                _warned.add(model)
                logger.warning("pricing.unknown_model", extra={"model": model, "deployment": deployment.name})
            cat_in, cat_out = 0.0, 0.0
        else:
            entry = found[1]
            cat_in = float(entry.get("input_cost_per_token") or 0.0)
            cat_out = float(entry.get("output_cost_per_token") or 0.0)
        inp = cat_in if inp is None else inp
        out = cat_out if out is None else out
    return inp * _MICROS, out * _MICROS


def prices_micros(deployment: Deployment) -> tuple[float, float]:
    """Micro-USD per prompt token and per completion token for ``deployment`` (cached)."""
    key: _PriceKey = (
        deployment.name,
        deployment.provider,
        deployment.model,
        deployment.cost_model,
        deployment.input_cost_per_token,
        deployment.output_cost_per_token,
    )
    prices = _prices.get(key)
    if prices is None:
        prices = _prices[key] = _resolve(deployment)
    return prices


def cost_micros(deployment: Deployment, usage: TokenUsage) -> int:
    """What one call cost, in micro-USD (rounded to the nearest)."""
    inp, out = prices_micros(deployment)
    return round(usage.prompt_tokens * inp + usage.completion_tokens * out)


def estimate_cost_micros(deployment: Deployment, prompt_tokens: int, max_completion_tokens: int) -> int:
    """An upper bound of a call's cost for budget reservation, in micro-USD (rounded up)."""
    inp, out = prices_micros(deployment)
    return math.ceil(prompt_tokens * inp + max_completion_tokens * out - 1e-9)


_LETTERS = bytes(range(ord("A"), ord("Z") + 1)) + bytes(range(ord("a"), ord("z") + 1)) + b" "
_ASCII = bytes(range(128))
_MESSAGE_OVERHEAD = 4
_REPLY_PRIMING = 3


def _text_estimate(text: str) -> int:
    # Latin letters pack ~4 per token but every word takes at least one;
    # digits, punctuation, line breaks and other characters often take a
    # token each, and multi-byte characters (CJK, emoji) up to one per 2 bytes.
    if not text:
        return 0
    raw = text.encode("utf-8")
    dense = len(raw.translate(None, _LETTERS))  # bytes.translate: C speed, no tokenizer
    sparse = len(raw) - dense
    if not text.isascii():
        non_ascii = len(raw.translate(None, _ASCII))
        extra_bytes = len(raw) - len(text)
        dense = dense - non_ascii + (non_ascii - extra_bytes) + extra_bytes // 2
    return max(sparse // 4, text.count(" ")) + dense + 1


def estimate_prompt_tokens(payload: Mapping[str, Any]) -> int:
    """A fast, upper-ish estimate of a request's prompt tokens (no tokenizer).

    Counts message text, tool calls and tool schemas with
    :func:`_text_estimate` plus OpenAI's per-message overhead; embeddings
    requests count their ``input``.
    """
    total = 0
    messages = payload.get("messages")
    if isinstance(messages, list):
        total += _REPLY_PRIMING
        for message in messages:
            if not isinstance(message, Mapping):
                continue
            total += _MESSAGE_OVERHEAD
            content = message.get("content")
            if isinstance(content, str):
                total += _text_estimate(content)
            elif content is not None:
                total += _text_estimate(orjson.dumps(content).decode())
            for key in ("name", "tool_call_id"):
                if isinstance(message.get(key), str):
                    total += _text_estimate(message[key])
            if message.get("tool_calls"):
                total += _text_estimate(orjson.dumps(message["tool_calls"]).decode())
    tools = payload.get("tools")
    if tools:
        total += _text_estimate(orjson.dumps(tools).decode())
    inputs = payload.get("input")
    if isinstance(inputs, str):
        total += _text_estimate(inputs)
    elif isinstance(inputs, list):
        for item in inputs:
            total += _text_estimate(item) if isinstance(item, str) else len(item) if isinstance(item, list) else 1
    return total


_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss")


@lru_cache(maxsize=4)
def _encoding(name: str) -> Any:
    from gateway.providers.litellm_provider import load_litellm

    load_litellm()
    # Importing litellm's default encoding points TIKTOKEN_CACHE_DIR at the
    # encodings bundled in the package: tiktoken then never downloads.
    import tiktoken
    from litellm.litellm_core_utils import default_encoding  # noqa: F401

    return tiktoken.get_encoding(name)


def encoding_name(model: str) -> str:
    """The tiktoken encoding used to count ``model``'s tokens."""
    base = model.rsplit("/", 1)[-1].lower()
    return "o200k_base" if base.startswith(_O200K_PREFIXES) else "cl100k_base"


def count_tokens(text: str, model: str = "") -> int:
    """Tokens of ``text`` for ``model`` (tiktoken, bundled encodings; offline)."""
    if not text:
        return 0
    return len(_encoding(encoding_name(model)).encode(text, disallowed_special=()))


__all__ = [
    "catalogue_entry",
    "cost_micros",
    "count_tokens",
    "encoding_name",
    "estimate_cost_micros",
    "estimate_prompt_tokens",
    "prices_micros",
]
