"""An independent computation of every metric, straight from the oracle's parsed landing files.

Plain Python with zoneinfo and Decimal; it imports nothing from ``core.metrics``
so a shared misreading of DATA_CONTRACT.md cannot hide a bug. Buckets use the
same keys as :class:`core.metrics.MetricRow` (ISO date, ``2026-W01``,
``2026-01``, ISO weekday ``"1"``, two-digit hour, product id, category or
"" for none, payment method).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from tests.oracle import Merchant, Txn, exponent

Value = Decimal | int | None


@dataclass(frozen=True)
class Local:
    t: Txn
    when: datetime  # merchant-local

    @property
    def day(self) -> date:
        return self.when.date()

    @property
    def sale(self) -> bool:
        return self.t.type == "PAYMENT" and self.t.status == "SUCCESSFUL"

    @property
    def refund(self) -> bool:
        return self.t.type in ("REFUND", "CHARGEBACK") and self.t.status == "SUCCESSFUL"


def _major(minor: Decimal | int, currency: str) -> Decimal:
    e = exponent(currency)
    return (Decimal(minor) / (Decimal(10) ** e)).quantize(Decimal(1) / (Decimal(10) ** e), rounding=ROUND_HALF_UP)


class Reference:
    def __init__(
        self,
        merchants: dict[str, Merchant],
        txns: list[Txn],
        products: dict[tuple[str, str], tuple[str, str | None]],
    ) -> None:
        self.merchants = merchants
        self.products = products
        self.local: dict[str, list[Local]] = defaultdict(list)
        self.first_sale_day: dict[tuple[str, str], date] = {}
        self._periods: dict[tuple[str, date, date], list[Local]] = {}
        for t in txns:
            tz = ZoneInfo(merchants[t.merchant_id].timezone)
            loc = Local(t, t.occurred_at.astimezone(tz))
            self.local[t.merchant_id].append(loc)
            if loc.sale and t.customer_id:
                key = (t.merchant_id, t.customer_id)
                if key not in self.first_sale_day or loc.day < self.first_sale_day[key]:
                    self.first_sale_day[key] = loc.day

    def currency(self, merchant_id: str) -> str:
        return self.merchants[merchant_id].currency

    def days(self, merchant_id: str) -> tuple[date, date]:
        ds = [x.day for x in self.local[merchant_id]]
        return min(ds), max(ds)

    # ------------------------------------------------------------------
    def bucket_fn(self, group: str, merchant_id: str) -> Callable[[Local], str]:
        def week(x: Local) -> str:
            iso = x.day.isocalendar()
            return f"{iso.year}-W{iso.week:02d}"

        return {
            "none": lambda x: "",
            "day": lambda x: x.day.isoformat(),
            "week": week,
            "month": lambda x: f"{x.day.year}-{x.day.month:02d}",
            "weekday": lambda x: str(x.day.isoweekday()),
            "hour_of_day": lambda x: f"{x.when.hour:02d}",
            "payment_method": lambda x: x.t.payment_method,
        }[group]

    def _value(self, merchant_id: str, metric: str, rows: list[Local], ref: Callable[[Local], date]) -> Value:
        cur = self.currency(merchant_id)
        sales = [x for x in rows if x.sale]
        gross = sum(x.t.amount_minor for x in sales)
        refunds = sum(x.t.amount_minor for x in rows if x.refund)
        if metric == "gross_sales":
            return _major(gross, cur)
        if metric == "refunds":
            return _major(refunds, cur)
        if metric == "net_sales":
            return _major(gross - refunds, cur)
        if metric == "transactions":
            return len(sales)
        if metric == "tips":
            return _major(sum(x.t.tip_minor for x in sales), cur)
        if metric == "units_sold":
            return sum(i.quantity for x in sales for i in x.t.items)
        if metric == "average_ticket":
            return _major(Decimal(gross) / len(sales), cur) if sales else None
        if metric == "unique_customers":
            return len({x.t.customer_id for x in sales if x.t.customer_id})
        if metric == "returning_customers":
            return len(
                {
                    x.t.customer_id
                    for x in sales
                    if x.t.customer_id and self.first_sale_day[(merchant_id, x.t.customer_id)] < ref(x)
                }
            )
        raise AssertionError(metric)

    def in_period(self, merchant_id: str, start: date, end: date) -> list[Local]:
        key = (merchant_id, start, end)
        if key not in self._periods:
            self._periods[key] = [x for x in self.local[merchant_id] if start <= x.day < end]
        return self._periods[key]

    def compute(
        self, merchant_id: str, metric: str, start: date, end: date, group: str = "none"
    ) -> tuple[Value, dict[str, Value]]:
        """(total, {bucket: value}) for a non-product metric."""
        rows = self.in_period(merchant_id, start, end)
        if metric == "payment_method_mix":
            sales = [x for x in rows if x.sale]
            counts: dict[str, int] = defaultdict(int)
            for x in sales:
                counts[x.t.payment_method] += 1
            shares: dict[str, Value] = {
                m: (Decimal(n) * 100 / len(sales)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
                for m, n in counts.items()
            }
            return None, shares
        total = self._value(merchant_id, metric, rows, lambda x: start)
        if group == "none":
            return total, {}
        key = self.bucket_fn(group, merchant_id)
        by: dict[str, list[Local]] = defaultdict(list)
        for x in rows:
            by[key(x)].append(x)

        def ref(x: Local) -> date:
            if group == "day":
                return x.day
            if group == "week":
                return max(x.day - timedelta(days=x.day.weekday()), start)
            if group == "month":
                return max(x.day.replace(day=1), start)
            return start

        return total, {k: self._value(merchant_id, metric, v, ref) for k, v in by.items()}

    def compute_products(
        self,
        merchant_id: str,
        metric: str,
        start: date,
        end: date,
        group: str,
        products: Iterable[str] = (),
        categories: Iterable[str] = (),
    ) -> tuple[Value, dict[str, Value]]:
        """Per product/category (or filtered) units, line sales or transactions including it."""
        cur = self.currency(merchant_id)
        want_p = {p.lower() for p in products}
        want_c = {c.lower() for c in categories}
        per: dict[str, list[tuple[str, int, int]]] = defaultdict(list)  # bucket -> (txn id, qty, line minor)
        total: list[tuple[str, int, int]] = []
        for x in self.in_period(merchant_id, start, end):
            if not x.sale:
                continue
            for item in x.t.items:
                name, category = self.products.get((merchant_id, item.product_id), (item.product_id, None))
                if want_p and item.product_id.lower() not in want_p and name.lower() not in want_p:
                    continue
                if want_c and (category or "").lower() not in want_c:
                    continue
                entry = (x.t.transaction_id, item.quantity, item.quantity * item.unit_price_minor)
                total.append(entry)
                if group == "product":
                    per[item.product_id].append(entry)
                elif group == "category":
                    per[category or ""].append(entry)
                elif group != "none":
                    per[self.bucket_fn(group, merchant_id)(x)].append(entry)

        def value(entries: list[tuple[str, int, int]]) -> Value:
            if metric == "units_sold":
                return sum(e[1] for e in entries)
            if metric == "gross_sales":
                return _major(sum(e[2] for e in entries), cur)
            if metric == "transactions":
                return len({e[0] for e in entries})
            raise AssertionError(metric)

        return value(total), {k: value(v) for k, v in per.items()}
