"""Whitespace normalisation and deterministic chunking of merchant text.

Text is split at the coarsest boundary that yields pieces of at most
``max_chars``: paragraphs (blank lines), then lines, then sentences, then
words, and only as a last resort inside a word (long URLs, CJK text without
spaces). Pieces are packed greedily into chunks; each chunk after the first
starts with a short tail of the previous one (``overlap`` characters at most,
cut at a sentence or word boundary) so a fact straddling a boundary is still
found. The same input always gives the same chunks, and no chunk is empty.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

MAX_CHARS = 800
OVERLAP = 100

# Postgres text cannot hold NUL, and other C0/C1 controls (from PDFs, OCR,
# binary junk in "text" files) only confuse embedders; tabs and newlines are
# whitespace and handled below.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
# Every horizontal whitespace character (NBSP, tabs, thin spaces, ...) and zero-width marks.
_HSPACE = re.compile(r"[^\S\n]+")
_ZERO_WIDTH = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
_BLANK_LINES = re.compile(r"\n{2,}")
# A sentence ends at . ! ? … (optionally followed by closing quotes/brackets)
# before a space (so "3.40" is not a boundary), or right after CJK full stops,
# which need no space.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?= )|[。！？]+[」』）]*")
# Where the overlap carried into the next chunk may start.
_TAIL_START = re.compile(r"[.!?…]+[\"'”’)\]]*\s|[。！？]+[」』）]*|\n")


def normalize_text(text: str) -> str:
    """Normalise whitespace, keeping line and paragraph structure.

    Line endings become ``\\n``, runs of spaces and tabs (any Unicode
    whitespace) one space, lines are stripped, two or more line breaks one
    blank line, and control characters are dropped. Nothing else changes:
    merchant text is stored as given.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u2028", "\n").replace("\u2029", "\n\n").replace("\x0c", "\n\n")
    text = _ZERO_WIDTH.sub("", text)
    text = _CONTROL.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = _HSPACE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def content_sha256(text: str) -> str:
    """Hex SHA-256 of the UTF-8 text (what decides whether a chunk changed)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _Piece:
    text: str
    sep: str  # what joins it to the previous piece when both are in one chunk


def _sentences(line: str) -> list[tuple[str, str]]:
    """(sentence, separator-before) pairs of one line."""
    parts: list[tuple[str, str]] = []
    start = 0
    sep = ""
    for match in _SENTENCE_END.finditer(line):
        end = match.end()
        piece = line[start:end].strip(" ")
        if piece:
            parts.append((piece, sep))
        sep = ""
        if line[end : end + 1] == " ":
            sep, end = " ", end + 1
        start = end
    if start < len(line):
        parts.append((line[start:], sep))
    return parts


def _hard_split(text: str, max_chars: int, sep: str) -> list[_Piece]:
    return [_Piece(text[i : i + max_chars], sep if i == 0 else "") for i in range(0, len(text), max_chars)]


def _pieces(text: str, max_chars: int) -> list[_Piece]:
    """Split into pieces of at most ``max_chars``, as coarsely as possible."""
    result: list[_Piece] = []
    for p_index, paragraph in enumerate(text.split("\n\n")):
        p_sep = "\n\n" if p_index else ""
        if len(paragraph) <= max_chars:
            result.append(_Piece(paragraph, p_sep))
            continue
        for l_index, line in enumerate(paragraph.split("\n")):
            l_sep = "\n" if l_index else p_sep
            if len(line) <= max_chars:
                result.append(_Piece(line, l_sep))
                continue
            for s_index, (sentence, s_sep) in enumerate(_sentences(line)):
                sep = s_sep if s_index else l_sep
                if len(sentence) <= max_chars:
                    result.append(_Piece(sentence, sep))
                    continue
                for w_index, word in enumerate(sentence.split(" ")):
                    w_sep = " " if w_index else sep
                    if len(word) <= max_chars:
                        result.append(_Piece(word, w_sep))
                    else:
                        result.extend(_hard_split(word, max_chars, w_sep))
    return [piece for piece in result if piece.text]


def _tail(text: str, limit: int) -> str:
    """The end of ``text``, at most ``limit`` chars, starting at a sentence or word."""
    if limit <= 0 or not text:
        return ""
    window = text[-limit:]
    if len(text) <= limit:
        return window
    for match in _TAIL_START.finditer(window):
        rest = window[match.end() :].strip()
        if rest:
            return rest
    space = re.search(r"\s", window)
    return window[space.end() :].strip() if space else ""


def chunk_text(text: str | None, *, max_chars: int = MAX_CHARS, overlap: int = OVERLAP) -> list[str]:
    """Split text into normalised chunks of at most ``max_chars`` characters.

    Args:
        text: Any text; ``None`` or whitespace-only gives no chunks.
        max_chars: Upper bound of every chunk's length.
        overlap: Upper bound of the text repeated from the previous chunk.

    Returns:
        The chunks, in order; deterministic and never empty strings.
    """
    if max_chars < 20:
        raise ValueError("max_chars must be at least 20")
    if not 0 <= overlap <= max_chars // 2:
        raise ValueError("overlap must be between 0 and max_chars // 2")
    normalized = normalize_text(text or "")
    if not normalized:
        return []
    if len(normalized) <= max_chars:
        return [normalized]

    chunks: list[str] = []
    current = ""
    for piece in _pieces(normalized, max_chars):
        candidate = f"{current}{piece.sep}{piece.text}" if current else piece.text
        if len(candidate) <= max_chars:
            current = candidate
            continue
        chunks.append(current)
        tail = _tail(current, overlap)
        joined = f"{tail}{piece.sep}{piece.text}" if tail else piece.text
        current = joined if len(joined) <= max_chars else piece.text
    if current:
        chunks.append(current)
    return chunks
