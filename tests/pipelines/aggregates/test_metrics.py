"""Every metric of DATA_CONTRACT.md, checked against hand-computed numbers."""

from __future__ import annotations

from datetime import date

from pipelines.aggregates import refresh_pending
from pipelines.context import PipelineContext
from tests.oracle import diff
from tests.pipelines.aggregates.scenario import Scenario

DAY = date(2026, 6, 10)


def _busy_day(s: Scenario) -> None:
    """A Berlin café's day (CEST, +02:00) touching every metric."""
    m = s.merchant("M1", "Europe/Berlin")
    t1 = s.txn(m, "2026-06-10T10:05:00+02:00", 1250, tip=150, customer="C1",
               items=[("latte", 2, 450), ("croissant", 1, 200)])  # fmt: skip
    s.txn(m, "2026-06-10T10:40:00+02:00", 800, method="CASH", items=[("latte", 1, 450), ("cookie", 1, 350)])
    # An empty customer id is no customer; a product on two lines is one transaction of it.
    s.txn(m, "2026-06-10T12:15:00+02:00", 2000, method="WALLET", customer="",
          items=[("cake", 1, 900), ("latte", 1, 450), ("latte", 1, 450), ("cookie", 2, 100)])  # fmt: skip
    t4 = s.txn(m, "2026-06-10T12:30:00+02:00", 600, customer="C1")  # custom amount, no items
    s.txn(m, "2026-06-10T12:45:00+02:00", 300, tip=50, customer="C2", items=[("cookie", 1, 250)])
    # Failed and cancelled payments count only as failed_count.
    s.txn(m, "2026-06-10T11:00:00+02:00", 999, status="FAILED", customer="C3", items=[("latte", 1, 450)])
    s.txn(m, "2026-06-10T11:30:00+02:00", 500, status="CANCELLED", method="QR")
    # Successful refunds and chargebacks reduce net sales; their items sell nothing.
    s.txn(m, "2026-06-10T15:00:00+02:00", 450, type="REFUND", customer="C1", refund_of=t1.transaction_id,
          items=[("latte", 1, 450)])  # fmt: skip
    s.txn(m, "2026-06-10T15:10:00+02:00", 100, type="REFUND", status="FAILED", refund_of=t1.transaction_id)
    s.txn(m, "2026-06-10T16:00:00+02:00", 600, type="CHARGEBACK", refund_of=t4.transaction_id)
    s.commit()


def test_every_daily_metric(ctx: PipelineContext, scenario: Scenario) -> None:
    _busy_day(scenario)

    summary = refresh_pending(ctx)

    assert summary.merchant_days == 1
    daily = scenario.actual().daily
    assert daily == {
        ("M1", DAY): {
            "currency": "EUR",
            "gross_sales_minor": 4950,
            "refunds_minor": 1050,
            "net_sales_minor": 3900,
            "transactions": 5,
            "tips_minor": 200,
            "units_sold": 11,
            "unique_customers": 2,
            "refund_count": 2,
            "failed_count": 2,
            "payment_methods": {
                "CARD": {"transactions": 3, "gross_sales_minor": 2150},
                "CASH": {"transactions": 1, "gross_sales_minor": 800},
                "WALLET": {"transactions": 1, "gross_sales_minor": 2000},
            },
        }
    }


def test_every_hourly_metric(ctx: PipelineContext, scenario: Scenario) -> None:
    _busy_day(scenario)

    refresh_pending(ctx)

    hourly = scenario.actual().hourly
    zero = {"gross_sales_minor": 0, "refunds_minor": 0, "net_sales_minor": 0, "transactions": 0, "tips_minor": 0,
            "units_sold": 0, "unique_customers": 0, "refund_count": 0, "failed_count": 0, "currency": "EUR"}  # fmt: skip
    assert hourly == {
        ("M1", DAY, 10): {**zero, "gross_sales_minor": 2050, "net_sales_minor": 2050, "transactions": 2,
                          "tips_minor": 150, "units_sold": 5, "unique_customers": 1},
        ("M1", DAY, 11): {**zero, "failed_count": 2},
        ("M1", DAY, 12): {**zero, "gross_sales_minor": 2900, "net_sales_minor": 2900, "transactions": 3,
                          "tips_minor": 50, "units_sold": 6, "unique_customers": 2},
        ("M1", DAY, 15): {**zero, "refunds_minor": 450, "net_sales_minor": -450, "refund_count": 1},
        ("M1", DAY, 16): {**zero, "refunds_minor": 600, "net_sales_minor": -600, "refund_count": 1},
    }  # fmt: skip


def test_every_product_metric(ctx: PipelineContext, scenario: Scenario) -> None:
    _busy_day(scenario)

    refresh_pending(ctx)

    products = scenario.actual().products
    assert products == {
        ("M1", DAY, "latte"): {"currency": "EUR", "units_sold": 5, "gross_sales_minor": 2250, "transactions": 3},
        ("M1", DAY, "croissant"): {"currency": "EUR", "units_sold": 1, "gross_sales_minor": 200, "transactions": 1},
        ("M1", DAY, "cookie"): {"currency": "EUR", "units_sold": 4, "gross_sales_minor": 800, "transactions": 3},
        ("M1", DAY, "cake"): {"currency": "EUR", "units_sold": 1, "gross_sales_minor": 900, "transactions": 1},
    }


def test_the_oracle_agrees_on_the_busy_day(ctx: PipelineContext, scenario: Scenario) -> None:
    _busy_day(scenario)

    refresh_pending(ctx)

    assert diff(scenario.expected(), scenario.actual()) == []


def test_refunds_count_on_the_day_they_happen(ctx: PipelineContext, scenario: Scenario) -> None:
    m = scenario.merchant("M1", "Europe/Berlin")
    paid = scenario.txn(m, "2026-06-01T12:00:00+02:00", 5000, items=[("cake", 2, 2500)])
    scenario.txn(m, "2026-06-03T09:00:00+02:00", 2500, type="REFUND", refund_of=paid.transaction_id)
    scenario.commit()

    refresh_pending(ctx)

    daily = scenario.actual().daily
    assert daily[("M1", date(2026, 6, 1))]["gross_sales_minor"] == 5000
    assert daily[("M1", date(2026, 6, 1))]["refunds_minor"] == 0
    refund_day = daily[("M1", date(2026, 6, 3))]
    assert (refund_day["gross_sales_minor"], refund_day["refunds_minor"], refund_day["net_sales_minor"]) == (
        0,
        2500,
        -2500,
    )
    assert (refund_day["transactions"], refund_day["refund_count"], refund_day["units_sold"]) == (0, 1, 0)
    assert ("M1", date(2026, 6, 2)) not in daily
    assert set(scenario.actual().products) == {("M1", date(2026, 6, 1), "cake")}


def test_a_day_of_failures_has_a_zero_row_and_an_empty_day_has_none(ctx: PipelineContext, scenario: Scenario) -> None:
    m = scenario.merchant("M1", "Europe/Berlin")
    scenario.txn(m, "2026-06-01T12:00:00+02:00", 900, status="FAILED", items=[("cake", 1, 900)])
    scenario.txn(m, "2026-06-01T12:01:00+02:00", 900, status="CANCELLED", customer="C1")
    scenario.commit()
    scenario.queue([(m, date(2026, 6, 2))])  # queued, but nothing happened that day

    summary = refresh_pending(ctx)

    assert summary.merchant_days == 2
    actual = scenario.actual()
    assert actual.daily == {
        ("M1", date(2026, 6, 1)): {
            "currency": "EUR", "gross_sales_minor": 0, "refunds_minor": 0, "net_sales_minor": 0, "transactions": 0,
            "tips_minor": 0, "units_sold": 0, "unique_customers": 0, "refund_count": 0, "failed_count": 2,
            "payment_methods": {},
        }
    }  # fmt: skip
    assert actual.products == {}


def test_merchants_are_kept_apart_with_their_own_currency(ctx: PipelineContext, scenario: Scenario) -> None:
    berlin = scenario.merchant("M1", "Europe/Berlin")
    tokyo = scenario.merchant("M2", "Asia/Tokyo", currency="JPY")
    scenario.txn(berlin, "2026-06-10T12:00:00+02:00", 450, customer="same-id", items=[("latte", 1, 450)])
    scenario.txn(tokyo, "2026-06-10T12:00:00+09:00", 600, customer="same-id", items=[("latte", 1, 600)])
    scenario.commit()

    refresh_pending(ctx)

    daily = scenario.actual().daily
    assert daily[("M1", DAY)]["currency"] == "EUR" and daily[("M1", DAY)]["gross_sales_minor"] == 450
    assert daily[("M2", DAY)]["currency"] == "JPY" and daily[("M2", DAY)]["gross_sales_minor"] == 600
    assert daily[("M1", DAY)]["unique_customers"] == daily[("M2", DAY)]["unique_customers"] == 1
    products = scenario.actual().products
    assert products[("M2", DAY, "latte")] == {
        "currency": "JPY",
        "units_sold": 1,
        "gross_sales_minor": 600,
        "transactions": 1,
    }
