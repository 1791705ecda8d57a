"""Ingestion bookkeeping: runs, per-file counts and quarantined rows (platform tables)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base
from core.models._types import check_in

RUN_STATUSES = ("running", "succeeded", "failed", "partial")
FILE_STATUSES = ("running", "loaded", "failed")


class IngestionRun(Base):
    """One run of the pipeline over a landing root for a logical date (or all)."""

    __tablename__ = "ingestion_runs"
    __table_args__ = (CheckConstraint(check_in("status", RUN_STATUSES), name="status_valid"),)

    run_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    root: Mapped[str] = mapped_column(Text)
    logical_date: Mapped[date | None] = mapped_column(Date)
    trigger: Mapped[str] = mapped_column(String(32), server_default="cli")
    status: Mapped[str] = mapped_column(String(16), server_default="running")
    error: Mapped[str | None] = mapped_column(Text)
    stats: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]


class IngestionFile(Base):
    """Counts for one file: ``rows_read = rows_loaded + rows_quarantined``."""

    __tablename__ = "ingestion_files"
    __table_args__ = (
        CheckConstraint(check_in("status", FILE_STATUSES), name="status_valid"),
        CheckConstraint(
            "status <> 'loaded' OR rows_read = rows_loaded + rows_quarantined",
            name="rows_balance",
        ),
        Index("ix_ingestion_files_run", "run_id"),
        Index("ix_ingestion_files_path", "dataset", "path"),
    )

    file_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ingestion_runs.run_id", ondelete="CASCADE"))
    dataset: Mapped[str] = mapped_column(String(32))
    partition: Mapped[date] = mapped_column(Date)
    path: Mapped[str] = mapped_column(Text)
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), server_default="running")
    rows_read: Mapped[int] = mapped_column(Integer, server_default="0")
    rows_loaded: Mapped[int] = mapped_column(Integer, server_default="0")
    rows_quarantined: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]


class QuarantinedRow(Base):
    """A row that failed validation, kept with where it came from and why."""

    __tablename__ = "quarantined_rows"
    __table_args__ = (
        Index("ix_quarantined_rows_file", "file_id"),
        Index("ix_quarantined_rows_dataset_created", "dataset", "created_at"),
    )

    quarantine_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ingestion_runs.run_id", ondelete="CASCADE"))
    file_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ingestion_files.file_id", ondelete="CASCADE"))
    dataset: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    line_no: Mapped[int] = mapped_column(Integer)
    raw_record: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
