"""Attachments from a synthetic landing root: PDF, text, OCR, audio, corrupt files, captions."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import threading
import time
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import Engine, text

from pipelines.context import PipelineContext
from pipelines.text import extract_text, get_ocr_engine
from pipelines.text.extract import NO_ROOT

from .conftest import Landing, add_attachment, add_merchant, chunks_of

MERCHANT = "M0001"


def _squash(value: str) -> str:
    """Lower-case without spaces: OCR of tightly set type drops some word gaps."""
    return re.sub(r"\s+", "", value).lower()


def _attachment(engine: Engine, attachment_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM attachments WHERE attachment_id = :a"), {"a": attachment_id}).one()


def _text_of(engine: Engine, attachment_id: str) -> str:
    return "\n".join(c.content for c in chunks_of(engine, "attachment", attachment_id))


def _load_manifest(engine: Engine, landing: Landing) -> list[dict[str, Any]]:
    rows = [a for a in landing.attachments if a["merchant_id"] == MERCHANT]
    for row in rows:
        add_attachment(
            engine, MERCHANT, row["attachment_id"], row["kind"], row["content_type"], row["path"], row["note"] or None
        )
    return rows


@pytest.fixture(scope="module")
def broken_files(landing: Landing) -> dict[str, str]:
    """A truncated PDF, a truncated PNG and a scanned PDF next to the merchant's good files."""
    receipt = landing.of(MERCHANT, "receipt")
    price_list = landing.of(MERCHANT, "price_list")
    folder = landing.path / receipt["path"].rsplit("/", 1)[0]
    bad_pdf = folder / "att_bad_pdf.pdf"
    bad_pdf.write_bytes((landing.path / price_list["path"]).read_bytes()[:300])
    bad_png = folder / "att_bad_png.png"
    bad_png.write_bytes((landing.path / receipt["path"]).read_bytes()[:200])
    # A scanned document: a PDF whose only content is a picture of the receipt.
    with Image.open(landing.path / receipt["path"]) as picture:
        picture.convert("RGB").save(folder / "att_scan.pdf", "PDF", resolution=100)
    prefix = receipt["path"].rsplit("/", 1)[0]
    return {
        "pdf": f"{prefix}/att_bad_pdf.pdf",
        "png": f"{prefix}/att_bad_png.png",
        "scan": f"{prefix}/att_scan.pdf",
    }


def test_attachments_are_extracted_and_bad_files_fail_alone(
    ctx: PipelineContext, engine: Engine, landing: Landing, broken_files: dict[str, str]
) -> None:
    add_merchant(engine, MERCHANT)
    manifest = _load_manifest(engine, landing)
    roles = {row["role"] for row in manifest}
    assert {"receipt", "invoice", "price_list", "notes", "voice"} <= roles
    add_attachment(engine, MERCHANT, "att_bad_pdf", "document", "application/pdf", broken_files["pdf"], "scan")
    add_attachment(engine, MERCHANT, "att_bad_png", "image", "image/png", broken_files["png"])
    add_attachment(engine, MERCHANT, "att_scan", "document", "application/pdf", broken_files["scan"])

    get_ocr_engine()  # load once, outside the timed run
    summary = extract_text(ctx, landing.root)

    assert summary.attachments_done == 5
    assert summary.attachments_failed == 2
    assert summary.attachments_pending == 1
    assert summary.ocr_images == 3
    print(f"\nOCR: {summary.ocr_seconds / summary.ocr_images:.2f} s per image")

    # Receipt image: the transaction id and total printed on it are found.
    receipt = landing.of(MERCHANT, "receipt")
    receipt_text = _text_of(engine, receipt["attachment_id"])
    found = _squash(receipt_text)
    assert receipt["facts"]["total"] in found
    # Boxes on one printed line are joined into one text line.
    assert any("TOTAL" in line and line.endswith(receipt["facts"]["total"]) for line in receipt_text.splitlines())
    assert _squash(f"TOTAL {receipt['facts']['currency']}") in found
    if receipt["facts"]["transaction_id"]:
        assert receipt["facts"]["transaction_id"].lower() in found
    row = _attachment(engine, receipt["attachment_id"])
    assert row.extraction_status == "done" and row.extracted_at is not None
    assert row.content_sha256 == hashlib.sha256((landing.path / receipt["path"]).read_bytes()).hexdigest()

    # Invoice photo (JPEG): number, supplier and amounts.
    invoice = landing.of(MERCHANT, "invoice")
    found = _squash(_text_of(engine, invoice["attachment_id"]))
    for key in ("invoice_number", "net", "vat", "total"):
        assert _squash(invoice["facts"][key]) in found, key
    assert _squash(invoice["facts"]["supplier"]) in found

    # PDF price list: its text layer, every line.
    price_list = landing.of(MERCHANT, "price_list")
    pdf_text = _text_of(engine, price_list["attachment_id"])
    assert "Price list" in pdf_text
    assert "All prices in EUR" in pdf_text
    assert "pdf" in _attachment(engine, price_list["attachment_id"]).extraction_detail
    chunk = chunks_of(engine, "attachment", price_list["attachment_id"])[0]
    assert chunk.metadata["extractor"] == "pdf" and chunk.metadata["content_type"] == "application/pdf"

    # Scanned PDF without a text layer: its page image is OCR'd.
    assert "ocr_images=1" in _attachment(engine, "att_scan").extraction_detail
    assert receipt["facts"]["total"] in _squash(_text_of(engine, "att_scan"))

    # Plain-text notes, stored as written (the injection line is data like the rest).
    notes = landing.of(MERCHANT, "notes")
    notes_text = _text_of(engine, notes["attachment_id"])
    assert f"Order more {notes['facts']['supply']} before Friday." in notes_text
    original = (landing.path / notes["path"]).read_text("utf-8")
    assert notes_text == "\n".join(line.strip() for line in original.strip().splitlines())

    # Voice note: no transcriber, so it waits with a reason and is not a failure.
    voice = landing.of(MERCHANT, "voice")
    row = _attachment(engine, voice["attachment_id"])
    assert row.extraction_status == "pending"
    assert "no transcription model configured" in row.extraction_detail
    assert row.extracted_at is None
    assert chunks_of(engine, "attachment", voice["attachment_id"]) == []
    # ... but its caption is searchable already.
    assert [c.content for c in chunks_of(engine, "note", voice["attachment_id"])] == [voice["note"]]

    # Corrupt files fail with a message naming them; everything else went through.
    for attachment_id, path in (("att_bad_pdf", broken_files["pdf"]), ("att_bad_png", broken_files["png"])):
        row = _attachment(engine, attachment_id)
        assert row.extraction_status == "failed"
        assert str(landing.path / path) in row.extraction_detail
        assert row.extracted_at is not None and row.content_sha256 is not None
        assert chunks_of(engine, "attachment", attachment_id) == []
    assert {f["attachment_id"] for f in summary.failures} == {"att_bad_pdf", "att_bad_png"}
    assert [c.content for c in chunks_of(engine, "note", "att_bad_pdf")] == ["scan"]

    # Captions became note chunks.
    captions = {row["attachment_id"] for row in manifest if row["note"]} | {"att_bad_pdf"}
    assert {c.source_id for c in chunks_of(engine, "note")} == captions
    assert summary.notes == len(captions)

    # A second run only looks at the voice note again, once, and writes nothing
    # (no OCR ran: ocr_images counts every image read).
    again = extract_text(ctx, landing.root)
    assert (again.attachments_pending, again.attachments_done, again.attachments_failed) == (1, 0, 0)
    assert (again.chunks_written, again.chunks_deleted, again.ocr_images) == (0, 0, 0)

    # With a transcriber the voice note is done.
    calls: list[tuple[int, str]] = []

    def transcriber(data: bytes, content_type: str) -> str:
        calls.append((len(data), content_type))
        return "Order paper cups before the weekend."

    done = extract_text(ctx, landing.root, transcriber=transcriber)
    assert done.attachments_done == 1 and calls == [(len((landing.path / voice["path"]).read_bytes()), "audio/wav")]
    assert _text_of(engine, voice["attachment_id"]) == "Order paper cups before the weekend."
    assert _attachment(engine, voice["attachment_id"]).extraction_status == "done"


def test_without_a_landing_root_binaries_wait_but_captions_are_chunked(
    ctx: PipelineContext, engine: Engine, landing: Landing
) -> None:
    add_merchant(engine, MERCHANT)
    notes = landing.of(MERCHANT, "notes")
    add_attachment(engine, MERCHANT, "A1", "document", "text/plain", notes["path"], "weekly notes")
    summary = extract_text(ctx, None)
    assert summary.attachments_pending == 1 and summary.notes == 1
    row = _attachment(engine, "A1")
    assert (row.extraction_status, row.extraction_detail) == ("pending", NO_ROOT)
    assert [c.content for c in chunks_of(engine, "note", "A1")] == ["weekly notes"]


def test_text_files_unsupported_types_and_paths_outside_the_merchant(
    ctx: PipelineContext, engine: Engine, landing: Landing, tmp_path: Any
) -> None:
    add_merchant(engine, MERCHANT)
    folder = "attachments/dt=2026-10-31/M0001"
    target = landing.path / folder
    (target / "latin.txt").write_bytes("Caf\xe9 order: 3 \x00boxes\r\n\r\n\r\nthanks\xff".encode("latin-1"))
    (target / "sheet.xlsx").write_bytes(b"PK\x03\x04 not really a spreadsheet")
    other = landing.of("M0002", "notes")
    add_attachment(engine, MERCHANT, "T1", "document", "text/plain", f"{folder}/latin.txt")
    add_attachment(
        engine,
        MERCHANT,
        "X1",
        "document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        f"{folder}/sheet.xlsx",
    )
    add_attachment(engine, MERCHANT, "O1", "document", "text/plain", other["path"])
    add_attachment(engine, MERCHANT, "E1", "document", "text/plain", "attachments/dt=2026-10-31/M0001/../../../x")
    add_attachment(engine, MERCHANT, "G1", "document", "text/plain", f"{folder}/missing.txt")
    summary = extract_text(ctx, landing.root)

    # Invalid UTF-8 is replaced, NUL dropped, whitespace normalised.
    assert _text_of(engine, "T1") == "Caf\ufffd order: 3 boxes\n\nthanks\ufffd"
    assert _attachment(engine, "X1").extraction_status == "skipped"
    assert "no extractor" in _attachment(engine, "X1").extraction_detail
    assert "path is not under attachments/<dt>/M0001/" in _attachment(engine, "O1").extraction_detail
    assert _attachment(engine, "E1").extraction_status == "failed"
    missing = _attachment(engine, "G1")
    assert missing.extraction_status == "failed" and "missing.txt" in missing.extraction_detail
    assert (summary.attachments_done, summary.attachments_skipped, summary.attachments_failed) == (1, 1, 3)


def test_image_without_text_is_done_with_no_chunks(ctx: PipelineContext, engine: Engine, landing: Landing) -> None:
    add_merchant(engine, MERCHANT)
    folder = "attachments/dt=2026-10-31/M0001"
    buf = io.BytesIO()
    Image.new("RGB", (120, 80), "white").save(buf, format="PNG")
    (landing.path / folder / "blank.png").write_bytes(buf.getvalue())
    add_attachment(engine, MERCHANT, "B1", "image", "image/png", f"{folder}/blank.png")
    summary = extract_text(ctx, landing.root)
    assert summary.attachments_done == 1
    row = _attachment(engine, "B1")
    assert row.extraction_status == "done" and "no text found" in row.extraction_detail
    assert chunks_of(engine, "attachment", "B1") == []


def test_ocr_engine_is_built_once() -> None:
    assert get_ocr_engine() is get_ocr_engine()


def test_changed_binary_is_re_extracted(ctx: PipelineContext, engine: Engine, landing: Landing) -> None:
    add_merchant(engine, MERCHANT)
    folder = landing.path / "attachments/dt=2026-10-30/M0001"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "note.txt"
    path.write_text("first version", "utf-8")
    add_attachment(engine, MERCHANT, "N1", "document", "text/plain", "attachments/dt=2026-10-30/M0001/note.txt")
    extract_text(ctx, landing.root)
    path.write_text("second version", "utf-8")
    with engine.begin() as conn:  # what the loader does when a manifest row is re-delivered
        conn.execute(text("UPDATE attachments SET extraction_status = 'pending'"))
    summary = extract_text(ctx, landing.root)
    assert summary.chunks_written == 1
    assert _text_of(engine, "N1") == "second version"
    assert _attachment(engine, "N1").content_sha256 == hashlib.sha256(b"second version").hexdigest()
    shutil.rmtree(folder)


def _voice_notes(engine: Engine, landing: Landing, count: int) -> str:
    voice = landing.of(MERCHANT, "voice")
    for i in range(count):
        add_attachment(engine, MERCHANT, f"V{i:03d}", "audio", "audio/wav", voice["path"], f"memo {i}")
    return voice["path"]


def test_concurrent_workers_extract_each_attachment_once(
    ctx: PipelineContext, engine: Engine, landing: Landing
) -> None:
    add_merchant(engine, MERCHANT)
    _voice_notes(engine, landing, 40)
    calls: list[int] = []
    lock = threading.Lock()

    def transcriber(data: bytes, content_type: str) -> str:
        time.sleep(0.02)
        with lock:
            calls.append(threading.get_ident())
        return "order more cups"

    results: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(extract_text(ctx, landing.root, transcriber=transcriber, batch_size=3).attachments_done)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(calls) == 40 and sum(results) == 40
    assert len(chunks_of(engine, "attachment")) == 40
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")).scalar_one() == 0


def test_no_row_lock_is_held_while_extracting_and_redeliveries_win(
    ctx: PipelineContext, engine: Engine, landing: Landing
) -> None:
    add_merchant(engine, MERCHANT)
    _voice_notes(engine, landing, 2)

    def transcriber(data: bytes, content_type: str) -> str:
        # The loader re-delivers V000 with a new caption while it is being transcribed;
        # it must not have to wait for the extraction.
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '500ms'"))
            conn.execute(text("UPDATE attachments SET note = 'new caption' WHERE attachment_id = 'V000'"))
        return "transcript"

    summary = extract_text(ctx, landing.root, transcriber=transcriber)
    assert summary.attachments_done == 1  # V001; V000 changed under us and waits for the next run
    assert summary.attachments_changed_meanwhile == 1
    assert _attachment(engine, "V000").extraction_status == "pending"
    assert chunks_of(engine, "note", "V000") == []

    again = extract_text(ctx, landing.root, transcriber=lambda data, content_type: "transcript")
    assert again.attachments_done == 1
    assert [c.content for c in chunks_of(engine, "note", "V000")] == ["new caption"]
