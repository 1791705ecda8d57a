"""Configuration and result types of the synthetic generator."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

from .writers import FORMATS

DEFAULT_END_DATE = date(2026, 10, 31)
MAX_MERCHANTS = 99_999
MAX_DAYS = 3_660

Format = Literal["csv", "csv.gz", "jsonl", "jsonl.gz"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class GenerateConfig:
    """What to generate and where.

    Attributes:
        merchants: Number of merchants (ids ``M0001`` ...).
        days: Number of consecutive days, ending at ``end_date``.
        seed: Seed of every random stream; same config gives identical bytes.
        out: Landing root to create. Must not exist, be empty, or hold only a
            previous generator output (replaced only with ``overwrite``).
        end_date: Last generated day (inclusive); defaults to 2026-10-31 so
            that output never depends on the wall clock.
        fmt: Format of transaction files; other datasets are written as CSV.
        events: Inject labelled events (outages, surges, ...).
        overwrite: Replace ``out`` if it holds a previous generator output.
        volume: Multiplier on every merchant's daily transaction volume.
        rows_per_file: Transaction rows per file before a partition is split.
    """

    merchants: int = 5
    days: int = 60
    seed: int = 42
    out: Path = Path("data/landing")
    end_date: date | None = None
    fmt: Format = "csv.gz"
    events: bool = True
    overwrite: bool = False
    volume: float = 1.0
    rows_per_file: int = 200_000

    def __post_init__(self) -> None:
        if not _is_int(self.merchants) or not 1 <= self.merchants <= MAX_MERCHANTS:
            raise ValueError(f"merchants must be an integer between 1 and {MAX_MERCHANTS}, got {self.merchants!r}")
        if not _is_int(self.days) or not 1 <= self.days <= MAX_DAYS:
            raise ValueError(f"days must be an integer between 1 and {MAX_DAYS}, got {self.days!r}")
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.end_date is not None and (isinstance(self.end_date, datetime) or not isinstance(self.end_date, date)):
            raise ValueError(f"end_date must be a date, got {self.end_date!r}")
        if self.end_date is not None and self.end_date - timedelta(days=self.days - 1) < date(1971, 1, 1):
            raise ValueError("end_date and days reach before 1971")
        if isinstance(self.volume, bool) or not isinstance(self.volume, int | float) or not 0 < self.volume <= 100:
            raise ValueError(f"volume must be a number in (0, 100], got {self.volume!r}")
        if not _is_int(self.rows_per_file) or self.rows_per_file < 1:
            raise ValueError(f"rows_per_file must be a positive integer, got {self.rows_per_file!r}")
        if not isinstance(self.out, Path):
            if not isinstance(self.out, str) or not self.out:
                raise ValueError(f"out must be a path, got {self.out!r}")
            # Accept a plain string from callers such as a CLI.
            object.__setattr__(self, "out", Path(self.out))

    @property
    def last_day(self) -> date:
        """Last generated day (inclusive)."""
        return self.end_date or DEFAULT_END_DATE

    @property
    def first_day(self) -> date:
        """First generated day."""
        return self.last_day - timedelta(days=self.days - 1)


@dataclass
class GenerateSummary:
    """What a run wrote.

    Attributes:
        out: Landing root.
        start_date: First generated day.
        end_date: Last generated day.
        merchants: Number of merchants.
        rows: Rows written per dataset (``attachments`` counts manifest rows).
        partitions: Number of ``<dataset>/dt=...`` partitions written.
        files: Files written: data files, attachment binaries and labels.
        bytes: Total size of those files.
        labels_path: Path of ``labels.json``.
        events: Number of injected events.
        redelivered: Number of corrected records re-delivered later.
        injections: Number of records carrying a prompt-injection attempt.
    """

    out: Path
    start_date: date
    end_date: date
    merchants: int
    rows: dict[str, int] = field(default_factory=dict)
    partitions: int = 0
    files: int = 0
    bytes: int = 0
    labels_path: Path = Path("labels.json")
    events: int = 0
    redelivered: int = 0
    injections: int = 0

    @property
    def total_rows(self) -> int:
        """Rows across all datasets."""
        return sum(self.rows.values())
