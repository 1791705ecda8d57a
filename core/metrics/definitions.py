"""The metric catalogue: what each metric means, its unit and how it aggregates.

Definitions follow shared/DATA_CONTRACT.md; the ones the contract leaves open
are stated here and nowhere else:

- **returning customers**: distinct customers with a successful payment in the
  period (bucket) who also had a successful payment with the merchant on an
  earlier local day, before the period (bucket) started.
- **payment-method mix**: each method's share of the successful payments
  (count), with its transactions and gross sales alongside.
- **sales of a product**: quantity x unit price over its lines in successful
  payments (tips and transaction-level amounts are not split across lines).
- **transactions of a product**: successful payments that included it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Metric(StrEnum):
    """Every metric the layer can compute (the only names a model may pass)."""

    NET_SALES = "net_sales"
    GROSS_SALES = "gross_sales"
    REFUNDS = "refunds"
    TRANSACTIONS = "transactions"
    AVERAGE_TICKET = "average_ticket"
    TIPS = "tips"
    UNITS_SOLD = "units_sold"
    UNIQUE_CUSTOMERS = "unique_customers"
    RETURNING_CUSTOMERS = "returning_customers"
    PAYMENT_METHOD_MIX = "payment_method_mix"


class Unit(StrEnum):
    """How a metric's value reads: money in the merchant's currency, a count, or a percentage."""

    MONEY = "money"
    COUNT = "count"
    PERCENT = "percent"


class Aggregation(StrEnum):
    """How values of a metric combine across rows."""

    SUM = "sum"  # additive: buckets add up to the total
    RATIO = "ratio"  # a quotient of two sums (average ticket)
    DISTINCT = "distinct"  # distinct customers: buckets do not add up
    SHARE = "share"  # a share of a whole (payment-method mix)


@dataclass(frozen=True)
class MetricDefinition:
    """One catalogue entry.

    Attributes:
        metric: The metric's name.
        label: Human label ("Net sales").
        unit: Money, count or percent.
        count_noun: What a count counts ("transactions"), for wording.
        aggregation: How values combine across rows.
        description: The definition, as a merchant may read it.
        synonyms: Phrases that name the metric in a question (lower case).
        per_product: Whether it is defined per product and category.
    """

    metric: Metric
    label: str
    unit: Unit
    count_noun: str
    aggregation: Aggregation
    description: str
    synonyms: tuple[str, ...]
    per_product: bool = False


CATALOGUE: dict[Metric, MetricDefinition] = {
    d.metric: d
    for d in (
        MetricDefinition(
            Metric.NET_SALES,
            "Net sales",
            Unit.MONEY,
            "",
            Aggregation.SUM,
            "Gross sales minus refunds and chargebacks (the default meaning of revenue or sales).",
            (
                "net sales",
                "net revenue",
                "revenue",
                "sales",
                "turnover",
                "takings",
                "income",
                "earnings",
                "made",
                "make",
                "earn",
                "earned",
                "money",
            ),
        ),
        MetricDefinition(
            Metric.GROSS_SALES,
            "Gross sales",
            Unit.MONEY,
            "",
            Aggregation.SUM,
            "Sum of successful payments, before refunds.",
            ("gross sales", "gross revenue", "gross", "total payments", "sales before refunds"),
            per_product=True,
        ),
        MetricDefinition(
            Metric.REFUNDS,
            "Refunds",
            Unit.MONEY,
            "",
            Aggregation.SUM,
            "Sum of successful refunds and chargebacks.",
            ("refunds", "refunded", "refund", "chargebacks", "chargeback", "returns", "money back"),
        ),
        MetricDefinition(
            Metric.TRANSACTIONS,
            "Transactions",
            Unit.COUNT,
            "transactions",
            Aggregation.SUM,
            "Number of successful payments.",
            (
                "transactions",
                "transaction count",
                "number of sales",
                "number of payments",
                "payments",
                "orders",
                "purchases",
                "tickets",
                "checkouts",
                "how many sales",
                "sales count",
            ),
            per_product=True,
        ),
        MetricDefinition(
            Metric.AVERAGE_TICKET,
            "Average ticket",
            Unit.MONEY,
            "",
            Aggregation.RATIO,
            "Gross sales divided by the number of successful payments.",
            (
                "average ticket",
                "average sale",
                "average transaction",
                "average order value",
                "aov",
                "basket size",
                "average basket",
                "average spend",
                "spend per customer",
                "ticket size",
                "average check",
            ),
        ),
        MetricDefinition(
            Metric.TIPS,
            "Tips",
            Unit.MONEY,
            "",
            Aggregation.SUM,
            "Sum of tips on successful payments.",
            ("tips", "tip", "gratuity", "gratuities", "tipped"),
        ),
        MetricDefinition(
            Metric.UNITS_SOLD,
            "Units sold",
            Unit.COUNT,
            "units",
            Aggregation.SUM,
            "Sum of item quantities in successful payments.",
            (
                "units sold",
                "units",
                "items sold",
                "quantity",
                "how many sold",
                "pieces",
                "sold the most",
                "best seller",
                "best sellers",
                "best-selling",
                "top products",
                "top sellers",
            ),
            per_product=True,
        ),
        MetricDefinition(
            Metric.UNIQUE_CUSTOMERS,
            "Unique customers",
            Unit.COUNT,
            "customers",
            Aggregation.DISTINCT,
            "Distinct customers (by customer id) with a successful payment.",
            (
                "unique customers",
                "customers",
                "distinct customers",
                "visitors",
                "clients",
                "guests",
                "footfall",
                "how many people",
            ),
        ),
        MetricDefinition(
            Metric.RETURNING_CUSTOMERS,
            "Returning customers",
            Unit.COUNT,
            "customers",
            Aggregation.DISTINCT,
            "Distinct customers with a successful payment who had also paid on an earlier day before the period.",
            (
                "returning customers",
                "repeat customers",
                "regulars",
                "returning",
                "repeat",
                "came back",
                "come back",
                "loyal customers",
            ),
        ),
        MetricDefinition(
            Metric.PAYMENT_METHOD_MIX,
            "Payment-method mix",
            Unit.PERCENT,
            "transactions",
            Aggregation.SHARE,
            "Share of successful payments by payment method (card, contactless, wallet, cash, QR, other).",
            (
                "payment method",
                "payment methods",
                "payment mix",
                "payment-method mix",
                "how customers pay",
                "how people pay",
                "cash vs card",
                "card vs cash",
                "cash",
                "card",
                "contactless",
                "wallet",
                "qr",
            ),
        ),
    )
}


def definition(metric: Metric | str) -> MetricDefinition:
    """The catalogue entry of a metric (by enum or name)."""
    return CATALOGUE[Metric(metric)]


def _synonym_index() -> list[tuple[re.Pattern[str], Metric, int]]:
    out = []
    for d in CATALOGUE.values():
        for phrase in (d.metric.value.replace("_", " "), *d.synonyms):
            out.append((re.compile(rf"\b{re.escape(phrase)}\b"), d.metric, len(phrase)))
    # Longest phrase first: "gross sales" before "sales", "unique customers" before "customers".
    out.sort(key=lambda entry: -entry[2])
    return out


_SYNONYMS = _synonym_index()


def find_metrics(text: str) -> list[Metric]:
    """Metrics named in a question, in order of appearance (deterministic synonym matching).

    A longer phrase wins over a shorter one it overlaps ("gross sales" over
    "sales"), so each stretch of text names at most one metric.
    """
    lowered = text.lower()
    taken: list[tuple[int, int]] = []
    found: list[tuple[int, Metric]] = []
    for pattern, metric, _ in _SYNONYMS:
        for match in pattern.finditer(lowered):
            start, end = match.span()
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            found.append((start, metric))
    ordered: list[Metric] = []
    for _, metric in sorted(found, key=lambda f: f[0]):
        if metric not in ordered:
            ordered.append(metric)
    return ordered


__all__ = ["CATALOGUE", "Aggregation", "Metric", "MetricDefinition", "Unit", "definition", "find_metrics"]
