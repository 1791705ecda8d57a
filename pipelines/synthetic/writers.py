"""Streaming, deterministic writers for partitioned landing files.

Rows arrive as lists of strings in contract column order, with ``""`` for a
missing optional value. Output is byte-for-byte reproducible: gzip headers
carry no file name and a zero mtime.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

FORMATS = ("csv", "csv.gz", "jsonl", "jsonl.gz")


class PartitionWriter:
    """Writes one dataset as ``<root>/<dataset>/dt=<dt>/part-NNNNN.<fmt>``.

    Files are opened lazily on the first row of a partition, so days without
    rows produce no empty files, and rolled over every ``rows_per_file`` rows.
    """

    def __init__(
        self,
        root: Path,
        dataset: str,
        columns: Sequence[str],
        fmt: str = "csv",
        rows_per_file: int = 200_000,
        json_columns: Sequence[str] = (),
        bool_columns: Sequence[str] = (),
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unsupported format {fmt!r}; expected one of {', '.join(FORMATS)}")
        self.root = root
        self.dataset = dataset
        self.columns = tuple(columns)
        self.fmt = fmt
        self.rows_per_file = rows_per_file
        self._json_idx = tuple(self.columns.index(c) for c in json_columns)
        self._bool_idx = frozenset(self.columns.index(c) for c in bool_columns)
        self._plain = tuple((i, c) for i, c in enumerate(self.columns) if i not in self._json_idx)
        self.rows = 0
        self.files = 0
        self.bytes = 0
        self.partitions: set[str] = set()
        self._dt: str | None = None
        self._part = 0
        self._in_file = 0
        self._path: Path | None = None
        self._raw: IO[bytes] | None = None
        self._gz: gzip.GzipFile | None = None
        self._text: io.TextIOWrapper | None = None
        self._csv: Any = None

    def write(self, dt: str, rows: Sequence[list[str]]) -> None:
        """Append rows to partition ``dt`` (closing the previous partition)."""
        if not rows:
            return
        if dt != self._dt:
            self._close_file()
            self._dt = dt
            self._part = 0
        start = 0
        while start < len(rows):
            if self._text is None or self._in_file >= self.rows_per_file:
                self._close_file()
                self._open_file()
            take = min(len(rows) - start, self.rows_per_file - self._in_file)
            chunk = rows[start : start + take]
            if self._csv is not None:
                self._csv.writerows(chunk)
            else:
                assert self._text is not None
                self._text.write("".join(self._jsonl(r) for r in chunk))
            self._in_file += take
            self.rows += take
            start += take

    def close(self) -> None:
        """Flush and close the open file, if any."""
        self._close_file()
        self._dt = None

    def _jsonl(self, row: list[str]) -> str:
        obj: dict[str, object] = {}
        for i, col in self._plain:
            value = row[i]
            if value == "":
                obj[col] = None
            elif i in self._bool_idx:
                obj[col] = value == "true"
            else:
                obj[col] = value
        line = json.dumps(obj, ensure_ascii=False)
        # JSON columns are already serialised; splice them in verbatim.
        for i in self._json_idx:
            line = f'{line[:-1]}, "{self.columns[i]}": {row[i] or "null"}}}'
        return line + "\n"

    def _open_file(self) -> None:
        assert self._dt is not None
        folder = self.root / self.dataset / f"dt={self._dt}"
        folder.mkdir(parents=True, exist_ok=True)
        self._path = folder / f"part-{self._part:05d}.{self.fmt}"
        self._part += 1
        self._in_file = 0
        self.partitions.add(self._dt)
        self._raw = open(self._path, "wb")  # noqa: SIM115 - closed in _close_file
        if self.fmt.endswith(".gz"):
            # No file name and a zero mtime in the header keep output reproducible.
            self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=6, mtime=0)
            self._text = io.TextIOWrapper(self._gz, encoding="utf-8", newline="")
        else:
            self._text = io.TextIOWrapper(self._raw, encoding="utf-8", newline="")
        if self.fmt.startswith("csv"):
            self._csv = csv.writer(self._text)
            self._csv.writerow(self.columns)
        else:
            self._csv = None

    def _close_file(self) -> None:
        if self._text is None:
            return
        self._text.flush()
        self._text.detach()
        if self._gz is not None:
            self._gz.close()
        assert self._raw is not None and self._path is not None
        self._raw.close()
        self.files += 1
        self.bytes += self._path.stat().st_size
        self._text = self._gz = self._raw = None
        self._csv = None
