"""Tests of the synthetic generator against an independent contract checker.

The checker below re-implements the rules of DATA_CONTRACT.md from scratch
(parsing, types, enums, cross-record rules) and never imports generator
internals, so a bug in the generator cannot hide behind the same bug in its
own validation.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import os
import re
import subprocess
import sys
import wave
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from PIL import Image

from pipelines.synthetic import GenerateConfig, GenerateSummary, generate

# --------------------------------------------------------------------------
# The contract, transcribed from DATA_CONTRACT.md
# --------------------------------------------------------------------------

REQ, OPT = True, False
CONTRACT: dict[str, dict[str, tuple[str, bool]]] = {
    "merchants": {
        "merchant_id": ("str", REQ),
        "name": ("str", REQ),
        "category": ("str", REQ),
        "country": ("str", REQ),
        "currency": ("str", REQ),
        "timezone": ("str", REQ),
        "created_at": ("ts", REQ),
        "updated_at": ("ts", OPT),
    },
    "products": {
        "product_id": ("str", REQ),
        "merchant_id": ("str", REQ),
        "name": ("str", REQ),
        "category": ("str", OPT),
        "price": ("decimal", REQ),
        "description": ("str", OPT),
        "active": ("bool", OPT),
        "updated_at": ("ts", OPT),
    },
    "transactions": {
        "transaction_id": ("str", REQ),
        "merchant_id": ("str", REQ),
        "occurred_at": ("ts", REQ),
        "type": ("str", REQ),
        "status": ("str", REQ),
        "amount": ("decimal", REQ),
        "tip_amount": ("decimal", OPT),
        "currency": ("str", REQ),
        "payment_method": ("str", REQ),
        "card_scheme": ("str", OPT),
        "customer_id": ("str", OPT),
        "location_id": ("str", OPT),
        "refund_of": ("str", OPT),
        "items": ("json", OPT),
        "updated_at": ("ts", OPT),
    },
    "reviews": {
        "review_id": ("str", REQ),
        "merchant_id": ("str", REQ),
        "created_at": ("ts", REQ),
        "rating": ("int", REQ),
        "text": ("str", OPT),
        "source": ("str", OPT),
    },
    "attachments": {
        "attachment_id": ("str", REQ),
        "merchant_id": ("str", REQ),
        "created_at": ("ts", REQ),
        "kind": ("str", REQ),
        "content_type": ("str", REQ),
        "path": ("str", REQ),
        "note": ("str", OPT),
    },
}
ENUMS = {
    ("merchants", "category"): {"cafe", "restaurant", "bar", "bakery", "retail", "beauty", "services", "food_truck"},
    ("transactions", "type"): {"PAYMENT", "REFUND", "CHARGEBACK"},
    ("transactions", "status"): {"SUCCESSFUL", "FAILED", "CANCELLED"},
    ("transactions", "payment_method"): {"CARD", "CONTACTLESS", "WALLET", "CASH", "QR", "OTHER"},
    ("transactions", "card_scheme"): {"VISA", "MASTERCARD", "AMEX", "JCB", "DISCOVER"},
    ("attachments", "kind"): {"image", "audio", "document"},
    ("reviews", "source"): {"google", "app", "survey"},
}
CARD_METHODS = {"CARD", "CONTACTLESS", "WALLET"}
COUNTRY_CURRENCY = {"DE": "EUR", "FR": "EUR", "ES": "EUR", "GB": "GBP", "US": "USD", "AU": "AUD", "JP": "JPY"}
ZERO_DECIMAL_CURRENCIES = {"JPY"}
DATA_EXTS = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".parquet")
MAGIC = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
    "application/pdf": b"%PDF-",
    "audio/wav": b"RIFF",
}
DECIMAL_RE = re.compile(r"^\d+(\.\d{1,2})?$")
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
DT_RE = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
EVENT_KINDS = {"outage", "refund_spike", "product_stops_selling", "demand_surge", "payment_failures", "rating_drop"}


def parse_ts(value: str) -> datetime:
    assert TS_RE.match(value), f"bad timestamp {value!r}"
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None
    return parsed


def money(value: Any) -> Decimal:
    return Decimal(str(value))


# --------------------------------------------------------------------------
# Reading a landing root
# --------------------------------------------------------------------------


@dataclass
class Rec:
    """One parsed record with where it came from."""

    dataset: str
    dt: str
    file: Path
    line: int
    data: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.data.get(key)


def _open_text(path: Path) -> io.TextIOWrapper:
    raw = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def read_file(path: Path) -> Iterator[tuple[int, dict[str, Any], list[str]]]:
    """Yield (line, record, header) with ``""``/null normalised to None."""
    with _open_text(path) as fh:
        if ".csv" in path.name:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            for row in reader:
                yield reader.line_num, {k: (v if v != "" else None) for k, v in row.items()}, header
        else:
            for n, line in enumerate(fh, start=1):
                obj = json.loads(line)
                assert isinstance(obj, dict), f"{path}:{n} is not an object"
                yield n, obj, list(obj)


@dataclass
class Landing:
    root: Path
    records: dict[str, list[Rec]] = field(default_factory=lambda: defaultdict(list))
    files: dict[str, list[Path]] = field(default_factory=lambda: defaultdict(list))
    binaries: set[str] = field(default_factory=set)
    labels: dict[str, Any] = field(default_factory=dict)


def load_landing(root: Path) -> Landing:
    land = Landing(root)
    top = {p.name for p in root.iterdir()}
    assert top <= set(CONTRACT) | {"labels.json"}, f"unexpected entries at the root: {top}"
    land.labels = json.loads((root / "labels.json").read_text(encoding="utf-8"))
    for dataset in CONTRACT:
        folder = root / dataset
        if not folder.exists():
            continue
        for part in sorted(folder.iterdir()):
            m = DT_RE.match(part.name)
            assert m and part.is_dir(), f"bad partition {part}"
            dt = m.group(1)
            date.fromisoformat(dt)
            for f in sorted(part.iterdir()):
                if f.is_dir():
                    assert dataset == "attachments", f"unexpected folder {f}"
                    assert re.match(r"^M\d{4,}$", f.name), f"bad merchant folder {f}"
                    for b in f.iterdir():
                        assert b.is_file()
                        land.binaries.add(b.relative_to(root).as_posix())
                    continue
                assert f.name.endswith(DATA_EXTS), f"bad data file name {f}"
                land.files[dataset].append(f)
                for line, data, header in read_file(f):
                    missing = [c for c, (_, req) in CONTRACT[dataset].items() if req and c not in header]
                    assert not missing, f"{f} lacks required columns {missing}"
                    assert set(header) <= set(CONTRACT[dataset]), f"{f} has unknown columns"
                    land.records[dataset].append(Rec(dataset, dt, f, line, data))
    return land


# --------------------------------------------------------------------------
# Checking every record
# --------------------------------------------------------------------------


def check_types(land: Landing) -> list[str]:
    errors: list[str] = []
    for dataset, recs in land.records.items():
        for r in recs:
            where = f"{r.file.name}:{r.line} ({dataset} dt={r.dt})"
            for col, (typ, req) in CONTRACT[dataset].items():
                v = r[col]
                if v is None:
                    if req:
                        errors.append(f"{where}: required {col} empty")
                    continue
                if typ == "str" and not (isinstance(v, str) and (v or not req)):
                    errors.append(f"{where}: {col} not a string: {v!r}")
                elif typ == "decimal" and not DECIMAL_RE.match(str(v)):
                    errors.append(f"{where}: {col} not a contract decimal: {v!r}")
                elif typ == "ts":
                    try:
                        parse_ts(v)
                    except (AssertionError, ValueError) as exc:
                        errors.append(f"{where}: {col}: {exc}")
                elif typ == "int" and not re.match(r"^\d+$", str(v)):
                    errors.append(f"{where}: {col} not an int: {v!r}")
                elif typ == "bool" and v not in ("true", "false", True, False):
                    errors.append(f"{where}: {col} not a bool: {v!r}")
                if (dataset, col) in ENUMS and v not in ENUMS[(dataset, col)]:
                    errors.append(f"{where}: {col} {v!r} not in enum")
    return errors


def items_of(r: Rec) -> list[dict[str, Any]] | None:
    v = r["items"]
    if v is None:
        return None
    parsed: list[dict[str, Any]] = json.loads(v) if isinstance(v, str) else v
    return parsed


def check_rules(land: Landing) -> list[str]:
    errors: list[str] = []
    merchants: dict[str, Rec] = {}
    for r in land.records["merchants"]:
        if r["merchant_id"] in merchants:
            errors.append(f"duplicate merchant {r['merchant_id']}")
        merchants[r["merchant_id"]] = r
        if COUNTRY_CURRENCY.get(r["country"]) != r["currency"]:
            errors.append(f"{r['merchant_id']}: currency {r['currency']} does not fit {r['country']}")
        ZoneInfo(r["timezone"])
    assert merchants, "no merchants"

    products: dict[tuple[str, str], list[Rec]] = defaultdict(list)
    for r in land.records["products"]:
        if r["merchant_id"] not in merchants:
            errors.append(f"product of unknown merchant {r['merchant_id']}")
        if money(r["price"]) <= 0:
            errors.append(f"product {r['product_id']} price not > 0")
        if merchants[r["merchant_id"]]["currency"] in ZERO_DECIMAL_CURRENCIES and "." in str(r["price"]):
            errors.append(f"JPY price with decimals {r['price']}")
        products[(r["merchant_id"], r["product_id"])].append(r)
    for key, versions in products.items():
        dts = [v.dt for v in versions]
        if len(set(dts)) != len(dts):
            errors.append(f"product {key} twice in one partition")
        for a, b in itertools.pairwise(versions):
            if a["updated_at"] and b["updated_at"] and parse_ts(b["updated_at"]) <= parse_ts(a["updated_at"]):
                errors.append(f"product {key} re-delivered without a later updated_at")

    tx_versions: dict[str, list[Rec]] = defaultdict(list)
    for r in land.records["transactions"]:
        tx_versions[r["transaction_id"]].append(r)
    redelivered = {x["transaction_id"] for x in land.labels["redelivered"]}
    for tid, versions in tx_versions.items():
        if len(versions) > 1:
            if tid not in redelivered:
                errors.append(f"transaction {tid} delivered twice but not labelled")
            elif len(versions) != 2 or versions[1].dt <= versions[0].dt:
                errors.append(f"transaction {tid}: re-delivery not in a later partition")
            elif parse_ts(versions[1]["updated_at"]) <= parse_ts(versions[0]["updated_at"]):
                errors.append(f"transaction {tid}: re-delivery without later updated_at")
    for tid in redelivered:
        if len(tx_versions.get(tid, [])) != 2:
            errors.append(f"labelled re-delivery {tid} not found twice")

    for r in land.records["transactions"]:
        where = f"{r['transaction_id']} (dt={r.dt})"
        m = merchants.get(r["merchant_id"])
        if m is None:
            errors.append(f"{where}: unknown merchant")
            continue
        if r["currency"] != m["currency"]:
            errors.append(f"{where}: currency {r['currency']} != merchant's {m['currency']}")
        amount, tip = money(r["amount"]), money(r["tip_amount"] or 0)
        if amount <= 0:
            errors.append(f"{where}: amount not > 0")
        if tip < 0 or tip > amount:
            errors.append(f"{where}: tip {tip} outside 0..amount")
        if m["currency"] in ZERO_DECIMAL_CURRENCIES and (amount % 1 or tip % 1 or "." in str(r["amount"])):
            errors.append(f"{where}: JPY amount with minor units")
        if r["card_scheme"] is not None and r["payment_method"] not in CARD_METHODS:
            errors.append(f"{where}: card_scheme on a {r['payment_method']} payment")
        if r["card_scheme"] is None and r["payment_method"] in CARD_METHODS:
            errors.append(f"{where}: card payment without card_scheme")
        occurred = parse_ts(r["occurred_at"])
        local = occurred.astimezone(ZoneInfo(m["timezone"]))
        if occurred.utcoffset() != local.utcoffset():
            errors.append(f"{where}: offset of {r['occurred_at']} is not {m['timezone']}'s")
        if local.date().isoformat() != r.dt and r["transaction_id"] not in redelivered:
            errors.append(f"{where}: partition is not the local date of {r['occurred_at']}")
        if r["updated_at"] and parse_ts(r["updated_at"]) < occurred:
            errors.append(f"{where}: updated_at before occurred_at")
        items = items_of(r)
        if items is not None:
            total = Decimal(0)
            for it in items:
                if set(it) != {"product_id", "quantity", "unit_price"}:
                    errors.append(f"{where}: bad item keys {sorted(it)}")
                    continue
                if not isinstance(it["quantity"], int) or it["quantity"] < 1:
                    errors.append(f"{where}: bad quantity {it['quantity']!r}")
                if not DECIMAL_RE.match(str(it["unit_price"])):
                    errors.append(f"{where}: bad unit_price {it['unit_price']!r}")
                    continue
                if (r["merchant_id"], it["product_id"]) not in products:
                    errors.append(f"{where}: unknown product {it['product_id']}")
                total += it["quantity"] * money(it["unit_price"])
            if total != amount - tip:
                errors.append(f"{where}: items sum {total} != amount - tip {amount - tip}")
        if r["type"] == "PAYMENT":
            if r["refund_of"] is not None:
                errors.append(f"{where}: payment with refund_of")
            continue
        orig_versions = tx_versions.get(r["refund_of"] or "")
        if not orig_versions:
            errors.append(f"{where}: refund_of {r['refund_of']!r} points nowhere")
            continue
        orig = orig_versions[0]
        if orig["type"] != "PAYMENT" or any(v["status"] != "SUCCESSFUL" for v in orig_versions):
            errors.append(f"{where}: refund_of is not a successful PAYMENT")
        if orig["merchant_id"] != r["merchant_id"]:
            errors.append(f"{where}: refund_of belongs to another merchant")
        if orig.dt > r.dt:
            errors.append(f"{where}: refund_of is in a later partition")
        if parse_ts(orig["occurred_at"]) >= occurred:
            errors.append(f"{where}: refunded before the payment happened")
        if amount > money(orig["amount"]):
            errors.append(f"{where}: refunds more than was paid")

    review_ids: set[str] = set()
    for r in land.records["reviews"]:
        if r["merchant_id"] not in merchants:
            errors.append(f"review {r['review_id']}: unknown merchant")
        if not 1 <= int(r["rating"]) <= 5:
            errors.append(f"review {r['review_id']}: rating {r['rating']} out of range")
        if r["review_id"] in review_ids:
            errors.append(f"duplicate review {r['review_id']}")
        review_ids.add(r["review_id"])

    errors += check_attachments(land, merchants)
    return errors


def _check_pdf(data: bytes) -> str | None:
    if not data.rstrip().endswith(b"%%EOF"):
        return "no %%EOF"
    m = re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", data)
    if not m:
        return "no startxref"
    xref_at = int(m.group(1))
    if data[xref_at : xref_at + 4] != b"xref":
        return "startxref does not point at the xref table"
    head = re.match(rb"xref\s+0 (\d+)\s+", data[xref_at:])
    if not head:
        return "bad xref header"
    entries = re.findall(rb"(\d{10}) (\d{5}) ([nf]) ?\r?\n", data[xref_at + head.end() - 1 :])
    for num, (off, _, kind) in enumerate(entries[: int(head.group(1))]):
        if kind == b"n" and not data[int(off) :].startswith(b"%d 0 obj" % num):
            return f"xref entry {num} does not point at its object"
    if b"/Helvetica" not in data or b" Tj" not in data:
        return "no Helvetica text layer"
    return None


def check_attachments(land: Landing, merchants: dict[str, Rec]) -> list[str]:
    errors: list[str] = []
    referenced: set[str] = set()
    for r in land.records["attachments"]:
        aid, mid, rel = r["attachment_id"], r["merchant_id"], r["path"]
        where = f"attachment {aid}"
        if mid not in merchants:
            errors.append(f"{where}: unknown merchant")
        m = re.match(r"^attachments/dt=(\d{4}-\d{2}-\d{2})/(M\d+)/([^/]+)\.([a-z0-9]+)$", rel)
        if not m or m.group(1) != r.dt or m.group(2) != mid or m.group(3) != aid:
            errors.append(f"{where}: path {rel!r} does not follow the layout")
            continue
        referenced.add(rel)
        path = land.root / rel
        if not path.is_file():
            errors.append(f"{where}: {rel} missing")
            continue
        data = path.read_bytes()
        ctype, kind = r["content_type"], r["kind"]
        expected_kind = {
            "image/png": "image",
            "image/jpeg": "image",
            "audio/wav": "audio",
            "application/pdf": "document",
            "text/plain": "document",
        }.get(ctype)
        if expected_kind != kind:
            errors.append(f"{where}: kind {kind} does not fit {ctype}")
        if ctype in MAGIC and not data.startswith(MAGIC[ctype]):
            errors.append(f"{where}: content is not {ctype}")
        if ctype.startswith("image/"):
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
        elif ctype == "audio/wav":
            with wave.open(io.BytesIO(data)) as w:
                if w.getnframes() == 0 or w.getframerate() == 0:
                    errors.append(f"{where}: empty wav")
        elif ctype == "application/pdf":
            problem = _check_pdf(data)
            if problem:
                errors.append(f"{where}: bad PDF: {problem}")
        elif ctype == "text/plain":
            data.decode("utf-8")
    orphans = land.binaries - referenced
    if orphans:
        errors.append(f"binaries without manifest rows: {sorted(orphans)[:5]}")
    return errors


def assert_no_errors(errors: list[str]) -> None:
    assert not errors, f"{len(errors)} contract violations, first ones:\n" + "\n".join(errors[:25])


# --------------------------------------------------------------------------
# Metrics, computed from the data as the contract defines them
# --------------------------------------------------------------------------


def latest_transactions(land: Landing) -> list[Rec]:
    """Idempotent merge: the latest updated_at (else latest partition) wins."""

    def rank(r: Rec) -> tuple[float, str]:
        return (parse_ts(r["updated_at"]).timestamp() if r["updated_at"] else 0.0, r.dt)

    best: dict[str, Rec] = {}
    for r in land.records["transactions"]:
        cur = best.get(r["transaction_id"])
        if cur is None or rank(r) > rank(cur):
            best[r["transaction_id"]] = r
    return list(best.values())


class Metrics:
    def __init__(self, land: Landing) -> None:
        tz = {r["merchant_id"]: ZoneInfo(r["timezone"]) for r in land.records["merchants"]}
        self.payments: Counter[tuple[str, date]] = Counter()
        self.failed: Counter[tuple[str, date]] = Counter()
        self.refunds: Counter[tuple[str, date]] = Counter()
        self.hourly: Counter[tuple[str, date, int]] = Counter()
        self.units: Counter[tuple[str, str, date]] = Counter()
        self.unit_prices: dict[tuple[str, str], set[tuple[date, str]]] = defaultdict(set)
        self.ratings: dict[str, list[tuple[date, int]]] = defaultdict(list)
        for r in latest_transactions(land):
            mid = r["merchant_id"]
            local = parse_ts(r["occurred_at"]).astimezone(tz[mid])
            day = local.date()
            if r["type"] == "PAYMENT" and r["status"] == "SUCCESSFUL":
                self.payments[(mid, day)] += 1
                self.hourly[(mid, day, local.hour)] += 1
                for it in items_of(r) or []:
                    self.units[(mid, it["product_id"], day)] += it["quantity"]
                    self.unit_prices[(mid, it["product_id"])].add((day, str(it["unit_price"])))
            elif r["type"] == "PAYMENT" and r["status"] == "FAILED":
                self.failed[(mid, day)] += 1
            elif r["status"] == "SUCCESSFUL":
                self.refunds[(mid, day)] += 1
        for r in land.records["reviews"]:
            day = parse_ts(r["created_at"]).astimezone(tz[r["merchant_id"]]).date()
            self.ratings[r["merchant_id"]].append((day, int(r["rating"])))


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

# 28 days around the 2026 DST changes: Europe on 03-29, Sydney on 04-05.
MAIN = {"merchants": 6, "days": 28, "seed": 7, "end_date": date(2026, 4, 5)}


@pytest.fixture(scope="module")
def main_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerateSummary, Landing, list[tuple[int, int]]]:
    out = tmp_path_factory.mktemp("main") / "landing"
    calls: list[tuple[int, int]] = []
    summary = generate(
        GenerateConfig(out=out, fmt="csv.gz", **MAIN),  # type: ignore[arg-type]
        progress=lambda done, total: calls.append((done, total)),
    )
    return summary, load_landing(out), calls


@pytest.fixture(scope="module")
def land(main_run: tuple[GenerateSummary, Landing, list[tuple[int, int]]]) -> Landing:
    return main_run[1]


@pytest.fixture(scope="module")
def metrics(land: Landing) -> Metrics:
    return Metrics(land)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------


def test_layout_and_every_record_follow_the_contract(land: Landing) -> None:
    assert set(land.records) == set(CONTRACT)
    assert_no_errors(check_types(land))
    assert_no_errors(check_rules(land))


def test_summary_matches_files(main_run: tuple[GenerateSummary, Landing, list[tuple[int, int]]]) -> None:
    summary, land, _ = main_run
    for dataset in CONTRACT:
        assert summary.rows[dataset] == len(land.records[dataset]), dataset
    assert summary.labels_path == land.root / "labels.json"
    files = [p for p in land.root.rglob("*") if p.is_file()]
    assert summary.files == len(files)
    assert summary.bytes == sum(p.stat().st_size for p in files)
    assert summary.partitions == sum(len({r.dt for r in land.records[d]}) for d in CONTRACT)
    assert summary.start_date == date(2026, 3, 9) and summary.end_date == date(2026, 4, 5)


def test_progress_reports_every_merchant_day(main_run: tuple[GenerateSummary, Landing, list[tuple[int, int]]]) -> None:
    calls = main_run[2]
    total = MAIN["merchants"] * MAIN["days"]  # type: ignore[operator]
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_merchant_mix(land: Landing) -> None:
    merchants = land.records["merchants"]
    assert [m["merchant_id"] for m in merchants] == [f"M{i:04d}" for i in range(1, 7)]
    assert len({m["category"] for m in merchants}) == 6
    zones = {m["timezone"] for m in merchants}
    assert {"Europe/Berlin", "America/New_York", "Europe/London", "Asia/Tokyo"} <= zones
    assert len({m["name"] for m in merchants}) == len(merchants)


def test_timestamps_are_dst_correct(land: Landing) -> None:
    berlin = [r for r in land.records["transactions"] if r["merchant_id"] == "M0001"]
    offsets = {r["occurred_at"][-6:] for r in berlin}
    assert offsets == {"+01:00", "+02:00"}, offsets
    for r in berlin:
        if r["occurred_at"].startswith("2026-03-29T02:"):
            pytest.fail(f"{r['occurred_at']} does not exist in Europe/Berlin")
    for r in berlin:
        local = parse_ts(r["occurred_at"])
        expected = "+02:00" if local.date() > date(2026, 3, 29) else "+01:00"
        if local.date() != date(2026, 3, 29):
            assert r["occurred_at"].endswith(expected), r["occurred_at"]


def test_transactions_are_realistic(land: Landing) -> None:
    txs = land.records["transactions"]
    n = len(txs)
    assert n > 5000
    statuses = Counter(r["status"] for r in txs)
    assert 0.005 < statuses["FAILED"] / n < 0.1
    assert 0.002 < statuses["CANCELLED"] / n < 0.05
    types = Counter(r["type"] for r in txs)
    assert types["REFUND"] > 0
    assert Counter(r["payment_method"] for r in txs).keys() >= {"CARD", "CONTACTLESS", "WALLET", "CASH"}
    with_tip = [r for r in txs if money(r["tip_amount"] or 0) > 0]
    assert with_tip and all(r["payment_method"] in CARD_METHODS for r in with_tip if r["type"] == "PAYMENT")
    # Repeat customers, and payments without a customer.
    customers = Counter(r["customer_id"] for r in txs if r["customer_id"])
    assert customers.most_common(1)[0][1] >= 5
    assert any(r["customer_id"] is None for r in txs)
    locations: dict[str, set[str]] = defaultdict(set)
    for r in txs:
        if r["location_id"]:
            locations[r["merchant_id"]].add(r["location_id"])
    # location_id is only used by multi-location merchants.
    assert all(len(v) >= 2 for v in locations.values()), locations
    assert any(r["items"] is None for r in txs if r["type"] == "PAYMENT")
    assert sum(1 for r in txs if r["updated_at"]) > 0


def test_cafe_mornings_and_bar_evenings(land: Landing) -> None:
    cats = {m["merchant_id"]: m["category"] for m in land.records["merchants"]}
    hours: dict[str, Counter[int]] = defaultdict(Counter)
    for r in land.records["transactions"]:
        hours[cats[r["merchant_id"]]][int(r["occurred_at"][11:13])] += 1
    cafe, bar = hours["cafe"], hours["bar"]
    assert sum(cafe[h] for h in range(7, 12)) > 5 * sum(cafe[h] for h in range(18, 24))
    assert sum(bar[h] for h in range(18, 24)) > 5 * sum(bar[h] for h in range(7, 12))
    assert sum(cafe[h] for h in range(0, 6)) == 0


def test_labels_shape(land: Landing) -> None:
    labels = land.labels
    assert labels["config"]["seed"] == MAIN["seed"]
    ids = {m["merchant_id"] for m in land.records["merchants"]}
    start, end = date(2026, 3, 9), date(2026, 4, 5)
    kinds = set()
    for e in labels["events"]:
        assert {"merchant_id", "kind", "start_date", "end_date", "metric", "direction"} <= set(e)
        assert e["merchant_id"] in ids and e["kind"] in EVENT_KINDS
        assert e["direction"] in ("up", "down")
        assert start <= date.fromisoformat(e["start_date"]) <= date.fromisoformat(e["end_date"]) <= end
        kinds.add(e["kind"])
    assert kinds == EVENT_KINDS
    eventful = {e["merchant_id"] for e in labels["events"]}
    assert ids - eventful, "expected at least one quiet merchant"
    assert labels["redelivered"], "expected re-delivered records"


def test_injections_are_present_and_labelled(land: Landing) -> None:
    reviews = {r["review_id"]: r for r in land.records["reviews"]}
    injections = land.labels["injections"]
    in_reviews = [x for x in injections if x["dataset"] == "reviews"]
    assert len({x["merchant_id"] for x in in_reviews}) >= 2
    for x in in_reviews:
        text = reviews[x["record_id"]]["text"]
        assert "ignor" in text.lower() and x["target_merchant_id"] in text
    for x in (x for x in injections if x["dataset"] == "attachments"):
        assert "ignore" in (land.root / x["path"]).read_text(encoding="utf-8").lower()


def test_reviews_languages_and_empty_texts(land: Landing) -> None:
    texts = [r["text"] for r in land.records["reviews"]]
    assert any(t is None for t in texts)
    joined = "\n".join(t for t in texts if t)
    assert re.search(r"[\u3040-\u30ff]", joined), "no Japanese review"
    assert re.search(r"\b(und|sehr|nicht)\b", joined), "no German review"
    assert re.search(r"\b(the|and|was)\b", joined), "no English review"
    assert {r["source"] for r in land.records["reviews"]} == {"google", "app", "survey"}


def test_labelled_events_are_visible_in_the_data(land: Landing, metrics: Metrics) -> None:
    for e in land.labels["events"]:
        mid, kind = e["merchant_id"], e["kind"]
        start, end = date.fromisoformat(e["start_date"]), date.fromisoformat(e["end_date"])
        days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
        if kind == "product_stops_selling":
            pid = e["product_id"]
            after = sum(metrics.units[(mid, pid, d)] for d in days)
            before = sum(v for (m, p, d), v in metrics.units.items() if m == mid and p == pid and d < start)
            assert after == 0 and before > 0, (e, before, after)
            continue
        if kind == "rating_drop":
            inside = [r for d, r in metrics.ratings[mid] if start <= d <= end]
            outside = [r for d, r in metrics.ratings[mid] if not start <= d <= end]
            assert len(inside) >= 3 and outside, e
            assert sum(inside) / len(inside) <= sum(outside) / len(outside) - 1.0, e
            continue
        for d in days:
            base = d - timedelta(days=7)
            label = (e, d)
            if kind == "outage" and "start_hour" in e:
                hours = range(e["start_hour"], e["end_hour"])
                assert sum(metrics.hourly[(mid, d, h)] for h in hours) == 0, label
                assert sum(metrics.hourly[(mid, base, h)] for h in hours) > 0, label
            elif kind == "outage":
                assert metrics.payments[(mid, d)] < 0.2 * metrics.payments[(mid, base)], label
            elif kind == "demand_surge":
                ratio = metrics.payments[(mid, d)] / metrics.payments[(mid, base)]
                assert ratio >= 1 + 0.3 * e["magnitude"], (label, ratio)
            elif kind == "refund_spike":
                assert metrics.refunds[(mid, d)] >= max(4, 3 * metrics.refunds[(mid, base)]), label
            elif kind == "payment_failures":
                assert metrics.failed[(mid, d)] >= max(5, 4 * metrics.failed[(mid, base)]), label


def test_product_updates_change_prices_from_their_day(land: Landing, metrics: Metrics) -> None:
    updates = land.labels["product_updates"]
    assert updates
    for u in updates:
        key, dt = (u["merchant_id"], u["product_id"]), date.fromisoformat(u["dt"])
        sold = metrics.unit_prices.get(key, set())
        rows = [r for r in land.records["products"] if (r["merchant_id"], r["product_id"]) == key and r.dt == u["dt"]]
        assert len(rows) == 1, u
        if u["change"] == "price":
            assert {p for d, p in sold if d >= dt} <= {u["new_price"]}
            assert {p for d, p in sold if d < dt} <= {u["old_price"]}
        elif u["change"] == "added":
            assert all(d >= dt for d, _ in sold)
        elif u["change"] == "deactivated":
            assert rows[0]["active"] == "false"
            assert all(d < dt for d, _ in sold)


def test_redelivered_records_change_the_latest_version(land: Landing) -> None:
    latest = {r["transaction_id"]: r for r in latest_transactions(land)}
    firsts: dict[str, Rec] = {}
    for r in land.records["transactions"]:
        firsts.setdefault(r["transaction_id"], r)
    for x in land.labels["redelivered"]:
        new, old = latest[x["transaction_id"]], firsts[x["transaction_id"]]
        assert new.dt == x["redelivered_dt"] and old.dt == x["first_dt"]
        changed = {c for c in CONTRACT["transactions"] if new[c] != old[c]} - {"updated_at"}
        assert changed == set(x["fields"]), (x, changed)


def test_receipt_images_match_their_transaction(land: Landing) -> None:
    txs = {r["transaction_id"]: r for r in land.records["transactions"]}
    receipts = [a for a in land.labels["attachments"] if a["role"] == "receipt"]
    assert len(receipts) == MAIN["merchants"]
    for a in receipts:
        tid = a["facts"]["transaction_id"]
        if tid is not None:
            assert txs[tid]["amount"] == a["facts"]["total"]
        with Image.open(land.root / a["path"]) as im:
            assert im.width >= 600 and im.height >= 300
            gray = im.convert("L")
            hist = gray.histogram()
            assert sum(hist[:64]) > 1000 and sum(hist[192:]) > 0.7 * im.width * im.height


def test_pdf_has_text_layer_with_merchant_name(land: Landing) -> None:
    names = {m["merchant_id"]: m["name"] for m in land.records["merchants"]}
    pdfs = [r for r in land.records["attachments"] if r["content_type"] == "application/pdf"]
    assert pdfs
    for r in pdfs:
        data = (land.root / r["path"]).read_bytes()
        escaped = names[r["merchant_id"]].encode("cp1252").replace(b"(", b"\\(").replace(b")", b"\\)")
        assert escaped in data


def test_jsonl_format_and_file_splitting(tmp_path: Path) -> None:
    out = tmp_path / "landing"
    summary = generate(
        GenerateConfig(merchants=2, days=3, out=out, fmt="jsonl.gz", rows_per_file=150, end_date=date(2026, 3, 30))
    )
    land = load_landing(out)
    assert_no_errors(check_types(land))
    assert_no_errors(check_rules(land))
    files = land.files["transactions"]
    assert all(f.name.endswith(".jsonl.gz") for f in files)
    per_partition = Counter(f.parent.name for f in files)
    assert max(per_partition.values()) > 1, "expected partitions split into several files"
    assert summary.rows["transactions"] == len(land.records["transactions"])
    first = json.loads(gzip.decompress(files[0].read_bytes()).splitlines()[0])
    assert isinstance(first["items"], list | type(None))


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    cfg = {"merchants": 2, "days": 4, "end_date": date(2026, 3, 31), "fmt": "csv.gz"}
    a = _tree(generate(GenerateConfig(out=tmp_path / "a", seed=1, **cfg)).out)  # type: ignore[arg-type]
    b = _tree(generate(GenerateConfig(out=tmp_path / "b", seed=1, **cfg)).out)  # type: ignore[arg-type]
    c = _tree(generate(GenerateConfig(out=tmp_path / "c", seed=2, **cfg)).out)  # type: ignore[arg-type]
    assert a == b
    assert a.keys() & c.keys()
    differing = [k for k in a.keys() & c.keys() if a[k] != c[k]]
    assert any(k.startswith("transactions/") for k in differing)


def test_events_can_be_switched_off(tmp_path: Path) -> None:
    summary = generate(GenerateConfig(merchants=2, days=10, out=tmp_path / "x", events=False))
    labels = json.loads(summary.labels_path.read_text(encoding="utf-8"))
    assert labels["events"] == [] and summary.events == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"merchants": 0}, "merchants"),
        ({"days": 0}, "days"),
        ({"fmt": "xml"}, "fmt"),
        ({"volume": 0}, "volume"),
        ({"rows_per_file": 0}, "rows_per_file"),
        ({"end_date": "2026-01-01"}, "end_date"),
    ],
)
def test_invalid_config_is_a_one_line_value_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        GenerateConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_output_directory_rules(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        generate(GenerateConfig(merchants=1, days=1, out=a_file))

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match="not written by the synthetic generator"):
        generate(GenerateConfig(merchants=1, days=1, out=foreign, overwrite=True))
    assert (foreign / "keep.txt").read_text() == "precious"

    empty = tmp_path / "empty"
    empty.mkdir()
    generate(GenerateConfig(merchants=1, days=1, out=empty))
    assert (empty / "labels.json").is_file()

    out = tmp_path / "landing"
    generate(GenerateConfig(merchants=1, days=2, out=out))
    stale = out / "transactions" / "dt=2001-01-01"
    stale.mkdir()
    with pytest.raises(ValueError, match="overwrite"):
        generate(GenerateConfig(merchants=1, days=2, out=out))
    generate(GenerateConfig(merchants=2, days=2, out=out, overwrite=True))
    assert not stale.exists()
    assert len(load_landing(out).records["merchants"]) == 2
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers


def test_failed_run_leaves_nothing_behind(tmp_path: Path) -> None:
    def boom(done: int, total: int) -> None:
        if done > 3:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        generate(GenerateConfig(merchants=2, days=5, out=tmp_path / "landing"), progress=boom)
    assert list(tmp_path.iterdir()) == []


_MEMORY_SCRIPT = """
import sys
from pathlib import Path
from pipelines.synthetic import GenerateConfig, generate
s = generate(GenerateConfig(merchants=12, days=int(sys.argv[2]), volume=0.6, out=Path(sys.argv[1])))
print(s.rows["transactions"])
"""


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="needs os.wait4 for per-process peak RSS; runs on Linux and macOS")
def test_memory_stays_bounded_as_rows_grow(tmp_path: Path) -> None:
    # tracemalloc slows this allocation-heavy loop down ~10x, so measure the
    # peak RSS of child processes instead: 4x the rows must not cost 4x memory.
    def peak(days: int) -> tuple[int, int]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path / f"d{days}"), str(days)], stdout=subprocess.PIPE
        )
        _, status, usage = os.wait4(proc.pid, 0)
        assert proc.stdout is not None
        rows = int(proc.stdout.read())
        proc.stdout.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0
        return rows, usage.ru_maxrss * 1024  # Linux reports KiB

    rows_small, rss_small = peak(6)
    rows_big, rss_big = peak(30)
    assert rows_big > 4 * rows_small
    # Holding the extra rows as Python objects would cost ~1 KB each.
    assert rss_big - rss_small < 15_000_000 < (rows_big - rows_small) * 1000, (rows_big, rss_small, rss_big)
