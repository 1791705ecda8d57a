"""The verifier: invented, mis-rounded and wrong-period numbers are caught; honest roundings pass."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from orchestrator.grounding import Figure, numbers_in, read_quantities, verify_draft

WEEK = (date(2026, 3, 2), date(2026, 3, 9))
BEFORE = (date(2026, 2, 23), date(2026, 3, 2))
FIGURES = [
    Figure(Decimal("1234.56"), "EUR", *WEEK, names=("last week", "2026-03-02 to 2026-03-08"), label="Net sales"),
    Figure(Decimal("1100.00"), "EUR", *BEFORE, names=("2026-02-23 to 2026-03-01",), label="Net sales before"),
    Figure(Decimal("12.2"), "%", *WEEK, names=("last week",), label="change"),
    Figure(Decimal("348"), "transactions", *WEEK, names=("last week",), label="Transactions"),
]


@pytest.mark.parametrize(
    "draft",
    [
        "Net sales last week were 1,234.56 EUR, up 12.2% on 2026-02-23 to 2026-03-01 (1,100.00 EUR).",
        "Net sales last week: €1,235 from 348 payments.",  # rounded to whole euros
        "About €1.2k last week.",
        "Le chiffre d'affaires de la semaine dernière : 1 234,56 €.",
        "Nettoumsatz letzte Woche: 1.234,56 EUR, ein Plus von 12,2 %.",
        "Sales went down 12% on 2 March 2026 compared with the week before.",  # dates are not quantities
        "No numbers at all.",
    ],
)
def test_supported_drafts_pass(draft: str) -> None:
    verdict = verify_draft(draft, FIGURES)
    assert verdict.ok, verdict.issues


@pytest.mark.parametrize(
    ("draft", "number", "reason"),
    [
        ("Net sales last week were 1,300.00 EUR.", "1,300.00", "invented"),
        ("You had 17 new customers last week.", "17", "invented"),
        ("Net sales last week were 1,234.57 EUR.", "1,234.57", "misrounded"),
        ("Net sales last week were about 1,230 EUR.", "1,230", "misrounded"),
        ("Sales rose 12.3% last week.", "12.3%", "misrounded"),
        ("Net sales last week were 1,100.00 EUR.", "1,100.00", "wrong_period"),
        ("348 transactions were refunded: 348%.", "348%", "invented"),  # a count is not a percentage
    ],
)
def test_unsupported_numbers_are_caught(draft: str, number: str, reason: str) -> None:
    verdict = verify_draft(draft, FIGURES)
    assert [(i.number, i.reason) for i in verdict.issues] == [(number, reason)]
    assert verdict.issues[0].describe()


def test_context_numbers_pass_only_as_written() -> None:
    context = numbers_in(["Top 3 products in the last 7 days"])
    assert verify_draft("Your top 3 products over the last 7 days.", FIGURES, context_numbers=context).ok
    assert not verify_draft("Your top 3 products sold 3% more.", FIGURES, context_numbers=context).ok


def test_reads_numbers_in_every_format() -> None:
    readings = {
        q.text: {v for v, _ in q.readings} for q in read_quantities("1,234.5 and 1.234,5 and 1 234 and -7 and 2.5k")
    }
    assert Decimal("1234.5") in readings["1,234.5"]
    assert Decimal("1234.5") in readings["1.234,5"]
    assert Decimal("-7") in readings["-7"]
    assert Decimal("2500") in readings["2.5k"]
