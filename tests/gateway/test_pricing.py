"""Pricing: overrides, litellm's catalogue, unknown models, token counts and estimates."""

from __future__ import annotations

import json
import logging

import pytest

from gateway import pricing
from gateway.providers.base import Deployment, TokenUsage
from gateway.providers.litellm_provider import load_litellm


def deployment(model: str, provider: str = "openai", **fields: object) -> Deployment:
    return Deployment(name=f"d-{model}-{provider}", alias="a", provider=provider, model=model, **fields)  # type: ignore[arg-type]


def test_overrides_win_over_the_catalogue() -> None:
    d = deployment("gpt-4o-mini", input_cost_per_token=1e-6, output_cost_per_token=2e-6)
    assert pricing.cost_micros(d, TokenUsage(1000, 500)) == 1000 + 1000


def test_catalogue_price_equals_litellms() -> None:
    litellm = load_litellm()
    usage = TokenUsage(prompt_tokens=12_345, completion_tokens=678)
    expected_in, expected_out = litellm.cost_per_token(model="gpt-4o-mini", prompt_tokens=12_345, completion_tokens=678)
    assert expected_in > 0 and expected_out > 0
    expected = round((expected_in + expected_out) * 1_000_000)
    assert pricing.cost_micros(deployment("gpt-4o-mini"), usage) == expected
    # litellm model strings with a provider prefix price as the bare catalogue name.
    assert pricing.cost_micros(deployment("openai/gpt-4o-mini", provider="litellm"), usage) == expected
    # cost_model names the catalogue entry when the served model differs.
    assert pricing.cost_micros(deployment("my-finetune", cost_model="gpt-4o-mini"), usage) == expected


def test_azure_prefers_azure_catalogue_prices() -> None:
    litellm = load_litellm()
    usage = TokenUsage(1_000_000, 0)
    azure = litellm.model_cost["azure/gpt-4o-mini"]["input_cost_per_token"]
    assert pricing.cost_micros(deployment("gpt-4o-mini", provider="azure"), usage) == round(
        azure * 1_000_000 * 1_000_000
    )


def test_one_override_completes_from_the_catalogue() -> None:
    litellm = load_litellm()
    out = litellm.model_cost["gpt-4o-mini"]["output_cost_per_token"]
    d = deployment("gpt-4o-mini", input_cost_per_token=0.0)
    assert pricing.cost_micros(d, TokenUsage(10_000, 1_000)) == round(1_000 * out * 1_000_000)


def test_unknown_model_costs_nothing_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    d = deployment("acme/never-heard-of-it-7", provider="litellm")
    with caplog.at_level(logging.WARNING, logger="gateway.pricing"):
        assert pricing.cost_micros(d, TokenUsage(1000, 1000)) == 0
        assert pricing.cost_micros(deployment("acme/never-heard-of-it-7", provider="openai"), TokenUsage(5, 5)) == 0
    warnings = [r for r in caplog.records if r.getMessage() == "pricing.unknown_model"]
    assert len(warnings) == 1


def test_builtin_models_are_free() -> None:
    offline = deployment("copilot-offline", provider="offline", input_cost_per_token=1.0)
    embed = deployment("copilot-local-embed", provider="local-embed")
    assert pricing.cost_micros(offline, TokenUsage(10**6, 10**6)) == 0
    assert pricing.cost_micros(embed, TokenUsage(10**6, 0)) == 0
    assert pricing.estimate_cost_micros(offline, 10**6, 10**6) == 0


def test_prices_are_cached_per_deployment() -> None:
    d = deployment("gpt-4o")
    first = pricing.prices_micros(d)
    catalogue = load_litellm().model_cost
    saved = catalogue["gpt-4o"]
    catalogue["gpt-4o"] = {**saved, "input_cost_per_token": 1.0}
    try:
        assert pricing.prices_micros(d) == first  # the hot path does not look the catalogue up again
    finally:
        catalogue["gpt-4o"] = saved


def test_estimate_cost_rounds_up_and_bounds_the_cost() -> None:
    d = deployment("gpt-4o-mini")
    estimate = pricing.estimate_cost_micros(d, 1000, 300)
    assert estimate >= pricing.cost_micros(d, TokenUsage(1000, 300))
    assert pricing.estimate_cost_micros(d, 1, 0) == 1  # 0.15 micro-USD reserves a whole one


SAMPLES = [
    "What were my net sales last week compared to the week before? Include refunds and discounts.",
    json.dumps([{"product": "Widget", "revenue": 500, "units": 20, "date": "2026-11-09"}] * 20),
    "1234567890 9876543210 3.14159 2026-11-22 12:30:45 +33 6 12 34 56 78",
    "Rückerstattungen und Umsatzsteuervoranmeldung für die Geschäftsführung der Bäckerei Müller",
    "Quelles sont mes ventes nettes la semaine dernière ? Les remboursements ont-ils augmenté ?",
    "上周我的净销售额是多少？退款比前一天多吗？",
    "Какие были мои чистые продажи на прошлой неделе?",
    "def f(x):\n    return {k: v for k, v in x.items() if v is not None}\n",
    "great 👍👍 service ⭐⭐⭐⭐⭐ a b c d e f g",
    "\t\t\n\n   \n",
]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-3.5-turbo"])
@pytest.mark.parametrize("text", SAMPLES)
def test_prompt_estimate_is_not_below_the_real_count(text: str, model: str) -> None:
    payload = {
        "model": model,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
    }
    real = sum(pricing.count_tokens(m["content"], model) for m in payload["messages"])
    assert pricing.estimate_prompt_tokens(payload) >= real


def test_prompt_estimate_counts_tools_and_tool_calls() -> None:
    tools = [
        {"type": "function", "function": {"name": "get_metric", "parameters": {"type": "object", "properties": {}}}}
    ]
    base = {"messages": [{"role": "user", "content": "hi"}]}
    with_tools = {**base, "tools": tools}
    assert pricing.estimate_prompt_tokens(with_tools) >= pricing.estimate_prompt_tokens(base) + pricing.count_tokens(
        json.dumps(tools), "gpt-4o"
    )
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
    }
    assert pricing.estimate_prompt_tokens({"messages": [*base["messages"], call]}) > pricing.estimate_prompt_tokens(
        base
    )
    assert pricing.estimate_prompt_tokens({"input": ["hello world", "again"]}) >= 3


def test_count_tokens_uses_the_models_encoding() -> None:
    assert pricing.encoding_name("gpt-4o-mini") == "o200k_base"
    assert pricing.encoding_name("azure/gpt-4.1") == "o200k_base"
    assert pricing.encoding_name("anthropic/claude-3-5-sonnet") == "cl100k_base"
    assert pricing.count_tokens("", "gpt-4o") == 0
    assert pricing.count_tokens("hello world", "gpt-4o") == 2
    # Both encodings are bundled with litellm: a text they split differently proves both loaded.
    text = "上周我的净销售额是多少"
    assert pricing.count_tokens(text, "gpt-4o") != pricing.count_tokens(text, "gpt-4")
