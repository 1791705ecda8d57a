"""Computed results as the model sees them, as the verifier checks them, and as a fallback answer.

Everything here is deterministic: the same results give the same facts
block, figures, fallback text, chart spec and follow-up suggestions.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from core.metrics import Comparison, GroupBy, Metric, MetricResult, Period
from core.metrics.periods import Grain
from orchestrator.grounding import Figure
from orchestrator.language import format_value, group_word, metric_label, word

MAX_ROWS_SHOWN = 7
_TIME = (GroupBy.DAY, GroupBy.WEEK, GroupBy.MONTH, GroupBy.HOUR_OF_DAY, GroupBy.WEEKDAY)


def _span(period: Period, lang: str) -> str:
    last = period.end - timedelta(days=1)
    if last == period.start:
        return period.start.isoformat()
    return f"{period.start.isoformat()} {word('to', lang)} {last.isoformat()}"


def _relative(period: Period, as_of: date) -> tuple[str, dict[str, Any]] | None:
    """The everyday name of a period relative to ``as_of`` ("last week"), if it has one."""
    one = timedelta(days=1)
    today_end = as_of + one
    monday = as_of - timedelta(days=as_of.weekday())
    first = as_of.replace(day=1)
    last_month_start = (first - one).replace(day=1)
    names = {
        (as_of, today_end): "today",
        (as_of - one, as_of): "yesterday",
        (monday, today_end): "this_week",
        (monday - timedelta(days=7), monday): "last_week",
        (first, today_end): "this_month",
        (last_month_start, first): "last_month",
        (date(as_of.year, 1, 1), today_end): "this_year",
        (date(as_of.year - 1, 1, 1), date(as_of.year, 1, 1)): "last_year",
    }
    key = names.get((period.start, period.end))
    if key is not None:
        return key, {}
    if period.end == today_end and period.grain is Grain.RANGE:
        return "last_n_days", {"n": period.days}
    return None


def period_names(period: Period, as_of: date, lang: str) -> tuple[str, ...]:
    """How a period is named to the model and in answers: everyday name first, then its dates."""
    span = _span(period, lang)
    relative = _relative(period, as_of)
    if relative is None:
        return (span,)
    key, values = relative
    return (f"{word(key, lang, **values)} ({span})", word(key, lang, **values), span)


def period_text(period: Period, as_of: date, lang: str) -> str:
    """The display name of a period ("last week (2026-03-02 to 2026-03-08)")."""
    return period_names(period, as_of, lang)[0]


def _baseline_text(result: MetricResult, lang: str) -> str:
    cmp = result.comparison
    assert cmp is not None
    if cmp.kind is Comparison.SAME_WEEKDAY:
        return word("usual", lang, n=len(cmp.periods))
    return period_text(cmp.periods[0], result.as_of, lang)


def _rows_shown(result: MetricResult) -> list[Any]:
    rows = [r for r in result.rows if r.value is not None]
    if result.group_by in _TIME and len(rows) > MAX_ROWS_SHOWN:
        # Long time series: the highest buckets say most ("busiest hours").
        rows = sorted(rows, key=lambda r: (-(r.value or 0), r.key))[:3]
    return rows[:MAX_ROWS_SHOWN]


# -------------------------------------------------------------------------- for the model


def fact_records(results: list[MetricResult], lang: str) -> list[dict[str, str]]:
    """The facts block given to the model: label, period, formatted value (in ``lang``)."""
    records: list[dict[str, str]] = []
    for result in results:
        label = metric_label(result.metric.value, lang)
        period = period_text(result.period, result.as_of, lang)
        unit = result.display_unit
        if result.metric is not Metric.PAYMENT_METHOD_MIX:
            records.append({"label": label, "period": period, "value": format_value(result.total, unit, lang)})
        cmp = result.comparison
        if cmp is not None and result.metric is not Metric.PAYMENT_METHOD_MIX:
            base = _baseline_text(result, lang)
            records.append({"label": label, "period": base, "value": format_value(cmp.baseline, unit, lang)})
            if cmp.change_pct is not None:
                records.append(
                    {
                        "label": f"{label}, {word('change', lang)} {word('vs', lang)} {base}",
                        "period": period,
                        "value": format_value(cmp.change_pct, "%", lang),
                    }
                )
        for row in _rows_shown(result):
            name = f"{label}, {row.label}"
            if result.metric is Metric.PAYMENT_METHOD_MIX:
                records.append({"label": name, "period": period, "value": format_value(row.value, "%", lang)})
            else:
                records.append({"label": name, "period": period, "value": format_value(row.value, unit, lang)})
    return records


def figures(results: list[MetricResult], lang: str) -> list[Figure]:
    """Every computed value of the results, for the verifier."""
    out: list[Figure] = []
    for result in results:
        for fact in result.facts():
            if fact.value is None:
                continue
            names = (*period_names(fact.period, result.as_of, lang), fact.period.label)
            if result.comparison is not None and fact.kind == "baseline":
                names += (_baseline_text(result, lang),)
            out.append(
                Figure(
                    value=Decimal(str(fact.value)),
                    unit=fact.unit,
                    start=fact.period.start,
                    end=fact.period.end,
                    names=names,
                    label=fact.label,
                )
            )
    return out


def context_texts(results: list[MetricResult], lang: str) -> list[str]:
    """Texts whose numbers are names, not quantities (period labels, product names)."""
    texts: list[str] = []
    for result in results:
        texts.extend(period_names(result.period, result.as_of, lang))
        texts.append(result.period.label)
        if result.comparison is not None:
            texts.extend(p.label for p in result.comparison.periods)
            texts.append(_baseline_text(result, lang))
        texts.extend(row.label for row in result.rows)
    return texts


# -------------------------------------------------------------------------- fallback answer


def render_result(result: MetricResult, lang: str) -> str:
    """One or two sentences stating a result's numbers (every number a computed value)."""
    label = metric_label(result.metric.value, lang)
    period = period_text(result.period, result.as_of, lang)
    unit = result.display_unit
    rows = _rows_shown(result)
    if result.metric is Metric.PAYMENT_METHOD_MIX:
        if not rows:
            return word("no_data", lang, period=period)
        parts = []
        for row in rows:
            tx = row.detail.get("transactions")
            count = f" ({format_value(tx, 'transactions', lang)})" if tx is not None else ""
            parts.append(f"{row.label} {format_value(row.value, '%', lang)}{count}")
        return f"{label}, {period}: {', '.join(parts)}."
    if result.total is None and not rows:
        return word("no_data", lang, period=period)
    text = f"{label}, {period}: {format_value(result.total, unit, lang)}"
    cmp = result.comparison
    if cmp is not None and cmp.baseline is not None:
        base = _baseline_text(result, lang)
        if cmp.change_pct is not None and cmp.change_pct != 0:
            direction = word("up" if cmp.change_pct > 0 else "down", lang)
            text += f", {direction} {format_value(abs(cmp.change_pct), '%', lang)}"
        text += f" {word('vs', lang)} {base} ({format_value(cmp.baseline, unit, lang)})"
    text += "."
    if rows and result.group_by is not GroupBy.NONE:
        parts = [f"{r.label}: {format_value(r.value, unit, lang)}" for r in rows]
        text += f" {word('by', lang).capitalize()} {group_word(result.group_by.value, lang)}: {'; '.join(parts)}."
    return text


def render_answer(results: list[MetricResult], snippets: list[str], lang: str) -> str:
    """The deterministic answer: each result's sentences, then what the merchant's texts say."""
    parts = [render_result(r, lang) for r in results]
    if snippets:
        quoted = " ".join(f"“{s}”" for s in snippets[:3])
        parts.append(f"{word('reviews', lang)} {quoted}")
    return " ".join(parts)


# -------------------------------------------------------------------------- chart and follow-ups


def chart_spec(results: list[MetricResult], lang: str) -> dict[str, Any] | None:
    """A Vega-Lite spec built from the first breakdown (or comparison) among the results."""
    for result in results:
        label = metric_label(result.metric.value, lang)
        rows = [r for r in result.rows if r.value is not None]
        if rows:
            temporal = result.group_by in (GroupBy.DAY, GroupBy.WEEK, GroupBy.MONTH)
            ordered = result.group_by in _TIME
            x_title = group_word(result.group_by.value, lang)
            values = [{"key": r.key, "label": r.label, "value": float(r.value or 0)} for r in rows]
            return {
                "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
                "title": f"{label}, {period_text(result.period, result.as_of, lang)}",
                "data": {"values": values},
                "mark": {"type": "line", "point": True} if temporal else {"type": "bar"},
                "encoding": {
                    "x": {
                        "field": "label",
                        "type": "ordinal" if ordered else "nominal",
                        "title": x_title,
                        "sort": [v["label"] for v in values],
                    },
                    "y": {"field": "value", "type": "quantitative", "title": f"{label} ({result.display_unit})"},
                },
            }
        cmp = result.comparison
        if cmp is not None and result.total is not None and cmp.baseline is not None:
            values = [
                {"label": _baseline_text(result, lang), "value": float(cmp.baseline)},
                {"label": period_text(result.period, result.as_of, lang), "value": float(result.total)},
            ]
            return {
                "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
                "title": label,
                "data": {"values": values},
                "mark": {"type": "bar"},
                "encoding": {
                    "x": {"field": "label", "type": "nominal", "title": None, "sort": None},
                    "y": {"field": "value", "type": "quantitative", "title": f"{label} ({result.display_unit})"},
                },
            }
    return None


def follow_ups(results: list[MetricResult], searched: bool, lang: str) -> list[str]:
    """Up to three natural next questions."""
    out: list[str] = []
    first = results[0] if results else None
    if first is not None and first.comparison is None and first.metric is not Metric.PAYMENT_METHOD_MIX:
        out.append(word("follow_compare", lang))
    if first is not None and first.group_by is GroupBy.NONE and first.period.days > 1:
        out.append(word("follow_by_day", lang))
    if first is None or first.group_by is not GroupBy.PRODUCT:
        out.append(word("follow_products", lang))
    if not searched:
        out.append(word("follow_reviews", lang))
    return out[:3]
