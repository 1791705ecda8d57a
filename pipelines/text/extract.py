"""Turn changed reviews, products and pending attachments into ``text_chunks``.

Reviews and products are taken in batches with ``SELECT ... FOR UPDATE SKIP
LOCKED``, so any number of workers can run at once without doing the same
source twice; each batch writes its chunks and clears ``text_dirty`` in one
transaction, so a crash leaves the batch to redo, never half done.

Attachments take seconds each (file reads, OCR), too long to hold row locks
that the loader may be waiting on. A worker claims a batch with advisory
locks instead (other workers skip claimed attachments), extracts with no
transaction open, then writes the chunks and ``extraction_status`` in one
short transaction, after checking under ``FOR UPDATE`` that the manifest row
was not re-delivered meanwhile. Within a run, a keyset cursor makes sure a
source that stays queued (an audio note waiting for a transcriber) is looked
at once only.

Merchant text is data: it is stored as given (whitespace normalised) and never
interpreted here.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    String,
    Table,
    bindparam,
    case,
    func,
    select,
    tuple_,
    update,
)

from core.models import Attachment, Product, Review
from pipelines.context import PipelineContext
from pipelines.landing import LandingRoot
from pipelines.text.chunk import chunk_text
from pipelines.text.claims import ATTACHMENT_CLAIMS, release_all, release_quietly, try_claim
from pipelines.text.extractors import (
    Extracted,
    ExtractionError,
    Transcriber,
    UnsupportedContent,
    extract_binary,
    is_audio,
)
from pipelines.text.language import detect_language
from pipelines.text.store import SourceChunks, WriteStats, write_chunks

logger = logging.getLogger(__name__)

REVIEWS: Table = Review.__table__  # type: ignore[assignment]
PRODUCTS: Table = Product.__table__  # type: ignore[assignment]
ATTACHMENTS: Table = Attachment.__table__  # type: ignore[assignment]

SOURCE_BATCH = 500
# Attachments claimed at a time: what a worker holds while it reads and OCRs.
ATTACHMENT_BATCH = 16
MAX_ATTACHMENT_BYTES = 64 * 1024 * 1024
MAX_ATTACHMENT_CHARS = 1_000_000
MAX_REPORTED_FAILURES = 50

NO_TRANSCRIBER = (
    "no transcription model configured: audio stays pending until extract_text runs with a "
    "transcriber (extract_text(..., transcriber=...))"
)
NO_ROOT = "no landing root given: the binary was not read; it stays pending until a run with a landing root"


@dataclass
class ExtractSummary:
    """What one :func:`extract_text` run did."""

    reviews: int = 0
    products: int = 0
    notes: int = 0
    attachments_done: int = 0
    attachments_failed: int = 0
    attachments_pending: int = 0
    attachments_skipped: int = 0
    attachments_changed_meanwhile: int = 0  # re-delivered during extraction: redone next run
    chunks_written: int = 0
    chunks_unchanged: int = 0
    chunks_deleted: int = 0
    ocr_images: int = 0
    ocr_seconds: float = 0.0
    seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)

    def add(self, stats: WriteStats) -> None:
        """Count one batch's chunk writes."""
        self.chunks_written += stats.written
        self.chunks_unchanged += stats.unchanged
        self.chunks_deleted += stats.deleted

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable counts (for XCom and the CLI)."""
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["ocr_seconds"] = round(self.ocr_seconds, 3)
        return data


Key = tuple[str, str]


def _drain(
    engine: Engine,
    build: Callable[[Key | None, int], Select[Any]],
    process: Callable[[Connection, Sequence[Row[Any]]], None],
    *,
    batch_size: int,
    limit: int | None,
) -> None:
    """Run ``process`` over queued rows, one transaction per batch, each row at most once."""
    cursor: Key | None = None
    taken = 0
    while limit is None or taken < limit:
        size = batch_size if limit is None else min(batch_size, limit - taken)
        with engine.begin() as conn:
            rows = conn.execute(build(cursor, size)).all()
            if not rows:
                return
            process(conn, rows)
        cursor = (rows[-1][0], rows[-1][1])
        taken += len(rows)
        if len(rows) < size:
            return


def _queued(
    table: Table, id_column: str, columns: Sequence[str], flag: Any
) -> Callable[[Key | None, int], Select[Any]]:
    key = (table.c.merchant_id, table.c[id_column])

    def build(cursor: Key | None, size: int) -> Select[Any]:
        stmt = select(*key, *(table.c[name] for name in columns)).where(flag)
        if cursor is not None:
            stmt = stmt.where(tuple_(*key) > tuple_(*cursor))
        return stmt.order_by(*key).limit(size).with_for_update(skip_locked=True)

    return build


# --------------------------------------------------------------------------- reviews


def _review_chunks(row: Row[Any]) -> SourceChunks:
    chunks = chunk_text(row.text)
    language = detect_language(" ".join(chunks)) if chunks else None
    meta: dict[str, Any] = {
        "rating": row.rating,
        "created_at": row.created_at.isoformat(),
        "source": row.source,
    }
    if language:
        meta["language"] = language
    return SourceChunks(row.merchant_id, "review", row.review_id, chunks, language, meta)


def _process_reviews(summary: ExtractSummary) -> Callable[[Connection, Sequence[Row[Any]]], None]:
    def process(conn: Connection, rows: Sequence[Row[Any]]) -> None:
        summary.add(write_chunks(conn, [_review_chunks(row) for row in rows]))
        keys = [(row.merchant_id, row.review_id) for row in rows]
        conn.execute(
            update(REVIEWS).where(tuple_(REVIEWS.c.merchant_id, REVIEWS.c.review_id).in_(keys)).values(text_dirty=False)
        )
        summary.reviews += len(rows)

    return process


# --------------------------------------------------------------------------- products


def product_text(name: str, category: str | None, description: str | None) -> str:
    """The searchable text of a product: its name, category and description."""
    lines = [name]
    if category and category.strip():
        lines.append(f"Category: {category}")
    if description and description.strip():
        lines.append(description)
    return "\n".join(lines)


def _product_chunks(row: Row[Any]) -> SourceChunks:
    chunks = chunk_text(product_text(row.name, row.category, row.description))
    language = detect_language(row.description) if row.description else None
    meta: dict[str, Any] = {"name": row.name, "category": row.category, "active": row.active}
    return SourceChunks(row.merchant_id, "product", row.product_id, chunks, language, meta)


def _process_products(summary: ExtractSummary) -> Callable[[Connection, Sequence[Row[Any]]], None]:
    def process(conn: Connection, rows: Sequence[Row[Any]]) -> None:
        summary.add(write_chunks(conn, [_product_chunks(row) for row in rows]))
        keys = [(row.merchant_id, row.product_id) for row in rows]
        conn.execute(
            update(PRODUCTS)
            .where(tuple_(PRODUCTS.c.merchant_id, PRODUCTS.c.product_id).in_(keys))
            .values(text_dirty=False)
        )
        summary.products += len(rows)

    return process


# --------------------------------------------------------------------------- attachments


@dataclass
class _Outcome:
    status: str
    detail: str
    sha256: str | None = None
    extracted: Extracted | None = None


def _read(root: LandingRoot, path: str) -> tuple[bytes, str]:
    digest = hashlib.sha256()
    parts: list[bytes] = []
    size = 0
    stream = root.open(path)
    try:
        while True:
            block = stream.read(1024 * 1024)
            if not block:
                break
            size += len(block)
            if size > MAX_ATTACHMENT_BYTES:
                raise ExtractionError(f"file is larger than {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MiB")
            digest.update(block)
            parts.append(block)
    finally:
        stream.close()
    return b"".join(parts), digest.hexdigest()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, ExtractionError | UnsupportedContent):
        text = f"{type(exc).__name__}: {text}"
    return text[:500]


def _extract_attachment(row: Row[Any], root: LandingRoot | None, transcriber: Transcriber | None) -> _Outcome:
    if is_audio(row.kind, row.content_type) and transcriber is None:
        return _Outcome("pending", NO_TRANSCRIBER)
    if root is None:
        return _Outcome("pending", NO_ROOT)
    parts = row.path.split("/")
    # Manifests are untrusted: a merchant's row may only point into its own folder.
    if len(parts) < 3 or parts[2] != row.merchant_id:
        return _Outcome("failed", f"{row.path}: path is not under attachments/<dt>/{row.merchant_id}/")
    name = root.display(row.path)
    try:
        data, sha = _read(root, row.path)
    except Exception as exc:
        return _Outcome("failed", f"cannot read {name}: {_short(exc)}")
    try:
        extracted = extract_binary(data, row.kind, row.content_type, transcriber)
    except UnsupportedContent as exc:
        return _Outcome("skipped", f"{name}: {_short(exc)}", sha)
    except Exception as exc:  # corrupt files raise anything; one bad file must not stop the run
        logger.warning("text.attachment_failed", extra={"attachment_id": row.attachment_id, "file": name})
        return _Outcome("failed", f"{name}: {_short(exc)}", sha)
    detail = extracted.describe()
    if len(extracted.text) > MAX_ATTACHMENT_CHARS:
        extracted.text = extracted.text[:MAX_ATTACHMENT_CHARS]
        detail += f", truncated to {MAX_ATTACHMENT_CHARS} characters"
    return _Outcome("done", detail, sha, extracted)


def _attachment_meta(row: Row[Any]) -> dict[str, Any]:
    return {
        "kind": row.kind,
        "content_type": row.content_type,
        "created_at": row.created_at.isoformat(),
        "path": row.path,
    }


_STATUS = bindparam("status", type_=String())
_FINISH_ATTACHMENT = (
    update(ATTACHMENTS)
    .where(ATTACHMENTS.c.merchant_id == bindparam("m"), ATTACHMENTS.c.attachment_id == bindparam("a"))
    .values(
        extraction_status=_STATUS,
        extraction_detail=bindparam("detail"),
        content_sha256=func.coalesce(bindparam("sha"), ATTACHMENTS.c.content_sha256),
        # Pending means "not extracted yet", so it keeps no extraction time.
        extracted_at=case((_STATUS == "pending", ATTACHMENTS.c.extracted_at), else_=func.now()),
    )
)


_MANIFEST = ("kind", "content_type", "path", "note")
_ATTACHMENT_COLUMNS = ("merchant_id", "attachment_id", "created_at", *_MANIFEST)


def _attachment_select(*conditions: Any) -> Select[Any]:
    return select(*(ATTACHMENTS.c[name] for name in _ATTACHMENT_COLUMNS)).where(
        ATTACHMENTS.c.extraction_status == "pending", *conditions
    )


def _claim(claims: Connection, cursor: Key | None, size: int) -> tuple[Key | None, int, list[Row[Any]]]:
    """Claim pending attachments among the next ``size`` after ``cursor``.

    Returns the new cursor, how many were looked at, and the rows claimed
    (the others are being extracted by another worker).

    A claim is a session-level advisory lock held by ``claims`` while files are
    read and OCR'd, outside any transaction, so no row lock is held for
    seconds (a loader re-delivering the attachment would wait on it).
    """
    key = (ATTACHMENTS.c.merchant_id, ATTACHMENTS.c.attachment_id)
    stmt = select(*key).where(ATTACHMENTS.c.extraction_status == "pending")
    if cursor is not None:
        stmt = stmt.where(tuple_(*key) > tuple_(*cursor))
    candidates = claims.execute(stmt.order_by(*key).limit(size)).all()
    if not candidates:
        claims.commit()
        return None, 0, []
    claimed = try_claim(claims, ATTACHMENT_CLAIMS, [_claim_key(m, a) for m, a in candidates])
    rows: list[Row[Any]] = []
    if claimed:
        mine = [(m, a) for m, a in candidates if _claim_key(m, a) in claimed]
        rows = list(claims.execute(_attachment_select(tuple_(*key).in_(mine)).order_by(*key)))
    claims.commit()
    return (candidates[-1][0], candidates[-1][1]), len(candidates), rows


def _claim_key(merchant_id: str, attachment_id: str) -> str:
    return f"{merchant_id}/{attachment_id}"


def _write_attachments(
    engine: Engine,
    summary: ExtractSummary,
    results: Sequence[tuple[Row[Any], _Outcome]],
) -> None:
    """Store chunks and statuses of extracted attachments in one transaction.

    Rows re-delivered meanwhile (manifest changed, or no longer pending) are
    left alone: they are extracted again on the next run.
    """
    key = (ATTACHMENTS.c.merchant_id, ATTACHMENTS.c.attachment_id)
    with engine.begin() as conn:
        current = {
            (row.merchant_id, row.attachment_id): row
            for row in conn.execute(
                _attachment_select(tuple_(*key).in_([(r.merchant_id, r.attachment_id) for r, _ in results]))
                .order_by(*key)
                .with_for_update()
            )
        }
        sources: list[SourceChunks] = []
        finished: list[dict[str, Any]] = []
        for row, outcome in results:
            now = current.get((row.merchant_id, row.attachment_id))
            if now is None or any(getattr(now, name) != getattr(row, name) for name in _MANIFEST):
                summary.attachments_changed_meanwhile += 1
                continue
            sources.extend(_attachment_sources(row, outcome))
            _count(summary, row, outcome)
            finished.append(
                {
                    "m": row.merchant_id,
                    "a": row.attachment_id,
                    "status": outcome.status,
                    "detail": outcome.detail,
                    "sha": outcome.sha256,
                }
            )
        summary.add(write_chunks(conn, sources))
        if finished:
            conn.execute(_FINISH_ATTACHMENT, finished)


def _attachment_sources(row: Row[Any], outcome: _Outcome) -> list[SourceChunks]:
    meta = _attachment_meta(row)
    note_chunks = chunk_text(row.note)
    note_language = detect_language(" ".join(note_chunks)) if note_chunks else None
    sources = [SourceChunks(row.merchant_id, "note", row.attachment_id, note_chunks, note_language, meta)]
    if outcome.status == "done" and outcome.extracted is not None:
        chunks = chunk_text(outcome.extracted.text)
        language = detect_language(" ".join(chunks[:3])) if chunks else None
        meta = {**meta, "extractor": outcome.extracted.extractor}
        sources.append(SourceChunks(row.merchant_id, "attachment", row.attachment_id, chunks, language, meta))
    elif outcome.status != "pending":
        # No text any more: drop what an earlier extraction of this attachment left.
        sources.append(SourceChunks(row.merchant_id, "attachment", row.attachment_id, []))
    return sources


def _count(summary: ExtractSummary, row: Row[Any], outcome: _Outcome) -> None:
    if row.note and row.note.strip():
        summary.notes += 1
    if outcome.status == "done":
        summary.attachments_done += 1
        if outcome.extracted is not None:
            summary.ocr_images += outcome.extracted.ocr_images
            summary.ocr_seconds += outcome.extracted.ocr_seconds
    elif outcome.status == "pending":
        summary.attachments_pending += 1
    elif outcome.status == "skipped":
        summary.attachments_skipped += 1
    else:
        summary.attachments_failed += 1
        if len(summary.failures) < MAX_REPORTED_FAILURES:
            summary.failures.append(
                {"merchant_id": row.merchant_id, "attachment_id": row.attachment_id, "detail": outcome.detail}
            )


def _drain_attachments(
    engine: Engine,
    summary: ExtractSummary,
    root: LandingRoot | None,
    transcriber: Transcriber | None,
    *,
    batch_size: int,
    limit: int | None,
) -> None:
    cursor: Key | None = None
    taken = 0
    with engine.connect() as claims:
        try:
            while limit is None or taken < limit:
                size = batch_size if limit is None else min(batch_size, limit - taken)
                cursor, looked_at, rows = _claim(claims, cursor, size)
                if cursor is None:
                    return
                taken += looked_at
                if rows:
                    results = [(row, _extract_attachment(row, root, transcriber)) for row in rows]
                    _write_attachments(engine, summary, results)
                release_all(claims)
                if looked_at < size:
                    return
        finally:
            release_quietly(claims)


# --------------------------------------------------------------------------- entry point


def extract_text(
    ctx: PipelineContext,
    root: LandingRoot | None,
    *,
    transcriber: Transcriber | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
) -> ExtractSummary:
    """Chunk changed reviews and products, and extract pending attachments.

    Args:
        ctx: Pipeline context; writes go through its owner engine (a role that
            bypasses row-level security, as batch steps write every merchant).
        root: Landing root attachment paths are relative to; without one,
            attachment binaries stay pending (their captions are still chunked).
        transcriber: Turns audio bytes and MIME type into a transcript; without
            one, audio attachments stay pending with a reason.
        limit: At most this many reviews, this many products and this many
            attachments in this run (None: everything queued).
        batch_size: Sources per transaction (default 500; attachments at most 16).

    Returns:
        Counts of sources, attachment outcomes and chunk writes.
    """
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")
    size = batch_size or SOURCE_BATCH
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    started = time.perf_counter()
    summary = ExtractSummary()
    engine = ctx.engine
    _drain(
        engine,
        _queued(REVIEWS, "review_id", ("text", "rating", "created_at", "source"), REVIEWS.c.text_dirty),
        _process_reviews(summary),
        batch_size=size,
        limit=limit,
    )
    _drain(
        engine,
        _queued(PRODUCTS, "product_id", ("name", "category", "description", "active"), PRODUCTS.c.text_dirty),
        _process_products(summary),
        batch_size=size,
        limit=limit,
    )
    _drain_attachments(engine, summary, root, transcriber, batch_size=min(size, ATTACHMENT_BATCH), limit=limit)
    summary.seconds = time.perf_counter() - started
    logger.info("text.extracted", extra={k: v for k, v in summary.as_dict().items() if k != "failures"})
    return summary
