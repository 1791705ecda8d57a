"""merchant_backfill: load every partition of a landing root in one manual run (initial history load).

Wiring only: the same ``pipelines.tasks`` calls as ``merchant_daily``, with no
logical date, which makes each ingest task load all partitions oldest first.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import chain, dag, task

from dags._common import embed_chunks, extract_text, landing_root_param, quality_check, refresh_aggregates, retry_args
from pipelines import tasks
from pipelines.landing import DATASETS

DOC_MD = """
### merchant_backfill

Manual only. Loads **every** `dt=` partition of `landing_root`, dataset by
dataset in the contract's order and partitions oldest first, then runs the same
`quality_check → refresh_aggregates → extract_text → embed_chunks` steps as
`merchant_daily`. Proactive insights are not triggered for history.

Idempotent: re-running it (or running it after daily runs) never duplicates
rows, the latest `updated_at` (else the latest partition) wins.

Use it for a first load of history, then let `merchant_daily` take over for new
days. Pause `merchant_daily` while this runs, so partitions are not loaded by
two runs at once. For a date range, backfill `merchant_daily` instead
(`airflow backfill create --dag-id merchant_daily --from-date ... --to-date ...`).

Trigger: UI *Trigger* (set `landing_root`), or
`airflow dags trigger merchant_backfill --conf '{"landing_root": "data/landing"}'`.
"""


@dag(
    dag_id="merchant_backfill",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=retry_args(execution_timeout=timedelta(hours=12)),
    params=landing_root_param(),
    tags=["merchant-copilot", "ingest", "backfill"],
    doc_md=DOC_MD,
)
def merchant_backfill() -> None:
    @task
    def ingest(root: str, dataset: str) -> dict[str, Any]:
        return tasks.ingest_dataset(root, dataset, None)

    root = "{{ params.landing_root }}"
    loads = [ingest.override(task_id=f"ingest_{name}")(root, name) for name in DATASETS]
    # The XComArgs resolve to the five summaries at run time.
    quality = quality_check(loads)  # type: ignore[arg-type]
    chain(*loads, quality, refresh_aggregates(), extract_text(root), embed_chunks())


merchant_backfill()
