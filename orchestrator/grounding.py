"""The grounding verifier: every number in a draft must be a computed value.

Numbers come from code; a model only words them. :func:`verify_draft` reads
every number written in a draft (``1,234.56``, ``1.234,56``, ``€12``,
``12.5 %``, ``1.2k``, ``-3``) and checks it against the computed
:class:`Figure` values within *display rounding*: a number written with ``d``
decimals matches a value that rounds (half up) to it at ``d`` decimals, so
``1,235`` and ``1,234.6`` both stand for ``1234.56`` but ``1,234.57`` and
``1,230`` do not. Each unmatched number is reported with why:

- ``invented``: no computed value is anywhere near it;
- ``misrounded``: it is close to a computed value but not a correct rounding of it;
- ``wrong_period``: it is a computed value, but the sentence it sits in names
  another period than the one(s) that value was computed for.

Numbers that are not quantities are allowed: dates (``2026-03-02``, ``2 March``,
``14:00``, ISO weeks), and numbers the caller passes as context (from the
question, period labels and product names). Everything is deterministic and
language-neutral; the decimal comma of French, German or Spanish is read as
such when that reading matches.

    figures = [Figure(value=Decimal("1234.56"), unit="EUR", start=date(2026, 3, 2), end=date(2026, 3, 9),
                      names=("last week",))]
    verify_draft("Net sales last week: €1,234.56.", figures).ok     # True
    verify_draft("Net sales last week: €1,300.", figures).issues    # [invented 1,300]
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Literal

Reason = Literal["invented", "misrounded", "wrong_period"]


@dataclass(frozen=True)
class Figure:
    """One computed value the draft may cite.

    Attributes:
        value: The value in display units (major currency units, a count, a percentage).
        unit: Currency code, count noun or ``%``.
        start: First merchant-local day the value covers.
        end: Day after the last one (half-open), like :class:`core.metrics.Period`.
        names: How the period was named to the model ("last week", "2026-03-02 to 2026-03-08"),
            used to tell which period a sentence talks about.
        label: What the value is ("Net sales"), for error messages.
    """

    value: Decimal
    unit: str
    start: date
    end: date
    names: tuple[str, ...] = ()
    label: str = ""


@dataclass(frozen=True)
class GroundingIssue:
    """One number of the draft that no computed value supports."""

    number: str
    sentence: str
    reason: Reason
    nearest: str | None = None  # the closest computed value, for repair prompts

    def describe(self) -> str:
        """A one-line explanation, usable in a repair prompt."""
        if self.reason == "misrounded":
            return f"{self.number!r} is not a correct rounding of the computed value {self.nearest}"
        if self.reason == "wrong_period":
            return f"{self.number!r} was computed for another period than the one its sentence names"
        return f"{self.number!r} is not one of the computed values"


@dataclass
class Verification:
    """The verdict on a draft."""

    issues: list[GroundingIssue] = field(default_factory=list)
    checked: int = 0  # quantities compared with the figures

    @property
    def ok(self) -> bool:
        """True when every quantity in the draft is supported."""
        return not self.issues


# -------------------------------------------------------------------------- number reading

# A number as people write it: optional sign, digit groups with "," "." " " or
# a narrow no-break space, a decimal part, an optional magnitude suffix.
_NUMBER = re.compile(
    r"(?<![\w.,])(?P<sign>[-−+])?\s?(?P<body>\d{1,3}(?:[,. \u202f\u00a0']\d{3})+(?:[.,]\d+)?|\d+(?:[.,]\d+)?)"
    r"(?P<suffix>\s?(?:k|K|m|M|bn)\b)?(?P<pct>\s?%)?"
)
_ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_ISO_WEEK = re.compile(r"\b\d{4}-W\d{2}\b")
_CLOCK = re.compile(r"\b\d{1,2}[:h]\d{2}\b")
_MONTH_WORDS = (
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec "
    "janvier fevrier mars avril mai juin juillet aout septembre octobre novembre decembre "
    "enero febrero marzo abril mayo junio julio agosto septiembre setiembre octubre noviembre diciembre "
    "januar februar marz april mai juni juli august september oktober november dezember "
    "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre "
    "janeiro fevereiro marco abril maio junho julho agosto setembro outubro novembro dezembro"
)
_MONTHS_RE = "|".join(sorted(set(_MONTH_WORDS.split()), key=len, reverse=True))
# "2 March", "March 2", "2. März", "2 de marzo", optionally with a year.
_DAY_MONTH = re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th|er|\.)?\s+(?:de\s+)?(?:{_MONTHS_RE})\b(?:\s+(?:de\s+)?\d{{4}})?")
_MONTH_DAY = re.compile(rf"\b(?:{_MONTHS_RE})\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+\d{{4}})?")
_MONTH_YEAR = re.compile(rf"\b(?:{_MONTHS_RE})\s+(?:de\s+)?\d{{4}}\b")
_SUFFIX_ZEROS = {"k": 3, "m": 6, "bn": 9}


def fold(text: str) -> str:
    """Lower case without accents (``März`` → ``marz``), for matching names."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@dataclass(frozen=True)
class Quantity:
    """A number read from text, with every plausible reading of its separators."""

    text: str
    readings: tuple[tuple[Decimal, int], ...]  # (value, decimals written)
    percent: bool
    start: int
    end: int


def _readings(body: str) -> list[tuple[Decimal, int]]:
    """``1,234`` reads 1234 (grouping) or 1.234 (decimal comma); ``1.234,5`` only 1234.5."""
    out: list[tuple[Decimal, int]] = []
    compact = body.replace("\u202f", " ").replace("\u00a0", " ").replace("'", " ")
    seps = [c for c in compact if c in ",. "]
    candidates: list[str] = []
    if not seps:
        candidates.append(compact)
    else:
        last = seps[-1]
        head, _, tail = compact.rpartition(last)
        grouped_only = all(len(g) == 3 for g in re.split(r"[,. ]", compact)[1:])
        if grouped_only and len(set(seps)) == 1:
            candidates.append(re.sub(r"[,. ]", "", compact))  # all separators group thousands
        if last in ",." and len(set(seps[:-1]) - {" "}) <= 1 and last not in seps[:-1]:
            candidates.append(re.sub(r"[,. ]", "", head) + "." + tail)  # the last one is the decimal mark
    for text in candidates:
        try:
            value = Decimal(text)
        except InvalidOperation:
            continue
        decimals = len(text.partition(".")[2])
        if (value, decimals) not in out:
            out.append((value, decimals))
    return out


def _masked(text: str) -> str:
    """The text with dates and clock times blanked out (same length, so offsets hold)."""
    for pattern in (_ISO_DATE, _ISO_WEEK, _CLOCK):
        text = pattern.sub(lambda m: " " * len(m.group(0)), text)
    folded = fold(text)
    for pattern in (_DAY_MONTH, _MONTH_DAY, _MONTH_YEAR):
        for match in pattern.finditer(folded):
            text = text[: match.start()] + " " * (match.end() - match.start()) + text[match.end() :]
    return text


def read_quantities(text: str) -> list[Quantity]:
    """Every number of ``text`` that states a quantity (dates and times excluded)."""
    masked = _masked(text)
    out: list[Quantity] = []
    for match in _NUMBER.finditer(masked):
        body = match.group("body").strip()
        negative = match.group("sign") in ("-", "−")
        zeros = _SUFFIX_ZEROS.get((match.group("suffix") or "").strip().lower(), 0)
        # A magnitude suffix counts its zeros as negative decimals: "1.2k" is 1200 shown to the hundred.
        readings = tuple(((-v if negative else v).scaleb(zeros), d - zeros) for v, d in _readings(body))
        if not readings:
            continue
        out.append(
            Quantity(
                text=match.group(0).strip(),
                readings=readings,
                percent=bool(match.group("pct")),
                start=match.start(),
                end=match.end(),
            )
        )
    return out


# -------------------------------------------------------------------------- matching


def rounds_to(value: Decimal, written: Decimal, decimals: int) -> bool:
    """Whether ``value`` displayed with ``decimals`` decimals (half up) is ``written``.

    A magnitude suffix (``1.2k``) counts its zeros as negative decimals.
    """
    if decimals >= 0:
        quantum = Decimal(1).scaleb(-decimals)
        return value.quantize(quantum, rounding=ROUND_HALF_UP) == written
    step = Decimal(10) ** (-decimals)
    return (value / step).quantize(Decimal(1), rounding=ROUND_HALF_UP) * step == written


def _match(q: Quantity, figure: Figure) -> bool:
    if q.percent and figure.unit != "%":
        return False
    # Sign is often carried by words ("down 12%"): compare magnitudes.
    return any(rounds_to(abs(figure.value), abs(value), decimals) for value, decimals in q.readings)


def _near(q: Quantity, figures: Sequence[Figure]) -> Figure | None:
    """A figure the number is close to (within 1% or one unit of the last written digit x5)."""
    best: tuple[Decimal, Figure] | None = None
    for figure in figures:
        if q.percent and figure.unit != "%":
            continue
        target = abs(figure.value)
        for value, _ in q.readings:
            gap = abs(abs(value) - target)
            tolerance = max(target * Decimal("0.01"), Decimal("0.05"))
            if gap <= tolerance and (best is None or gap < best[0]):
                best = (gap, figure)
    return best[1] if best else None


_SENTENCE = re.compile(r"[^.!?;\n]+(?:[.!?;]+|$)")


def _sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans; a full stop between digits ("1.5") does not end a sentence."""
    spans: list[tuple[int, int]] = []
    start = 0
    for index, char in enumerate(text):
        if char in "!?;\n" or (
            char == "." and not (0 < index < len(text) - 1 and text[index - 1].isdigit() and text[index + 1].isdigit())
        ):
            if text[start:index].strip():
                spans.append((start, index + 1))
            start = index + 1
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def _periods_named(sentence: str, figures: Sequence[Figure]) -> set[tuple[date, date]]:
    """The figure periods a sentence names (by the names they were given to the model)."""
    folded = fold(sentence)
    named: set[tuple[date, date]] = set()
    hits: list[tuple[int, int, tuple[date, date]]] = []
    for figure in figures:
        for name in figure.names:
            key = fold(name).strip()
            if len(key) < 3:
                continue
            for match in re.finditer(re.escape(key), folded):
                hits.append((match.start(), match.end(), (figure.start, figure.end)))
    # A name inside a longer one ("week" inside "the week before") does not count.
    for start, end, period in hits:
        if not any((s <= start and end <= e) and (e - s) > (end - start) for s, e, _ in hits):
            named.add(period)
    return named


def verify_draft(
    draft: str,
    figures: Sequence[Figure],
    *,
    context_numbers: Iterable[str] = (),
) -> Verification:
    """Check every quantity in ``draft`` against the computed ``figures``.

    Args:
        draft: The model's text.
        figures: Every value computed for this answer.
        context_numbers: Numbers that may appear without being quantities:
            those of the question ("top 3", "last 7 days"), of product names
            and of period labels. Compared as written.

    Returns:
        The verification; ``ok`` when nothing is unsupported.
    """
    allowed = {c.strip() for c in context_numbers if c.strip()}
    result = Verification()
    for start, end in _sentences(draft):
        sentence = draft[start:end]
        named = _periods_named(sentence, figures) if figures else set()
        for q in read_quantities(sentence):
            plain = q.text.lstrip("+-−").strip()
            if not q.percent and plain in allowed:
                continue
            result.checked += 1
            matching = [f for f in figures if _match(q, f)]
            if not matching:
                near = _near(q, figures)
                if near is not None:
                    result.issues.append(GroundingIssue(q.text, sentence.strip(), "misrounded", str(near.value)))
                else:
                    result.issues.append(GroundingIssue(q.text, sentence.strip(), "invented"))
                continue
            if named and not any((f.start, f.end) in named for f in matching):
                result.issues.append(GroundingIssue(q.text, sentence.strip(), "wrong_period"))
    return result


def numbers_in(texts: Iterable[str]) -> set[str]:
    """The numbers written in ``texts`` (for ``context_numbers``)."""
    out: set[str] = set()
    for text in texts:
        out.update(m.group(0) for m in re.finditer(r"\d+(?:[.,]\d+)?", text))
    return out


__all__ = [
    "Figure",
    "GroundingIssue",
    "Quantity",
    "Reason",
    "Verification",
    "fold",
    "numbers_in",
    "read_quantities",
    "rounds_to",
    "verify_draft",
]
