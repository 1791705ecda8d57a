"""The generator's entry point: plan, simulate day by day, write, label.

Output is built in a hidden sibling directory and renamed into place at the
end, so a failed run never leaves a half-written landing root behind, and an
existing root is only replaced once the new one is complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from .attachments import AttachmentSpec, build_attachment, plan_attachments
from .config import GenerateConfig, GenerateSummary
from .events import Event, effects_on, is_quiet, plan_events
from .model import DATASET_COLUMNS, MerchantProfile, build_merchants, derive_rng, local_stamp
from .money import format_minor
from .reviews import simulate_reviews
from .simulate import DayClock, MerchantState, make_clock, simulate_day
from .writers import PartitionWriter

logger = logging.getLogger(__name__)

GENERATOR_NAME = "merchant-copilot-synthetic"
LABELS_FILE = "labels.json"
LABELS_VERSION = 1
DATASETS = ("merchants", "products", "transactions", "reviews", "attachments")
_OWNED = frozenset({*DATASETS, LABELS_FILE})

ProgressFn = Callable[[int, int], None]


def is_generator_output(path: Path) -> bool:
    """Whether ``path`` holds only what a previous run of this generator wrote.

    Args:
        path: A directory.

    Returns:
        True if it has our ``labels.json`` marker and nothing foreign.
    """
    try:
        names = {p.name for p in path.iterdir()}
        labels = json.loads((path / LABELS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(labels, dict) and labels.get("generator") == GENERATOR_NAME and names <= _OWNED


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not is_generator_output(out):
        raise ValueError(
            f"output directory {out} is not empty and was not written by the synthetic generator; refusing to touch it"
        )
    if not overwrite:
        raise ValueError(f"output directory {out} already holds generated data; pass overwrite=True to replace it")


def generate(config: GenerateConfig, progress: ProgressFn | None = None) -> GenerateSummary:
    """Generate a synthetic landing zone that follows the data contract.

    The run streams day by day and merchant by merchant, so memory stays
    bounded whatever the number of rows. The same config always produces
    byte-identical files.

    Args:
        config: What to generate and where.
        progress: Called as ``progress(done, total)`` with merchant-days as
            units, once before the first and after every merchant-day.

    Returns:
        Counts of what was written.

    Raises:
        ValueError: If ``config.out`` cannot be used (a file, a foreign
            non-empty directory, or previous output without ``overwrite``).
    """
    out = Path(config.out)
    _check_target(out, config.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    # mkdtemp creates 0700; give the final directory the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        summary = _Run(config, tmp, progress).execute()
        if out.is_dir():
            # Re-check right before deleting anything.
            _check_target(out, config.overwrite)
            if any(out.iterdir()):
                shutil.rmtree(out)
            else:
                out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary.out = out
    summary.labels_path = out / LABELS_FILE
    logger.info(
        "synthetic.generated",
        extra={"out": str(out), "rows": summary.rows, "files": summary.files, "bytes": summary.bytes},
    )
    return summary


class _Run:
    """State of one generation run (writers, merchants, labels)."""

    def __init__(self, config: GenerateConfig, root: Path, progress: ProgressFn | None) -> None:
        self.config = config
        self.root = root
        self.progress = progress
        self.first = config.first_day
        self.days = config.days
        self.seed = config.seed
        self.profiles = build_merchants(self.seed, config.merchants, self.first, self.days, config.volume)
        self.events: dict[str, list[Event]] = {
            p.merchant_id: plan_events(p, self.first, self.days, self.seed) if config.events else []
            for p in self.profiles
        }
        self.injection_day = self.days // 2
        self.attachments: dict[str, list[AttachmentSpec]] = {}
        for p in self.profiles:
            avoid = {d for e in self.events[p.merchant_id] for d in range(e.start, e.end + 1)}
            target = self._injection_target(p, "attachments")
            self.attachments[p.merchant_id] = plan_attachments(p, self.first, self.days, self.seed, avoid, target)
        cols = DATASET_COLUMNS
        self.w_merchants = PartitionWriter(root, "merchants", cols["merchants"])
        self.w_products = PartitionWriter(root, "products", cols["products"], bool_columns=("active",))
        self.w_tx = PartitionWriter(
            root, "transactions", cols["transactions"], config.fmt, config.rows_per_file, json_columns=("items",)
        )
        self.w_reviews = PartitionWriter(root, "reviews", cols["reviews"])
        self.w_attach = PartitionWriter(root, "attachments", cols["attachments"])
        self.binaries = 0
        self.binary_bytes = 0
        self.redelivered: list[dict[str, Any]] = []
        self.injections: list[dict[str, Any]] = []
        self.attachment_labels: list[dict[str, Any]] = []
        self.product_updates: list[dict[str, Any]] = []

    def _injection_target(self, profile: MerchantProfile, dataset: str) -> str | None:
        # A couple of merchants carry a review injection, another one a
        # poisoned attachment, whatever the run size.
        slot = profile.index % 25
        if (dataset == "reviews" and slot in (0, 1)) or (dataset == "attachments" and slot == 1):
            return "M0002" if profile.merchant_id != "M0002" else "M0001"
        return None

    def execute(self) -> GenerateSummary:
        total = self.days * len(self.profiles)
        done = 0
        if self.progress is not None:
            self.progress(0, total)
        self._write_merchants()
        self._write_initial_products()
        states = {p.merchant_id: MerchantState() for p in self.profiles}
        for d in range(self.days):
            day = self.first + timedelta(days=d)
            dt = day.isoformat()
            clocks: dict[str, DayClock] = {}
            self._write_product_updates(d, day)
            for p in self.profiles:
                clock = clocks.get(p.timezone)
                if clock is None:
                    clock = clocks[p.timezone] = make_clock(p.tz, day, d)
                self._merchant_day(p, states[p.merchant_id], clock, dt)
                done += 1
                if self.progress is not None:
                    self.progress(done, total)
        for w in self._writers():
            w.close()
        labels_bytes = self._write_labels()
        writers = self._writers()
        return GenerateSummary(
            out=self.root,
            start_date=self.first,
            end_date=self.config.last_day,
            merchants=len(self.profiles),
            rows={w.dataset: w.rows for w in writers},
            partitions=sum(len(w.partitions) for w in writers),
            files=sum(w.files for w in writers) + self.binaries + 1,
            bytes=sum(w.bytes for w in writers) + self.binary_bytes + labels_bytes,
            labels_path=self.root / LABELS_FILE,
            events=sum(len(v) for v in self.events.values()),
            redelivered=len(self.redelivered),
            injections=len(self.injections),
        )

    def _writers(self) -> list[PartitionWriter]:
        return [self.w_merchants, self.w_products, self.w_tx, self.w_reviews, self.w_attach]

    def _merchant_day(self, p: MerchantProfile, state: MerchantState, clock: DayClock, dt: str) -> None:
        d = clock.day_index
        effects = effects_on(self.events[p.merchant_id], d)
        specs = [s for s in self.attachments[p.merchant_id] if s.day_index == d]
        rng = derive_rng(self.seed, "day", p.merchant_id, dt)
        out = simulate_day(
            p,
            state,
            clock,
            effects,
            rng,
            self.days,
            self.redelivered,
            want_receipt=any(s.role == "receipt" for s in specs),
        )
        self.w_tx.write(dt, out.rows)

        target = self._injection_target(p, "reviews") if d == self.injection_day else None
        names = state.view(p, d, frozenset()).names
        rows, labels = simulate_reviews(
            p, clock, effects, derive_rng(self.seed, "reviews", p.merchant_id, dt), names, target
        )
        self.w_reviews.write(dt, rows)
        self.injections.extend(labels)

        manifest = []
        for spec in specs:
            data, note, facts = build_attachment(spec, p, clock.day, out.receipt, self.seed)
            rel = f"attachments/dt={dt}/{p.merchant_id}/{spec.attachment_id}.{spec.ext}"
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            self.binaries += 1
            self.binary_bytes += len(data)
            if spec.role == "receipt" and out.receipt is not None and clock.valid(out.receipt.secs + 120):
                created = clock.stamp(out.receipt.secs + 120)
            else:
                created = local_stamp(p.tz, clock.day, 20, 5 + 7 * int(spec.attachment_id[-2:]))
            manifest.append([spec.attachment_id, p.merchant_id, created, spec.kind, spec.content_type, rel, note])
            self.attachment_labels.append(
                {
                    "attachment_id": spec.attachment_id,
                    "merchant_id": p.merchant_id,
                    "dt": dt,
                    "role": spec.role,
                    "content_type": spec.content_type,
                    "path": rel,
                    "facts": facts,
                }
            )
            if spec.injection_target is not None:
                self.injections.append(
                    {
                        "kind": "injection",
                        "dataset": "attachments",
                        "merchant_id": p.merchant_id,
                        "record_id": spec.attachment_id,
                        "dt": dt,
                        "target_merchant_id": spec.injection_target,
                        "path": rel,
                    }
                )
        self.w_attach.write(dt, manifest)

    def _write_merchants(self) -> None:
        rows = []
        for p in self.profiles:
            rng = derive_rng(self.seed, "merchant-row", p.merchant_id)
            updated = ""
            if rng.random() < 0.5:
                updated = local_stamp(p.tz, self.first - timedelta(days=rng.randint(1, 30)), 9, rng.randint(0, 59))
            rows.append(
                [p.merchant_id, p.name, p.category, p.country.code, p.currency, p.timezone, p.created_at, updated]
            )
        self.w_merchants.write(self.first.isoformat(), rows)

    def _product_row(self, p: MerchantProfile, product_id: str, day_index: int, updated: str, active: str) -> list[str]:
        for prod, _ in p.products_on(day_index):
            if prod.product_id == product_id:
                return [
                    prod.product_id,
                    p.merchant_id,
                    prod.name,
                    prod.category or "",
                    format_minor(prod.price_minor, p.exponent),
                    prod.description or "",
                    active,
                    updated,
                ]
        raise KeyError(product_id)

    def _write_initial_products(self) -> None:
        rows = []
        for p in self.profiles:
            rng = derive_rng(self.seed, "product-rows", p.merchant_id)
            for prod in p.products:
                updated = ""
                if rng.random() < 0.7:
                    updated = local_stamp(p.tz, self.first - timedelta(days=rng.randint(1, 90)), 22, rng.randint(0, 59))
                # Leave ``active`` empty sometimes: the contract defaults it to true.
                active = "" if rng.random() < 0.1 else "true"
                rows.append(self._product_row(p, prod.product_id, 0, updated, active))
        self.w_products.write(self.first.isoformat(), rows)

    def _write_product_updates(self, d: int, day: date) -> None:
        rows = []
        for p in self.profiles:
            for ch in p.changes:
                if ch.day_index != d or d == 0:
                    continue
                updated = local_stamp(p.tz, day, 6, 30)
                active = "false" if ch.change == "deactivated" else "true"
                row = self._product_row(p, ch.product_id, d, updated, active)
                rows.append(row)
                self.product_updates.append(
                    {
                        "merchant_id": p.merchant_id,
                        "product_id": ch.product_id,
                        "product_name": row[2],
                        "dt": day.isoformat(),
                        "change": ch.change,
                        "old_price": None
                        if ch.old_price_minor is None
                        else format_minor(ch.old_price_minor, p.exponent),
                        "new_price": None
                        if ch.new_price_minor is None
                        else format_minor(ch.new_price_minor, p.exponent),
                    }
                )
        self.w_products.write(day.isoformat(), rows)

    def _write_labels(self) -> int:
        labels = {
            "generator": GENERATOR_NAME,
            "version": LABELS_VERSION,
            "config": {
                "merchants": self.config.merchants,
                "days": self.days,
                "seed": self.seed,
                "start_date": self.first.isoformat(),
                "end_date": self.config.last_day.isoformat(),
                "fmt": self.config.fmt,
                "events": self.config.events,
                "volume": self.config.volume,
            },
            "merchants": [
                {
                    "merchant_id": p.merchant_id,
                    "name": p.name,
                    "category": p.category,
                    "country": p.country.code,
                    "currency": p.currency,
                    "timezone": p.timezone,
                    "quiet": is_quiet(p.index) or not self.events[p.merchant_id],
                    "locations": list(p.locations),
                    "trend_annual": round(p.growth, 3),
                    "base_daily_transactions": round(p.base_daily, 1),
                }
                for p in self.profiles
            ],
            "events": [e.label(self.first) for p in self.profiles for e in self.events[p.merchant_id]],
            "redelivered": self.redelivered,
            "injections": self.injections,
            "product_updates": self.product_updates,
            "attachments": self.attachment_labels,
        }
        data = (json.dumps(labels, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        (self.root / LABELS_FILE).write_bytes(data)
        return len(data)
