"""Text out of attachment binaries: PDF text layers, plain text, OCR, transcripts.

Every function takes the file's bytes and returns the text found, or raises
:class:`ExtractionError` (the file is bad) or :class:`UnsupportedContent` (we
have no extractor for it). Libraries raise many other types on corrupt input;
callers treat any exception as a failure of that one file.
"""

from __future__ import annotations

import codecs
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

Transcriber = Callable[[bytes, str], str]
"""Turns audio bytes (and their MIME type) into a transcript."""

MAX_PDF_PAGES = 1000
MAX_PDF_IMAGES = 20  # OCR'd from pages without a text layer, per document
MAX_IMAGE_PIXELS = 60_000_000  # a 60 MP photo; larger files are refused, not decoded
UPSCALE_TARGET = 1600  # images whose longer side is shorter are enlarged, by at most UPSCALE_MAX
UPSCALE_MAX = 1.5

_ocr_engine: Any = None
_ocr_lock = threading.Lock()


class ExtractionError(Exception):
    """The file could not be turned into text (corrupt, encrypted, unreadable)."""


class UnsupportedContent(Exception):
    """No extractor exists for this content type; the attachment is skipped."""


@dataclass
class Extracted:
    """What one extractor made of one file."""

    text: str
    extractor: str
    info: dict[str, Any] = field(default_factory=dict)
    ocr_images: int = 0
    ocr_seconds: float = 0.0

    def describe(self) -> str:
        """A one-line ``extraction_detail`` for a successful extraction."""
        parts = [self.extractor, *(f"{k}={v}" for k, v in self.info.items())]
        if not self.text.strip():
            parts.append("no text found")
        return ", ".join(parts)


def media_type(content_type: str) -> str:
    """``type/subtype`` of a MIME type, lower-cased, without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def _charset(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower() or None
    return None


def decode_text(data: bytes, content_type: str = "text/plain") -> Extracted:
    """Decode a text file: UTF-8 (or a BOM's or a declared charset), bad bytes replaced."""
    if data.startswith(codecs.BOM_UTF8):
        encoding, data = "utf-8", data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8"
        declared = _charset(content_type)
        if declared:
            try:
                encoding = codecs.lookup(declared).name
            except LookupError:
                logger.warning("text.unknown_charset", extra={"charset": declared})
    text = data.decode(encoding, errors="replace")
    return Extracted(text=text, extractor="text", info={"encoding": encoding})


def extract_pdf(data: bytes) -> Extracted:
    """The text layer of a PDF; pages without one have their images OCR'd."""
    from pypdf import PdfReader

    if b"%PDF-" not in data[:1024]:
        raise ExtractionError("not a PDF file (no %PDF- header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractionError("PDF is encrypted with a password")
        pages = reader.pages
        n_pages = len(pages)
    except ExtractionError:
        raise
    except Exception as exc:
        raise ExtractionError(f"cannot read PDF: {exc}") from exc
    if n_pages == 0:
        raise ExtractionError("PDF has no pages")

    texts: list[str] = []
    images_left = MAX_PDF_IMAGES
    result = Extracted(text="", extractor="pdf", info={"pages": n_pages})
    for index in range(min(n_pages, MAX_PDF_PAGES)):
        page = pages[index]
        try:
            page_text = page.extract_text() or ""
        except Exception as exc:
            raise ExtractionError(f"cannot read text of PDF page {index + 1}: {exc}") from exc
        if not page_text.strip() and images_left > 0:
            # A scanned page: OCR the images it is made of.
            page_text = _ocr_page_images(page, images_left, result)
            images_left = MAX_PDF_IMAGES - result.ocr_images
        texts.append(page_text)
    if n_pages > MAX_PDF_PAGES:
        result.info["truncated_after_pages"] = MAX_PDF_PAGES
    if result.ocr_images:
        result.info["ocr_images"] = result.ocr_images
    result.text = "\n\n".join(texts)
    return result


def _ocr_page_images(page: Any, budget: int, result: Extracted) -> str:
    try:
        images = list(page.images)[:budget]
    except Exception:  # an unreadable image stream leaves the page without text
        logger.warning("text.pdf_images_unreadable", exc_info=True)
        return ""
    lines: list[str] = []
    for image in images:
        try:
            found = ocr_image(image.data)
        except ExtractionError as exc:  # one bad scan must not lose the document's other pages
            logger.warning("text.pdf_image_unreadable", extra={"error": str(exc)})
            continue
        result.ocr_images += 1
        result.ocr_seconds += found.ocr_seconds
        if found.text:
            lines.append(found.text)
    return "\n".join(lines)


def get_ocr_engine() -> Any:
    """The process-wide RapidOCR engine, built on first use (it takes a while)."""
    global _ocr_engine
    if _ocr_engine is None:
        with _ocr_lock:
            if _ocr_engine is None:
                from rapidocr_onnxruntime import RapidOCR

                started = time.perf_counter()
                # Measured on receipts and invoices: one recognition crop per
                # inference (batching pads crops to the widest) and one ONNX
                # thread (spinning thread pools collapse when a worker shares
                # its CPUs) were each about twice as fast. Scale OCR out with
                # more workers: SKIP LOCKED lets them share the queue.
                _ocr_engine = RapidOCR(rec_batch_num=1, intra_op_num_threads=1, inter_op_num_threads=1)
                logger.info("text.ocr_engine_loaded", extra={"seconds": round(time.perf_counter() - started, 2)})
    return _ocr_engine


def _ocr_lines(result: Sequence[Sequence[Any]]) -> list[str]:
    """Join OCR boxes into lines: boxes whose vertical centre lies within a line's band."""
    boxes: list[tuple[float, float, float, str]] = []
    for box, text, _score in result:
        text = str(text).strip()
        if not text:
            continue
        ys = [float(point[1]) for point in box]
        xs = [float(point[0]) for point in box]
        boxes.append((min(ys), max(ys), min(xs), text))
    boxes.sort(key=lambda b: ((b[0] + b[1]) / 2, b[2]))
    lines: list[list[tuple[float, float, float, str]]] = []
    for item in boxes:
        centre = (item[0] + item[1]) / 2
        if lines:
            last = lines[-1]
            top = min(b[0] for b in last)
            bottom = max(b[1] for b in last)
            if top <= centre <= bottom:
                last.append(item)
                continue
        lines.append([item])
    return [" ".join(b[3] for b in sorted(line, key=lambda b: b[2])) for line in lines]


def _ocr_ready(image: Any) -> Any:
    """Upright, white-backed RGB or greyscale: what the OCR models expect."""
    from PIL import Image, ImageOps

    try:
        image = ImageOps.exif_transpose(image)  # phone photos are often stored sideways
    except Exception:  # broken EXIF: read the pixels as stored
        logger.debug("text.exif_unreadable", exc_info=True)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        image = background
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    # Small scans and screenshots: the recogniser loses the gaps between words
    # on small type ("TOTALEUR"); 1.5x restores them for ~20% more time.
    scale = min(UPSCALE_MAX, UPSCALE_TARGET / max(*image.size, 1))
    if scale > 1.05:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    return image


def ocr_image(data: bytes) -> Extracted:
    """Printed text of an image, line by line (RapidOCR, models shipped in the wheel)."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Decoded here once: a corrupt or truncated file gets a clear error
        # before the engine sees it.
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ExtractionError(f"image of {width}x{height} pixels is too large to OCR")
            opened.load()
            image = _ocr_ready(opened)
            image.load()
    except ExtractionError:
        raise
    except UnidentifiedImageError as exc:
        raise ExtractionError("not a readable image: unknown or corrupt image format") from exc
    except Exception as exc:
        raise ExtractionError(f"not a readable image: {exc}") from exc
    engine = get_ocr_engine()
    started = time.perf_counter()
    try:
        result, _elapsed = engine(image)
    except Exception as exc:
        raise ExtractionError(f"OCR failed: {exc}") from exc
    seconds = time.perf_counter() - started
    lines = _ocr_lines(result or [])
    return Extracted(
        text="\n".join(lines),
        extractor="ocr",
        info={"lines": len(lines)},
        ocr_images=1,
        ocr_seconds=seconds,
    )


def transcribe(data: bytes, content_type: str, transcriber: Transcriber) -> Extracted:
    """A transcript from the configured transcriber."""
    try:
        text = transcriber(data, content_type)
    except Exception as exc:
        raise ExtractionError(f"transcription failed: {exc}") from exc
    if not isinstance(text, str):
        raise ExtractionError(f"transcriber returned {type(text).__name__}, not text")
    return Extracted(text=text, extractor="transcript")


def is_audio(kind: str, content_type: str) -> bool:
    """Whether an attachment needs a transcriber."""
    mtype = media_type(content_type)
    return mtype.startswith("audio/") or (kind == "audio" and not mtype.startswith(("image/", "text/")))


def extract_binary(data: bytes, kind: str, content_type: str, transcriber: Transcriber | None) -> Extracted:
    """Dispatch on the MIME type first, then on the contract ``kind``.

    Raises:
        ExtractionError: The file is corrupt or unreadable.
        UnsupportedContent: No extractor handles this type.
    """
    mtype = media_type(content_type)
    if mtype == "application/pdf" or (kind == "document" and data[:5] == b"%PDF-"):
        return extract_pdf(data)
    if mtype.startswith("text/") or mtype in ("application/json", "application/csv"):
        return decode_text(data, content_type)
    if mtype.startswith("image/") or kind == "image":
        return ocr_image(data)
    if is_audio(kind, content_type):
        if transcriber is None:
            raise UnsupportedContent("no transcriber")  # callers check first; kept for safety
        return transcribe(data, content_type, transcriber)
    raise UnsupportedContent(f"no extractor for {kind} attachments of type {content_type!r}")
