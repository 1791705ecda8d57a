"""The offline model on its own (no litellm): tool calls, arguments, grounded prose, periods."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import jsonschema
import pytest

from gateway.offline import (
    NO_DATA_ANSWER,
    FactSource,
    OfflineModel,
    collect_facts,
    find_periods,
    grounded_numbers,
    reference_date,
    render_facts,
    stream_pieces,
)

TODAY = date(2026, 11, 22)  # a Sunday
SYSTEM = {"role": "system", "content": "You are the merchant's co-pilot. Today is 2026-11-22."}


def fn(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": schema}}


PERIOD = {"type": "string", "enum": ["today", "yesterday", "last_7_days", "last_week", "this_month", "last_month"]}
TOOLS = [
    fn(
        "get_sales_metric",
        "Compute one sales metric for the merchant over a date range.",
        {
            "metric": {
                "type": "string",
                "enum": ["net_sales", "gross_sales", "order_count", "refunds", "aov"],
                "description": "net_sales: revenue after refunds and discounts; aov: average order value; "
                "order_count: number of orders",
            },
            "start_date": {"type": "string", "format": "date", "description": "first day, inclusive"},
            "end_date": {"type": "string", "format": "date", "description": "last day, inclusive"},
            "compare_to": {"type": "string", "enum": ["none", "previous_period"], "default": "none"},
        },
        ["metric", "start_date", "end_date"],
    ),
    fn(
        "top_products",
        "Best-selling products ranked by revenue.",
        {
            "period": PERIOD,
            "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5, "description": "how many"},
        },
        ["period"],
    ),
    fn(
        "search_reviews",
        "Search what customers wrote in their reviews.",
        {"query": {"type": "string"}, "min_rating": {"type": "integer", "minimum": 1, "maximum": 5}},
        ["query"],
    ),
    fn(
        "list_low_stock",
        "Inventory items whose stock is below their reorder threshold.",
        {"threshold": {"type": "integer", "default": 5}},
        [],
    ),
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def ask(question: str, **options: Any) -> list[tuple[str, dict[str, Any]]]:
    response = OfflineModel().complete([SYSTEM, {"role": "user", "content": question}], tools=TOOLS, **options)
    message = response["choices"][0]["message"]
    calls = []
    for call in message.get("tool_calls") or []:
        arguments = json.loads(call["function"]["arguments"])
        jsonschema.validate(arguments, SCHEMAS[call["function"]["name"]])
        calls.append((call["function"]["name"], arguments))
    if calls:
        assert response["choices"][0]["finish_reason"] == "tool_calls"
        assert message["content"] is None
    return calls


# --------------------------------------------------------------------------- tool calls


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        (
            "What were my net sales last week?",
            [("get_sales_metric", {"metric": "net_sales", "start_date": "2026-11-09", "end_date": "2026-11-15"})],
        ),
        (
            "How much revenue did I make yesterday?",
            [("get_sales_metric", {"metric": "net_sales", "start_date": "2026-11-21", "end_date": "2026-11-21"})],
        ),
        (
            "average order value over the last 7 days",
            [("get_sales_metric", {"metric": "aov", "start_date": "2026-11-16", "end_date": "2026-11-22"})],
        ),
        (
            "How many orders between 2026-10-01 and 2026-10-15?",
            [("get_sales_metric", {"metric": "order_count", "start_date": "2026-10-01", "end_date": "2026-10-15"})],
        ),
        ("top products this month", [("top_products", {"period": "this_month"})]),
        ("What are my 3 best sellers of last month?", [("top_products", {"period": "last_month", "limit": 3})]),
        (
            "what do customers say about late delivery?",
            [("search_reviews", {"query": "what do customers say about late delivery?"})],
        ),
        ("Which items are low on stock?", [("list_low_stock", {})]),
    ],
)
def test_picks_the_tool_and_fills_arguments(question: str, expected: list[tuple[str, dict[str, Any]]]) -> None:
    assert ask(question) == expected


def test_comparison_with_a_compare_parameter_is_one_call() -> None:
    calls = ask("refunds yesterday compared to the previous period")
    assert calls == [
        (
            "get_sales_metric",
            {
                "metric": "refunds",
                "start_date": "2026-11-21",
                "end_date": "2026-11-21",
                "compare_to": "previous_period",
            },
        )
    ]


def test_two_periods_without_compare_parameter_fan_out() -> None:
    tools = [
        fn(
            "metric",
            "A sales metric over dates",
            {
                "name": {"type": "string", "enum": ["net_sales", "refunds"]},
                "from": {"type": "string", "format": "date"},
                "to": {"type": "string", "format": "date"},
            },
            ["name", "from", "to"],
        )
    ]
    response = OfflineModel().complete(
        [SYSTEM, {"role": "user", "content": "refunds yesterday vs the day before"}], tools=tools
    )
    calls = [json.loads(c["function"]["arguments"]) for c in response["choices"][0]["message"]["tool_calls"]]
    assert calls == [
        {"name": "refunds", "from": "2026-11-21", "to": "2026-11-21"},
        {"name": "refunds", "from": "2026-11-20", "to": "2026-11-20"},
    ]


def test_two_metrics_fan_out_into_two_calls() -> None:
    calls = ask("net sales and refunds last month")
    assert [(name, args["metric"], args["start_date"], args["end_date"]) for name, args in calls] == [
        ("get_sales_metric", "net_sales", "2026-10-01", "2026-10-31"),
        ("get_sales_metric", "refunds", "2026-10-01", "2026-10-31"),
    ]
    assert len(ask("net sales and refunds last month", parallel_tool_calls=False)) == 1


def test_distinct_parts_of_a_question_call_distinct_tools() -> None:
    names = [name for name, _ in ask("What were my net sales yesterday and which products are low on stock?")]
    assert names == ["get_sales_metric", "list_low_stock"]


@pytest.mark.parametrize(
    ("question", "metric", "start"),
    [
        ("Quelles étaient mes ventes nettes la semaine dernière ?", "net_sales", "2026-11-09"),
        ("¿Cuántos reembolsos tuve ayer?", "refunds", "2026-11-21"),
        ("Wie hoch war mein Nettoumsatz gestern? Netto Umsatz bitte", "net_sales", "2026-11-21"),
    ],
)
def test_multilingual_questions(question: str, metric: str, start: str) -> None:
    [(name, args)] = ask(question)
    assert name == "get_sales_metric" and args["metric"] == metric and args["start_date"] == start


def test_numbers_are_clamped_to_the_schema() -> None:
    assert ask("top 50 products this month") == [("top_products", {"period": "this_month", "limit": 20})]


def test_tool_choice() -> None:
    assert ask("top products this month", tool_choice="none") == []
    # "required" calls something even for a question nothing matches; "auto" would not.
    assert ask("good morning!") == []
    [(name, _)] = ask("good morning!", tool_choice="required")
    assert name in SCHEMAS
    named = {"type": "function", "function": {"name": "search_reviews"}}
    assert ask("net sales last week", tool_choice=named) == [("search_reviews", {"query": "net sales last week"})]


def test_required_parameters_without_a_match_take_defaults() -> None:
    tools = [
        fn(
            "report",
            "sales report",
            {
                "metric": {"type": "string", "enum": ["gross_sales", "net_sales"], "default": "net_sales"},
                "day": {"type": "string", "format": "date"},
                "limit": {"type": "integer", "minimum": 2},
                "verbose": {"type": "boolean", "default": True},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            ["metric", "day", "limit", "verbose", "tags"],
        )
    ]
    message = OfflineModel().complete([SYSTEM, {"role": "user", "content": "sales report"}], tools=tools)["choices"][0][
        "message"
    ]
    arguments = json.loads(message["tool_calls"][0]["function"]["arguments"])
    jsonschema.validate(arguments, tools[0]["function"]["parameters"])
    assert arguments == {
        "metric": "net_sales",
        "day": "2026-11-22",
        "limit": 2,
        "verbose": True,
        "tags": ["sales report"],
    }


def test_no_tool_call_once_results_follow_the_question() -> None:
    messages = [
        SYSTEM,
        {"role": "user", "content": "net sales last week?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_sales_metric", "arguments": "{}"}}
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "c1",
            "content": '{"metric": "net_sales", "value": 812.40, "currency": "EUR"}',
        },
    ]
    response = OfflineModel().complete(messages, tools=TOOLS)
    choice = response["choices"][0]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert choice["message"]["content"] == "Net sales: 812.40 EUR."


# --------------------------------------------------------------------------- prose


def prose(messages: list[dict[str, Any]], **options: Any) -> str:
    content = OfflineModel().complete(messages, **options)["choices"][0]["message"]["content"]
    assert isinstance(content, str)
    return content


def tool_turn(name: str, result: Any) -> list[dict[str, Any]]:
    content = result if isinstance(result, str) else json.dumps(result)
    return [
        SYSTEM,
        {"role": "user", "content": "question"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "t1", "type": "function", "function": {"name": name, "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "t1", "content": content},
    ]


FACT_CASES: list[tuple[str, Any, list[str]]] = [
    (
        "get_sales_metric",
        {
            "metric": "net_sales",
            "value": 1234.5,
            "currency": "EUR",
            "start_date": "2026-11-09",
            "end_date": "2026-11-15",
        },
        ["Net sales (2026-11-09 to 2026-11-15): 1234.5 EUR."],
    ),
    (
        "top_products",
        [{"product": "Blue mug", "revenue": 420, "units": 35}, {"product": "Tea towel", "revenue": 99.9, "units": 11}],
        ["Top products: Blue mug (revenue 420, units 35); Tea towel (revenue 99.9, units 11)."],
    ),
    (
        "compare",
        {"metric": "refunds", "period": "yesterday", "value": 3, "previous": {"period": "the day before", "value": 5}},
        ["Refunds (yesterday): 3.", "Previous (the day before): 5."],
    ),
    (
        "orders",
        "Orders yesterday: 17\nOrders the day before: 12",
        ["Orders yesterday: 17.", "Orders the day before: 12."],
    ),
    ("list_low_stock", [], ["List low stock: no results."]),
]


@pytest.mark.parametrize(("name", "result", "expected"), FACT_CASES)
def test_prose_restates_facts(name: str, result: Any, expected: list[str]) -> None:
    text = prose(tool_turn(name, result))
    assert text == " ".join(expected)
    facts = result if isinstance(result, str) else json.dumps(result)
    assert grounded_numbers(text, [facts])


def test_facts_fenced_in_system_or_user_messages() -> None:
    messages = [
        {"role": "system", "content": 'Answer from these.\n<facts>\n{"metric": "aov", "value": 23.75}\n</facts>'},
        {"role": "user", "content": "And this:\n```facts\nRepeat customers: 41%\n```\nhow am I doing?"},
    ]
    assert prose(messages) == "Aov: 23.75. Repeat customers: 41%."
    assert [s.content for s in collect_facts(messages)] == [
        '{"metric": "aov", "value": 23.75}',
        "Repeat customers: 41%",
    ]


def test_no_facts_says_so() -> None:
    assert prose([{"role": "user", "content": "How were sales in 2025?"}]) == NO_DATA_ANSWER
    # Old tool results answered an older question: they are not facts for the new one.
    messages = [*tool_turn("orders", "Orders: 3"), {"role": "user", "content": "and refunds?"}]
    assert prose(messages) == NO_DATA_ANSWER


def test_never_writes_a_number_absent_from_the_facts() -> None:
    assert grounded_numbers("Net sales: 1,234.50 EUR on 2026-11-09.", ["value 1234.50 date 2026-11-09"])
    assert not grounded_numbers("Net sales: 1235 EUR.", ["value 1234.50"])
    # A rendering that would add a number (here a list's positions) is not what the model writes.
    rows = [{"product": f"P{i}", "revenue": i * 10} for i in range(1, 14)]
    text = prose(tool_turn("top_products", rows))
    assert grounded_numbers(text, [json.dumps(rows)])
    assert "and more" in text and "P11" not in text


def test_json_response_format() -> None:
    messages = tool_turn("get_sales_metric", {"metric": "order_count", "value": 17})
    payload = json.loads(prose(messages, response_format={"type": "json_object"}))
    assert payload == {"answer": "Order count: 17.", "facts": ["Order count: 17."]}
    schema = {
        "type": "object",
        "properties": {"summary": {"type": "string"}, "highlights": {"type": "array", "items": {"type": "string"}}},
        "required": ["summary", "highlights"],
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    structured = json.loads(prose(messages, response_format=response_format))
    jsonschema.validate(structured, schema)
    assert structured["summary"] == "Order count: 17."
    assert json.loads(prose([{"role": "user", "content": "hi"}], response_format={"type": "json_object"})) == {
        "answer": NO_DATA_ANSWER,
        "facts": [],
    }


def test_max_tokens_truncates_with_length_reason() -> None:
    rows = [{"product": f"Product {c}", "revenue": 10} for c in "ABCDEFGH"]
    response = OfflineModel().complete(tool_turn("top_products", rows), max_tokens=8)
    choice = response["choices"][0]
    assert choice["finish_reason"] == "length"
    assert response["usage"]["completion_tokens"] <= 8


def test_deterministic_with_usage() -> None:
    messages = [SYSTEM, {"role": "user", "content": "net sales and refunds last month"}]
    first = OfflineModel().complete(messages, tools=TOOLS, created=1)
    second = OfflineModel().complete(messages, tools=TOOLS, created=1)
    assert first == second
    usage = first["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert first["object"] == "chat.completion" and first["model"] == "copilot-offline"


def test_stream_pieces_join_back() -> None:
    text = "Net sales (last week): 1234.5 EUR.  Orders: 17."
    pieces = list(stream_pieces(text))
    assert len(pieces) > 1 and "".join(pieces) == text


def test_render_nested_json() -> None:
    source = FactSource("summary", json.dumps({"totals": {"orders": 4, "net_sales": 55.5}, "currency": "USD"}))
    assert render_facts(source) == ["Summary: currency USD.", "Totals: orders 4; net sales 55.5."]


# --------------------------------------------------------------------------- periods


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("today", [("2026-11-22", "2026-11-22")]),
        ("yesterday vs the day before", [("2026-11-21", "2026-11-21"), ("2026-11-20", "2026-11-20")]),
        ("the day before yesterday", [("2026-11-20", "2026-11-20")]),
        ("last week", [("2026-11-09", "2026-11-15")]),
        ("this week", [("2026-11-16", "2026-11-22")]),
        ("this month", [("2026-11-01", "2026-11-22")]),
        ("last month and the month before", [("2026-10-01", "2026-10-31"), ("2026-09-01", "2026-09-30")]),
        ("past 30 days", [("2026-10-24", "2026-11-22")]),
        ("last year", [("2025-01-01", "2025-12-31")]),
        ("in March", [("2026-03-01", "2026-03-31")]),
        ("december 2025", [("2025-12-01", "2025-12-31")]),
        ("from 2026-01-05 to 2026-01-09", [("2026-01-05", "2026-01-09")]),
        ("la semaine dernière", [("2026-11-09", "2026-11-15")]),
        ("los últimos 7 días", [("2026-11-16", "2026-11-22")]),
        ("letzten Monat", [("2026-10-01", "2026-10-31")]),
        ("may I see sales", []),
    ],
)
def test_find_periods(text: str, ranges: list[tuple[str, str]]) -> None:
    assert [(p.start.isoformat(), p.end.isoformat()) for p in find_periods(text, TODAY)] == ranges


def test_reference_date_comes_from_the_system_message() -> None:
    assert reference_date([SYSTEM]) == TODAY
    assert reference_date([{"role": "system", "content": "Current date: 2025-02-03"}]) == date(2025, 2, 3)
    assert reference_date([{"role": "user", "content": "today is 2020-01-01"}]) == date.today()


def test_period_words_do_not_pick_enum_values_and_gloss_alternatives_do() -> None:
    tool = fn(
        "get_metric",
        "Compute a sales metric over dates",
        {
            "metric": {
                "type": "string",
                "enum": ["net_sales", "refunds"],
                "description": "net_sales: revenue | takings",
            },
            "start_date": {"type": "string", "format": "date"},
            "end_date": {"type": "string", "format": "date"},
            "group_by": {
                "type": "string",
                "enum": ["none", "day", "week", "hour_of_day", "product"],
                "default": "none",
                "description": "hour_of_day: hour | busiest hour; product: products | best sellers",
            },
        },
        required=["metric", "start_date", "end_date"],
    )

    def call(question: str) -> dict[str, Any]:
        response = OfflineModel().complete([SYSTEM, {"role": "user", "content": question}], tools=[tool])
        [raw] = response["choices"][0]["message"]["tool_calls"]
        return dict(json.loads(raw["function"]["arguments"]))

    # "last week" names the period, not a weekly breakdown.
    assert call("takings last week").get("group_by", "none") == "none"
    assert call("revenue by day last week")["group_by"] == "day"
    # One alternative of a gloss is enough ("busiest hour"), and it does not dilute the others.
    assert call("what was my busiest hour last week for revenue")["group_by"] == "hour_of_day"
    assert call("best sellers last month by revenue")["group_by"] == "product"
