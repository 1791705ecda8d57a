"""The question's language, and the words and number formats answers use in it.

Answers are written in the language of the question. The computed facts are
handed to the model already labelled and formatted in that language, so even
the offline model, which restates facts, answers in it; the deterministic
fallback uses the same words. Supported: English, French, Spanish, German
(anything else is answered in English).
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

from orchestrator.grounding import fold

LANGUAGES = ("en", "fr", "es", "de")

_MARKERS: dict[str, frozenset[str]] = {
    "en": frozenset(
        [
            "the",
            "my",
            "what",
            "how",
            "much",
            "many",
            "did",
            "was",
            "were",
            "last",
            "week",
            "month",
            "yesterday",
            "today",
            "sales",
            "i",
            "is",
            "and",
            "of",
            "in",
            "did",
            "were",
            "have",
            "made",
            "best",
            "which",
        ]
    ),
    "fr": frozenset(
        [
            "le",
            "la",
            "les",
            "des",
            "du",
            "mon",
            "ma",
            "mes",
            "quel",
            "quelle",
            "quels",
            "combien",
            "est",
            "semaine",
            "mois",
            "dernier",
            "derniere",
            "hier",
            "aujourd",
            "ai",
            "j",
            "chiffre",
            "affaires",
            "ventes",
            "et",
            "pour",
            "sur",
            "avec",
            "qu",
            "que",
            "mes",
            "meilleurs",
        ]
    ),
    "es": frozenset(
        [
            "el",
            "los",
            "las",
            "mi",
            "mis",
            "cuanto",
            "cuantos",
            "cuantas",
            "cual",
            "que",
            "ayer",
            "hoy",
            "semana",
            "mes",
            "pasada",
            "pasado",
            "ventas",
            "tuve",
            "fue",
            "y",
            "por",
            "con",
            "gane",
            "vendi",
            "mejores",
        ]
    ),
    "de": frozenset(
        [
            "der",
            "die",
            "das",
            "mein",
            "meine",
            "meinen",
            "wie",
            "viel",
            "viele",
            "was",
            "war",
            "letzten",
            "letzte",
            "gestern",
            "heute",
            "woche",
            "monat",
            "umsatz",
            "und",
            "ich",
            "hoch",
            "habe",
            "welche",
            "am",
        ]
    ),
}
_WORD = re.compile(r"[a-z]+")


def detect_language(text: str) -> str:
    """The most likely of :data:`LANGUAGES` for ``text`` (English when unsure)."""
    words = _WORD.findall(fold(text))
    if not words:
        return "en"
    scores = {lang: sum(1 for w in words if w in markers) for lang, markers in _MARKERS.items()}
    best = max(LANGUAGES, key=lambda lang: (scores[lang], lang == "en"))
    return best if scores[best] > scores["en"] or best == "en" else "en"


# -------------------------------------------------------------------------- words

_METRIC_LABELS: dict[str, dict[str, str]] = {
    "net_sales": {"en": "Net sales", "fr": "Chiffre d'affaires net", "es": "Ventas netas", "de": "Nettoumsatz"},
    "gross_sales": {"en": "Gross sales", "fr": "Ventes brutes", "es": "Ventas brutas", "de": "Bruttoumsatz"},
    "refunds": {"en": "Refunds", "fr": "Remboursements", "es": "Reembolsos", "de": "Erstattungen"},
    "transactions": {"en": "Transactions", "fr": "Transactions", "es": "Transacciones", "de": "Transaktionen"},
    "average_ticket": {"en": "Average ticket", "fr": "Panier moyen", "es": "Ticket medio", "de": "Durchschnittsbon"},
    "tips": {"en": "Tips", "fr": "Pourboires", "es": "Propinas", "de": "Trinkgeld"},
    "units_sold": {"en": "Units sold", "fr": "Articles vendus", "es": "Unidades vendidas", "de": "Verkaufte Stück"},
    "unique_customers": {"en": "Unique customers", "fr": "Clients uniques", "es": "Clientes únicos", "de": "Kunden"},
    "returning_customers": {
        "en": "Returning customers",
        "fr": "Clients fidèles",
        "es": "Clientes recurrentes",
        "de": "Stammkunden",
    },
    "payment_method_mix": {
        "en": "Payment methods",
        "fr": "Moyens de paiement",
        "es": "Métodos de pago",
        "de": "Zahlungsarten",
    },
}

_WORDS: dict[str, dict[str, str]] = {
    "today": {"en": "today", "fr": "aujourd'hui", "es": "hoy", "de": "heute"},
    "yesterday": {"en": "yesterday", "fr": "hier", "es": "ayer", "de": "gestern"},
    "this_week": {"en": "this week", "fr": "cette semaine", "es": "esta semana", "de": "diese Woche"},
    "last_week": {"en": "last week", "fr": "la semaine dernière", "es": "la semana pasada", "de": "letzte Woche"},
    "this_month": {"en": "this month", "fr": "ce mois-ci", "es": "este mes", "de": "diesen Monat"},
    "last_month": {"en": "last month", "fr": "le mois dernier", "es": "el mes pasado", "de": "letzten Monat"},
    "this_year": {"en": "this year", "fr": "cette année", "es": "este año", "de": "dieses Jahr"},
    "last_year": {"en": "last year", "fr": "l'année dernière", "es": "el año pasado", "de": "letztes Jahr"},
    "last_n_days": {
        "en": "the last {n} days",
        "fr": "les {n} derniers jours",
        "es": "los últimos {n} días",
        "de": "die letzten {n} Tage",
    },
    "to": {"en": "to", "fr": "au", "es": "al", "de": "bis"},
    "up": {"en": "up", "fr": "en hausse de", "es": "un aumento de", "de": "ein Plus von"},
    "down": {"en": "down", "fr": "en baisse de", "es": "una caída de", "de": "ein Minus von"},
    "vs": {"en": "compared with", "fr": "par rapport à", "es": "frente a", "de": "gegenüber"},
    "usual": {
        "en": "the usual level (same days over the {n} weeks before)",
        "fr": "l'habitude (mêmes jours des {n} semaines précédentes)",
        "es": "lo habitual (mismos días de las {n} semanas anteriores)",
        "de": "dem Üblichen (gleiche Tage der {n} Wochen davor)",
    },
    "by": {"en": "by", "fr": "par", "es": "por", "de": "nach"},
    "change": {"en": "change", "fr": "variation", "es": "variación", "de": "Veränderung"},
    "no_data": {
        "en": "There is no data for {period}.",
        "fr": "Il n'y a pas de données pour {period}.",
        "es": "No hay datos para {period}.",
        "de": "Für {period} gibt es keine Daten.",
    },
    "cannot": {
        "en": "I can't answer that from your data.",
        "fr": "Je ne peux pas répondre à cela à partir de vos données.",
        "es": "No puedo responder a eso con tus datos.",
        "de": "Das kann ich aus Ihren Daten nicht beantworten.",
    },
    "other_merchant": {
        "en": "I can only see your own business's data, not any other merchant's.",
        "fr": "Je ne vois que les données de votre commerce, pas celles d'autres commerçants.",
        "es": "Solo veo los datos de tu negocio, no los de otros comercios.",
        "de": "Ich sehe nur die Daten Ihres eigenen Geschäfts, nicht die anderer Händler.",
    },
    "can_do": {
        "en": "I can tell you about your sales, refunds, transactions, average ticket, tips, units sold, "
        "customers and payment methods for any period (by day, week, month, hour, weekday, product or "
        "category, compared with before), and what your reviews and notes say.",
        "fr": "Je peux vous renseigner sur vos ventes, remboursements, transactions, panier moyen, pourboires, "
        "articles vendus, clients et moyens de paiement sur n'importe quelle période (par jour, semaine, mois, "
        "heure, jour de la semaine, produit ou catégorie, avec comparaison), et sur ce que disent vos avis "
        "et notes.",
        "es": "Puedo informarte de tus ventas, reembolsos, transacciones, ticket medio, propinas, unidades "
        "vendidas, clientes y métodos de pago en cualquier periodo (por día, semana, mes, hora, día de la "
        "semana, producto o categoría, comparado con antes), y de lo que dicen tus reseñas y notas.",
        "de": "Ich kann Ihnen Umsatz, Erstattungen, Transaktionen, Durchschnittsbon, Trinkgeld, verkaufte "
        "Stück, Kunden und Zahlungsarten für jeden Zeitraum nennen (nach Tag, Woche, Monat, Stunde, "
        "Wochentag, Produkt oder Kategorie, im Vergleich zu vorher) und was Ihre Bewertungen und Notizen "
        "sagen.",
    },
    "reviews": {
        "en": "What your customers and notes say:",
        "fr": "Ce que disent vos clients et vos notes :",
        "es": "Lo que dicen tus clientes y notas:",
        "de": "Was Ihre Kunden und Notizen sagen:",
    },
    "no_text": {
        "en": "I found nothing about that in your reviews or notes.",
        "fr": "Je n'ai rien trouvé à ce sujet dans vos avis ou vos notes.",
        "es": "No encontré nada sobre eso en tus reseñas o notas.",
        "de": "Dazu habe ich in Ihren Bewertungen und Notizen nichts gefunden.",
    },
    "follow_compare": {
        "en": "How does that compare with the period before?",
        "fr": "Comment cela se compare-t-il à la période précédente ?",
        "es": "¿Cómo se compara con el periodo anterior?",
        "de": "Wie ist das im Vergleich zum Zeitraum davor?",
    },
    "follow_by_day": {
        "en": "Break it down by day.",
        "fr": "Détaillez par jour.",
        "es": "Desglósalo por día.",
        "de": "Schlüsseln Sie es nach Tagen auf.",
    },
    "follow_products": {
        "en": "Which products sold best?",
        "fr": "Quels produits se sont le mieux vendus ?",
        "es": "¿Qué productos se vendieron mejor?",
        "de": "Welche Produkte liefen am besten?",
    },
    "follow_reviews": {
        "en": "What do customers say in their reviews?",
        "fr": "Que disent les clients dans leurs avis ?",
        "es": "¿Qué dicen los clientes en sus reseñas?",
        "de": "Was sagen die Kunden in ihren Bewertungen?",
    },
}

_GROUP_WORDS: dict[str, dict[str, str]] = {
    "day": {"en": "day", "fr": "jour", "es": "día", "de": "Tag"},
    "week": {"en": "week", "fr": "semaine", "es": "semana", "de": "Woche"},
    "month": {"en": "month", "fr": "mois", "es": "mes", "de": "Monat"},
    "hour_of_day": {"en": "hour", "fr": "heure", "es": "hora", "de": "Stunde"},
    "weekday": {"en": "weekday", "fr": "jour de la semaine", "es": "día de la semana", "de": "Wochentag"},
    "product": {"en": "product", "fr": "produit", "es": "producto", "de": "Produkt"},
    "category": {"en": "category", "fr": "catégorie", "es": "categoría", "de": "Kategorie"},
    "payment_method": {"en": "payment method", "fr": "moyen de paiement", "es": "método de pago", "de": "Zahlungsart"},
}


def _pick(table: dict[str, str], lang: str) -> str:
    return table.get(lang) or table["en"]


def metric_label(metric: str, lang: str) -> str:
    """A metric's name in ``lang``."""
    return _pick(_METRIC_LABELS.get(metric, {"en": metric.replace("_", " ").capitalize()}), lang)


def word(key: str, lang: str, **values: object) -> str:
    """A phrase of the answer vocabulary in ``lang``."""
    return _pick(_WORDS[key], lang).format(**values)


def group_word(group: str, lang: str) -> str:
    """A breakdown dimension's name in ``lang``."""
    return _pick(_GROUP_WORDS.get(group, {"en": group}), lang)


# -------------------------------------------------------------------------- numbers


def format_number(value: Decimal | int | float, lang: str, decimals: int | None = None) -> str:
    """``1234.5`` as ``1,234.50`` (en), ``1 234,50`` (fr), ``1.234,50`` (es, de)."""
    number = Decimal(str(value))
    if decimals is None:
        exponent = number.as_tuple().exponent
        decimals = max(0, -exponent) if isinstance(exponent, int) else 0
    quantum = Decimal(1).scaleb(-decimals)
    text = f"{number.quantize(quantum, rounding=ROUND_HALF_UP):,.{decimals}f}"
    if lang == "fr":
        return text.replace(",", "\u202f").replace(".", ",")
    if lang in ("es", "de"):
        return text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    return text


def format_value(value: Decimal | int | None, unit: str, lang: str) -> str:
    """A value with its unit: ``1,234.56 EUR``, ``12.5%``, ``340 transactions``."""
    if value is None:
        return "n/a"
    if unit == "%":
        return format_number(value, lang) + (" %" if lang in ("fr", "de") else "%")
    if len(unit) == 3 and unit.isupper():
        return f"{format_number(value, lang)} {unit}"
    return format_number(value, lang)


__all__ = [
    "LANGUAGES",
    "detect_language",
    "format_number",
    "format_value",
    "group_word",
    "metric_label",
    "word",
]
