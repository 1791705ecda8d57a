"""Streaming readers for landing files: csv, csv.gz, jsonl, jsonl.gz, parquet.

Each yields ``(line_no, values)`` where ``values`` are the file's values for
the requested columns as text (``None`` when absent), in column order. Memory
stays bounded whatever the file size: CSV and JSONL are read line by line,
Parquet by row-group batches. Problems that make the whole file unreadable
(bad encoding, corrupt archive, missing required columns) raise
:class:`FileLevelError`; a bad line of JSONL is a row-level problem and is
yielded with its raw text so it can be quarantined.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import shutil
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any, cast

from pipelines.landing import LandingFile, LandingRoot

# Field values may be long (review texts), but not unbounded.
csv.field_size_limit(16 * 1024 * 1024)


class FileLevelError(Exception):
    """The file cannot be read at all; nothing from it may be loaded."""


@dataclass
class ParsedRow:
    """One record: its line number, values in column order, or why it could not be parsed."""

    line_no: int
    values: list[str | None]
    raw: str | None = None  # set when the record could not be parsed
    error: str | None = None


@dataclass
class FileReader:
    """Reads one landing file for the given contract columns."""

    root: LandingRoot
    file: LandingFile
    columns: Sequence[str]
    required: Sequence[str]
    warnings: list[str] = field(default_factory=list)

    def rows(self) -> Iterator[ParsedRow]:
        """Yield every record of the file (raises :class:`FileLevelError`)."""
        fmt = self.file.fmt
        try:
            with self.root.open(self.file.relpath) as stream:
                if fmt == "parquet":
                    yield from self._parquet(stream)
                    return
                binary: IO[bytes] = cast(IO[bytes], gzip.GzipFile(fileobj=stream)) if fmt.endswith(".gz") else stream
                if fmt.startswith("csv"):
                    yield from self._csv(binary)
                else:
                    yield from self._jsonl(binary)
        except FileLevelError:
            raise
        except UnicodeDecodeError as exc:
            raise FileLevelError(f"not valid UTF-8 ({exc.reason} at byte {exc.start} of a line)") from exc
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise FileLevelError(f"corrupt gzip archive: {exc or 'unexpected end of file'}") from exc
        except csv.Error as exc:
            raise FileLevelError(f"malformed CSV: {exc}") from exc
        except OSError as exc:
            raise FileLevelError(f"cannot read: {exc}") from exc

    def csv_chunks(self) -> tuple[list[str], Iterator[bytes]] | None:
        """Header names and the raw bytes after the header, for a COPY (FORMAT csv) fast path.

        None when the file is not CSV or its header needs the full parser
        (quotes, duplicate names). The caller must check that each record
        took one line (else line numbers differ) and fall back to :meth:`rows`
        on any error: this only reads bytes and validates nothing but the header.
        """
        fmt = self.file.fmt
        if fmt not in ("csv", "csv.gz"):
            return None
        stream = self.root.open(self.file.relpath)
        try:
            binary: IO[bytes] = cast(IO[bytes], gzip.GzipFile(fileobj=stream)) if fmt.endswith(".gz") else stream
            head = binary.read(_CHUNK)
            if head.startswith(codecs.BOM_UTF8):
                head = head[len(codecs.BOM_UTF8) :]
            end = head.find(b"\n")
            line = head[:end] if end >= 0 else b""
            names = [h.strip() for h in line.decode("utf-8").rstrip("\r").split(",")]
            if end < 0 or b'"' in line or len(set(names)) != len(names):
                stream.close()
                return None
            self._check_header(names)
        except BaseException:
            stream.close()
            raise
        return names, _chunks(stream, binary, head[end + 1 :])

    def _check_header(self, present: Sequence[str]) -> list[int | None]:
        missing = [c for c in self.required if c not in present]
        if missing:
            raise FileLevelError(f"missing required column(s): {', '.join(missing)}")
        extra = [c for c in present if c not in self.columns]
        if extra:
            self.warnings.append(f"ignored extra column(s): {', '.join(extra)}")
        index = {name: i for i, name in enumerate(present)}
        return [index.get(c) for c in self.columns]

    def _csv(self, binary: IO[bytes]) -> Iterator[ParsedRow]:
        text = codecs.getreader("utf-8")(binary, "strict")
        reader = csv.reader(_strip_bom(text))
        try:
            header = next(reader)
        except StopIteration:
            raise FileLevelError("empty file: no header row") from None
        positions = self._check_header([h.strip() for h in header])
        width = len(header)
        last_line = reader.line_num
        for record in reader:
            line_no = last_line + 1
            last_line = reader.line_num
            if not record:  # blank line
                continue
            if len(record) != width:
                yield ParsedRow(
                    line_no, [], raw=_csv_text(record),
                    error=f"has {len(record)} fields, header has {width}",
                )  # fmt: skip
                continue
            yield ParsedRow(line_no, [_csv_value(record[i]) if i is not None else None for i in positions])

    def _jsonl(self, binary: IO[bytes]) -> Iterator[ParsedRow]:
        text = io.TextIOWrapper(binary, encoding="utf-8", errors="strict", newline="\n")
        checked = False
        for line_no, line in enumerate(text, start=1):
            stripped = line.strip()
            if line_no == 1 and stripped.startswith("\ufeff"):
                stripped = stripped[1:]
            if not stripped:
                continue
            try:
                # Decimal keeps a number's digits exactly as written ("12.50").
                record = json.loads(stripped, parse_float=Decimal)
            except json.JSONDecodeError as exc:
                yield ParsedRow(line_no, [], raw=stripped[:10_000], error=f"invalid JSON: {exc.msg}")
                continue
            if not isinstance(record, dict):
                yield ParsedRow(line_no, [], raw=stripped[:10_000], error="not a JSON object")
                continue
            if not checked:
                # JSONL has no header: the first object's keys stand for it, and
                # a later object missing a required field is a row-level error.
                self._check_header(list(record))
                checked = True
            yield ParsedRow(line_no, [_json_value(record.get(c)) for c in self.columns])
        if not checked:
            raise FileLevelError("empty file: no records")

    def _parquet(self, stream: IO[bytes]) -> Iterator[ParsedRow]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Parquet needs random access; S3 bodies stream forward only, so spool them.
        with tempfile.TemporaryFile() as spool:
            if hasattr(stream, "seekable") and stream.seekable():
                source: IO[bytes] = stream
            else:
                shutil.copyfileobj(stream, spool, length=1024 * 1024)
                spool.seek(0)
                source = spool
            try:
                parquet = pq.ParquetFile(source)
            except (pa.ArrowInvalid, OSError) as exc:
                raise FileLevelError(f"corrupt parquet file: {exc}") from exc
            present = parquet.schema_arrow.names
            self._check_header(present)
            wanted = [c for c in self.columns if c in present]
            line_no = 0
            try:
                for batch in parquet.iter_batches(batch_size=20_000, columns=wanted):
                    data = {name: batch.column(name).to_pylist() for name in wanted}
                    for i in range(batch.num_rows):
                        line_no += 1
                        yield ParsedRow(line_no, [_json_value(data[c][i]) if c in data else None for c in self.columns])
            except (pa.ArrowInvalid, OSError) as exc:
                raise FileLevelError(f"corrupt parquet file at row {line_no + 1}: {exc}") from exc


_CHUNK = 1 << 20


def _chunks(stream: IO[bytes], binary: IO[bytes], first: bytes) -> Iterator[bytes]:
    try:
        if first:
            yield first
        while chunk := binary.read(_CHUNK):
            yield chunk
    finally:
        stream.close()


def _strip_bom(lines: Any) -> Iterator[str]:
    first = True
    for line in lines:
        if first:
            first = False
            if line.startswith("\ufeff"):
                line = line[1:]
        yield line


def _csv_value(value: str) -> str | None:
    return value if value != "" else None


def _csv_text(record: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(record)
    return out.getvalue().rstrip("\r\n")


def _json_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value if value != "" else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list | dict):
        return json.dumps(_plain_json(value), separators=(",", ":"), default=str)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _plain_json(value: Any) -> Any:
    """Nested decimals back to JSON numbers (floats repr to the shortest exact text)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, list):
        return [_plain_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_json(v) for k, v in value.items()}
    return value
