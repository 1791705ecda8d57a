"""Helpers that write landing files for the ingest tests (the ``ctx`` fixture is in tests/pipelines/conftest.py)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_csv(
    root: Path, dataset: str, dt: str, name: str, header: Sequence[str], rows: Sequence[Sequence[Any]]
) -> Path:
    """Write one landing CSV (``.csv.gz`` when ``name`` ends so)."""
    folder = root / dataset / f"dt={dt}"
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    path = folder / name
    data = buffer.getvalue().encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def write_jsonl(root: Path, dataset: str, dt: str, name: str, records: Sequence[dict[str, Any]]) -> Path:
    folder = root / dataset / f"dt={dt}"
    folder.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path = folder / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


MERCHANT_HEADER = ("merchant_id", "name", "category", "country", "currency", "timezone", "created_at", "updated_at")
TXN_HEADER = (
    "transaction_id", "merchant_id", "occurred_at", "type", "status", "amount", "tip_amount", "currency",
    "payment_method", "card_scheme", "customer_id", "location_id", "refund_of", "items", "updated_at",
)  # fmt: skip


def base_landing(root: Path) -> Path:
    """Two merchants (EUR/Berlin, JPY/Tokyo) in partition 2026-03-01."""
    write_csv(
        root, "merchants", "2026-03-01", "m.csv", MERCHANT_HEADER,
        [
            ("M1", "Café Eins", "cafe", "DE", "EUR", "Europe/Berlin", "2025-01-01T00:00:00Z", None),
            ("M2", "Ramen Ni", "restaurant", "JP", "JPY", "Asia/Tokyo", "2025-01-01T00:00:00+09:00", None),
        ],
    )  # fmt: skip
    return root


def txn(tid: str, merchant: str = "M1", **overrides: Any) -> dict[str, Any]:
    """A valid transaction record (as text fields) with overrides."""
    record: dict[str, Any] = {
        "transaction_id": tid, "merchant_id": merchant, "occurred_at": "2026-03-01T10:00:00+01:00",
        "type": "PAYMENT", "status": "SUCCESSFUL", "amount": "7.60", "tip_amount": "0.60",
        "currency": "EUR" if merchant == "M1" else "JPY", "payment_method": "CARD", "card_scheme": "VISA",
        "customer_id": "c1", "location_id": None, "refund_of": None,
        "items": json.dumps([{"product_id": "P1", "quantity": 2, "unit_price": "3.50"}]), "updated_at": None,
    }  # fmt: skip
    if merchant == "M2":
        record.update(
            amount="900", tip_amount="0", items=json.dumps([{"product_id": "R1", "quantity": 1, "unit_price": 900}])
        )
    record.update(overrides)
    return record


def txn_rows(records: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(r.get(c) for c in TXN_HEADER) for r in records]
