"""Chunking, normalisation and language rules (no database)."""

from __future__ import annotations

import itertools
import random

import pytest

from pipelines.text import MAX_CHARS, OVERLAP, chunk_text, detect_language, normalize_text
from pipelines.text.extract import product_text

WORDS = ("coffee", "cake", "friendly", "staff", "slow", "service", "price", "lunch", "table", "window", "terrace")


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 18))).capitalize() + "."


def _document(seed: int, paragraphs: int = 8) -> str:
    rng = random.Random(seed)
    return "\n\n".join(" ".join(_sentence(rng) for _ in range(rng.randint(1, 14))) for _ in range(paragraphs))


def _overlaps(previous: str, following: str) -> bool:
    return any(following.startswith(previous[-n:]) for n in range(1, OVERLAP + 1))


def test_normalize_collapses_whitespace_and_keeps_structure() -> None:
    raw = "  Great\u00a0coffee,\t\tslow\u2009service \r\n\r\n\r\n\n Will\x00 come\u200b back \r\nLine two  "
    assert normalize_text(raw) == "Great coffee, slow service\n\nWill come back\nLine two"


@pytest.mark.parametrize("empty", [None, "", "   ", "\n\n\t\r\n", "\x00\u200b"])
def test_no_text_gives_no_chunks(empty: str | None) -> None:
    assert chunk_text(empty) == []


def test_short_text_is_one_normalised_chunk() -> None:
    assert chunk_text("  Lovely  cake,\n\n\n friendly staff. ") == ["Lovely cake,\n\nfriendly staff."]


@pytest.mark.parametrize("seed", range(5))
def test_long_text_chunks_are_bounded_deterministic_and_overlapping(seed: int) -> None:
    document = _document(seed)
    chunks = chunk_text(document)
    assert len(chunks) > 1
    assert chunks == chunk_text(document)
    assert all(0 < len(chunk) <= MAX_CHARS for chunk in chunks)
    assert all(chunk == chunk.strip() for chunk in chunks)
    # Nothing is lost: every sentence is inside some chunk.
    for paragraph in document.split("\n\n"):
        for sentence in paragraph.replace(". ", ".\n").split("\n"):
            assert any(sentence in chunk for chunk in chunks), sentence
    # Neighbours share a small overlap (the tail of one starts the next),
    # unless the overlap would not fit in front of a whole next paragraph.
    starts = [p[:50] for p in document.split("\n\n")]
    for a, b in itertools.pairwise(chunks):
        assert _overlaps(a, b) or (b[:50] in starts and len(b) > MAX_CHARS - OVERLAP - 2)


def test_paragraphs_that_fit_are_never_split() -> None:
    rng = random.Random(7)
    paragraphs = []
    for _ in range(4):
        paragraph = ""
        while len(paragraph) < 450:
            paragraph = f"{paragraph} {_sentence(rng)}".strip()
        paragraphs.append(paragraph)
    chunks = chunk_text("\n\n".join(paragraphs))
    for paragraph in paragraphs:
        assert any(paragraph in chunk for chunk in chunks)
    # Chunks end at a paragraph end: a break inside would cut a paragraph.
    assert all(any(chunk.endswith(p) for p in paragraphs) for chunk in chunks)


def test_long_line_lists_split_between_lines() -> None:
    lines = [f"Item number {i} ... {i * 1.25:.2f} EUR" for i in range(120)]
    chunks = chunk_text("\n".join(lines))
    assert len(chunks) > 3
    for line in lines:
        assert any(line in chunk.split("\n") for chunk in chunks), line


def test_text_without_breaks_is_cut_hard_but_bounded() -> None:
    word = "x" * 2000
    chunks = chunk_text(word)
    assert [len(c) for c in chunks] == [800, 800, 400]
    assert "".join(chunks) == word

    japanese = "とても美味しかったです。" * 150
    chunks = chunk_text(japanese)
    assert all(len(c) <= MAX_CHARS for c in chunks)
    assert all(c.startswith("とても") and c.endswith("です。") for c in chunks)


def test_chunk_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("text", max_chars=100, overlap=80)
    assert chunk_text("a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3, max_chars=40, overlap=10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Lovely coffee and friendly staff. The cake was excellent.", "en"),
        ("Super Kaffee und sehr freundliches Personal. Komme gerne wieder!", "de"),
        ("Très bon café, personnel accueillant. Je recommande le croissant.", "fr"),
        ("Muy buen café y personal amable. ¡El mejor sitio del barrio, volveré!", "es"),
        ("ケーキがとても美味しかったです。スタッフも親切でした。", "ja"),
        ("1234 5678", None),
        ("", None),
    ],
)
def test_language_guess(text: str, expected: str | None) -> None:
    assert detect_language(text) == expected


def test_product_text_joins_name_category_description() -> None:
    assert product_text("Flat white", "Coffee", "Double shot,  silky milk") == (
        "Flat white\nCategory: Coffee\nDouble shot,  silky milk"
    )
    assert product_text("Flat white", None, "  ") == "Flat white"
