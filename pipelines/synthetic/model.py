"""Merchant profiles: who each merchant is and the parameters of its demand.

A profile is built once per merchant from the seed and never changes during a
run, so every merchant-day can be simulated from (profile, day, effects) plus
the small bounded state kept in ``simulate.MerchantState``.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import accumulate
from typing import Literal
from zoneinfo import ZoneInfo

from .catalog import (
    ADJECTIVES,
    ANIMALS,
    CATEGORIES,
    CATEGORY_PROFILES,
    COUNTRIES,
    NAME_TEMPLATES,
    CategoryProfile,
    Country,
)
from .money import CURRENCY_EXPONENT, round_price

DATASET_COLUMNS: dict[str, tuple[str, ...]] = {
    "merchants": (
        "merchant_id",
        "name",
        "category",
        "country",
        "currency",
        "timezone",
        "created_at",
        "updated_at",
    ),
    "products": (
        "product_id",
        "merchant_id",
        "name",
        "category",
        "price",
        "description",
        "active",
        "updated_at",
    ),
    "transactions": (
        "transaction_id",
        "merchant_id",
        "occurred_at",
        "type",
        "status",
        "amount",
        "tip_amount",
        "currency",
        "payment_method",
        "card_scheme",
        "customer_id",
        "location_id",
        "refund_of",
        "items",
        "updated_at",
    ),
    "reviews": ("review_id", "merchant_id", "created_at", "rating", "text", "source"),
    "attachments": (
        "attachment_id",
        "merchant_id",
        "created_at",
        "kind",
        "content_type",
        "path",
        "note",
    ),
}

_MASK64 = (1 << 64) - 1


def derive_rng(seed: int, *parts: object) -> random.Random:
    """Return a ``random.Random`` seeded from the run seed and a stream name.

    Independent streams per merchant (and per merchant-day) keep output stable
    when unrelated parts of the simulation change.

    Args:
        seed: Run seed.
        *parts: Stream identifiers, e.g. ``("day", "M0001", "2026-03-01")``.

    Returns:
        A new generator whose sequence depends only on the arguments.
    """
    key = "\x1f".join([str(seed), *(str(p) for p in parts)]).encode()
    seed_int = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return random.Random(seed_int)  # noqa: S311 - synthetic data, reproducibility is the point


def format_offset(delta: timedelta) -> str:
    """Format a UTC offset as ``+HH:MM``."""
    total = int(delta.total_seconds())
    sign = "+" if total >= 0 else "-"
    hours, rem = divmod(abs(total), 3600)
    return f"{sign}{hours:02d}:{rem // 60:02d}"


def local_stamp(tz: ZoneInfo, day: date, hour: int, minute: int, second: int = 0) -> str:
    """ISO timestamp with the zone's offset for a wall-clock time that exists."""
    aware = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=tz)
    # Round-trip through UTC so that a time inside a DST gap moves forward.
    aware = aware.astimezone(ZoneInfo("UTC")).astimezone(tz)
    offset = aware.utcoffset()
    assert offset is not None
    return aware.strftime("%Y-%m-%dT%H:%M:%S") + format_offset(offset)


def utc_stamp(moment: datetime) -> str:
    """ISO timestamp of an aware datetime in UTC with a ``Z`` suffix."""
    return moment.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Product:
    """A product as sold by one merchant; prices are in minor units."""

    product_id: str
    name: str
    category: str | None
    description: str | None
    price_minor: int
    weight: float


@dataclass(frozen=True, slots=True)
class ProductChange:
    """A catalogue change re-exported in the products partition of its day."""

    day_index: int
    product_id: str
    change: Literal["price", "added", "deactivated"]
    old_price_minor: int | None
    new_price_minor: int | None


@dataclass(frozen=True)
class MerchantProfile:
    """Static description and demand parameters of one merchant."""

    index: int
    merchant_id: str
    name: str
    category: str
    country: Country
    cat: CategoryProfile
    tz: ZoneInfo
    exponent: int
    created_at: str
    base_daily: float
    growth: float
    weekday: tuple[float, ...]
    hours: tuple[float, ...]
    hours_cum: tuple[float, ...]
    locations: tuple[str, ...]
    locations_cum: tuple[float, ...]
    products: tuple[Product, ...]
    added: tuple[Product, ...]
    changes: tuple[ProductChange, ...]
    tip_prob: float
    quality: float
    review_rate: float
    customer_pool: int
    customer_salt: int
    basket_cum: tuple[float, ...]
    methods_cum: tuple[float, ...]
    schemes: tuple[str, ...]
    schemes_cum: tuple[float, ...]

    @property
    def currency(self) -> str:
        """ISO 4217 code of every money value of this merchant."""
        return self.country.currency

    @property
    def timezone(self) -> str:
        """IANA time zone name."""
        return self.country.timezone

    def is_open(self, day: date) -> bool:
        """Whether the merchant trades at all on this weekday."""
        return self.weekday[day.weekday()] > 0

    def customer_id(self, idx: int) -> str:
        """Pseudonymous, stable customer id for pool slot ``idx``."""
        # An odd multiplier mod 2**64 is a bijection, so slots never collide
        # before truncation; the xor-shifts only make ids look opaque.
        x = (idx * 0x9E3779B97F4A7C15 + self.customer_salt) & _MASK64
        x ^= x >> 31
        x = (x * 0xBF58476D1CE4E5B9) & _MASK64
        x ^= x >> 29
        return f"cus_{x & 0xFFFFFFFFFFFF:012x}"

    def products_on(self, day_index: int) -> list[tuple[Product, bool]]:
        """Catalogue on a day as (product with current price, active) pairs."""
        price: dict[str, int] = {}
        inactive: set[str] = set()
        added_from: dict[str, int] = {}
        for ch in self.changes:
            if ch.change == "added":
                added_from[ch.product_id] = ch.day_index
            if ch.day_index > day_index:
                continue
            if ch.change == "price" and ch.new_price_minor is not None:
                price[ch.product_id] = ch.new_price_minor
            elif ch.change == "deactivated":
                inactive.add(ch.product_id)
        out: list[tuple[Product, bool]] = []
        for p in (*self.products, *self.added):
            if added_from.get(p.product_id, 0) > day_index:
                continue
            if p.product_id in price:
                p = Product(p.product_id, p.name, p.category, p.description, price[p.product_id], p.weight)
            out.append((p, p.product_id not in inactive))
        return out

    def top_product(self) -> Product:
        """Best-selling product that no catalogue change touches."""
        changed = {c.product_id for c in self.changes}
        stable = [p for p in self.products if p.product_id not in changed]
        return max(stable, key=lambda p: (p.weight, p.product_id))


def _cum(weights: tuple[float, ...] | list[float]) -> tuple[float, ...]:
    return tuple(accumulate(weights))


def _merchant_name(rng: random.Random, category: str, country: Country, used: set[str]) -> str:
    templates = NAME_TEMPLATES[category].get(country.code, NAME_TEMPLATES[category]["*"])
    for _ in range(12):
        animal, animal2 = rng.sample(ANIMALS, 2)
        name = rng.choice(templates).format(
            surname=rng.choice(country.surnames),
            place=rng.choice(country.places),
            adj=rng.choice(ADJECTIVES),
            animal=animal,
            animal2=animal2,
        )
        if name not in used:
            return name
    return f"{name} {country.city} {len(used) + 1}"


def _build_products(
    rng: random.Random, cat: CategoryProfile, country: Country, exponent: int, days: int
) -> tuple[tuple[Product, ...], tuple[Product, ...], tuple[ProductChange, ...]]:
    chosen = [item for item in cat.items if rng.random() < 0.82]
    if len(chosen) < 8:
        chosen = list(cat.items[:8])
    level = rng.uniform(0.9, 1.15)
    scale = country.price_factor * level * 10**exponent
    ranks = list(range(len(chosen)))
    rng.shuffle(ranks)
    products = tuple(
        Product(
            product_id=f"P{i + 1:03d}",
            name=item.name,
            # Some exports leave optional columns empty; keep that realistic.
            category=item.category if rng.random() < 0.9 else None,
            description=item.description,
            price_minor=round_price(item.price_eur * scale * rng.uniform(0.95, 1.05), exponent),
            weight=1.0 / (ranks[i] + 1) ** 0.85,
        )
        for i, item in enumerate(chosen)
    )
    if days < 10 or rng.random() < 0.4:
        return products, (), ()
    day = rng.randint(days // 3, (2 * days) // 3)
    top = max(products, key=lambda p: (p.weight, p.product_id))
    candidates = [p for p in products if p is not top]
    changes: list[ProductChange] = []
    for p in sorted(rng.sample(candidates, 2), key=lambda p: p.product_id):
        new = round_price(p.price_minor * rng.uniform(1.06, 1.15), exponent)
        if new == p.price_minor:
            new += 10 if exponent == 0 else 5
        changes.append(ProductChange(day, p.product_id, "price", p.price_minor, new))
    weights = sorted(p.weight for p in products)
    seasonal = Product(
        product_id=f"P{len(products) + 1:03d}",
        name=cat.seasonal.name,
        category=cat.seasonal.category,
        description=cat.seasonal.description,
        price_minor=round_price(cat.seasonal.price_eur * scale, exponent),
        weight=weights[len(weights) // 2],
    )
    changes.append(ProductChange(day, seasonal.product_id, "added", None, seasonal.price_minor))
    changed = {c.product_id for c in changes}
    if rng.random() < 0.5:
        low = min((p for p in candidates if p.product_id not in changed), key=lambda p: (p.weight, p.product_id))
        changes.append(ProductChange(day, low.product_id, "deactivated", low.price_minor, None))
    return products, (seasonal,), tuple(changes)


def build_merchants(seed: int, count: int, start: date, days: int, volume: float) -> list[MerchantProfile]:
    """Build the deterministic merchant population of a run.

    Args:
        seed: Run seed.
        count: Number of merchants (ids ``M0001`` ...).
        start: First generated day.
        days: Number of generated days.
        volume: Multiplier on every merchant's daily transaction volume.

    Returns:
        One profile per merchant in id order.
    """
    used: set[str] = set()
    out: list[MerchantProfile] = []
    for i in range(count):
        rng = derive_rng(seed, "merchant", i)
        country = COUNTRIES[i % len(COUNTRIES)]
        # Shift the category each full rotation so countries see every category.
        category = CATEGORIES[(i + i // len(COUNTRIES)) % len(CATEGORIES)]
        cat = CATEGORY_PROFILES[category]
        tz = ZoneInfo(country.timezone)
        exponent = CURRENCY_EXPONENT[country.currency]
        name = _merchant_name(rng, category, country, used)
        used.add(name)
        merchant_id = f"M{i + 1:04d}"

        n_loc = 1
        if rng.random() < 0.3:
            n_loc = rng.choice((2, 2, 3))
        base = rng.uniform(*cat.volume) * (1 + 0.6 * (n_loc - 1))
        base = min(base, 600.0) * volume
        locations = tuple(f"{merchant_id}-L{k + 1}" for k in range(n_loc)) if n_loc > 1 else ()
        loc_weights = [1.0 / (k + 1) for k in range(n_loc)]

        weekday = [w * rng.uniform(0.95, 1.05) for w in cat.weekday]
        if category == "restaurant" and rng.random() < 0.35:
            weekday[0] = 0.0  # closed on Mondays
        hours = tuple(w * rng.uniform(0.85, 1.15) for w in cat.hours)

        created = start - timedelta(days=rng.randint(180, 2400))
        created_at = local_stamp(tz, created, rng.randint(8, 17), rng.randint(0, 59), rng.randint(0, 59))

        products, added, changes = _build_products(rng, cat, country, exponent, days)
        schemes = tuple(s for s, _ in country.schemes)
        out.append(
            MerchantProfile(
                index=i,
                merchant_id=merchant_id,
                name=name,
                category=category,
                country=country,
                cat=cat,
                tz=tz,
                exponent=exponent,
                created_at=created_at,
                base_daily=base,
                growth=rng.uniform(-0.9, 1.1),
                weekday=tuple(weekday),
                hours=hours,
                hours_cum=_cum(hours),
                locations=locations,
                locations_cum=_cum(loc_weights),
                products=products,
                added=added,
                changes=changes,
                tip_prob=min(0.9, cat.tip_rate * country.tip_culture),
                quality=rng.uniform(3.7, 4.6),
                review_rate=min(2.5, max(0.4, base / 160)),
                customer_pool=max(50, int(base * 8)),
                customer_salt=rng.getrandbits(64),
                basket_cum=_cum(cat.basket_lines),
                methods_cum=_cum(country.methods),
                schemes=schemes,
                schemes_cum=_cum([w for _, w in country.schemes]),
            )
        )
    return out
