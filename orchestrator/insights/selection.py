"""From candidates to the few insights worth a merchant's attention today.

Order of operations, per merchant:

1. **Score**: ``confidence x (|impact| / typical daily net sales + severity)``.
   Dividing by the merchant's own typical day makes scores comparable across
   currencies and sizes; ``severity`` ranks findings without money (ratings)
   and is never shown as money.
2. **Dedup by key**: the same key twice keeps the higher score; a key
   already stored (an earlier run of this day, or an earlier day that saw the
   same stock-out run) is not reported again.
3. **One root cause, one insight**: candidates of the same family whose
   periods overlap are folded into the most specific cause (an outage
   explains the transaction drop, the net-sales drop and the failed payments
   of that day; a stock-out of the best seller explains a new best seller).
   Absorbed candidates stay in ``related`` and their facts are kept.
4. **Cooldown**: a candidate sharing a signature ``(kind, metric, subject,
   direction)`` (its own or one it absorbed) with an insight stored within
   the kind's cooldown, or whose period overlaps such an insight, is
   suppressed.
5. **Budget**: at most ``budget_per_day`` insights per merchant and
   ``as_of``, counting those already stored for that day, highest score first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType

from orchestrator.insights.types import Fact, Insight, Signature

# Family and rank (lower = more specific cause) of each kind.
_CAUSES: Mapping[str, tuple[str, int]] = MappingProxyType(
    {
        "outage": ("volume", 0),
        "payment_failures": ("volume", 1),
        "refund_spike": ("volume", 2),
        "transactions_anomaly": ("volume", 3),
        "sales_anomaly": ("volume", 4),
        "new_best_hour": ("volume", 5),
        "stock_out": ("product", 0),
        "product_drop": ("product", 1),
        "new_best_product": ("product", 2),
        "review_shift": ("reviews", 0),
    }
)
# What each kind does to the day's sales (None: follows the candidate's direction).
_SALES_EFFECT: Mapping[str, str | None] = MappingProxyType(
    {"outage": "down", "payment_failures": "down", "refund_spike": "down", "new_best_hour": "up"}
)

DEFAULT_COOLDOWN_DAYS: Mapping[str, int] = MappingProxyType(
    {"review_shift": 14, "new_best_product": 14, "new_best_hour": 7, "stock_out": 7}
)


@dataclass(frozen=True)
class SelectionConfig:
    """Budget, cooldowns and the minimum score."""

    budget_per_day: int = 3
    default_cooldown_days: int = 3
    cooldown_days: Mapping[str, int] = field(default_factory=lambda: DEFAULT_COOLDOWN_DAYS)
    # Below this, a finding moves less than ~2% of a typical day even when certain.
    min_score: float = 0.02

    def cooldown_for(self, kind: str) -> int:
        """Cooldown of a kind in days."""
        return self.cooldown_days.get(kind, self.default_cooldown_days)


DEFAULT_SELECTION = SelectionConfig()


@dataclass(frozen=True)
class StoredInsight:
    """What selection needs to know about an insight stored earlier."""

    kind: str
    as_of: date
    period_start: date
    period_end: date
    dedup_key: str
    signatures: frozenset[Signature]


@dataclass
class Selection:
    """The insights to report, and why the others were not."""

    selected: list[Insight] = field(default_factory=list)
    suppressed: list[tuple[Insight, str]] = field(default_factory=list)


def score(candidate: Insight) -> float:
    """Confidence times impact relative to the merchant's typical day (plus severity)."""
    typical = max(1, candidate.typical_daily_minor)
    return round(candidate.confidence * (abs(candidate.impact_minor) / typical + candidate.severity), 6)


def _effect(c: Insight) -> str:
    return _SALES_EFFECT.get(c.kind) or c.direction


def explains(cause: Insight, other: Insight) -> bool:
    """Whether ``cause`` and ``other`` are one root cause, reported as ``cause``."""
    family, _ = _CAUSES.get(cause.kind, (cause.kind, 0))
    other_family, _ = _CAUSES.get(other.kind, (other.kind, 0))
    if family != other_family or cause.merchant_id != other.merchant_id or not cause.overlaps(other):
        return False
    if family == "volume":
        if cause.kind == "refund_spike" and other.kind != "sales_anomaly":
            return False  # refunds move net sales, not the payment count
        return _effect(cause) == _effect(other)
    if family == "product":
        linked = {other.subject, other.evidence.get("previous_best")}
        return cause.subject in linked
    return True


def merge_root_causes(candidates: Iterable[Insight]) -> list[Insight]:
    """Fold candidates explained by a more specific (or stronger) one into it."""
    ordered = sorted(candidates, key=lambda c: (_CAUSES.get(c.kind, ("", 9))[1], -c.score, c.dedup_key))
    kept: list[Insight] = []
    for c in ordered:
        host = next((k for k in kept if explains(k, c)), None)
        if host is None:
            kept.append(c)
            continue
        host.related.append(c)
        host.related.extend(c.related)
        host.facts.extend(
            Fact(f"{c.kind}.{f.name}", f.value, f.unit, f.period_start, f.period_end, f.source, f.currency)
            for f in c.facts
        )
    return kept


def select(
    candidates: Iterable[Insight],
    as_of: date,
    history: Iterable[StoredInsight] = (),
    config: SelectionConfig = DEFAULT_SELECTION,
) -> Selection:
    """Choose what to report for one merchant on ``as_of``.

    Args:
        candidates: The merchant's candidates from :func:`detectors.detect`.
        as_of: The day being analysed.
        history: Insights stored for this merchant before (see ``store.load_history``).
        config: Budget, cooldowns and minimum score.

    Returns:
        Selected insights (score set, best first) and suppressed ones with a reason.
    """
    out = Selection()
    stored = list(history)
    stored_keys = {s.dedup_key for s in stored}
    by_key: dict[str, Insight] = {}
    for c in candidates:
        c.score = score(c)
        previous = by_key.get(c.dedup_key)
        if previous is None or c.score > previous.score:
            if previous is not None:
                out.suppressed.append((previous, "duplicate_key"))
            by_key[c.dedup_key] = c
        else:
            out.suppressed.append((c, "duplicate_key"))
    fresh: list[Insight] = []
    for c in by_key.values():
        if c.dedup_key in stored_keys:
            out.suppressed.append((c, "already_reported"))
        else:
            fresh.append(c)
    remaining: list[Insight] = []
    for c in merge_root_causes(fresh):
        reason = _cooldown_reason(c, as_of, stored, config)
        if reason is not None:
            out.suppressed.append((c, reason))
        elif c.score < config.min_score:
            out.suppressed.append((c, "low_score"))
        else:
            remaining.append(c)
    budget = max(0, config.budget_per_day - sum(1 for s in stored if s.as_of == as_of))
    remaining.sort(key=lambda c: (-c.score, c.dedup_key))
    out.selected = remaining[:budget]
    out.suppressed.extend((c, "budget") for c in remaining[budget:])
    return out


def _cooldown_reason(c: Insight, as_of: date, stored: list[StoredInsight], config: SelectionConfig) -> str | None:
    mine = c.signatures()
    for s in stored:
        if not (mine & s.signatures):
            continue
        if s.period_start <= c.period_end and c.period_start <= s.period_end:
            return "overlaps_reported"
        if 0 <= (as_of - s.as_of).days < config.cooldown_for(c.kind):
            return "cooldown"
    return None
