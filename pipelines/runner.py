"""The whole batch pipeline in one call, for the CLI (Airflow runs the same steps as tasks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from core.config import Settings
from pipelines.context import PipelineContext
from pipelines.ingest import DATASETS, FileResult, IngestSummary, ingest, list_files
from pipelines.landing import LandingFile, open_root


@dataclass
class PipelineResult:
    """The load summary plus each later step's summary."""

    ingest: IngestSummary
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failed_files(self) -> list[str]:
        """One message per file that failed to load."""
        return [f.error or f.path for f in self.ingest.failed_files]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**self.ingest.as_dict(), "steps": self.steps}


def run_pipeline(
    settings: Settings,
    root: str,
    partition: date | None,
    *,
    datasets: Sequence[str] = DATASETS,
    load_only: bool = False,
    show_progress: bool = False,
    console: Any = None,
) -> PipelineResult:
    """Load, then (unless ``load_only``) aggregate, extract text, embed and trigger insights."""
    landing = open_root(root)
    ctx = PipelineContext.from_settings(settings)
    try:
        summary = _load(ctx, landing, partition, datasets, show_progress, console)
        result = PipelineResult(summary)
        if not load_only:
            from pipelines.aggregates import refresh_pending
            from pipelines.insights import request_insight_runs
            from pipelines.text import embed_pending, extract_text

            result.steps["aggregates"] = refresh_pending(ctx).as_dict()
            result.steps["text"] = extract_text(ctx, landing).as_dict()
            result.steps["embeddings"] = embed_pending(ctx).as_dict()
            days = [partition] if partition else sorted({p for d in summary.datasets for p in d.partitions})
            triggered = [request_insight_runs(ctx, day).as_dict() for day in days[-1:]]
            result.steps["insights"] = triggered[0] if triggered else {}
        return result
    finally:
        ctx.close()


def _load(
    ctx: PipelineContext, landing: Any, partition: date | None, datasets: Sequence[str], show: bool, console: Any
) -> IngestSummary:
    if not show:
        return ingest(ctx, landing, partition, datasets=datasets)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = len(list_files(landing, partition, datasets))
    with Progress(
        TextColumn("[bold]loading[/] {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("", total=total)

        def on_file(file: LandingFile, result: FileResult | None) -> None:
            if result is None:
                progress.update(task, description=file.relpath)
            else:
                progress.advance(task)

        return ingest(ctx, landing, partition, datasets=datasets, on_file=on_file)
