"""Binary attachments: receipt images, PDF documents and voice notes.

Everything is rendered deterministically (no timestamps in any container) so
that the same seed produces identical bytes. Images use Pillow's bundled font
rather than a system font so output does not depend on what is installed; that
font only covers ASCII, so image text is folded to ASCII first.
"""

from __future__ import annotations

import io
import math
import random
import sys
import unicodedata
import wave
from array import array
from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

Line = str | tuple[str, str]
"""A text line, or a (left, right) pair whose right part is right-aligned."""

_WIDTH = 760
_MARGIN = 36
_FONT_SIZE = 26
_TITLE_SIZE = 34
_LINE_HEIGHT = 38


def to_ascii(text: str) -> str:
    """Fold text to ASCII (``Bäckerei`` -> ``Backerei``) for the image font."""
    text = text.replace("ß", "ss")
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return folded


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: small bitmap font
        return ImageFont.load_default()


def render_document_image(title: str, lines: Sequence[Line], image_format: str = "PNG") -> bytes:
    """Render black-on-white printed text (a receipt or invoice) as an image.

    Args:
        title: First line, printed larger.
        lines: Body lines; tuples are printed as left text and a right-aligned
            amount. An empty string is a blank line, ``"-"`` a rule.
        image_format: ``"PNG"`` or ``"JPEG"``.

    Returns:
        The encoded image.
    """
    title_font = _font(_TITLE_SIZE)
    font = _font(_FONT_SIZE)
    height = _MARGIN * 2 + 56 + _LINE_HEIGHT * len(lines)
    mode = "L" if image_format == "PNG" else "RGB"
    image = Image.new(mode, (_WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((_MARGIN, _MARGIN), to_ascii(title), font=title_font, fill="black")
    y = _MARGIN + 56
    for line in lines:
        if line == "-":
            draw.line((_MARGIN, y + _LINE_HEIGHT // 2, _WIDTH - _MARGIN, y + _LINE_HEIGHT // 2), fill="black", width=2)
        elif isinstance(line, tuple):
            left, right = to_ascii(line[0]), to_ascii(line[1])
            draw.text((_MARGIN, y), left, font=font, fill="black")
            width = draw.textlength(right, font=font)
            draw.text((_WIDTH - _MARGIN - width, y), right, font=font, fill="black")
        elif line:
            draw.text((_MARGIN, y), to_ascii(line), font=font, fill="black")
        y += _LINE_HEIGHT
    buf = io.BytesIO()
    if image_format == "JPEG":
        image.save(buf, format="JPEG", quality=90)
    else:
        image.save(buf, format="PNG")
    return buf.getvalue()


def _pdf_text(text: str) -> bytes:
    raw = text.encode("cp1252", "replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def build_pdf(title: str, lines: Sequence[str], lines_per_page: int = 46) -> bytes:
    """Write a minimal valid PDF whose text is a real, extractable text layer.

    Args:
        title: Heading of the first page and the document's /Title.
        lines: Body text, one entry per printed line.
        lines_per_page: Lines before a page break.

    Returns:
        The PDF file (Helvetica, WinAnsi encoding, A4 pages).
    """
    chunks = [list(lines[i : i + lines_per_page]) for i in range(0, len(lines), lines_per_page)] or [[]]
    n_pages = len(chunks)
    # Object numbers: 1 catalog, 2 page tree, 3 font, 4 info, then per page
    # a page object and its content stream.
    page_ids = [5 + 2 * i for i in range(n_pages)]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % p for p in page_ids) + b"] /Count %d >>" % n_pages,
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        4: b"<< /Title (" + _pdf_text(title) + b") /Producer (merchant-copilot synthetic) >>",
    }
    for i, chunk in enumerate(chunks):
        ops = [b"BT"]
        if i == 0:
            ops += [b"/F1 18 Tf", b"56 790 Td", b"(" + _pdf_text(title) + b") Tj", b"/F1 11 Tf", b"15 TL", b"0 -30 Td"]
        else:
            ops += [b"/F1 11 Tf", b"15 TL", b"56 790 Td"]
        for line in chunk:
            ops.append(b"(" + _pdf_text(line) + b") Tj T*")
        ops.append(b"ET")
        stream = b"\n".join(ops) + b"\n"
        page_id = page_ids[i]
        objects[page_id] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (page_id + 1)
        )
        objects[page_id + 1] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream"
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    xref_at = len(out)
    count = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % count
    for num in range(1, count):
        out += b"%010d 00000 n \n" % offsets[num]
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (count, xref_at)
    return bytes(out)


@lru_cache(maxsize=32)
def _tone(freq: float, length: int, rate: int) -> array[int]:
    """One enveloped sine burst; cached because voice notes reuse pitches."""
    return array(
        "h",
        (int(9000 * math.sin(math.pi * j / length) * math.sin(2 * math.pi * freq * j / rate)) for j in range(length)),
    )


def build_wav(rng: random.Random, seconds: float = 1.6, rate: int = 16000) -> bytes:
    """A short mono 16-bit WAV of a few tone bursts, standing in for speech.

    Args:
        rng: Chooses the pitches.
        seconds: Duration.
        rate: Sample rate in Hz.

    Returns:
        The RIFF/WAVE file.
    """
    total = int(seconds * rate)
    samples = array("h", bytes(2 * total))
    burst = int(0.22 * rate)
    gap = int(0.08 * rate)
    pos = int(0.05 * rate)
    while pos + burst < total:
        freq = rng.choice((196.0, 220.0, 262.0, 294.0, 330.0, 392.0))
        samples[pos : pos + burst] = _tone(freq, burst, rate)
        pos += burst + gap
    if sys.byteorder == "big":
        samples.byteswap()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()
