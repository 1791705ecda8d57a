"""An independent oracle for the metrics: expected values straight from a landing folder.

Reads ``<root>/<dataset>/dt=YYYY-MM-DD/*.{csv,csv.gz,jsonl,jsonl.gz,parquet}``
as DATA_CONTRACT.md describes it and computes, in plain Python with
``zoneinfo``, what ``daily_metrics``, ``hourly_metrics`` and
``daily_product_metrics`` must contain. It imports nothing from
``pipelines`` (or ``core``), so a shared misreading cannot hide a bug; it is
deliberately simple and slow, meant for test-sized data.

    expected = expected_metrics(landing_root)
    with engine.connect() as conn:
        problems = diff(expected, actual_metrics(conn))
    assert not problems, "\\n".join(problems)

How the contract is read here (where it leaves room, the choice is stated):

- Files load in partition order, then file-name order. A file that cannot be
  read (bad encoding, corrupt archive, CSV header without a required column)
  contributes nothing; a bad JSONL line is one rejected row.
- A row is rejected (as the loader quarantines it) when a required value is
  missing or blank, an enum value is unknown, a timestamp is not ISO 8601
  with an offset, an amount is not a decimal with at most 2 places or has
  more places than the merchant's currency allows, ``amount <= 0``,
  ``tip_amount > amount``, the currency differs from the merchant's, the
  merchant is unknown, ``refund_of`` is set on a PAYMENT or does not name a
  PAYMENT of the same merchant delivered in an earlier file or the same file,
  the id already belongs to another merchant, or ``items`` is not a list of
  ``{product_id: non-empty str, quantity: integer > 0, unit_price: decimal}``.
  Item unit prices are rounded half-up to minor units.
- Re-delivered records: within one file the row with the latest
  ``updated_at`` wins (rows without one lose; then the later line). A later
  file's version replaces the current one when both carry ``updated_at`` and
  ``(updated_at, partition)`` is not older, or, when either lacks it, when
  its partition is not older.
- Merchants: the latest valid version gives timezone and currency.
- Metrics follow DATA_CONTRACT.md. A day (hour) has an entry when it had any
  transaction of any type or status; a product-day when a successful payment
  sold it. Refunds and chargebacks count on their own day. ``payment_methods``
  maps each method of the day's successful payments to
  ``{"transactions": n, "gross_sales_minor": m}``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# ISO 4217 minor-unit exponents that are not 2.
CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF",
         "XOF", "XPF"),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}  # fmt: skip

TYPES = ("PAYMENT", "REFUND", "CHARGEBACK")
STATUSES = ("SUCCESSFUL", "FAILED", "CANCELLED")
METHODS = ("CARD", "CONTACTLESS", "WALLET", "CASH", "QR", "OTHER")

MERCHANT_REQUIRED = ("merchant_id", "name", "category", "country", "currency", "timezone", "created_at")
TRANSACTION_REQUIRED = (
    "transaction_id", "merchant_id", "occurred_at", "type", "status", "amount", "currency", "payment_method",
)  # fmt: skip

DAILY_FIELDS = (
    "currency", "gross_sales_minor", "refunds_minor", "net_sales_minor", "transactions", "tips_minor",
    "units_sold", "unique_customers", "refund_count", "failed_count", "payment_methods",
)  # fmt: skip
HOURLY_FIELDS = DAILY_FIELDS[:-1]
PRODUCT_FIELDS = ("currency", "units_sold", "gross_sales_minor", "transactions")

_DECIMAL = re.compile(r"^[0-9]+(\.[0-9]{1,2})?$")
_TS = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}(:?\d{2})?)$")
_PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
_SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".parquet")


# --------------------------------------------------------------------------
# Facts
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    currency: str
    timezone: str
    row: dict[str, Any]  # the winning record, as read


@dataclass(frozen=True)
class Item:
    product_id: str
    quantity: int
    unit_price_minor: int


@dataclass(frozen=True)
class Txn:
    """One transaction as the winning delivery states it, money in minor units."""

    transaction_id: str
    merchant_id: str
    occurred_at: datetime
    type: str
    status: str
    amount_minor: int
    tip_minor: int
    currency: str
    payment_method: str
    card_scheme: str | None
    customer_id: str | None
    location_id: str | None
    refund_of: str | None
    items: tuple[Item, ...]
    updated_at: datetime | None
    partition: date


@dataclass(frozen=True)
class Rejected:
    """A record (line > 0) or a whole file (line 0) the loader must not load."""

    dataset: str
    file: str
    line: int
    reason: str


@dataclass
class Facts:
    merchants: dict[str, Merchant] = field(default_factory=dict)
    transactions: dict[str, Txn] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)


def exponent(currency: str) -> int:
    """Decimal places of a currency's minor unit."""
    return CURRENCY_EXPONENTS.get(currency, 2)


def to_minor(text: str, currency: str) -> int | None:
    """Contract decimal text to minor units; None if it has more places than the currency allows."""
    scaled = Decimal(text).scaleb(exponent(currency))
    return int(scaled) if scaled == scaled.to_integral_value() else None


# --------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------


class _Unreadable(Exception):
    pass


def _text(value: Any) -> Any:
    """A scalar as the text a CSV would carry (None for missing); lists and objects stay parsed."""
    if value is None or isinstance(value, list | dict):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value != "" else None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _records(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield (line, record or None, error) for each record; raise _Unreadable for a bad file."""
    name = path.name
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise _Unreadable(f"unreadable parquet: {exc}") from exc
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise _Unreadable(f"missing required columns {missing}")
        for n, row in enumerate(table.to_pylist(), start=1):
            yield n, {k: _text(v) for k, v in row.items()}, None
        return
    try:
        raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
        content = raw.decode("utf-8-sig")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise _Unreadable(f"{type(exc).__name__}: {exc}") from exc
    if ".csv" in name:
        reader = csv.DictReader(io.StringIO(content, newline=""))
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise _Unreadable(f"missing required columns {missing}")
        for row in reader:
            yield reader.line_num, {k: (v if v != "" else None) for k, v in row.items() if k is not None}, None
        return
    for n, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_float=Decimal)
        except ValueError as exc:
            yield n, None, f"not JSON: {exc}"
            continue
        if not isinstance(obj, dict):
            yield n, None, "not a JSON object"
            continue
        yield n, {k: _text(v) for k, v in obj.items()}, None


def _files(root: Path, dataset: str) -> Iterator[tuple[date, Path]]:
    folder = root / dataset
    if not folder.is_dir():
        return
    parts = []
    for part in folder.iterdir():
        match = _PARTITION.match(part.name)
        if match and part.is_dir():
            parts.append((date.fromisoformat(match.group(1)), part))
    for dt, part in sorted(parts):
        for f in sorted(part.iterdir(), key=lambda p: p.name):
            if f.is_file() and f.name.endswith(_SUFFIXES) and not f.name.startswith((".", "_")):
                yield dt, f


def _ts(value: str | None) -> datetime | None:
    if value is None or not _TS.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _newer(new_updated: datetime | None, new_dt: date, cur_updated: datetime | None, cur_dt: date) -> bool:
    if new_updated is not None and cur_updated is not None:
        return (new_updated, new_dt) >= (cur_updated, cur_dt)
    return new_dt >= cur_dt


def _file_winners(rows: Iterable[tuple[int, dict[str, Any], datetime | None]], key: str) -> list[Any]:
    """Within one file: latest updated_at wins (missing loses), then the later line."""
    best: dict[str, tuple[int, dict[str, Any], datetime | None]] = {}
    for line, rec, updated in rows:
        k = rec[key]
        assert k is not None
        cur = best.get(k)
        if cur is None:
            best[k] = (line, rec, updated)
            continue
        rank_new = (updated is not None, updated or datetime.min.replace(tzinfo=ZoneInfo("UTC")), line)
        rank_cur = (cur[2] is not None, cur[2] or datetime.min.replace(tzinfo=ZoneInfo("UTC")), cur[0])
        if rank_new > rank_cur:
            best[k] = (line, rec, updated)
    return sorted(best.values(), key=lambda r: r[0])


# --------------------------------------------------------------------------
# Validation and merging
# --------------------------------------------------------------------------


def _read_merchants(root: Path, facts: Facts) -> None:
    current: dict[str, tuple[Merchant, datetime | None, date]] = {}
    for dt, path in _files(root, "merchants"):
        try:
            valid = []
            for line, rec, error in _records(path, MERCHANT_REQUIRED):
                reason = error or (_merchant_problem(rec) if rec is not None else "unparseable")
                if reason:
                    facts.rejected.append(Rejected("merchants", str(path), line, reason))
                    continue
                assert rec is not None
                valid.append((line, rec, _ts(rec.get("updated_at"))))
        except _Unreadable as exc:
            facts.rejected.append(Rejected("merchants", str(path), 0, str(exc)))
            continue
        for _, rec, updated in _file_winners(valid, "merchant_id"):
            mid = rec["merchant_id"]
            cur = current.get(mid)
            if cur is None or _newer(updated, dt, cur[1], cur[2]):
                current[mid] = (Merchant(mid, rec["currency"], rec["timezone"], rec), updated, dt)
    facts.merchants = {mid: m for mid, (m, _, _) in current.items()}


def _merchant_problem(rec: dict[str, Any]) -> str | None:
    for col in MERCHANT_REQUIRED:
        if _blank(rec.get(col)):
            return f"{col} is required"
    if not re.match(r"^[A-Z]{3}$", rec["currency"] or ""):
        return "bad currency"
    try:
        ZoneInfo(rec["timezone"] or "")
    except (ZoneInfoNotFoundError, ValueError):
        return "unknown timezone"
    if _ts(rec["created_at"]) is None:
        return "bad created_at"
    if rec.get("updated_at") is not None and _ts(rec["updated_at"]) is None:
        return "bad updated_at"
    return None


def _items(value: Any, currency: str) -> tuple[Item, ...] | None:
    """Parsed items, () when absent, None when invalid."""
    if value is None:
        return ()
    parsed = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value, parse_float=Decimal)
        except ValueError:
            return None
    if not isinstance(parsed, list):
        return None
    out = []
    for item in parsed:
        if not isinstance(item, dict):
            return None
        pid, qty, price = item.get("product_id"), item.get("quantity"), item.get("unit_price")
        if not isinstance(pid, str) or pid == "":
            return None
        if isinstance(qty, bool) or not isinstance(qty, int | Decimal) or qty <= 0 or qty != int(qty):
            return None
        if isinstance(price, bool) or price is None:
            return None
        if isinstance(price, str):
            if not _DECIMAL.match(price):
                return None
            price_dec = Decimal(price)
        elif isinstance(price, int | Decimal):
            price_dec = Decimal(price)
            if price_dec < 0 or price_dec.scaleb(2) != price_dec.scaleb(2).to_integral_value():
                return None
        else:
            return None
        minor = int(price_dec.scaleb(exponent(currency)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        out.append(Item(pid, int(qty), minor))
    return tuple(out)


def _transaction(
    rec: dict[str, Any], dt: date, facts: Facts, payments: dict[str, str], file_payments: dict[str, str]
) -> Txn | str:
    """The parsed transaction, or why the row is rejected."""
    for col in TRANSACTION_REQUIRED:
        if _blank(rec.get(col)):
            return f"{col} is required"
    tid, mid = rec["transaction_id"], rec["merchant_id"]
    assert tid is not None and mid is not None
    merchant = facts.merchants.get(mid)
    if merchant is None:
        return f"unknown merchant {mid}"
    occurred = _ts(rec["occurred_at"])
    if occurred is None:
        return "bad occurred_at"
    typ, status, method = rec["type"], rec["status"], rec["payment_method"]
    if typ not in TYPES or status not in STATUSES or method not in METHODS:
        return "unknown enum value"
    amount_text, tip_text = rec["amount"] or "", rec.get("tip_amount")
    if not _DECIMAL.match(amount_text) or (tip_text is not None and not _DECIMAL.match(tip_text)):
        return "bad decimal"
    if Decimal(amount_text) <= 0:
        return "amount not > 0"
    amount = to_minor(amount_text, merchant.currency)
    tip = to_minor(tip_text, merchant.currency) if tip_text is not None else 0
    if amount is None or tip is None:
        return "more decimals than the currency allows"
    if tip > amount:
        return "tip exceeds amount"
    if rec["currency"] != merchant.currency:
        return "currency differs from the merchant's"
    refund_of = rec.get("refund_of")
    if refund_of is not None:
        if typ == "PAYMENT":
            return "refund_of on a payment"
        if payments.get(refund_of) != mid and file_payments.get(refund_of) != mid:
            return "refund_of points to no payment of this merchant"
    existing = facts.transactions.get(tid)
    if existing is not None and existing.merchant_id != mid:
        return "transaction_id belongs to another merchant"
    updated_text = rec.get("updated_at")
    updated = _ts(updated_text)
    if updated_text is not None and updated is None:
        return "bad updated_at"
    items = _items(rec.get("items"), merchant.currency)
    if items is None:
        return "bad items"
    return Txn(
        transaction_id=tid, merchant_id=mid, occurred_at=occurred, type=typ, status=status,
        amount_minor=amount, tip_minor=tip, currency=merchant.currency, payment_method=method,
        card_scheme=rec.get("card_scheme"), customer_id=rec.get("customer_id"),
        location_id=rec.get("location_id"), refund_of=refund_of, items=items, updated_at=updated, partition=dt,
    )  # fmt: skip


def _read_transactions(root: Path, facts: Facts) -> None:
    payments: dict[str, str] = {}  # transaction_id -> merchant_id of loaded payments
    for dt, path in _files(root, "transactions"):
        try:
            records = list(_records(path, TRANSACTION_REQUIRED))
        except _Unreadable as exc:
            facts.rejected.append(Rejected("transactions", str(path), 0, str(exc)))
            continue
        file_payments = {
            rec["transaction_id"]: rec["merchant_id"]
            for _, rec, _ in records
            if rec is not None and rec.get("type") == "PAYMENT" and rec.get("transaction_id") and rec.get("merchant_id")
        }
        valid = []
        for line, rec, error in records:
            parsed = error or ("unparseable" if rec is None else None)
            if parsed is None:
                assert rec is not None
                result = _transaction(rec, dt, facts, payments, file_payments)
                if isinstance(result, Txn):
                    valid.append((line, {"transaction_id": result.transaction_id, "txn": result}, result.updated_at))
                    continue
                parsed = result
            facts.rejected.append(Rejected("transactions", str(path), line, parsed))
        for _, rec, updated in _file_winners(valid, "transaction_id"):
            txn: Txn = rec["txn"]
            cur = facts.transactions.get(txn.transaction_id)
            if cur is None or _newer(updated, dt, cur.updated_at, cur.partition):
                facts.transactions[txn.transaction_id] = txn
                if txn.type == "PAYMENT":
                    payments[txn.transaction_id] = txn.merchant_id


def read_facts(root: Path) -> Facts:
    """Merchants and transactions as the loader must end up storing them, plus rejected rows."""
    facts = Facts()
    _read_merchants(Path(root), facts)
    _read_transactions(Path(root), facts)
    return facts


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


@dataclass
class Expected:
    """Metric rows keyed like the tables' primary keys; values in minor units."""

    daily: dict[tuple[str, date], dict[str, Any]] = field(default_factory=dict)
    hourly: dict[tuple[str, date, int], dict[str, Any]] = field(default_factory=dict)
    products: dict[tuple[str, date, str], dict[str, Any]] = field(default_factory=dict)

    def only(self, merchant_ids: Iterable[str]) -> Expected:
        """The rows of some merchants."""
        keep = set(merchant_ids)
        return Expected(
            {k: v for k, v in self.daily.items() if k[0] in keep},
            {k: v for k, v in self.hourly.items() if k[0] in keep},
            {k: v for k, v in self.products.items() if k[0] in keep},
        )


def _empty(currency: str) -> dict[str, Any]:
    return {
        "currency": currency, "gross_sales_minor": 0, "refunds_minor": 0, "net_sales_minor": 0,
        "transactions": 0, "tips_minor": 0, "units_sold": 0, "unique_customers": set(), "refund_count": 0,
        "failed_count": 0, "payment_methods": {},
    }  # fmt: skip


def _add(row: dict[str, Any], t: Txn) -> None:
    if t.type == "PAYMENT" and t.status == "SUCCESSFUL":
        row["gross_sales_minor"] += t.amount_minor
        row["transactions"] += 1
        row["tips_minor"] += t.tip_minor
        row["units_sold"] += sum(i.quantity for i in t.items)
        if t.customer_id:
            row["unique_customers"].add(t.customer_id)
        mix = row["payment_methods"].setdefault(t.payment_method, {"transactions": 0, "gross_sales_minor": 0})
        mix["transactions"] += 1
        mix["gross_sales_minor"] += t.amount_minor
    elif t.type in ("REFUND", "CHARGEBACK") and t.status == "SUCCESSFUL":
        row["refunds_minor"] += t.amount_minor
        row["refund_count"] += 1
    elif t.type == "PAYMENT":  # FAILED or CANCELLED
        row["failed_count"] += 1
    row["net_sales_minor"] = row["gross_sales_minor"] - row["refunds_minor"]


def compute_metrics(merchants: dict[str, Merchant], transactions: Iterable[Txn]) -> Expected:
    """Daily, hourly and per-product metrics per merchant-local day."""
    daily: dict[tuple[str, date], dict[str, Any]] = {}
    hourly: dict[tuple[str, date, int], dict[str, Any]] = {}
    products: dict[tuple[str, date, str], dict[str, Any]] = {}
    zones: dict[str, ZoneInfo] = {}
    for t in transactions:
        m = merchants[t.merchant_id]
        tz = zones.get(m.timezone) or zones.setdefault(m.timezone, ZoneInfo(m.timezone))
        local = t.occurred_at.astimezone(tz)
        day = local.date()
        _add(daily.setdefault((t.merchant_id, day), _empty(m.currency)), t)
        _add(hourly.setdefault((t.merchant_id, day, local.hour), _empty(m.currency)), t)
        if t.type == "PAYMENT" and t.status == "SUCCESSFUL":
            for pid in dict.fromkeys(i.product_id for i in t.items):
                lines = [i for i in t.items if i.product_id == pid]
                row = products.setdefault(
                    (t.merchant_id, day, pid),
                    {"currency": m.currency, "units_sold": 0, "gross_sales_minor": 0, "transactions": 0},
                )
                row["units_sold"] += sum(i.quantity for i in lines)
                row["gross_sales_minor"] += sum(i.quantity * i.unit_price_minor for i in lines)
                row["transactions"] += 1
    for row in (*daily.values(), *hourly.values()):
        row["unique_customers"] = len(row["unique_customers"])
    for row in hourly.values():
        del row["payment_methods"]
    return Expected(daily, hourly, products)


def expected_metrics(root: Path) -> Expected:
    """What the three metric tables must hold after loading ``root`` and refreshing."""
    facts = read_facts(root)
    return compute_metrics(facts.merchants, facts.transactions.values())


# --------------------------------------------------------------------------
# Comparing with the database
# --------------------------------------------------------------------------


def actual_metrics(conn: Any, merchant_ids: Iterable[str] | None = None) -> Expected:
    """The three metric tables as an :class:`Expected` (``conn``: a SQLAlchemy connection)."""
    from sqlalchemy import text

    ids = sorted(merchant_ids) if merchant_ids is not None else None
    where = "" if ids is None else " WHERE merchant_id = ANY(:ids)"
    params = {} if ids is None else {"ids": ids}

    def fetch(table: str, keys: tuple[str, ...], fields: tuple[str, ...]) -> dict[Any, dict[str, Any]]:
        rows = conn.execute(text(f"SELECT {', '.join((*keys, *fields))} FROM {table}{where}"), params).mappings()
        return {tuple(r[k] for k in keys): {f: r[f] for f in fields} for r in rows}

    return Expected(
        fetch("daily_metrics", ("merchant_id", "day"), DAILY_FIELDS),
        fetch("hourly_metrics", ("merchant_id", "day", "hour"), HOURLY_FIELDS),
        fetch("daily_product_metrics", ("merchant_id", "day", "product_id"), PRODUCT_FIELDS),
    )


def diff(expected: Expected, actual: Expected, limit: int = 25) -> list[str]:
    """Human-readable differences, at most ``limit`` per table (empty when equal)."""
    out: list[str] = []
    for name in ("daily", "hourly", "products"):
        exp, act = getattr(expected, name), getattr(actual, name)
        found: list[str] = []
        for key in sorted(exp.keys() | act.keys(), key=str):
            if key not in act:
                found.append(f"{name} {key}: missing, expected {exp[key]}")
            elif key not in exp:
                found.append(f"{name} {key}: unexpected row {act[key]}")
            elif exp[key] != act[key]:
                fields = {f: (exp[key][f], act[key][f]) for f in exp[key] if exp[key][f] != act[key].get(f)}
                found.append(f"{name} {key}: (expected, actual) {fields}")
        if len(found) > limit:
            found = [*found[:limit], f"... and {len(found) - limit} more {name} differences"]
        out.extend(found)
    return out
