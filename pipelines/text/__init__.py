"""Merchant text for retrieval: chunk reviews, products and captions, extract attachments, embed.

Two idempotent batch steps, safe to run concurrently and to re-run::

    from pipelines.text import embed_pending, extract_text

    extract_text(ctx, open_root("data/landing"))  # reviews/products marked dirty, pending attachments
    embed_pending(ctx)                             # chunks without an embedding for ctx.embedding_model
"""

from pipelines.text.chunk import MAX_CHARS, OVERLAP, chunk_text, content_sha256, normalize_text
from pipelines.text.embed import EmbedSummary, embed_pending
from pipelines.text.extract import ExtractSummary, extract_text
from pipelines.text.extractors import Transcriber, get_ocr_engine
from pipelines.text.language import detect_language

__all__ = [
    "MAX_CHARS",
    "OVERLAP",
    "EmbedSummary",
    "ExtractSummary",
    "Transcriber",
    "chunk_text",
    "content_sha256",
    "detect_language",
    "embed_pending",
    "extract_text",
    "get_ocr_engine",
    "normalize_text",
]
