"""The metrics layer: a small semantic layer over the facts and the aggregates.

Numbers shown to merchants come from here. A caller (the ask graph, the
insights detectors, the API) builds a :class:`MetricQuery` from enums and
small values, never SQL, and gets a :class:`MetricResult` whose every number
is a :class:`Fact` tied to the statement that computed it::

    from core.metrics import MetricQuery, run_metric_query

    with database.merchant_session(merchant_id) as session:
        result = run_metric_query(
            session, merchant_id,
            MetricQuery(metric="net_sales", period="last week", compare="previous_period"),
        )

Periods are merchant-local (:mod:`core.metrics.periods`); definitions are in
:mod:`core.metrics.definitions`; SQL and source choice in :mod:`core.metrics.sql`.
"""

from core.metrics.definitions import CATALOGUE, Aggregation, Metric, MetricDefinition, Unit, definition, find_metrics
from core.metrics.errors import MerchantNotVisibleError, UnsupportedQueryError
from core.metrics.periods import Grain, Period, PeriodKind, PeriodSpec, parse_period, parse_periods, resolve_period
from core.metrics.query import (
    Comparison,
    ComparisonResult,
    ExecutedQuery,
    Fact,
    MerchantContext,
    MetricQuery,
    MetricResult,
    MetricRow,
    Order,
    arun_metric_query,
    load_merchant,
    plan_metric_query,
    run_metric_query,
)
from core.metrics.sql import GroupBy, Source

__all__ = [
    "CATALOGUE",
    "Aggregation",
    "Comparison",
    "ComparisonResult",
    "ExecutedQuery",
    "Fact",
    "Grain",
    "GroupBy",
    "MerchantContext",
    "MerchantNotVisibleError",
    "Metric",
    "MetricDefinition",
    "MetricQuery",
    "MetricResult",
    "MetricRow",
    "Order",
    "Period",
    "PeriodKind",
    "PeriodSpec",
    "Source",
    "Unit",
    "UnsupportedQueryError",
    "arun_metric_query",
    "definition",
    "find_metrics",
    "load_merchant",
    "parse_period",
    "parse_periods",
    "plan_metric_query",
    "resolve_period",
    "run_metric_query",
]
