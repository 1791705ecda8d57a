"""The built-in offline model: deterministic tool calling and grounded prose, no weights.

It is the default chat model when no provider is configured and a stand-in
that tests can rely on. It is reached exactly like a real provider: it is
registered as a litellm custom provider (``copilot-offline``) and deployments
with ``provider: offline`` call it through
:class:`gateway.providers.litellm_provider.LitellmProvider` with the litellm
model ``copilot-offline/<name>``; ``provider: local-embed`` reaches the
built-in embedder (:func:`gateway.embedder.embed_text`) through the same
custom provider's embedding method.

Behaviour (same input, same output; no randomness, no network):

- **Tool calls.** When the request has ``tools``, ``tool_choice`` is not
  ``"none"`` and no tool result follows the last user message, it answers with
  tool calls. Tools are ranked by keyword overlap between the last user
  message and each tool's name, description, parameter names/descriptions and
  enum values (folded accents, split identifiers, light stemming, a small
  multilingual commerce lexicon, shared-prefix fuzzy matches, IDF across the
  offered tools). Tools that cover distinct parts of the question are called
  together. Arguments follow the schema: enum values matched against the
  question (and the ``value: synonyms`` glosses of the parameter description),
  dates and periods parsed from the question (``today``, ``yesterday``, ``last
  week``, ``this month``, ``last 7 days``, ISO dates, month names, ``the day
  before``...) relative to the date the system message gives as "today"
  (else the current date), numbers for number parameters, required
  parameters always present (schema defaults first). Two values for one
  parameter (``net sales and refunds``, ``yesterday vs the day before`` with
  no comparison parameter) become one call each. ``"required"`` and a named
  function force a call, as OpenAI does.
- **Prose.** Otherwise it restates the facts it was given in short sentences
  (``Label (period): value unit.``). Facts are the content of the ``tool``
  messages after the last user message (JSON or text) and any block fenced as
  facts in a system or user message: a fenced code block whose info string
  is ``facts`` (three backticks, ``facts``, newline, content, three backticks)
  or ``<facts>...</facts>``. Every number it writes is copied from the facts;
  a final check drops any sentence whose numbers do not all occur in them.
  With no facts it says it has no data to answer from. With
  ``response_format`` ``json_object`` (or ``json_schema``) the answer is a
  JSON object: ``{"answer": <prose>, "facts": [<sentences>]}`` (for a schema,
  its string properties are filled from those).
- **Usage** is counted with :func:`gateway.embedder.count_tokens`.
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import json
import logging
import math
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from gateway.embedder import count_tokens, embed_text

OFFLINE_PROVIDER = "copilot-offline"
"""The litellm custom provider name (model strings ``copilot-offline/<name>``)."""
OFFLINE_MODEL = "copilot-offline"

NO_DATA_ANSWER = "I don't have any data to answer that from."
_MAX_SENTENCES = 12
_MAX_ROWS = 10
_MAX_CALLS = 4

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- text normalisation


def _split(text: str) -> list[str]:
    return text.split()


_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")

_STOPWORDS = frozenset(
    _split(
        """
        a an the of for to in on at by with from and or is are was were be been being am do does did done
        have has had i me my mine we our ours you your it its this that these those what which who whom how
        much many please show tell give get got let can could would should will shall may might must about
        into as if so than then there here le la les un une des du de et ou est sont mon ma mes nos notre
        quel quelle quels quelles combien pour par sur au aux el los las unos unas del y o es son mi mis
        nuestro cual cuales cuanto cuanta cuantos para por con der die das ein eine und oder ist sind mein
        meine unser unsere wie viel viele welche welcher fur mit von im am o os um uma do da dos das e sao
        meu minha quanto quantos com
        """
    )
)
# "this", "last", "vs" and friends carry meaning for periods and comparisons; keep them.
_STOPWORDS = _STOPWORDS - {"this", "last"}

_SYNONYM_GROUPS: dict[str, list[str]] = {
    "sale": _split(
        "sales revenue revenues turnover income takings earnings sold selling vente ventes venta ventas venda "
        "vendas umsatz umsatze verkauf verkaufe vendita vendite ricavi ingresos recettes faturamento"
    ),
    "refund": _split(
        "refund refunds refunded return returns returned reimbursement remboursement remboursements reembolso "
        "reembolsos devolucion devoluciones erstattung erstattungen ruckerstattung ruckerstattungen rimborso "
        "rimborsi"
    ),
    "order": _split(
        "order orders purchase purchases commande commandes pedido pedidos bestellung bestellungen ordine ordini"
    ),
    "transaction": _split("transaction transactions payment payments paiement paiements pago pagos zahlung zahlungen"),
    "product": _split(
        "product products item items sku skus article articles produit produits producto productos produto "
        "produtos produkt produkte artikel articulo articulos prodotto prodotti"
    ),
    "customer": _split("customer customers client clients buyer buyers shopper shoppers cliente clientes kunde kunden"),
    "top": _split(
        "top best bestselling bestseller highest most leading meilleur meilleurs mejor mejores beste besten melhor"
    ),
    "worst": _split("worst lowest least bottom pire peor schlechteste"),
    "review": _split(
        "review reviews rating ratings feedback avis resena resenas opinion opiniones bewertung bewertungen"
    ),
    "average": _split("average avg mean moyenne promedio durchschnitt media medio"),
    "count": _split("count number many nombre numero anzahl"),
    "compare": _split(
        "vs versus compare compared comparison against contre frente comparado comparer vergleich vergleichen"
    ),
    "previous": _split("previous prior before preceding precedent precedente anterior vorherige vorher davor"),
    "last": _split(
        "last past previous prior dernier derniere derniers dernieres passe pasado pasada ultimo ultima letzte letzten"
    ),
    "this": _split("this current ce cette cet este esta diese dieser diesen diesem questo questa"),
    "day": _split("day days jour jours dia dias tag tage giorno giorni daily"),
    "week": _split("week weeks semaine semaines semana semanas woche wochen settimana weekly"),
    "month": _split("month months mois mes meses monat monate mese monthly"),
    "year": _split("year years annee annees ano anos jahr jahre anno yearly annual"),
    "today": _split("today aujourd hui hoy heute hoje oggi"),
    "yesterday": _split("yesterday hier ayer gestern ontem ieri"),
    "net": _split("net nette nettes neto netos neta netas netto"),
    "gross": _split("gross brut brute brutes bruto brutos brutto"),
    "discount": _split("discount discounts remise remises descuento descuentos rabatt"),
    "unit": _split("unit units quantity quantities qty pieces unidades einheiten"),
    "inventory": _split("inventory stock stocks inventario lager bestand"),
    "profit": _split("profit profits margin margins benefice beneficio gewinn"),
    "hour": _split("hour hours hourly heure heures hora horas stunde stunden"),
}
_TIME_TERMS = frozenset({"last", "this", "previous", "day", "week", "month", "year", "today", "yesterday", "hour"})


def fold(text: str) -> str:
    """Casefold and strip accents (``Rückerstattungen`` → ``ruckerstattungen``)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def stem(word: str) -> str:
    """A light, language-agnostic suffix stripper (plural and verb endings)."""
    if word.isdigit() or len(word) <= 3:
        return word
    for suffix, replacement, min_len in (
        ("ies", "y", 5),
        ("sses", "ss", 5),
        ("ing", "", 6),
        ("ed", "", 5),
        ("es", "", 6),
        ("s", "", 4),
    ):
        if word.endswith(suffix) and len(word) >= min_len and not word.endswith("ss"):
            return word[: len(word) - len(suffix)] + replacement
    return word


def _build_lexicon() -> dict[str, frozenset[str]]:
    lexicon: dict[str, set[str]] = {}
    for canonical, words in _SYNONYM_GROUPS.items():
        for word in (*words, canonical):
            lexicon.setdefault(stem(fold(word)), set()).add(canonical)
    return {word: frozenset(groups) for word, groups in lexicon.items()}


_LEXICON = _build_lexicon()


def words(text: str) -> list[str]:
    """Folded words of ``text`` with identifiers split (``netSales``, ``net_sales`` → net, sales)."""
    return _WORD.findall(fold(_CAMEL.sub(" ", text)))


def terms(text: str) -> list[str]:
    """Stemmed content terms of ``text`` (stop words dropped), in order."""
    return [stem(w) for w in words(text) if w not in _STOPWORDS]


def expand(term_list: Sequence[str]) -> dict[str, float]:
    """Terms with their synonym-group concepts (weight 1 for the word, 0.8 for a concept)."""
    weighted: dict[str, float] = {}
    for term in term_list:
        weighted[term] = 1.0
        for concept in _LEXICON.get(term, ()):
            if concept != term:
                weighted[concept] = max(weighted.get(concept, 0.0), 0.8)
    return weighted


def _shared_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _fuzzy(term: str, candidates: Mapping[str, float]) -> float:
    """Best weight of a candidate sharing a long prefix with ``term`` (``produit``/``product``)."""
    if term.isdigit() or len(term) < 5:
        return 0.0
    best = 0.0
    for candidate, weight in candidates.items():
        if len(candidate) < 5 or candidate.isdigit():
            continue
        prefix = _shared_prefix(term, candidate)
        if prefix >= 5 and prefix >= 0.7 * min(len(term), len(candidate)):
            best = max(best, 0.5 * weight)
    return best


# --------------------------------------------------------------------------- periods


@dataclass(frozen=True, slots=True)
class Period:
    """A date range found in a question (inclusive)."""

    start: date
    end: date
    text: str
    span: tuple[int, int]


_MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    (
        "january janvier enero januar gennaio janeiro jan",
        "february fevrier febrero februar febbraio fevereiro feb",
        "march mars marzo marz marco mar",
        "april avril abril aprile apr",
        "may mai mayo maggio maio",
        "june juin junio juni giugno junho jun",
        "july juillet julio juli luglio julho jul",
        "august aout agosto aug",
        "september septembre septiembre settembre setembro sep sept",
        "october octobre octubre oktober ottobre outubro oct",
        "november novembre noviembre novembro nov",
        "december decembre diciembre dezember dicembre dezembro dec",
    ),
    start=1,
):
    for _name in _names.split():
        _MONTHS[_name] = _number

_UNIT_WORDS = {
    "day": _split("day days jour jours dia dias tag tage tagen giorni"),
    "week": _split("week weeks semaine semaines semana semanas woche wochen settimane"),
    "month": _split("month months mois mes meses monat monate monaten mesi"),
    "year": _split("year years an ans annee annees ano anos jahr jahre jahren anni"),
}
_UNIT_OF = {w: unit for unit, ws in _UNIT_WORDS.items() for w in ws}
_UNIT_RE = "|".join(sorted(_UNIT_OF, key=len, reverse=True))
_LAST_RE = (
    r"last|past|previous|prior|dernier|derniere|derniers|dernieres|ultimos|ultimas|ultimo|ultima|letzte|letzten|"
    r"letzter|scorso|scorsa|passado|passada|passe|passee|pasado|pasada"
)
_THIS_RE = r"this|current|ce|cette|cet|este|esta|diese|dieser|diesen|diesem|questo|questa|neste|nesta"
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))

_PERIOD_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "iso_range",
        re.compile(r"(\d{4}-\d{2}-\d{2})\s*(?:to|until|till|through|and|-|–|au|al|bis|a)\s*(\d{4}-\d{2}-\d{2})"),
    ),
    ("iso", re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")),
    ("day_before_yesterday", re.compile(r"\b(?:day before yesterday|avant[- ]hier|anteayer|vorgestern|anteontem)\b")),
    (
        "relative_before",
        re.compile(
            rf"\b(?:the )?(?:(day|{_UNIT_RE}) before|previous (day|{_UNIT_RE})|la veille|el dia anterior|vortag)\b"
        ),
    ),
    ("today", re.compile(r"\b(?:today|aujourd'?hui|hoy|heute|hoje|oggi)\b")),
    ("yesterday", re.compile(r"\b(?:yesterday|hier|ayer|gestern|ontem|ieri)\b")),
    (
        "last_n",
        re.compile(
            rf"\b(?:{_LAST_RE})\s+(\d{{1,3}})\s+({_UNIT_RE})\b|\b(\d{{1,3}})\s+(?:{_LAST_RE})\s+({_UNIT_RE})\b|\b(\d{{1,3}})\s+({_UNIT_RE})\s+(?:{_LAST_RE})\b"
        ),
    ),
    (
        "last_unit",
        re.compile(rf"\b(?:{_LAST_RE})\s+({_UNIT_RE})\b"),
    ),
    # "la semaine dernière": after the English order, so "by day last week" is last week.
    ("unit_last", re.compile(rf"\b(?:la |le |el |der |die |das )?({_UNIT_RE})\s+(?:{_LAST_RE})\b")),
    ("this_unit", re.compile(rf"\b(?:{_THIS_RE})\s+({_UNIT_RE})\b")),
    ("month_name", re.compile(rf"\b({_MONTH_RE})\.?(?:\s+(\d{{4}}))?\b")),
]


def _month_range(year: int, month: int) -> tuple[date, date]:
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def _shift_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _unit_range(unit: str, today: date, offset: int) -> tuple[date, date]:
    """The calendar ``unit`` containing today shifted by ``offset`` units (0: this one, -1: the last one)."""
    if unit == "day":
        day = today + timedelta(days=offset)
        return day, day
    if unit == "week":
        monday = today - timedelta(days=today.weekday()) + timedelta(weeks=offset)
        return monday, monday + timedelta(days=6)
    if unit == "month":
        first = _shift_months(today.replace(day=1), offset)
        return _month_range(first.year, first.month)
    year = today.year + offset
    return date(year, 1, 1), date(year, 12, 31)


def _clip(start: date, end: date, today: date, offset: int) -> tuple[date, date]:
    # "this week/month/year" ends today, not in the future.
    return (start, min(end, today)) if offset == 0 else (start, end)


def find_periods(text: str, today: date) -> list[Period]:
    """Date ranges mentioned in ``text`` (folded), in order of appearance."""
    folded = fold(text)
    found: list[Period] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in _PERIOD_PATTERNS:
        for match in pattern.finditer(folded):
            span = match.span()
            if any(span[0] < end and start < span[1] for start, end in taken):
                continue
            rng: tuple[date, date] | None = None
            try:
                if kind == "iso_range":
                    rng = date.fromisoformat(match[1]), date.fromisoformat(match[2])
                elif kind == "iso":
                    day = date(int(match[1]), int(match[2]), int(match[3]))
                    rng = day, day
                elif kind == "day_before_yesterday":
                    rng = _unit_range("day", today, -2)
                elif kind == "relative_before":
                    unit = _UNIT_OF.get(match[1] or match[2] or "day", "day")
                    rng = ("before", unit)  # type: ignore[assignment]  # resolved below
                elif kind == "today":
                    rng = today, today
                elif kind == "yesterday":
                    rng = _unit_range("day", today, -1)
                elif kind == "last_n":
                    n = int(match[1] or match[3] or match[5])
                    unit = _UNIT_OF[match[2] or match[4] or match[6]]
                    if n < 1:
                        continue
                    if unit == "day":
                        rng = today - timedelta(days=n - 1), today
                    elif unit == "week":
                        rng = today - timedelta(weeks=n) + timedelta(days=1), today
                    elif unit == "month":
                        rng = _shift_months(today, -n) + timedelta(days=1), today
                    else:
                        rng = date(today.year - n, today.month, min(today.day, 28)) + timedelta(days=1), today
                elif kind in ("last_unit", "unit_last"):
                    unit = _UNIT_OF[match[1]]
                    rng = _unit_range(unit, today, -1)
                elif kind == "this_unit":
                    unit = _UNIT_OF[match[1]]
                    rng = _clip(*_unit_range(unit, today, 0), today, 0)
                elif kind == "month_name":
                    name = match[1]
                    if len(name) <= 3 and name in {"mar", "may", "jun", "dec", "sep", "mai", "jan"} and not match[2]:
                        # Short forms double as ordinary words ("may", "mar"): only with a year.
                        continue
                    month = _MONTHS[name]
                    year = int(match[2]) if match[2] else (today.year if month <= today.month else today.year - 1)
                    rng = _month_range(year, month)
            except ValueError:
                continue
            if rng is None:
                continue
            taken.append(span)
            if isinstance(rng[0], str):
                found.append(Period(date.min, date.min, f"before:{rng[1]}", span))
            else:
                found.append(Period(rng[0], rng[1], match[0], span))
    found.sort(key=lambda p: p.span[0])
    resolved: list[Period] = []
    for period in found:
        if period.text.startswith("before:"):
            unit = period.text.split(":", 1)[1]
            anchor = resolved[-1] if resolved else None
            if anchor is None:
                start, end = _unit_range(unit, today, -1)
            elif unit == "day":
                start = end = anchor.start - timedelta(days=1)
            elif unit == "week":
                start, end = anchor.start - timedelta(weeks=1), anchor.end - timedelta(weeks=1)
            elif unit == "month":
                start, end = _month_range(_shift_months(anchor.start, -1).year, _shift_months(anchor.start, -1).month)
            else:
                start, end = date(anchor.start.year - 1, 1, 1), date(anchor.start.year - 1, 12, 31)
            resolved.append(Period(start, end, folded[period.span[0] : period.span[1]], period.span))
        else:
            resolved.append(period)
    return resolved


_TODAY_HINT = re.compile(
    r"(?:today|current date|date today|now|aujourd'?hui|hoy|heute|hoje)\D{0,20}?(\d{4}-\d{2}-\d{2})|"
    r"(\d{4}-\d{2}-\d{2})\D{0,5}\(?today"
)


def reference_date(messages: Sequence[Mapping[str, Any]]) -> date:
    """The date a system message gives as today (``Today is 2026-11-22``), else the current date."""
    for message in messages:
        if message.get("role") not in {"system", "developer"}:
            continue
        match = _TODAY_HINT.search(fold(_content_text(message.get("content"))))
        if match:
            try:
                return date.fromisoformat(match[1] or match[2])
            except ValueError:
                continue
    return date.today()


# --------------------------------------------------------------------------- tool selection


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return str(content)


@dataclass(slots=True)
class _Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    terms: dict[str, float] = field(default_factory=dict)

    def add(self, text: str, weight: float) -> None:
        for term, w in expand(terms(text)).items():
            self.terms[term] = max(self.terms.get(term, 0.0), weight * w)


def _tool_from_spec(spec: Mapping[str, Any]) -> _Tool | None:
    function = spec.get("function") if spec.get("type", "function") == "function" else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        return None
    parameters = function.get("parameters")
    tool = _Tool(
        name=function["name"],
        description=str(function.get("description") or ""),
        parameters=dict(parameters) if isinstance(parameters, Mapping) else {"type": "object", "properties": {}},
    )
    tool.add(tool.name, 3.0)
    tool.add(tool.description, 1.5)
    for pname, prop in _properties(tool.parameters).items():
        tool.add(pname, 0.75)
        tool.add(str(prop.get("description") or ""), 0.75)
        for value in _enum_of(prop):
            tool.add(str(value), 1.0)
    return tool


def _properties(schema: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return {}
    return {str(k): dict(v) for k, v in props.items() if isinstance(v, Mapping)}


def _enum_of(prop: Mapping[str, Any]) -> list[Any]:
    if isinstance(prop.get("enum"), list):
        return list(prop["enum"])
    items = prop.get("items")
    if isinstance(items, Mapping) and isinstance(items.get("enum"), list):
        return list(items["enum"])
    return []


def _type_of(prop: Mapping[str, Any]) -> str:
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind is None and "enum" in prop:
        values = prop["enum"]
        kind = "integer" if values and all(isinstance(v, int) for v in values) else "string"
    return str(kind or "string")


def _score(
    tool: _Tool, question: Mapping[str, float], idf: Mapping[str, float], exclude: set[str]
) -> tuple[float, set[str]]:
    score = 0.0
    matched: set[str] = set()
    for term, qweight in question.items():
        if term in exclude:
            continue
        weight = tool.terms.get(term, 0.0) or _fuzzy(term, tool.terms)
        if weight <= 0.0:
            continue
        # Periods and numbers qualify a request rather than choose the tool.
        minor = term in _TIME_TERMS or term.isdigit()
        score += qweight * weight * idf.get(term, 1.0) * (0.3 if minor else 1.0)
        if not minor:
            matched.add(term)
    return score, matched


def select_tools(question: str, tools: Sequence[_Tool], *, force: bool, limit: int) -> list[_Tool]:
    """The tools to call for ``question``: the best match, plus any covering other parts of it."""
    if not tools:
        return []
    question_terms = terms(question)
    q = expand(question_terms)
    position: dict[str, int] = {}
    for index, term in enumerate(question_terms):
        for concept in expand([term]):
            position.setdefault(concept, index)
    df: dict[str, int] = {}
    for tool in tools:
        for term in tool.terms:
            df[term] = df.get(term, 0) + 1
    idf = {term: 1.0 + math.log(len(tools) / count) for term, count in df.items()}
    scored = sorted(
        ((*_score(tool, q, idf, set()), index, tool) for index, tool in enumerate(tools)),
        key=lambda item: (-item[0], item[2]),
    )
    best_score, best_terms, _, best = scored[0]
    if best_score < 1.0 and not force:
        return []
    chosen = [(best, best_terms)]
    covered = set(best_terms)
    remaining = [(index, tool) for _, _, index, tool in scored[1:]]
    # Greedy cover: add the tool that best answers what the chosen ones leave out.
    while remaining and len(chosen) < limit:
        gains = [(*_score(tool, q, idf, covered), index, tool) for index, tool in remaining]
        gain, new_terms, index, tool = max(gains, key=lambda item: (item[0], -item[2]))
        if not new_terms or gain < max(1.5, 0.3 * best_score):
            break
        chosen.append((tool, new_terms))
        covered |= new_terms
        remaining = [(i, t) for i, t in remaining if i != index]
    # Call in the order the question mentions them.
    chosen.sort(key=lambda item: min((position.get(t, len(question_terms)) for t in item[1]), default=0))
    return [tool for tool, _ in chosen]


# --------------------------------------------------------------------------- argument filling

_GLOSS = re.compile(r"[`'\"]?([\w.-]+)[`'\"]?\s*(?::|=|\(|—|–| - )\s*([^;,\n()]+)")
_START_NAMES = ("start", "from", "since", "begin", "after")
_END_NAMES = ("end", "until", "till", "before", "through")
_QUERY_NAMES = {"query", "q", "search", "text", "question", "keyword", "keywords", "term", "prompt", "topic"}


def _glosses(description: str, values: Sequence[Any]) -> dict[str, list[str]]:
    """``value: synonym | other synonym`` glosses of enum values found in a parameter description.

    Alternatives separated by ``|`` are scored one by one (the best counts),
    so a long list of synonyms does not dilute each of them.
    """
    by_key = {str(v).casefold(): str(v) for v in values}
    out: dict[str, list[str]] = {}
    for match in _GLOSS.finditer(description):
        key = match[1].casefold()
        if key in by_key:
            alternatives = [alt.strip() for alt in match[2].split("|") if alt.strip()]
            out.setdefault(by_key[key], []).extend(alternatives)
    return out


@dataclass(slots=True)
class _Question:
    text: str
    terms: dict[str, float]  # without the period phrases
    periods: list[Period]
    numbers: list[float]
    all_terms: dict[str, float] = field(default_factory=dict)  # with them


# Enum values with these words name periods ("this_month"): matched against the whole question.
_PERIOD_ENUM_TERMS = frozenset({"this", "last", "today", "yesterday", "previous"})
# A value counts as named when all its words (or all of one gloss alternative, weighted 0.9) are in the question.
_FULL = 0.9 - 1e-9


def _match_enum(prop: Mapping[str, Any], question: _Question) -> list[tuple[float, int, Any]]:
    """Enum values scored by how fully the question mentions them, best first."""
    return [(score, hits, value) for score, hits, value, _ in _enum_mentions(prop, question)]


def _enum_mentions(prop: Mapping[str, Any], question: _Question) -> list[tuple[float, int, Any, frozenset[str]]]:
    """Like :func:`_match_enum`, with the question terms each value's best wording matched."""
    values = _enum_of(prop)
    glosses = _glosses(str(prop.get("description") or ""), values)
    items = prop.get("items")
    if isinstance(items, Mapping):
        glosses.update(_glosses(str(items.get("description") or ""), values))
    if question.all_terms and any(set(terms(str(v))) & _PERIOD_ENUM_TERMS for v in values):
        question = _Question(question.text, question.all_terms, question.periods, question.numbers, question.all_terms)
    scored: list[tuple[float, int, Any, frozenset[str]]] = []
    for value in values:
        best = 0.0
        best_hits = 0
        best_terms: frozenset[str] = frozenset()
        for text, factor in ((str(value), 1.0), *((alt, 0.9) for alt in glosses.get(str(value), []))):
            value_terms = list(dict.fromkeys(terms(text)))
            if not value_terms:
                continue
            hits = 0.0
            matched: set[str] = set()
            for term in value_terms:
                hit = question.terms.get(term, 0.0)
                if hit:
                    matched.add(term)
                else:
                    near = [(w, c) for c, w in expand([term]).items() if c != term and c in question.terms]
                    if near:
                        weight, concept = max(near)
                        hit = min(weight, 0.8)
                        matched.add(concept)
                hits += hit
            coverage = factor * hits / len(value_terms)
            if coverage > best:
                best, best_hits = coverage, sum(1 for t in value_terms if t in question.terms)
                best_terms = frozenset(matched)
        if best > 0:
            scored.append((best, best_hits, value, best_terms))
    default = prop.get("default")
    scored.sort(key=lambda item: (-item[0], -item[1], item[2] != default))
    return scored


def _date_role(name: str, prop: Mapping[str, Any]) -> str | None:
    fmt = str(prop.get("format") or "")
    lowered = fold(name)
    pieces = set(words(name))
    is_date = fmt in {"date", "date-time"} or bool(
        pieces & {"date", "day", "start", "end", "from", "to", "since", "until"}
    )
    if _type_of(prop) != "string" or _enum_of(prop) or not is_date:
        return None
    if any(p in lowered for p in _START_NAMES) or "from" in pieces:
        return "start"
    if any(p in lowered for p in _END_NAMES) or "to" in pieces:
        return "end"
    return "single"


def _format_date(day: date, prop: Mapping[str, Any], role: str) -> str:
    if prop.get("format") == "date-time":
        return f"{day.isoformat()}T{'23:59:59' if role == 'end' else '00:00:00'}Z"
    return day.isoformat()


def _clamp_number(value: float, prop: Mapping[str, Any]) -> float:
    low, high = prop.get("minimum"), prop.get("maximum")
    if isinstance(low, int | float):
        value = max(value, float(low))
    if isinstance(high, int | float):
        value = min(value, float(high))
    return value


def _is_compare(name: str, prop: Mapping[str, Any]) -> bool:
    return "compare" in expand(terms(name))


def _fill(
    schema: Mapping[str, Any], question: _Question, today: date, period: Period | None, enum_pick: Mapping[str, Any]
) -> dict[str, Any]:
    props = _properties(schema)
    required = [r for r in schema.get("required", []) if isinstance(r, str)]
    args: dict[str, Any] = {}
    free_numbers = list(question.numbers)
    for name, prop in props.items():
        is_required = name in required
        kind = _type_of(prop)
        has_default = "default" in prop
        enum = _enum_of(prop)
        if name in enum_pick:
            args[name] = enum_pick[name]
            continue
        if enum and kind != "array":
            ranked = _match_enum(prop, question)
            top = [value for score, _, value in ranked if ranked and score == ranked[0][0]]
            if ranked and (ranked[0][0] >= _FULL or (ranked[0][0] >= 0.5 and (is_required or _is_compare(name, prop)))):
                # Among equally good partial matches the schema's default wins.
                args[name] = prop["default"] if has_default and prop["default"] in top else ranked[0][2]
            elif is_required:
                args[name] = prop["default"] if has_default else enum[0]
            continue
        if kind == "array":
            raw_items = prop.get("items")
            items: Mapping[str, Any] = raw_items if isinstance(raw_items, Mapping) else {}
            if enum:
                ranked = _match_enum(prop, question)
                # "Almond Croissant" names one product, not also "Croissant".
                full = _distinct_mentions(
                    [(value, words) for score, _, value, words in _enum_mentions(prop, question) if score >= _FULL]
                )
                picked = full or ([ranked[0][2]] if ranked and is_required else [])
                if picked:
                    args[name] = picked
                elif is_required:
                    args[name] = prop.get("default", enum[:1])
            elif is_required:
                if has_default:
                    args[name] = prop["default"]
                elif _type_of(items) == "string":
                    args[name] = [question.text]
                else:
                    args[name] = []
            continue
        role = _date_role(name, prop)
        if role is not None:
            chosen = period or (question.periods[0] if question.periods else None)
            if chosen is not None:
                day = chosen.end if role == "end" else chosen.start
                args[name] = _format_date(day, prop, role)
            elif is_required:
                args[name] = prop["default"] if has_default else _format_date(today, prop, role)
            continue
        if kind in {"integer", "number"}:
            if free_numbers:
                value = _clamp_number(free_numbers.pop(0), prop)
                args[name] = int(value) if kind == "integer" else value
            elif is_required:
                default = prop.get("default", prop.get("minimum", 1))
                args[name] = int(default) if kind == "integer" else default
            continue
        if kind == "boolean":
            if is_required:
                args[name] = bool(prop.get("default", False))
            continue
        if kind == "object":
            if is_required:
                args[name] = _fill(prop, question, today, period, {})
            continue
        # A free string: a period phrase, the question itself, or its default.
        lowered = set(words(name))
        if lowered & {"period", "range", "timeframe", "window", "when"} and (period or question.periods):
            args[name] = (period or question.periods[0]).text
        elif lowered & _QUERY_NAMES:
            args[name] = question.text
        elif is_required:
            args[name] = prop["default"] if has_default else question.text
    return args


def _fan_out(tool: _Tool, question: _Question) -> list[tuple[dict[str, Any], Period | None]]:
    """One (enum picks, period) pair per call: several values of one parameter become several calls."""
    props = _properties(tool.parameters)
    multi_enum: list[tuple[str, list[Any]]] = []
    for name, prop in props.items():
        if _enum_of(prop) and _type_of(prop) != "array" and not _is_compare(name, prop):
            full = [(value, words) for score, _, value, words in _enum_mentions(prop, question) if score >= _FULL]
            distinct = _distinct_mentions(full)
            if len(distinct) > 1:
                multi_enum.append((name, distinct))
    has_dates = any(_date_role(n, p) for n, p in props.items())
    has_compare = any(_is_compare(n, p) for n, p in props.items())
    periods: list[Period | None] = [None]
    if has_dates and not has_compare and len(question.periods) > 1:
        periods = list(question.periods)
    combos: list[tuple[dict[str, Any], Period | None]] = [({}, p) for p in periods]
    for name, values in multi_enum:
        combos = [({**picks, name: value}, p) for picks, p in combos for value in values]
    return combos[:_MAX_CALLS]


def _distinct_mentions(mentions: list[tuple[Any, frozenset[str]]]) -> list[Any]:
    """Fully matched enum values that each rest on words of their own.

    A value whose matched words are a subset of another's (``sales`` inside
    ``net sales``) or the same words as a better match (``customers`` read as
    both unique and returning customers) is the same mention, not another.
    """
    kept: list[tuple[Any, frozenset[str]]] = []
    for value, words in mentions:
        if any(words < other for _, other in mentions) or any(words == other for _, other in kept):
            continue
        kept.append((value, words))
    return [value for value, _ in kept]


# --------------------------------------------------------------------------- facts and prose


class _Num(str):
    """A JSON number kept as the exact text it had in the input."""

    __slots__ = ()


_FENCED = re.compile(r"```facts[^\n]*\n(.*?)```|<facts>(.*?)</facts>", re.DOTALL | re.IGNORECASE)
_VALUE_KEYS = ("value", "amount", "total", "result", "count", "sum", "net", "revenue")
_NAME_KEYS = ("metric", "name", "label", "title", "key", "product", "product_name", "item")
_UNIT_KEYS = ("unit", "currency", "units")
_PERIOD_KEYS = ("period", "period_label", "range", "timeframe", "window")
_START_KEYS = ("start", "start_date", "from", "date_from", "since", "period_start")
_END_KEYS = ("end", "end_date", "to", "date_to", "until", "period_end")
_DATE_KEYS = ("date", "day")


@dataclass(frozen=True, slots=True)
class FactSource:
    """One block of facts: a tool result or a fenced block."""

    title: str | None
    content: str


def collect_facts(messages: Sequence[Mapping[str, Any]]) -> list[FactSource]:
    """Tool results after the last user message, then fenced facts blocks of system/user messages."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or ():
            if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                names[str(call.get("id"))] = str(call["function"].get("name") or "")
    sources: list[FactSource] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        text = _content_text(message.get("content"))
        if role == "tool" and index > last_user:
            title = message.get("name") or names.get(str(message.get("tool_call_id")))
            sources.append(FactSource(str(title) if title else None, text))
        elif role in {"system", "developer", "user"}:
            for match in _FENCED.finditer(text):
                sources.append(FactSource(None, (match[1] if match[1] is not None else match[2]).strip()))
    return [s for s in sources if s.content.strip()]


def humanize(identifier: str) -> str:
    """``net_sales`` → ``Net sales``; other text is returned as is."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(?:[_-][A-Za-z0-9]+)*|[a-z]+(?:[A-Z][a-z0-9]*)+", identifier):
        return identifier
    spaced = " ".join(_CAMEL.sub(" ", identifier).replace("_", " ").replace("-", " ").split()).lower()
    return spaced[:1].upper() + spaced[1:]


def _scalar(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, _Num):
        return str(value)
    if isinstance(value, str):
        stripped = value.strip()
        return humanize(stripped) if "_" in stripped and " " not in stripped else stripped
    return None


def _pick(record: Mapping[str, Any], keys: Sequence[str]) -> tuple[str, Any] | None:
    lowered = {fold(k): k for k in record}
    for key in keys:
        if key in lowered and record[lowered[key]] is not None and not isinstance(record[lowered[key]], dict | list):
            return lowered[key], record[lowered[key]]
    return None


def _period_phrase(record: Mapping[str, Any]) -> tuple[str, set[str]]:
    used: set[str] = set()
    parts: list[str] = []
    label = _pick(record, _PERIOD_KEYS)
    if label:
        used.add(label[0])
        parts.append(_scalar(label[1]) or "")
    start, end = _pick(record, _START_KEYS), _pick(record, _END_KEYS)
    if start and end:
        used |= {start[0], end[0]}
        parts.append(f"{_scalar(start[1])} to {_scalar(end[1])}")
    else:
        day = _pick(record, _DATE_KEYS)
        if day:
            used.add(day[0])
            parts.append(_scalar(day[1]) or "")
    return ", ".join(p for p in parts if p), used


def _pairs(record: Mapping[str, Any], skip: set[str]) -> list[str]:
    out = []
    for key, value in record.items():
        if key in skip:
            continue
        text = _scalar(value)
        if text is not None and text != "":
            out.append(f"{humanize(key).lower()} {text}")
    return out


def _render_record(record: Mapping[str, Any], title: str | None) -> str | None:
    """One sentence for a flat record: ``Net sales (last week): 1234.5 EUR; orders 12.``"""
    value = _pick(record, _VALUE_KEYS)
    name = _pick(record, _NAME_KEYS)
    unit = _pick(record, _UNIT_KEYS)
    period, used = _period_phrase(record)
    for item in (value, name, unit) if value is not None else (name,):
        if item is not None:
            used.add(item[0])
    label = _capitalise((_scalar(name[1]) if name else None) or (humanize(title) if title else None))
    nested = [k for k, v in record.items() if isinstance(v, dict | list)]
    rest = _pairs(record, used | set(nested))
    if value is None:
        if not rest:
            return None
        body = "; ".join(rest)
        if label or period:
            return f"{label or 'Facts'}" + (f" ({period})" if period else "") + f": {body}."
        return f"{body[:1].upper()}{body[1:]}."
    shown = _scalar(value[1]) or ""
    if unit:
        shown = f"{shown} {_scalar(unit[1])}"
    head = (label or humanize(value[0])) + (f" ({period})" if period else "")
    return f"{head}: {shown}" + (f"; {'; '.join(rest)}" if rest else "") + "."


def _capitalise(text: str | None) -> str | None:
    return f"{text[:1].upper()}{text[1:]}" if text else text


def _row(record: Mapping[str, Any]) -> str:
    name = _pick(record, _NAME_KEYS)
    if name is None:
        name = next(((k, v) for k, v in record.items() if isinstance(v, str) and not isinstance(v, _Num)), None)
    rest = _pairs(record, {name[0]} if name else set())
    head = _scalar(name[1]) if name else None
    if head and rest:
        return f"{head} ({', '.join(rest)})"
    return head or ", ".join(rest)


def _render_json(value: Any, title: str | None) -> list[str]:
    label = humanize(title) if title else None
    if isinstance(value, list):
        if not value:
            return [f"{label}: no results." if label else "No results."]
        if all(isinstance(v, dict) for v in value):
            rows = [_row(v) for v in value[:_MAX_ROWS]]
            tail = "; and more" if len(value) > _MAX_ROWS else ""
            return [f"{label or 'Results'}: {'; '.join(r for r in rows if r)}{tail}."]
        scalars = [s for s in (_scalar(v) for v in value[:_MAX_ROWS]) if s]
        return [f"{label or 'Results'}: {', '.join(scalars)}."] if scalars else []
    if isinstance(value, dict):
        sentences: list[str] = []
        flat = _render_record(value, title)
        if flat:
            sentences.append(flat)
        for key, nested in value.items():
            if isinstance(nested, dict | list):
                sentences.extend(_render_json(nested, key))
        return sentences
    scalar = _scalar(value)
    if scalar is None:
        return []
    return [f"{label}: {scalar}." if label else f"{scalar}."]


def render_facts(source: FactSource) -> list[str]:
    """Readable sentences restating one facts block (JSON or text)."""
    content = source.content.strip()
    try:
        data = json.loads(content, parse_float=_Num, parse_int=_Num)
    except ValueError:
        data = None
        is_json = False
    else:
        is_json = True
    if is_json:
        return _render_json(data, source.title)
    sentences = []
    for line in content.splitlines():
        line = line.strip().lstrip("-*• ").strip()
        if line:
            sentences.append(line if line[-1] in ".!?" else f"{line}.")
    if source.title and sentences and len(sentences) == 1:
        sentences[0] = f"{humanize(source.title)}: {sentences[0]}"
    return sentences


def _number_forms(token: str) -> set[str]:
    forms = {token, token.replace(",", "")}
    for candidate in list(forms):
        with contextlib.suppress(ValueError):
            forms.add(format(float(candidate), "g"))
    return forms


def grounded_numbers(text: str, sources: Sequence[str]) -> bool:
    """Whether every number written in ``text`` also occurs in ``sources``."""
    allowed: set[str] = set()
    for source in sources:
        for token in _NUMBER.findall(source):
            allowed |= _number_forms(token)
    return all(_number_forms(token) & allowed for token in _NUMBER.findall(text))


# --------------------------------------------------------------------------- the model


def _digest(*parts: Any) -> str:
    raw = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8")
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class OfflineAnswer:
    """What the model decided: text or tool calls, plus usage."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class OfflineModel:
    """The pure offline model (no litellm): OpenAI-shaped in, OpenAI-shaped out."""

    def __init__(self, name: str = OFFLINE_MODEL) -> None:
        self.name = name

    def answer(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> OfflineAnswer:
        """Decide the answer for one request (see the module docstring for the rules)."""
        prompt_tokens = _prompt_tokens(messages, tools)
        calls = self._tool_calls(messages, tools or (), tool_choice, parallel_tool_calls)
        if calls:
            completion = sum(count_tokens(c["function"]["name"] + c["function"]["arguments"]) for c in calls)
            return OfflineAnswer(None, calls, "tool_calls", prompt_tokens, completion)
        sources = collect_facts(messages)
        sentences = self._sentences(sources)
        content = " ".join(sentences) if sentences else NO_DATA_ANSWER
        finish = "stop"
        if response_format and response_format.get("type") in {"json_object", "json_schema"}:
            content = _json_answer(content, sentences, response_format)
        elif max_tokens is not None and max_tokens > 0 and count_tokens(content) > max_tokens:
            content, finish = _truncate(content, max_tokens), "length"
        return OfflineAnswer(content, [], finish, prompt_tokens, count_tokens(content))

    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
        parallel_tool_calls: bool | None = None,
        created: int | None = None,
    ) -> dict[str, Any]:
        """One ``chat.completion`` object (OpenAI shape) for the request."""
        result = self.answer(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            max_tokens=max_tokens,
            parallel_tool_calls=parallel_tool_calls,
        )
        message: dict[str, Any] = {"role": "assistant", "content": result.content}
        if result.tool_calls:
            message["tool_calls"] = result.tool_calls
        return {
            "id": f"chatcmpl-offline-{_digest(list(messages), list(tools or []), tool_choice, response_format)}",
            "object": "chat.completion",
            "created": int(time.time()) if created is None else created,
            "model": self.name,
            "choices": [{"index": 0, "message": message, "finish_reason": result.finish_reason}],
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
        }

    # ------------------------------------------------------------------ internals

    def _tool_calls(
        self,
        messages: Sequence[Mapping[str, Any]],
        specs: Sequence[Mapping[str, Any]],
        tool_choice: str | Mapping[str, Any] | None,
        parallel: bool | None,
    ) -> list[dict[str, Any]]:
        tools = [t for t in (_tool_from_spec(s) for s in specs) if t is not None]
        if not tools or tool_choice == "none":
            return []
        forced_name: str | None = None
        if isinstance(tool_choice, Mapping):
            function = tool_choice.get("function")
            forced_name = str(function.get("name")) if isinstance(function, Mapping) else None
        force = tool_choice == "required" or forced_name is not None
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        answered = any(m.get("role") == "tool" for m in messages[last_user + 1 :])
        if answered and not force:
            return []
        question = _content_text(messages[last_user].get("content")) if last_user >= 0 else ""
        today = reference_date(messages)
        periods = find_periods(question, today)
        # Period phrases qualify the request; their words ("last *week*") must not pick enum values
        # other than period enums ("this_month").
        q = _Question(question, expand(terms(_without_periods(question, periods))), periods,
                      _free_numbers(question, periods), expand(terms(question)))  # fmt: skip
        if forced_name is not None:
            chosen = [t for t in tools if t.name == forced_name][:1]
        else:
            limit = 1 if parallel is False else _MAX_CALLS
            chosen = select_tools(question, tools, force=force, limit=limit)
        calls: list[dict[str, Any]] = []
        for tool in chosen:
            for picks, period in _fan_out(tool, q):
                arguments = _fill(tool.parameters, q, today, period, picks)
                calls.append({"name": tool.name, "arguments": arguments})
        if parallel is False or forced_name is not None:
            calls = calls[:1]
        calls = calls[:_MAX_CALLS]
        call_id = _digest(list(messages), [c["name"] for c in calls])
        return [
            {
                "id": f"call_{call_id}_{index}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)},
            }
            for index, c in enumerate(calls)
        ]

    def _sentences(self, sources: Sequence[FactSource]) -> list[str]:
        corpus = [s.content for s in sources] + [s.title for s in sources if s.title]
        sentences: list[str] = []
        for source in sources:
            for sentence in render_facts(source):
                if grounded_numbers(sentence, corpus):
                    sentences.append(sentence)
                else:  # never say a number the facts do not contain
                    logger.warning("offline.ungrounded_sentence_dropped", extra={"sentence": sentence})
        return sentences[:_MAX_SENTENCES]


def _without_periods(question: str, periods: Sequence[Period]) -> str:
    """The folded question with its period phrases blanked out."""
    folded = fold(question)
    for period in periods:
        start, end = period.span
        folded = folded[:start] + " " * (end - start) + folded[end:]
    return folded


def _free_numbers(question: str, periods: Sequence[Period]) -> list[float]:
    folded = fold(question)
    numbers: list[float] = []
    for match in re.finditer(r"(?<![\w.-])\d+(?:\.\d+)?(?![\w-])", folded):
        if any(p.span[0] <= match.start() < p.span[1] for p in periods):
            continue
        numbers.append(float(match[0]))
    return numbers


def _prompt_tokens(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None) -> int:
    total = 0
    for message in messages:
        total += 4 + count_tokens(_content_text(message.get("content")))
        if message.get("tool_calls"):
            total += count_tokens(json.dumps(message["tool_calls"], ensure_ascii=False))
    if tools:
        total += count_tokens(json.dumps(list(tools), ensure_ascii=False))
    return total


def _truncate(text: str, max_tokens: int) -> str:
    pieces = text.split(" ")
    while len(pieces) > 1 and count_tokens(" ".join(pieces)) > max_tokens:
        pieces.pop()
    return " ".join(pieces)


def _json_answer(prose: str, sentences: Sequence[str], response_format: Mapping[str, Any]) -> str:
    base: dict[str, Any] = {"answer": prose, "facts": list(sentences)}
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if not isinstance(schema, Mapping) or not _properties(schema):
        return json.dumps(base, ensure_ascii=False)
    out: dict[str, Any] = {}
    prose_used = False
    for name, prop in _properties(schema).items():
        kind = _type_of(prop)
        if kind == "string" and not prose_used:
            out[name], prose_used = prose, True
        elif kind == "string":
            out[name] = ""
        elif kind == "array":
            out[name] = list(sentences)
        elif kind == "boolean":
            out[name] = bool(sentences)
        elif name in schema.get("required", []):
            out[name] = None  # no number the facts do not hold
    return json.dumps(out, ensure_ascii=False)


def stream_pieces(text: str, size: int = 3) -> Iterator[str]:
    """``text`` in pieces of ``size`` words (joined they give ``text`` back)."""
    parts = re.findall(r"\S+\s*|\s+", text)
    for i in range(0, len(parts), size):
        yield "".join(parts[i : i + size])


# --------------------------------------------------------------------------- litellm custom provider

_registered: Any = None


def register_offline_provider() -> None:
    """Register the offline model and embedder as litellm's ``copilot-offline`` provider (idempotent)."""
    global _registered
    from gateway.providers.litellm_provider import load_litellm

    litellm = load_litellm()
    if _registered is not None and any(
        item.get("custom_handler") is _registered for item in litellm.custom_provider_map
    ):
        litellm.utils.custom_llm_setup()
        return
    handler = _make_handler()
    litellm.custom_provider_map = [
        item for item in litellm.custom_provider_map if item.get("provider") != OFFLINE_PROVIDER
    ] + [{"provider": OFFLINE_PROVIDER, "custom_handler": handler}]
    litellm.utils.custom_llm_setup()
    _registered = handler


def _options(optional_params: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "tools": optional_params.get("tools"),
        "tool_choice": optional_params.get("tool_choice"),
        "response_format": optional_params.get("response_format"),
        "max_tokens": optional_params.get("max_tokens") or optional_params.get("max_completion_tokens"),
        "parallel_tool_calls": optional_params.get("parallel_tool_calls"),
    }


def _make_handler() -> Any:
    import litellm
    from litellm.llms.custom_llm import CustomLLM
    from litellm.types.utils import GenericStreamingChunk

    class OfflineLLM(CustomLLM):
        """litellm's view of :class:`OfflineModel` and the local embedder."""

        def __init__(self) -> None:
            super().__init__()
            self.models: dict[str, OfflineModel] = {}

        def _model(self, name: str) -> OfflineModel:
            if name not in self.models:
                self.models[name] = OfflineModel(name)
            return self.models[name]

        def _response(self, model: str, messages: list[Any], optional_params: dict[str, Any]) -> Any:
            body = self._model(model).complete(messages, **_options(optional_params))
            return litellm.ModelResponse(**body)

        def completion(self, *args: Any, **kwargs: Any) -> Any:
            return self._response(kwargs["model"], kwargs["messages"], kwargs["optional_params"])

        async def acompletion(self, *args: Any, **kwargs: Any) -> Any:
            return self._response(kwargs["model"], kwargs["messages"], kwargs["optional_params"])

        def _chunks(self, model: str, messages: list[Any], optional_params: dict[str, Any]) -> list[Any]:
            result = self._model(model).answer(messages, **_options(optional_params))
            usage = {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            }
            chunks: list[Any] = []
            if result.tool_calls:
                for index, call in enumerate(result.tool_calls):
                    chunks.append(
                        GenericStreamingChunk(
                            text="",
                            tool_use={**call, "index": index},  # type: ignore[typeddict-item]
                            is_finished=False,
                            finish_reason="",
                            usage=None,
                            index=0,
                        )
                    )
            else:
                for piece in stream_pieces(result.content or ""):
                    chunks.append(
                        GenericStreamingChunk(
                            text=piece, tool_use=None, is_finished=False, finish_reason="", usage=None, index=0
                        )
                    )
            chunks.append(
                GenericStreamingChunk(
                    text="",
                    tool_use=None,
                    is_finished=True,
                    finish_reason=result.finish_reason,
                    usage=usage,  # type: ignore[typeddict-item]
                    index=0,
                )
            )
            return chunks

        def streaming(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
            yield from self._chunks(kwargs["model"], kwargs["messages"], kwargs["optional_params"])

        # litellm declares a coroutine returning an iterator but wraps whatever it gets in its
        # stream wrapper, which iterates an async generator directly.
        async def astreaming(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
            for chunk in self._chunks(kwargs["model"], kwargs["messages"], kwargs["optional_params"]):
                yield chunk

        def _embedding(self, model: str, inputs: list[Any], optional_params: dict[str, Any], response: Any) -> Any:
            texts = [item if isinstance(item, str) else json.dumps(item) for item in inputs]
            dimensions = optional_params.get("dimensions")
            vectors = [embed_text(text, int(dimensions)) if dimensions else embed_text(text) for text in texts]
            tokens = sum(count_tokens(text) for text in texts)
            response.model = model
            response.object = "list"
            response.data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
            response.usage = litellm.Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens)
            return response

        def embedding(self, *args: Any, **kwargs: Any) -> Any:
            return self._embedding(
                kwargs["model"], kwargs["input"], kwargs["optional_params"], kwargs["model_response"]
            )

        async def aembedding(self, *args: Any, **kwargs: Any) -> Any:
            return self._embedding(
                kwargs["model"], kwargs["input"], kwargs["optional_params"], kwargs["model_response"]
            )

    return OfflineLLM()


__all__ = [
    "NO_DATA_ANSWER",
    "OFFLINE_MODEL",
    "OFFLINE_PROVIDER",
    "FactSource",
    "OfflineAnswer",
    "OfflineModel",
    "Period",
    "collect_facts",
    "find_periods",
    "grounded_numbers",
    "reference_date",
    "register_offline_provider",
    "render_facts",
]
