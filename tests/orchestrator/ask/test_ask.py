"""The ask graph end to end with the offline model: phrasings, languages, follow-ups, scope, verification."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from core.db import Database
from core.metrics import Comparison, GroupBy, MetricQuery, Period, run_metric_query
from orchestrator.grounding import numbers_in, read_quantities
from orchestrator.tools import infer_period
from tests.orchestrator.ask.conftest import AS_OF, Harness

LAST_WEEK = (date(2025, 12, 29), date(2026, 1, 4))
YESTERDAY = (date(2026, 1, 4), date(2026, 1, 4))
LAST_MONTH = (date(2025, 12, 1), date(2025, 12, 31))
THIS_MONTH = (date(2026, 1, 1), date(2026, 1, 5))
NOVEMBER = (date(2025, 11, 1), date(2025, 11, 30))
LAST_7 = (date(2025, 12, 30), date(2026, 1, 5))

# (question, metric, (first, last day), group_by, compare)
PHRASINGS = [
    ("How much did I make last week?", "net_sales", LAST_WEEK, "none", None),
    ("What were my net sales yesterday?", "net_sales", YESTERDAY, "none", None),
    ("revenue last month", "net_sales", LAST_MONTH, "none", None),
    ("What's my turnover this month?", "net_sales", THIS_MONTH, "none", None),
    ("How much did I refund last month?", "refunds", LAST_MONTH, "none", None),
    ("How many transactions did I have last week?", "transactions", LAST_WEEK, "none", None),
    ("What's my average ticket in November?", "average_ticket", NOVEMBER, "none", None),
    ("tips in the last 7 days", "tips", LAST_7, "none", None),
    ("How many units did I sell last week?", "units_sold", LAST_WEEK, "none", None),
    ("How many unique customers came last month?", "unique_customers", LAST_MONTH, "none", None),
    ("How many returning customers did I have last month?", "returning_customers", LAST_MONTH, "none", None),
    ("What was my payment method mix last month?", "payment_method_mix", LAST_MONTH, "payment_method", None),
    ("Sales by day last week", "net_sales", LAST_WEEK, "day", None),
    ("Which hour is busiest for sales last month?", "net_sales", LAST_MONTH, "hour_of_day", None),
    ("revenue per weekday last month", "net_sales", LAST_MONTH, "weekday", None),
    ("Top 3 products last month", "gross_sales", LAST_MONTH, "product", None),
    ("How did revenue last week compare with the week before?", "net_sales", LAST_WEEK, "none", "previous_period"),
    ("Were sales last week better than usual?", "net_sales", LAST_WEEK, "none", "same_weekday"),
    ("Quel est mon chiffre d'affaires la semaine dernière ?", "net_sales", LAST_WEEK, "none", None),
    ("¿Cuántos reembolsos tuve el mes pasado?", "refunds", LAST_MONTH, "none", None),
    ("Wie hoch war mein Umsatz gestern?", "net_sales", YESTERDAY, "none", None),
]


def _period(first: date, last: date) -> Period:
    return infer_period(first, last, AS_OF)


def _expected(db: Database, metric: str, days: tuple[date, date], group: str, compare: str | None) -> list[str]:
    query = MetricQuery(
        metric=metric, period=_period(*days), group_by=GroupBy(group), compare=Comparison(compare or "none"),
        top_n=3 if group == "product" else None,
    )  # fmt: skip
    with db.merchant_session("M0001") as session:
        result = run_metric_query(session, "M0001", query, as_of=AS_OF)
    return [str(f.value) for f in result.facts() if f.value is not None]


@pytest.mark.parametrize(("question", "metric", "days", "group", "compare"), PHRASINGS, ids=[p[0] for p in PHRASINGS])
def test_understands_the_question_and_answers_with_computed_numbers(
    harness: Harness, metrics_db: Database, question: str, metric: str, days: tuple[date, date], group: str,
    compare: str | None,
) -> None:  # fmt: skip
    reply = harness.ask(question)
    assert reply.facts, reply.answer
    first = reply.facts[0]
    assert first["name"] == metric
    assert (first["period"]["start"], first["period"]["end"]) == (days[0].isoformat(), (days[1].toordinal() + 1 and
            date.fromordinal(days[1].toordinal() + 1).isoformat()))  # fmt: skip
    sql = first["query"]["sql"]
    assert "SELECT" in sql and first["query"]["params"]["merchant_id"] == "M0001"
    # Same numbers as the metrics layer computes directly (itself checked against an independent oracle).
    expected = _expected(metrics_db, metric, days, group, compare)
    got = [str(f["value"]) for f in reply.facts if f["value"] is not None]
    assert got[: len(expected)] == expected[: len(got)]
    # Every quantity in the answer is one of the facts (the verifier passed or the fallback was used).
    assert reply.source in {"model", "repaired", "fallback"}
    values = {Decimal(str(f["value"])) for f in reply.facts if f["value"] is not None}
    names = numbers_in([question] + [f["label"] for f in reply.facts] + [f["period"]["label"] for f in reply.facts])
    for q in read_quantities(reply.answer):
        if q.text in names:
            continue
        assert any(abs(v) in {abs(r) for r, _ in q.readings} or _rounds(v, q) for v in values), (q.text, reply.answer)


def _rounds(value: Decimal, q: object) -> bool:
    from orchestrator.grounding import rounds_to

    return any(rounds_to(abs(value), abs(r), d) for r, d in q.readings)  # type: ignore[attr-defined]


def test_answers_in_the_question_language(harness: Harness) -> None:
    fr = harness.ask("Quel est mon chiffre d'affaires la semaine dernière ?")
    es = harness.ask("¿Cuánto vendí la semana pasada?")
    de = harness.ask("Wie hoch war mein Umsatz letzte Woche?")
    assert (fr.language, es.language, de.language) == ("fr", "es", "de")
    assert "Chiffre d'affaires net" in fr.answer and "semaine dernière" in fr.answer
    assert "Ventas netas" in es.answer
    assert "Nettoumsatz" in de.answer
    total = Decimal(str(fr.facts[0]["value"]))
    assert f"{total:,.2f}".replace(",", "\u202f").replace(".", ",") in fr.answer


def test_follow_up_questions_use_the_conversation(harness: Harness) -> None:
    conversation = "6f1c9f0e-8d5a-4c1e-9a59-3f1f6f5b0c11"
    first = harness.ask("How much did I make last week?", conversation_id=conversation)
    second = harness.ask("And the week before?", conversation_id=conversation)
    third = harness.ask("What about refunds?", conversation_id=conversation)
    assert first.facts[0]["period"]["start"] == "2025-12-29"
    assert (second.facts[0]["name"], second.facts[0]["period"]["start"]) == ("net_sales", "2025-12-22")
    assert (third.facts[0]["name"], third.facts[0]["period"]["start"]) == ("refunds", "2025-12-22")
    # Another conversation starts fresh.
    other = harness.ask("And the week before?", conversation_id="0b8a1d2e-1111-4c1e-9a59-3f1f6f5b0c11")
    assert other.facts == [] or other.facts[0]["period"]["start"] != "2025-12-22"


def test_out_of_scope_questions_get_an_honest_answer(harness: Harness) -> None:
    reply = harness.ask("What's the weather tomorrow?")
    assert reply.facts == [] and reply.source == "refusal"
    assert "can't answer that from your data" in reply.answer
    assert "sales" in reply.answer  # says what it can answer


def test_other_merchants_data_is_refused_without_any_tool_call(harness: Harness) -> None:
    for question in ("What were M0002's sales last week?", "How much did my competitors make last month?"):
        reply = harness.ask(question)
        assert reply.source == "refusal" and reply.facts == [], question
        assert "only see your own business" in reply.answer


def test_unknown_merchant_is_an_error(harness: Harness) -> None:
    from core.metrics import MerchantNotVisibleError

    with pytest.raises(MerchantNotVisibleError):
        harness.ask("How much did I make last week?", merchant="M9999")


def test_chart_and_follow_ups(harness: Harness) -> None:
    reply = harness.ask("Sales by day last week")
    assert reply.chart is not None and reply.chart["mark"]["type"] == "line"
    assert len(reply.chart["data"]["values"]) == 7
    assert reply.follow_ups


def test_product_names_in_the_question_filter_the_metric(harness: Harness, metrics_db: Database) -> None:
    from sqlalchemy import text

    with metrics_db.merchant_session("M0001") as session:
        name = session.execute(
            text("SELECT name FROM products WHERE merchant_id = 'M0001' ORDER BY name LIMIT 1")
        ).scalar_one()
    reply = harness.ask(f"How many units of {name} did I sell last month?")
    first = reply.facts[0]
    assert first["name"] == "units_sold"
    assert first["query"]["params"]["products"] == [name]
    query = MetricQuery(metric="units_sold", period=_period(*LAST_MONTH), products=(name,))
    with metrics_db.merchant_session("M0001") as session:
        expected = run_metric_query(session, "M0001", query, as_of=AS_OF).total
    assert Decimal(str(first["value"])) == expected
