"""The ``get_metric`` tool: what a model may ask of the metrics layer, and how it runs.

The model fills a small JSON object (a metric from an enum, dates, a
breakdown, a comparison); it never writes SQL and never names a merchant:
the merchant comes from the authenticated context. :func:`parse_metric_call`
validates the arguments into a :class:`core.metrics.MetricQuery`; anything
else is refused with a reason the graph reports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from pydantic import ValidationError

from core.errors import ValidationFailedError
from core.metrics import CATALOGUE, Comparison, GroupBy, Metric, MetricQuery, Order, Period
from core.metrics.periods import Grain, describe

METRIC_TOOL = "get_metric"

# Words a merchant uses for each metric (and for breakdowns), in the languages
# the co-pilot answers in; the model reads them as the enum's glossary.
_METRIC_GLOSS: dict[Metric, str] = {
    Metric.NET_SALES: "net sales | revenue | sales | turnover | takings | income | earnings | money | make | made | "
    "earn | earned | chiffre d'affaires | ventes | ventas | ingresos | facturación | Umsatz | Einnahmen | fatturato | "
    "vendas | faturamento",
    Metric.GROSS_SALES: "gross sales | gross revenue | total payments | sales before refunds | ventes brutes | "
    "ventas brutas | Bruttoumsatz",
    Metric.REFUNDS: "refunds | refunded | chargebacks | returns | money back | remboursements | reembolsos | "
    "devoluciones | Rückerstattungen | Erstattungen | rimborsi",
    Metric.TRANSACTIONS: "number of transactions | payments | orders | tickets | receipts | how many sales | "
    "transactions | paiements | transacciones | pagos | Transaktionen | Zahlungen | Buchungen | transazioni | "
    "pagamenti | transações",
    Metric.AVERAGE_TICKET: "average ticket | average basket | average sale | average order value | average spend | "
    "panier moyen | ticket moyen | ticket medio | Durchschnittsbon | Warenkorb | scontrino medio | ticket médio",
    Metric.TIPS: "tips | tip | gratuity | pourboires | propinas | Trinkgeld | mance | gorjetas",
    Metric.UNITS_SOLD: "units sold | items sold | units | quantity | how many sold | best selling | pieces | "
    "articles vendus | unidades vendidas | verkaufte Stück | pezzi venduti",
    Metric.UNIQUE_CUSTOMERS: "unique customers | distinct customers | how many customers | customers | visitors | "
    "clients | clientes | Kunden | clienti",
    Metric.RETURNING_CUSTOMERS: "returning customers | repeat customers | regulars | loyal customers | came back | "
    "clients fidèles | clients réguliers | clientes habituales | Stammkunden | clienti abituali",
    Metric.PAYMENT_METHOD_MIX: "payment method mix | payment methods | how customers pay | card vs cash | "
    "moyens de paiement | métodos de pago | Zahlungsarten | metodi di pagamento",
}
_GROUP_GLOSS: dict[GroupBy, str] = {
    GroupBy.NONE: "a single total",
    GroupBy.DAY: "each day | daily | per day | by day | day by day | par jour | por día | pro Tag | täglich",
    GroupBy.WEEK: "each week | weekly | per week | by week | par semaine | por semana | pro Woche",
    GroupBy.MONTH: "each month | monthly | per month | by month | par mois | por mes | pro Monat",
    GroupBy.HOUR_OF_DAY: "hour | hours | busiest hour | peak hours | hourly | time of day | par heure | por hora | "
    "Uhrzeit | Stunde",
    GroupBy.WEEKDAY: "weekday | day of the week | busiest day | jour de la semaine | día de la semana | Wochentag",
    GroupBy.PRODUCT: "product | products | item | items | best sellers | best selling | produits | productos | "
    "Produkte | prodotti",
    GroupBy.CATEGORY: "category | categories | catégorie | categoría | Kategorie",
    GroupBy.PAYMENT_METHOD: "payment method | card or cash | moyen de paiement | Zahlungsart",
}
_COMPARE_GLOSS: dict[Comparison, str] = {
    Comparison.NONE: "no comparison",
    Comparison.PREVIOUS_PERIOD: "compare | compared | comparison | vs | versus | than | before | change | growth | "
    "increase | decrease | grew | better | worse | par rapport | comparé | comparado | im Vergleich | Vergleich",
    Comparison.SAME_WEEKDAY: "compared to usual | compared with usual | than usual | usual | usually | typical | "
    "normal | average week | d'habitude | habitual | normalmente | üblich | gewöhnlich",
}


# The tool says "usual" for the same-weekday baseline: the word a merchant uses.
_COMPARE_VALUES = {
    "none": Comparison.NONE,
    "previous_period": Comparison.PREVIOUS_PERIOD,
    "usual": Comparison.SAME_WEEKDAY,
}
_COMPARE_NAMES = {v: k for k, v in _COMPARE_VALUES.items()}


def _gloss(mapping: Mapping[Any, str]) -> str:
    return "; ".join(f"{_COMPARE_NAMES.get(key, key.value)}: {words}" for key, words in mapping.items())


MAX_PRODUCT_NAMES = 200  # above this the names are not listed in the tool (they cost prompt tokens)


def metric_tool_spec(product_names: Sequence[str] = ()) -> dict[str, Any]:
    """The OpenAI function spec of ``get_metric``.

    Args:
        product_names: The merchant's product names, offered as the
            ``products`` enum so a model picks exact names (data, never
            instructions: an enum value cannot call anything).
    """
    metrics = [m.value for m in Metric]
    product_items: dict[str, Any] = {"type": "string"}
    names = [n for n in dict.fromkeys(product_names) if 0 < len(n) <= 80][:MAX_PRODUCT_NAMES]
    if names:
        product_items["enum"] = names
    return {
        "type": "function",
        "function": {
            "name": METRIC_TOOL,
            "description": (
                "Compute one business metric of the merchant (sales, revenue, refunds, transactions, average "
                "ticket, tips, units sold, customers, payment methods) over a period of merchant-local dates, "
                "optionally broken down, compared or ranked. Numbers in answers must come from this tool."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "metric": {
                        "type": "string",
                        "enum": metrics,
                        "description": "Which metric. " + _gloss(_METRIC_GLOSS),
                    },
                    "start_date": {
                        "type": "string",
                        "format": "date",
                        "description": "First day of the period (YYYY-MM-DD, merchant-local).",
                    },
                    "end_date": {
                        "type": "string",
                        "format": "date",
                        "description": "Last day of the period, inclusive (YYYY-MM-DD).",
                    },
                    "group_by": {
                        "type": "string",
                        "enum": [g.value for g in GroupBy],
                        "default": GroupBy.NONE.value,
                        "description": "Break the metric down by. " + _gloss(_GROUP_GLOSS),
                    },
                    "compare": {
                        "type": "string",
                        "enum": list(_COMPARE_VALUES),
                        "default": Comparison.NONE.value,
                        "description": "Compare the total with. " + _gloss(_COMPARE_GLOSS),
                    },
                    "top_n": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 20,
                        "description": "Keep only the first N rows of a product, category or time breakdown.",
                    },
                    "order": {
                        "type": "string",
                        "enum": [o.value for o in Order],
                        "default": Order.TOP.value,
                        "description": "Which end of a ranking. top: best | most | top | busiest | highest | "
                        "best sellers; bottom: worst | least | slowest | lowest | bottom | weakest",
                    },
                    "products": {
                        "type": "array",
                        "items": product_items,
                        "maxItems": 10,
                        "description": "Only these products (exact names).",
                    },
                },
                "required": ["metric", "start_date", "end_date"],
            },
        },
    }


class ToolArgumentError(ValueError):
    """A tool call the graph refuses (bad or unsafe arguments)."""


def infer_period(start: date, end_inclusive: date, as_of: date) -> Period:
    """The :class:`Period` of an inclusive date range, recognising calendar units.

    A range that is a whole ISO week, calendar month or year (or one of them up
    to ``as_of``) gets that grain, so "vs previous period" compares with the
    previous week/month/year rather than the same number of days.
    """
    if end_inclusive < start:
        start, end_inclusive = end_inclusive, start
    end = min(end_inclusive, as_of) + timedelta(days=1)
    if start > as_of:
        raise ValidationFailedError(f"{start.isoformat()} is after {as_of.isoformat()}: there is no data for it yet")
    days = (end - start).days
    up_to_today = end == as_of + timedelta(days=1)
    grain, to_date = (Grain.DAY if days == 1 else Grain.RANGE), False
    if days > 1:
        week_end = start + timedelta(days=7)
        month_end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
        year_end = date(start.year + 1, 1, 1)
        if start.weekday() == 0 and (end == week_end or (end < week_end and up_to_today)):
            grain, to_date = Grain.WEEK, end != week_end
        elif (start.month, start.day) == (1, 1) and (end == year_end or (month_end < end < year_end and up_to_today)):
            grain, to_date = Grain.YEAR, end != year_end
        elif start.day == 1 and (end == month_end or (end < month_end and up_to_today)):
            grain, to_date = Grain.MONTH, end != month_end
    label = describe(start, end)
    return Period(start=start, end=end, label=label, grain=grain, to_date=to_date)


def _date(value: Any, name: str) -> date:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError as exc:
        raise ToolArgumentError(f"{name} is not a date: {value!r}") from exc


def parse_metric_call(arguments: str | Mapping[str, Any], as_of: date) -> MetricQuery:
    """Validate a ``get_metric`` call into a query.

    Raises:
        ToolArgumentError: Unknown or unsafe arguments (the message says which).
    """
    if isinstance(arguments, str):
        try:
            raw = json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ToolArgumentError(f"arguments are not JSON: {exc.msg}") from exc
    else:
        raw = dict(arguments)
    if not isinstance(raw, dict):
        raise ToolArgumentError("arguments must be an object")
    allowed = set(metric_tool_spec()["function"]["parameters"]["properties"])
    unknown = sorted(set(raw) - allowed)
    if unknown:
        # A merchant id or SQL smuggled in as an extra argument is refused, not ignored.
        raise ToolArgumentError(f"unknown arguments: {', '.join(unknown)}")
    start = _date(raw.get("start_date") or as_of.isoformat(), "start_date")
    end = _date(raw.get("end_date") or raw.get("start_date") or as_of.isoformat(), "end_date")
    try:
        period = infer_period(start, end, as_of)
        fields: dict[str, Any] = {"metric": raw.get("metric"), "period": period}
        for name in ("group_by", "order", "top_n"):
            if raw.get(name) is not None:
                fields[name] = raw[name]
        if raw.get("compare") is not None:
            compare = _COMPARE_VALUES.get(str(raw["compare"]))
            if compare is None:
                raise ToolArgumentError(f"compare must be one of {', '.join(_COMPARE_VALUES)}")
            fields["compare"] = compare
        products = raw.get("products") or []
        if products:
            fields["products"] = tuple(str(p) for p in products)
        query = MetricQuery(**fields)
    except (ValidationError, ValidationFailedError) as exc:
        raise ToolArgumentError(_first_error(exc)) from exc
    defn = CATALOGUE[query.metric]
    if (query.group_by in (GroupBy.PRODUCT, GroupBy.CATEGORY) or query.products) and not defn.per_product:
        # "Best-selling products" asked as net sales: per-product sales are gross.
        query = query.model_copy(update={"metric": Metric.GROSS_SALES})
    return query


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        return f"{where}: {err.get('msg')}" if where else str(err.get("msg"))
    return str(exc)
