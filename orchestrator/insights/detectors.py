"""Detectors: candidate insights from one merchant's aggregates on one day.

Every detector is a pure function of :class:`MerchantData` (already loaded,
merchant-local days) and returns candidates; nothing here touches the
database, so the same code serves one merchant or a bulk run.

Method (see ``stats.py``):

* Daily volume (transactions, net sales) and hourly gaps compare the day
  with the **median of the last 8 same weekdays** (fewer when the history is
  shorter, at least one), the same weekday because small businesses have
  strong weekly cycles. Counts are tested with a negative binomial whose
  variance includes the baseline's own uncertainty and a robust (MAD)
  dispersion; net sales with a normal test whose spread is the count noise
  times the average ticket plus the robust dispersion.
* Rates (refunds per payment, failed payment attempts) pool the last 28
  days, which is far steadier for rare events than any per-day median, and
  test today's count against ``rate x today's volume``.
* Products are tested **conditionally on the day's other units**: a product
  should get its usual share of what the merchant sold, so a quiet day
  does not make every product look like a drop. A stock-out is a run of open
  days with zero units of a product that sold on most open days before.
* Reviews: the count of 1-2 star reviews in the trailing 1..7 days against
  the rate of the previous 8 weeks (the window with the strongest evidence
  is reported), and the mean rating for upward shifts. Review text is not
  used (ratings are cheap, deterministic and language independent).

A candidate is emitted only when its one-sided p-value is below
``alpha`` (default 0.001) and the change is material
(``min_relative_change``); confidence is ``1 - p``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from orchestrator.insights.data import (
    BASELINE_WEEKS,
    MAX_STOCKOUT_RUN,
    PRODUCT_BASELINE_DAYS,
    HourRow,
    MerchantData,
    ProductSeries,
    same_weekdays,
)
from orchestrator.insights.stats import (
    PRIOR_KAPPA,
    confidence_from_p,
    count_tail,
    count_variance,
    median,
    normal_sf,
    relative_dispersion,
    zero_probability,
)
from orchestrator.insights.types import Direction, Fact, Insight, make_key

_NO_HOUR = HourRow(0, 0)
_RATE_WINDOW_DAYS = 28


@dataclass(frozen=True)
class DetectorConfig:
    """Thresholds shared by the detectors."""

    alpha: float = 1e-3
    min_relative_change: float = 0.2
    # Below this many expected events a day, a count test has too little power to matter.
    min_expected_count: float = 3.0
    min_rate_events: int = 3
    # Extra relative dispersion of rare-event counts (refund bursts, product sales).
    rate_kappa: float = 0.3
    product_kappa: float = 0.15
    # A product "sold steadily" when it sold on at least this share of open days.
    steady_share: float = 0.6
    min_product_baseline_days: int = 5
    review_window_days: int = 7
    # Ranking weight of one star of mean-rating change, as a share of a typical day's sales.
    severity_per_star: float = 0.1


DEFAULT_CONFIG = DetectorConfig()


# --- helpers ---------------------------------------------------------------------------------


def _iso(days: Iterable[date]) -> list[str]:
    return [d.isoformat() for d in sorted(days)]


def _src(table: str, column: str, agg: str, days: Iterable[date], **extra: Any) -> dict[str, Any]:
    return {"table": table, "column": column, "agg": agg, "days": _iso(days), **extra}


def baseline_days(md: MerchantData, weeks: int = BASELINE_WEEKS) -> list[date]:
    """The previous same weekdays inside the merchant's known history (newest first)."""
    start = md.history_start
    if start is None:
        return []
    return [d for d in same_weekdays(md.as_of, weeks)[1:] if d >= start]


def open_days(md: MerchantData) -> set[date]:
    """Days with at least one successful payment."""
    return {d for d, row in md.daily.items() if row.transactions > 0}


def typical_daily_net(md: MerchantData) -> int:
    """Median net sales of the trading days in the 28 days before ``as_of`` (at least 1)."""
    start = md.as_of - timedelta(days=_RATE_WINDOW_DAYS)
    values = [r.net_sales for d, r in md.daily.items() if start <= d < md.as_of and r.transactions > 0]
    return max(1, round(median(values))) if values else 1


def _direction(observed: float, expected: float) -> Direction:
    return "up" if observed > expected else "down"


def _candidate(
    md: MerchantData,
    *,
    kind: str,
    metric: str,
    direction: Direction,
    period: tuple[date, date],
    observed: float,
    expected: float,
    unit: str,
    impact: float,
    p_value: float,
    subject: str | None,
    facts: list[Fact],
    evidence: dict[str, Any],
    anchor: date | None = None,
    severity: float = 0.0,
) -> Insight:
    start, end = period
    impact_minor = round(impact)
    facts = [
        *facts,
        Fact("impact", impact_minor, "minor", start, end, {"derived": "observed - expected", **_unit_note(unit)},
             md.currency),
    ]  # fmt: skip
    evidence = {**evidence, "p_value": p_value, "subject": subject}
    return Insight(
        merchant_id=md.merchant_id,
        kind=kind,
        metric=metric,
        direction=direction,
        period_start=start,
        period_end=end,
        observed=observed,
        expected=expected,
        unit=unit,
        impact_minor=impact_minor,
        currency=md.currency,
        confidence=confidence_from_p(p_value),
        subject=subject,
        dedup_key=make_key(kind, metric, subject, anchor or start),
        facts=facts,
        evidence=evidence,
        severity=severity,
    )


def _unit_note(unit: str) -> dict[str, str]:
    return {} if unit == "minor" else {"money_from": "count difference x average value"}


def _pct(observed: float, expected: float) -> float:
    return round((observed - expected) / expected, 4) if expected else 0.0


# --- daily volume ----------------------------------------------------------------------------


def detect_transactions(md: MerchantData, cfg: DetectorConfig = DEFAULT_CONFIG) -> list[Insight]:
    """Transaction count of ``as_of`` against the median of the last same weekdays."""
    days = baseline_days(md)
    if not days:
        return []
    values = [md.day(d).transactions for d in days]
    expected = median(values)
    if expected < cfg.min_expected_count:
        return []  # usually closed on this weekday, or too small to test
    observed = md.day(md.as_of).transactions
    if abs(observed - expected) < cfg.min_relative_change * expected:
        return []
    kappa = relative_dispersion(values, expected)
    variance = count_variance(expected, len(days), kappa)
    if abs(observed - expected) < 2.0 * math.sqrt(variance):
        return []
    upper = observed > expected
    p = count_tail(observed, expected, variance, upper)
    if p >= cfg.alpha:
        return []
    tickets = [md.day(d).gross_sales / md.day(d).transactions for d in days if md.day(d).transactions > 0]
    ticket = median(tickets) if tickets else 0.0
    day = md.as_of
    return [
        _candidate(
            md, kind="transactions_anomaly", metric="transactions", direction=_direction(observed, expected),
            period=(day, day), observed=observed, expected=expected, unit="count",
            impact=(observed - expected) * ticket, p_value=p, subject=None,
            facts=[
                Fact("transactions", observed, "count", day, day,
                     _src("daily_metrics", "transactions", "value", [day])),
                Fact("transactions_expected", expected, "count", day, day,
                     _src("daily_metrics", "transactions", "median_same_weekday", days)),
                Fact("transactions_change", _pct(observed, expected), "ratio", day, day, {"derived": "obs/exp - 1"}),
                Fact("average_ticket_expected", round(ticket), "minor", day, day,
                     _src("daily_metrics", "gross_sales_minor/transactions", "median_same_weekday", days), md.currency),
            ],
            evidence={"baseline_days": _iso(days), "baseline_values": values, "model": "negative_binomial",
                      "mean": expected, "variance": round(variance, 3), "kappa": round(kappa, 4)},
        )
    ]  # fmt: skip


def detect_net_sales(md: MerchantData, cfg: DetectorConfig = DEFAULT_CONFIG) -> list[Insight]:
    """Net sales of ``as_of`` against the median of the last same weekdays."""
    days = baseline_days(md)
    if not days:
        return []
    values = [md.day(d).net_sales for d in days]
    expected = median(values)
    expected_tx = median([md.day(d).transactions for d in days])
    if expected <= 0 or expected_tx < cfg.min_expected_count:
        return []
    observed = md.day(md.as_of).net_sales
    if abs(observed - expected) < cfg.min_relative_change * expected:
        return []
    ticket = expected / expected_tx
    kappa = relative_dispersion(values, expected)
    sd = math.sqrt(ticket * ticket * expected_tx * (1 + math.pi / 2 / len(days)) + (kappa * expected) ** 2)
    z = abs(observed - expected) / sd
    p = normal_sf(z)
    if p >= cfg.alpha:
        return []
    day = md.as_of
    return [
        _candidate(
            md, kind="sales_anomaly", metric="net_sales", direction=_direction(observed, expected),
            period=(day, day), observed=observed, expected=expected, unit="minor",
            impact=observed - expected, p_value=p, subject=None,
            facts=[
                Fact("net_sales", observed, "minor", day, day, _src("daily_metrics", "net_sales_minor", "value", [day]),
                     md.currency),
                Fact("net_sales_expected", round(expected), "minor", day, day,
                     _src("daily_metrics", "net_sales_minor", "median_same_weekday", days), md.currency),
                Fact("net_sales_change", _pct(observed, expected), "ratio", day, day, {"derived": "obs/exp - 1"}),
            ],
            evidence={"baseline_days": _iso(days), "baseline_values": values, "model": "normal",
                      "z": round(z, 3), "sd": round(sd, 1), "kappa": round(kappa, 4)},
        )
    ]  # fmt: skip


# --- rates -----------------------------------------------------------------------------------


def _rate_window(md: MerchantData) -> list[date]:
    start = md.as_of - timedelta(days=_RATE_WINDOW_DAYS)
    return [d for d in md.daily if start <= d < md.as_of]


def detect_refund_spike(md: MerchantData, cfg: DetectorConfig = DEFAULT_CONFIG) -> list[Insight]:
    """Refund count of ``as_of`` against the pooled refund rate of the previous 28 days."""
    window = _rate_window(md)
    if len(window) < 7:
        return []
    rows = [md.day(d) for d in window]
    payments = sum(r.transactions for r in rows)
    refunds = sum(r.refund_count for r in rows)
    refunded = sum(r.refunds for r in rows)
    today = md.day(md.as_of)
    observed = today.refund_count
    if observed < cfg.min_rate_events:
        return []
    # A weak prior keeps a merchant with no refunds yet from a zero rate.
    rate = (refunds + 0.5) / (payments + 50)
    same = [md.day(d).transactions for d in baseline_days(md)]
    volume = max(today.transactions, median(same) if same else 0.0, 1.0)
    expected = rate * volume
    if observed < 2 * expected:
        return []
    variance = expected + (cfg.rate_kappa * expected) ** 2
    p = count_tail(observed, expected, variance, upper=True)
    if p >= cfg.alpha:
        return []
    avg_refund = refunded / refunds if refunds else today.refunds / observed
    expected_money = expected * avg_refund
    day = md.as_of
    return [
        _candidate(
            md, kind="refund_spike", metric="refunds", direction="up", period=(day, day), observed=observed,
            expected=round(expected, 2), unit="count", impact=-(today.refunds - expected_money), p_value=p,
            subject=None,
            facts=[
                Fact("refund_count", observed, "count", day, day,
                     _src("daily_metrics", "refund_count", "value", [day])),
                Fact("refunds", today.refunds, "minor", day, day,
                     _src("daily_metrics", "refunds_minor", "value", [day]), md.currency),
                Fact("refund_count_expected", round(expected, 2), "count", day, day,
                     _src("daily_metrics", "refund_count/transactions", "pooled_rate_x_volume", window)),
                Fact("refund_rate", round(observed / max(today.transactions, 1), 4), "ratio", day, day,
                     _src("daily_metrics", "refund_count/transactions", "value", [day])),
                Fact("refund_rate_baseline", round(refunds / payments, 4) if payments else 0.0, "ratio",
                     min(window), max(window), _src("daily_metrics", "refund_count/transactions", "pooled", window)),
            ],
            evidence={"rate_days": _iso(window), "payments": payments, "refund_count": refunds,
                      "volume": volume, "model": "negative_binomial", "mean": expected, "variance": variance},
        )
    ]  # fmt: skip


def detect_payment_failures(md: MerchantData, cfg: DetectorConfig = DEFAULT_CONFIG) -> list[Insight]:
    """Failed payment attempts of ``as_of`` against the pooled failure share of the previous 28 days."""
    window = _rate_window(md)
    if len(window) < 7:
        return []
    rows = [md.day(d) for d in window]
    attempts = sum(r.transactions + r.failed_count for r in rows)
    failed = sum(r.failed_count for r in rows)
    today = md.day(md.as_of)
    observed = today.failed_count
    today_attempts = today.transactions + observed
    if observed < max(cfg.min_rate_events, 5):
        return []
    share = (failed + 0.5) / (attempts + 50)
    expected = share * today_attempts
    if observed < 2 * expected:
        return []
    variance = expected + (cfg.rate_kappa * expected) ** 2
    p = count_tail(observed, expected, variance, upper=True)
    if p >= cfg.alpha:
        return []
    ticket = sum(r.gross_sales for r in rows) / max(1, sum(r.transactions for r in rows))
    day = md.as_of
    return [
        _candidate(
            md, kind="payment_failures", metric="failed_payments", direction="up", period=(day, day),
            observed=observed, expected=round(expected, 2), unit="count",
            # Upper bound: every excess failure a lost sale (some customers retry or pay otherwise).
            impact=-(observed - expected) * ticket, p_value=p, subject=None,
            facts=[
                Fact("failed_payments", observed, "count", day, day,
                     _src("daily_metrics", "failed_count", "value", [day])),
                Fact("failed_payments_expected", round(expected, 2), "count", day, day,
                     _src("daily_metrics", "failed_count/(transactions+failed_count)", "pooled_rate_x_attempts",
                          window)),
                Fact("failure_rate", round(observed / today_attempts, 4), "ratio", day, day,
                     _src("daily_metrics", "failed_count/(transactions+failed_count)", "value", [day])),
                Fact("failure_rate_baseline", round(failed / attempts, 4) if attempts else 0.0, "ratio",
                     min(window), max(window),
                     _src("daily_metrics", "failed_count/(transactions+failed_count)", "pooled", window)),
            ],
            evidence={"rate_days": _iso(window), "attempts": attempts, "failed": failed,
                      "model": "negative_binomial", "mean": expected, "variance": variance,
                      "impact_is_upper_bound": True},
        )
    ]  # fmt: skip


# --- hours -----------------------------------------------------------------------------------


def _hour_baseline(md: MerchantData, days: list[date]) -> tuple[list[float], list[float]]:
    tx: list[float] = []
    net: list[float] = []
    for h in range(24):
        rows = [md.hourly.get(d, {}).get(h, _NO_HOUR) for d in days]
        tx.append(median([r.transactions for r in rows]))
        net.append(median([r.net_sales for r in rows]))
    return tx, net


def detect_outage_hours(md: MerchantData, cfg: DetectorConfig = DEFAULT_CONFIG) -> list[Insight]:
    """Runs of usually busy hours of ``as_of`` with (almost) no successful payments."""
    days = baseline_days(md)
    if not days:
        return []
    lam, net = _hour_baseline(md, days)
    today = md.hourly.get(md.as_of, {})
    obs = [today.get(h, _NO_HOUR) for h in range(24)]
    dead = [lam[h] >= 1.0 and obs[h].transactions <= 0.2 * lam[h] for h in range(24)]
    out: list[Insight] = []
    h = 0
    while h < 24:
        if not dead[h]:
            h += 1
            continue
        end = h
        while end < 24 and dead[end]:
            end += 1
        expected = sum(lam[h:end])
        observed = sum(o.transactions for o in obs[h:end])
        variance = count_variance(expected, len(days), 0.15)
        p = count_tail(observed, expected, variance, upper=False) if expected >= cfg.min_expected_count else 1.0
        if p < cfg.alpha:
            subject = f"{h:02d}-{end:02d}"
            lost = sum(net[h:end]) - sum(o.net_sales for o in obs[h:end])
            day = md.as_of
            hours = {"hour_from": h, "hour_to": end}
            out.append(
                _candidate(
                    md, kind="outage", metric="transactions", direction="down", period=(day, day),
                    observed=observed, expected=expected, unit="count", impact=-lost, p_value=p, subject=subject,
                    facts=[
                        Fact("transactions", observed, "count", day, day,
                             _src("hourly_metrics", "transactions", "sum", [day], **hours)),
                        Fact("transactions_expected", round(expected, 1), "count", day, day,
                             _src("hourly_metrics", "transactions", "sum_of_hourly_median_same_weekday", days,
                                  **hours)),
                        Fact("hour_from", h, "hour", day, day, {"derived": "first hour of the gap (local)"}),
                        Fact("hour_to", end, "hour", day, day, {"derived": "end of the gap, exclusive (local)"}),
                    ],
                    evidence={"baseline_days": _iso(days), "expected_by_hour": [round(x, 1) for x in lam[h:end]],
                              "observed_by_hour": [o.transactions for o in obs[h:end]], **hours,
                              "model": "negative_binomial", "mean": expected, "variance": variance},
                )
            )  # fmt: skip
        h = end
    return out


def detect_new_best_hour(md: MerchantData, cfg: DetectorConfig = DEFAULT_CONFIG) -> list[Insight]:
    """An hour of ``as_of`` that earned more than any hour of the last same weekdays (by 10%+)."""
    days = baseline_days(md)
    today = md.hourly.get(md.as_of, {})
    if len(days) < 4 or not today:
        return []
    best_hour, best = max(today.items(), key=lambda kv: (kv[1].net_sales, -kv[0]))
    previous = max((r.net_sales for d in days for r in md.hourly.get(d, {}).values()), default=0)
    if best.net_sales <= 0 or best.net_sales < 1.1 * previous:
        return []
    lam, net = _hour_baseline(md, days)
    expected = lam[best_hour]
    if expected <= 0:
        return []
    variance = count_variance(expected, len(days), relative_dispersion([], expected))
    p = count_tail(best.transactions, expected, variance, upper=True)
    if p >= cfg.alpha:
        return []
    day = md.as_of
    subject = f"{best_hour:02d}"
    return [
        _candidate(
            md, kind="new_best_hour", metric="net_sales", direction="up", period=(day, day),
            observed=best.net_sales, expected=net[best_hour], unit="minor", impact=best.net_sales - net[best_hour],
            p_value=p, subject=subject,
            facts=[
                Fact("net_sales", best.net_sales, "minor", day, day,
                     _src("hourly_metrics", "net_sales_minor", "value", [day], hour=best_hour), md.currency),
                Fact("previous_best_hour_net_sales", previous, "minor", min(days), max(days),
                     _src("hourly_metrics", "net_sales_minor", "max", days), md.currency),
                Fact("net_sales_expected", round(net[best_hour]), "minor", day, day,
                     _src("hourly_metrics", "net_sales_minor", "median_same_weekday", days, hour=best_hour),
                     md.currency),
                Fact("hour", best_hour, "hour", day, day, {"derived": "local hour of day"}),
            ],
            evidence={"baseline_days": _iso(days), "hour": best_hour, "transactions": best.transactions,
                      "transactions_expected": expected, "model": "negative_binomial"},
        )
    ]  # fmt: skip


# --- products --------------------------------------------------------------------------------


def _product_share(p: ProductSeries, md: MerchantData, days: list[date]) -> tuple[float, int, int, int]:
    """(share of units, product units, all units, days it sold) over ``days``."""
    units = sum(p.units.get(d, 0) for d in days)
    total = sum(md.day(d).units_sold for d in days)
    sold = sum(1 for d in days if p.units.get(d, 0) > 0)
    return (units / total if total else 0.0), units, total, sold


def detect_products(md: MerchantData, cfg: DetectorConfig = DEFAULT_CONFIG) -> list[Insight]:
    """Stock-outs (a steady seller sells nothing on open days) and sharp product drops."""
    trading = {d for d in open_days(md) if md.day(d).units_sold > 0}
    if md.as_of not in trading:
        return []
    floor = md.as_of - timedelta(days=PRODUCT_BASELINE_DAYS + MAX_STOCKOUT_RUN)
    out: list[Insight] = []
    for p in md.products.values():
        if not p.active:
            continue  # deactivated on purpose: not news
        # Trailing run of trading days without a sale of p.
        run: list[date] = []
        d = md.as_of
        found_sale = False
        while d >= floor and len(run) <= MAX_STOCKOUT_RUN:
            if d in trading:
                if p.units.get(d, 0) > 0:
                    found_sale = True
                    break
                run.append(d)
            d -= timedelta(days=1)
        if not found_sale or len(run) > MAX_STOCKOUT_RUN:
            continue
        anchor = run[-1] if run else md.as_of
        base = sorted(x for x in trading if anchor - timedelta(days=PRODUCT_BASELINE_DAYS) <= x < anchor)
        if len(base) < cfg.min_product_baseline_days:
            continue
        share, units, total, sold = _product_share(p, md, base)
        if sold < cfg.steady_share * len(base) or share <= 0:
            continue
        share = min(share, 0.9)
        price = sum(p.gross.get(x, 0) for x in base) / units
        if run:
            others = sum(md.day(x).units_sold for x in run)
            expected = share / (1 - share) * others
            variance = expected + (cfg.product_kappa * expected) ** 2
            pv = zero_probability(expected, variance)
            if pv >= cfg.alpha:
                continue
            kind, observed, period = "stock_out", 0, (anchor, md.as_of)
        else:
            observed = p.units[md.as_of]
            others = md.day(md.as_of).units_sold - observed
            expected = share / (1 - share) * others
            if expected < cfg.min_expected_count or observed > (1 - 2 * cfg.min_relative_change) * expected:
                continue
            variance = count_variance(expected, len(base), cfg.product_kappa)
            pv = count_tail(observed, expected, variance, upper=False)
            if pv >= cfg.alpha:
                continue
            kind, period = "product_drop", (md.as_of, md.as_of)
        out.append(
            _candidate(
                md, kind=kind, metric="units_sold", direction="down", period=period, observed=observed,
                expected=round(expected, 1), unit="count", impact=(observed - expected) * price, p_value=pv,
                subject=p.product_id, anchor=period[0],
                facts=[
                    Fact("units_sold", observed, "count", period[0], period[1],
                         _src("daily_product_metrics", "units_sold", "sum", run or [md.as_of],
                              product_id=p.product_id)),
                    Fact("units_sold_expected", round(expected, 1), "count", period[0], period[1],
                         _src("daily_product_metrics", "units_sold", "share_of_other_units", base,
                              product_id=p.product_id)),
                    Fact("units_share_baseline", round(share, 4), "ratio", min(base), max(base),
                         _src("daily_product_metrics/daily_metrics", "units_sold", "share", base,
                              product_id=p.product_id)),
                    Fact("days_without_sales", len(run), "count", period[0], period[1],
                         _src("daily_product_metrics", "units_sold", "trading_days_with_zero", run,
                              product_id=p.product_id)),
                    Fact("average_unit_price", round(price), "minor", min(base), max(base),
                         _src("daily_product_metrics", "gross_sales_minor/units_sold", "pooled", base,
                              product_id=p.product_id), md.currency),
                ],
                evidence={"product_id": p.product_id, "product_name": p.name, "baseline_days": _iso(base),
                          "zero_days": _iso(run), "sold_days": sold, "product_units": units,
                          "all_units": total, "model": "poisson_share" if run else "negative_binomial_share",
                          "mean": expected},
            )
        )  # fmt: skip
    return out


def detect_new_best_product(md: MerchantData, cfg: DetectorConfig = DEFAULT_CONFIG) -> list[Insight]:
    """A product that overtook the previous best seller (gross sales, last 7 days vs the 4 weeks before)."""
    recent = [md.as_of - timedelta(days=k) for k in range(7)]
    prior = [md.as_of - timedelta(days=k) for k in range(7, 7 + PRODUCT_BASELINE_DAYS)]
    start = md.history_start
    if start is None or start > prior[-1] or not md.products:
        return []

    def gross(p: ProductSeries, days: list[date]) -> int:
        return sum(p.gross.get(d, 0) for d in days)

    products = list(md.products.values())
    new_top = max(products, key=lambda p: (gross(p, recent), p.product_id))
    old_top = max(products, key=lambda p: (gross(p, prior), p.product_id))
    if new_top.product_id == old_top.product_id:
        return []
    g_new, g_old = gross(new_top, recent), gross(old_top, recent)
    if g_new < 1.1 * g_old or g_new <= 0:
        return []
    share, _, _, _ = _product_share(new_top, md, prior)
    recent_units = sum(new_top.units.get(d, 0) for d in recent)
    others = sum(md.day(d).units_sold for d in recent) - recent_units
    if share <= 0 or share >= 0.9:
        return []
    expected = share / (1 - share) * others
    variance = count_variance(expected, 4, cfg.product_kappa)
    p = count_tail(recent_units, expected, variance, upper=True)
    if p >= cfg.alpha:
        return []
    expected_gross = gross(new_top, prior) / 4
    period = (recent[-1], recent[0])
    return [
        _candidate(
            md, kind="new_best_product", metric="gross_sales", direction="up", period=period, observed=g_new,
            expected=round(expected_gross), unit="minor", impact=g_new - expected_gross, p_value=p,
            subject=new_top.product_id, anchor=md.as_of,
            facts=[
                Fact("product_gross_sales", g_new, "minor", *period,
                     _src("daily_product_metrics", "gross_sales_minor", "sum", recent, product_id=new_top.product_id),
                     md.currency),
                Fact("previous_best_gross_sales", g_old, "minor", *period,
                     _src("daily_product_metrics", "gross_sales_minor", "sum", recent, product_id=old_top.product_id),
                     md.currency),
                Fact("product_gross_sales_expected", round(expected_gross), "minor", *period,
                     _src("daily_product_metrics", "gross_sales_minor", "weekly_mean", prior,
                          product_id=new_top.product_id), md.currency),
            ],
            evidence={"product_id": new_top.product_id, "product_name": new_top.name,
                      "previous_best": old_top.product_id, "previous_best_name": old_top.name,
                      "recent_days": _iso(recent), "prior_days": _iso(prior), "units": recent_units,
                      "units_expected": expected, "model": "negative_binomial_share"},
        )
    ]  # fmt: skip


# --- reviews ---------------------------------------------------------------------------------


def detect_review_shift(md: MerchantData, cfg: DetectorConfig = DEFAULT_CONFIG) -> list[Insight]:
    """More 1-2 star reviews than usual in the trailing days, or a clearly better mean rating."""
    start = md.history_start
    if start is None:
        return []
    w = cfg.review_window_days
    base_end = md.as_of - timedelta(days=w)
    base_start = max(start, md.as_of - timedelta(days=BASELINE_WEEKS * 7 + w - 1))
    base_days = (base_end - base_start).days + 1
    if base_days < 14:
        return []
    # Days that were themselves bursts of bad reviews would make the next weeks look like a recovery.
    base = [r for d, r in md.reviews.items() if base_start <= d <= base_end and not (r.low >= 2 and 2 * r.low >= r.n)]
    n_b = sum(r.n for r in base)
    low_rate = (sum(r.low for r in base) + 0.5) / base_days
    mean_b = sum(r.rating_sum for r in base) / n_b if n_b else None
    sd_b = (
        math.sqrt(max(sum(r.rating_sq_sum for r in base) / n_b - mean_b * mean_b, 0.25)) if mean_b is not None else 1.0
    )
    best: tuple[float, int, Direction] | None = None
    for k in range(1, w + 1):
        window = [md.reviews.get(md.as_of - timedelta(days=j)) for j in range(k)]
        rows = [r for r in window if r is not None]
        n = sum(r.n for r in rows)
        if n == 0:
            continue
        low = sum(r.low for r in rows)
        mean = sum(r.rating_sum for r in rows) / n
        if low >= cfg.min_rate_events and (mean_b is None or mean <= mean_b - 0.5):
            expected = low_rate * k
            p = count_tail(low, expected, expected + (cfg.rate_kappa * expected) ** 2, upper=True)
            if best is None or p <= best[0]:
                best = (p, k, "down")
        if mean_b is not None and n >= 5 and mean >= mean_b + 0.5:
            p = normal_sf((mean - mean_b) / (sd_b / math.sqrt(n)))
            if best is None or p <= best[0]:
                best = (p, k, "up")
    if best is None or best[0] >= cfg.alpha:
        return []
    p, k, direction = best
    days = [md.as_of - timedelta(days=j) for j in range(k)]
    rows = [r for r in (md.reviews.get(d) for d in days) if r is not None]
    n = sum(r.n for r in rows)
    low = sum(r.low for r in rows)
    mean = sum(r.rating_sum for r in rows) / n
    expected_mean = mean_b if mean_b is not None else mean
    period = (days[-1], days[0])
    base_span = [base_start, base_end]
    return [
        _candidate(
            md, kind="review_shift", metric="rating", direction=direction, period=period, observed=round(mean, 2),
            expected=round(expected_mean, 2), unit="stars", impact=0, p_value=p, subject=None, anchor=md.as_of,
            severity=abs(expected_mean - mean) * cfg.severity_per_star,
            facts=[
                Fact("average_rating", round(mean, 2), "stars", *period, _src("reviews", "rating", "mean", days)),
                Fact("reviews", n, "count", *period, _src("reviews", "review_id", "count", days)),
                Fact("low_ratings", low, "count", *period, _src("reviews", "rating<=2", "count", days)),
                Fact("average_rating_baseline", round(expected_mean, 2), "stars", base_start, base_end,
                     _src("reviews", "rating", "mean", base_span, range=True)),
                Fact("low_ratings_expected", round(low_rate * k, 2), "count", *period,
                     _src("reviews", "rating<=2", "daily_rate_x_days", base_span, range=True)),
            ],
            evidence={"window_days": k, "baseline_from": base_start.isoformat(), "baseline_to": base_end.isoformat(),
                      "baseline_reviews": n_b, "low_daily_rate": round(low_rate, 4),
                      "model": "negative_binomial" if direction == "down" else "normal_mean"},
        )
    ]  # fmt: skip


Detector = Callable[[MerchantData, DetectorConfig], list[Insight]]

DETECTORS: tuple[Detector, ...] = (
    detect_net_sales,
    detect_transactions,
    detect_refund_spike,
    detect_payment_failures,
    detect_outage_hours,
    detect_new_best_hour,
    detect_products,
    detect_new_best_product,
    detect_review_shift,
)


def detect(md: MerchantData, cfg: DetectorConfig = DEFAULT_CONFIG) -> list[Insight]:
    """Run every detector on one merchant's data; candidates carry the merchant's typical daily sales."""
    typical = typical_daily_net(md)
    out: list[Insight] = []
    for detector in DETECTORS:
        for candidate in detector(md, cfg):
            candidate.typical_daily_minor = typical
            out.append(candidate)
    return out


__all__ = [
    "DEFAULT_CONFIG",
    "DETECTORS",
    "PRIOR_KAPPA",
    "DetectorConfig",
    "baseline_days",
    "detect",
    "detect_net_sales",
    "detect_new_best_hour",
    "detect_new_best_product",
    "detect_outage_hours",
    "detect_payment_failures",
    "detect_products",
    "detect_refund_spike",
    "detect_review_shift",
    "detect_transactions",
]
