"""Landing roots: a local folder or an S3 prefix laid out as DATA_CONTRACT.md says.

``<root>/<dataset>/dt=YYYY-MM-DD/<file>`` and
``<root>/attachments/dt=YYYY-MM-DD/<merchant_id>/<attachment_id>.<ext>``.
S3 goes through boto3, honouring ``AWS_ENDPOINT_URL`` (boto3 reads it), so any
S3-compatible store works. Files are opened as streams: nothing here reads a
whole data file into memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, Any, Protocol

from core.errors import CopilotError

DATASETS = ("merchants", "products", "transactions", "reviews", "attachments")
DATA_SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".parquet")
_PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


class LandingError(CopilotError):
    """The landing root or a file in it is unusable (missing, unreadable, bad URI)."""

    status = 422
    code = "landing"
    title = "Landing root error"


@dataclass(frozen=True, order=True)
class LandingFile:
    """One data file of a dataset partition."""

    dataset: str
    partition: date
    relpath: str  # relative to the root, with forward slashes
    size: int

    @property
    def fmt(self) -> str:
        """``csv``, ``csv.gz``, ``jsonl``, ``jsonl.gz`` or ``parquet``."""
        for suffix in DATA_SUFFIXES:
            if self.relpath.endswith(suffix):
                return suffix[1:]
        raise LandingError(f"{self.relpath}: unsupported file type")


class LandingRoot(Protocol):
    """A place exports land in."""

    uri: str

    def partitions(self, dataset: str) -> list[date]:
        """The dataset's partitions, oldest first."""
        ...

    def files(self, dataset: str, partition: date) -> list[LandingFile]:
        """Data files of one partition, in name order (other files are ignored)."""
        ...

    def open(self, relpath: str) -> IO[bytes]:
        """A binary stream of a file under the root."""
        ...

    def display(self, relpath: str) -> str:
        """How a file is named in messages (full path or s3:// URI)."""
        ...


def _is_data_file(name: str) -> bool:
    return name.endswith(DATA_SUFFIXES) and not name.startswith((".", "_"))


def _parse_partition(name: str) -> date | None:
    match = _PARTITION.match(name)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


class FolderRoot:
    """A landing root on the local file system."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().resolve()
        if not self.path.is_dir():
            raise LandingError(f"landing root {self.path} is not a directory")
        self.uri = str(self.path)

    def partitions(self, dataset: str) -> list[date]:
        base = self.path / dataset
        if not base.is_dir():
            return []
        found = (_parse_partition(child.name) for child in base.iterdir() if child.is_dir())
        return sorted(p for p in found if p is not None)

    def files(self, dataset: str, partition: date) -> list[LandingFile]:
        folder = self.path / dataset / f"dt={partition.isoformat()}"
        if not folder.is_dir():
            return []
        return sorted(
            LandingFile(dataset, partition, child.relative_to(self.path).as_posix(), child.stat().st_size)
            for child in folder.iterdir()
            if child.is_file() and _is_data_file(child.name)
        )

    def open(self, relpath: str) -> IO[bytes]:
        target = (self.path / relpath).resolve()
        # Paths come from manifests (untrusted): never read outside the root.
        if not target.is_relative_to(self.path):
            raise LandingError(f"{relpath}: path escapes the landing root")
        return open(target, "rb")

    def display(self, relpath: str) -> str:
        return str(self.path / relpath)


class S3Root:
    """A landing root under ``s3://bucket/prefix`` (any S3-compatible store)."""

    def __init__(self, uri: str, client: Any | None = None) -> None:
        match = re.match(r"^s3://([^/]+)/?(.*)$", uri)
        if not match:
            raise LandingError(f"{uri!r} is not an s3://bucket/prefix URI")
        self.uri = uri.rstrip("/")
        self.bucket = match.group(1)
        self.prefix = match.group(2).strip("/")
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client

    def _key(self, relpath: str) -> str:
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def _list(self, prefix: str, delimiter: str | None) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        try:
            yield from paginator.paginate(**kwargs)
        except Exception as exc:  # botocore raises many unrelated types
            raise LandingError(f"cannot list s3://{self.bucket}/{prefix}: {exc}") from exc

    def partitions(self, dataset: str) -> list[date]:
        prefix = self._key(f"{dataset}/")
        found: set[date] = set()
        for page in self._list(prefix, "/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(prefix) :].strip("/")
                parsed = _parse_partition(name)
                if parsed is not None:
                    found.add(parsed)
        return sorted(found)

    def files(self, dataset: str, partition: date) -> list[LandingFile]:
        prefix = self._key(f"{dataset}/dt={partition.isoformat()}/")
        root_len = len(self._key(""))
        result = []
        for page in self._list(prefix, "/"):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix) :]
                if "/" in name or not _is_data_file(name):
                    continue
                result.append(LandingFile(dataset, partition, obj["Key"][root_len:].lstrip("/"), int(obj["Size"])))
        return sorted(result)

    def open(self, relpath: str) -> IO[bytes]:
        if ".." in relpath.split("/"):
            raise LandingError(f"{relpath}: path escapes the landing root")
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(relpath))
        except Exception as exc:
            raise LandingError(f"cannot read {self.display(relpath)}: {exc}") from exc
        body: IO[bytes] = response["Body"]  # a streaming body: read in chunks
        return body

    def display(self, relpath: str) -> str:
        return f"s3://{self.bucket}/{self._key(relpath)}"


def open_root(uri: str | Path, s3_client: Any | None = None) -> LandingRoot:
    """A landing root for a folder path or an ``s3://`` URI."""
    text = str(uri)
    if text.startswith("s3://"):
        return S3Root(text, s3_client)
    if "://" in text:
        raise LandingError(f"unsupported landing root {text!r}: use a folder or s3://bucket/prefix")
    return FolderRoot(Path(text))
