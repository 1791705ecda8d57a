"""The catalogue and deterministic metric understanding."""

from __future__ import annotations

import pytest

from core.metrics import CATALOGUE, Metric, Unit, find_metrics


def test_every_metric_has_a_complete_definition() -> None:
    assert set(CATALOGUE) == set(Metric)
    for d in CATALOGUE.values():
        assert d.label and d.description and d.synonyms
        assert d.count_noun or d.unit is Unit.MONEY


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What was my revenue yesterday?", [Metric.NET_SALES]),
        ("gross sales last week", [Metric.GROSS_SALES]),
        ("How much did I refund this month?", [Metric.REFUNDS]),
        ("how many transactions today", [Metric.TRANSACTIONS]),
        ("what's my average ticket", [Metric.AVERAGE_TICKET]),
        ("tips in March", [Metric.TIPS]),
        ("which products are my best sellers", [Metric.UNITS_SOLD]),
        ("how many unique customers did we have", [Metric.UNIQUE_CUSTOMERS]),
        ("how many repeat customers came back", [Metric.RETURNING_CUSTOMERS]),
        ("how do people pay, cash vs card?", [Metric.PAYMENT_METHOD_MIX]),
        ("sales and refunds last week", [Metric.NET_SALES, Metric.REFUNDS]),
        ("what's the weather", []),
    ],
)
def test_find_metrics(question: str, expected: list[Metric]) -> None:
    assert find_metrics(question) == expected
