"""Entry points for orchestrators: one function per DAG task or CLI step.

Each takes and returns JSON-serialisable values (Airflow passes them through
XCom), builds its own :class:`PipelineContext` from the settings, and is
idempotent for its arguments: re-running a task never duplicates anything.
The work itself lives in the dataset, aggregate and text modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

from core.config import get_settings
from pipelines.context import PipelineContext


class DataQualityError(Exception):
    """A data-quality check failed; the message says which and why."""


@contextmanager
def _context() -> Iterator[PipelineContext]:
    ctx = PipelineContext.from_settings(get_settings())
    try:
        yield ctx
    finally:
        ctx.close()


def ingest_dataset(root: str, dataset: str, logical_date: str | None, *, trigger: str = "airflow") -> dict[str, Any]:
    """Load one dataset's partition (``logical_date``) or every partition (None).

    Returns the dataset summary: per-file ``rows_read``, ``rows_loaded``,
    ``rows_quarantined``, status and error.
    """
    from pipelines.ingest import ingest_dataset as run

    partition = date.fromisoformat(logical_date) if logical_date else None
    with _context() as ctx:
        return run(ctx, root, dataset, partition, trigger=trigger).as_dict()


def refresh_aggregates() -> dict[str, Any]:
    """Recompute daily, hourly and product metrics for every queued merchant-day."""
    from pipelines.aggregates import refresh_pending

    with _context() as ctx:
        return refresh_pending(ctx).as_dict()


def extract_text(root: str) -> dict[str, Any]:
    """Chunk changed reviews, products and notes; extract pending attachments."""
    from pipelines.landing import open_root
    from pipelines.text import extract_text as run

    with _context() as ctx:
        return run(ctx, open_root(root)).as_dict()


def embed_chunks() -> dict[str, Any]:
    """Embed every chunk that has no embedding for the current model."""
    from pipelines.text import embed_pending

    with _context() as ctx:
        return embed_pending(ctx).as_dict()


def check_quality(summaries: list[dict[str, Any]], *, max_quarantine_ratio: float = 0.05) -> dict[str, Any]:
    """Fail when a file failed, counts do not balance, or too much was quarantined.

    Args:
        summaries: Dataset summaries returned by :func:`ingest_dataset`.
        max_quarantine_ratio: Largest acceptable share of quarantined rows per dataset.

    Raises:
        DataQualityError: With one line per problem, naming dataset and file.
    """
    problems: list[str] = []
    totals: dict[str, dict[str, int]] = {}
    for summary in summaries:
        dataset = summary["dataset"]
        for item in summary["files"]:
            if item["status"] == "failed":
                problems.append(f"{dataset}: {item['path']}: {item['error']}")
            elif item["rows_read"] != item["rows_loaded"] + item["rows_quarantined"]:
                problems.append(
                    f"{dataset}: {item['path']}: rows_read {item['rows_read']} != loaded "
                    f"{item['rows_loaded']} + quarantined {item['rows_quarantined']}"
                )
        read = sum(f["rows_read"] for f in summary["files"])
        quarantined = sum(f["rows_quarantined"] for f in summary["files"])
        totals[dataset] = {"rows_read": read, "rows_quarantined": quarantined}
        if read and quarantined / read > max_quarantine_ratio:
            problems.append(
                f"{dataset}: {quarantined} of {read} rows quarantined "
                f"({quarantined / read:.1%} > {max_quarantine_ratio:.0%}); see the quarantined_rows table"
            )
    if problems:
        raise DataQualityError("data-quality checks failed:\n" + "\n".join(problems))
    return {"datasets": totals, "ok": True}


def trigger_insights(logical_date: str) -> dict[str, Any]:
    """Queue a proactive-insights run for every merchant with data on that day."""
    from pipelines.insights import request_insight_runs

    with _context() as ctx:
        return request_insight_runs(ctx, date.fromisoformat(logical_date)).as_dict()
