"""Minor units to presentable amounts in a currency."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# ISO 4217 minor-unit exponents that are not 2 (the same table the loader uses).
CURRENCY_EXPONENTS: dict[str, int] = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip


def exponent(currency: str) -> int:
    """Decimal places of a currency's minor unit."""
    return CURRENCY_EXPONENTS.get(currency.upper(), 2)


def to_major(minor: int | Decimal, currency: str) -> Decimal:
    """Minor units (possibly fractional, e.g. an average) in major units, rounded half-up to the minor unit."""
    exp = exponent(currency)
    return (Decimal(minor).scaleb(-exp)).quantize(Decimal(1).scaleb(-exp), rounding=ROUND_HALF_UP)


def ratio(numerator: int | Decimal, denominator: int | Decimal) -> Decimal | None:
    """numerator / denominator, None for a zero denominator."""
    return Decimal(numerator) / Decimal(denominator) if denominator else None


def rounded(value: Decimal, places: int) -> Decimal:
    """Half-up rounding to ``places`` decimals."""
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


__all__ = ["CURRENCY_EXPONENTS", "exponent", "ratio", "rounded", "to_major"]
