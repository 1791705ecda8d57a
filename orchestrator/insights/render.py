"""Deterministic title and body from an insight's computed numbers.

This is the fallback wording (and what the bulk run stores until narration
words it): every number in it is one of the insight's facts,
formatted for display.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from core.metrics.money import exponent as currency_exponent
from orchestrator.insights.types import Insight


# ISO 4217 minor-unit exponents that differ from 2.
def minor_exponent(currency: str) -> int:
    """Decimals of the currency's minor unit (2 unless ISO 4217 says otherwise; the loader's table)."""
    return currency_exponent(currency)


def format_money(minor: float, currency: str) -> str:
    """``1234`` EUR → ``"12.34 EUR"``; JPY has no decimals."""
    exponent = minor_exponent(currency)
    value = abs(Decimal(str(minor))).scaleb(-exponent)
    sign = "-" if minor < 0 else ""
    return f"{sign}{_half_up(value, exponent)} {currency}"


def _half_up(value: Decimal, places: int) -> str:
    # Half up, as the grounding verifier reads a rounded number (format() alone rounds half even on binary floats).
    return f"{value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):,.{places}f}"


def _value(i: Insight, v: float) -> str:
    if i.unit == "minor":
        return format_money(v, i.currency)
    if i.unit == "stars":
        return _half_up(Decimal(str(v)), 2)
    return f"{v:g}" if v == int(v) else _half_up(Decimal(str(v)), 1)


_TITLES = {
    "sales_anomaly": "Net sales {dir}",
    "transactions_anomaly": "Number of payments {dir}",
    "refund_spike": "Unusually many refunds",
    "payment_failures": "Many failed card payments",
    "outage": "No payments {subject_hours}",
    "stock_out": "{product} stopped selling",
    "product_drop": "{product} sold far less than usual",
    "new_best_hour": "Best hour in weeks: {subject}:00",
    "new_best_product": "{product} is your new best seller",
    "review_shift": "Ratings {dir}",
}


def title(i: Insight) -> str:
    """A short headline."""
    product = str(i.evidence.get("product_name") or i.subject or "")
    hours = ""
    if i.kind == "outage" and i.subject:
        start, end = i.subject.split("-")
        hours = f"{start}:00-{end}:00"
    template = _TITLES.get(i.kind, "{kind} {dir}")
    return template.format(
        dir="up" if i.direction == "up" else "down",
        subject=i.subject or "",
        subject_hours=hours,
        product=product,
        kind=i.kind.replace("_", " ").capitalize(),
    ).strip()


def body(i: Insight) -> str:
    """One or two sentences with the observed and expected values."""
    period = (
        i.period_start.isoformat()
        if i.period_start == i.period_end
        else f"{i.period_start.isoformat()} to {i.period_end.isoformat()}"
    )
    metric = i.metric.replace("_", " ").capitalize()
    text = f"{metric}: {_value(i, i.observed)} ({period}), usually {_value(i, i.expected)}."
    if i.impact_minor:
        text += f" Estimated effect: {format_money(i.impact_minor, i.currency)}."
    return text
