"""A cheap, offline language guess for short merchant texts (no models, no downloads).

Scripts decide non-Latin languages outright; Latin-script text is scored by
common function words and a few telltale letters. The answer is ``None``
when nothing is convincing: a wrong label is worse than none.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)

_STOPWORD_TEXT: dict[str, str] = {
    "en": (
        "the and was were is are a an of to in it for with my our this that not but very "
        "will be at on they had have great good friendly staff service you your nothing"
    ),
    "de": (
        "der die das und ist war nicht sehr mit ein eine im zu auf für ich wir aber auch "
        "gerne wieder etwas ganz schon noch nur den dem des sich"
    ),
    "fr": (
        "le la les et est était pas très un une des du de au avec pour je nous mais trop "
        "mon ma mes bien bon bonne ne qui que à peu ai j"
    ),
    "es": ("el la los las y es era no muy un una del de con para por pero que mi algo bien fue está volveré tuve"),
    "it": "il lo gli e è era non molto un una del della con per ma che di da sono",
    "nl": "de het een en is was niet heel met voor maar ook van op zijn wij ik",
    "pt": "o os as e é era não muito um uma do da com para mas que de em foi",
}
_STOPWORDS = {lang: frozenset(words.split()) for lang, words in _STOPWORD_TEXT.items()}
_LETTER_HINTS: dict[str, str] = {"ß": "de", "ä": "de", "ö": "de", "ü": "de", "ñ": "es", "¿": "es", "¡": "es",
                                 "ç": "fr", "è": "fr", "ê": "fr", "œ": "fr", "ã": "pt", "õ": "pt"}  # fmt: skip


def _script_language(text: str) -> str | None:
    counts = {"ja": 0, "zh": 0, "ko": 0, "ru": 0, "ar": 0, "he": 0, "el": 0, "th": 0, "hi": 0}
    for char in text:
        code = ord(char)
        if 0x3040 <= code <= 0x30FF:
            counts["ja"] += 1
        elif 0x4E00 <= code <= 0x9FFF:
            counts["zh"] += 1
        elif 0xAC00 <= code <= 0xD7AF:
            counts["ko"] += 1
        elif 0x0400 <= code <= 0x04FF:
            counts["ru"] += 1
        elif 0x0600 <= code <= 0x06FF:
            counts["ar"] += 1
        elif 0x0590 <= code <= 0x05FF:
            counts["he"] += 1
        elif 0x0370 <= code <= 0x03FF:
            counts["el"] += 1
        elif 0x0E00 <= code <= 0x0E7F:
            counts["th"] += 1
        elif 0x0900 <= code <= 0x097F:
            counts["hi"] += 1
    if counts["ja"]:
        # Kana means Japanese even when most characters are kanji.
        return "ja"
    best = max(counts, key=lambda k: counts[k])
    letters = sum(1 for char in text if char.isalpha())
    return best if letters and counts[best] / letters > 0.3 else None


def detect_language(text: str) -> str | None:
    """An ISO 639-1 code for ``text``, or ``None`` when unsure."""
    sample = text[:2000]
    script = _script_language(sample)
    if script is not None:
        return script
    words = [w.casefold() for w in _WORD.findall(sample)]
    if not words:
        return None
    scores = {lang: sum(1 for w in words if w in stop) for lang, stop in _STOPWORDS.items()}
    for char in sample.casefold():
        lang = _LETTER_HINTS.get(char)
        if lang is not None:
            scores[lang] += 1
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    (best, top), (_, second) = ranked[0], ranked[1]
    if top == 0 or top == second:
        return None
    return best
