"""merchant_daily: load one day's landing partition, check it, then refresh everything built on it.

Wiring only: each task is one call into ``pipelines.tasks`` keyed by the run's
logical date; the work and its idempotency live there.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable, chain, dag, task
from airflow.sdk.exceptions import AirflowFailException

from dags._common import embed_chunks, extract_text, landing_root_param, quality_check, refresh_aggregates, retry_args
from pipelines import tasks
from pipelines.landing import DATASETS

DOC_MD = """
### merchant_daily

Loads the `dt=<ds>` partition of the landing root (see `DATA_CONTRACT.md`),
where `ds` is the run's logical date: the run for 2026-10-29 starts after that
day ends (UTC) and loads the export of 2026-10-29.

`ingest_merchants → ingest_products → ingest_transactions → ingest_reviews →
ingest_attachments` (the contract's order) → `quality_check` (fails on an
unreadable file, unbalanced counts or too many quarantined rows; the log names
dataset and file; not retried) → `refresh_aggregates` → `extract_text` →
`embed_chunks` → `trigger_insights`.

Every task is idempotent for its logical date: clearing or re-running a task or
a whole run never duplicates rows. Runs go one at a time, in date order, and an
ingest task waits for the same task of the previous day (partitions load in
date order), so a failed day holds the following ones until it is fixed.

**Params**: `landing_root`, a folder (relative to where Airflow was started)
or `s3://bucket/prefix`; default `COPILOT_PIPELINES__LANDING_ROOT`.

**Backfill** (runs one after the other, oldest first):
`airflow backfill create --dag-id merchant_daily --from-date 2026-10-01 --to-date 2026-10-31`,
or *Trigger → Backfill* in the UI. With catchup on, unpausing the DAG also runs
every day since its start date. To load all history in one run use `merchant_backfill`.

**Re-run a day** after fixing its files: clear its run (UI: *Clear*, with
downstream), or `airflow tasks clear merchant_daily -s 2026-10-29 -e 2026-10-29 -y`.
Accept a day that cannot be fixed by marking its failed task *Success*.
"""


def _partition(day: str) -> str:
    # A run without a logical date has no `ds`; loading "every partition"
    # instead would be a silent surprise, so refuse it (not retried).
    if not day:
        raise AirflowFailException(
            "merchant_daily loads the partition of its logical date: trigger the run with a logical date, "
            "or use merchant_backfill to load every partition"
        )
    return day


@dag(
    dag_id="merchant_daily",
    # Data-interval timetable: the run for day D starts once D is over and has logical date D.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=True,
    max_active_runs=1,
    default_args=retry_args(execution_timeout=timedelta(hours=2)),
    params=landing_root_param(),
    tags=["merchant-copilot", "ingest"],
    doc_md=DOC_MD,
)
def merchant_daily() -> None:
    @task(depends_on_past=True)
    def ingest(root: str, dataset: str, day: str) -> dict[str, Any]:
        return tasks.ingest_dataset(root, dataset, _partition(day))

    @task
    def trigger_insights(day: str) -> dict[str, Any]:
        return tasks.trigger_insights(_partition(day))

    # Rendered per run (and shown in the UI's "Rendered Template" tab).
    root, day = "{{ params.landing_root }}", "{{ ds | default('') }}"
    loads = [ingest.override(task_id=f"ingest_{name}")(root, name, day) for name in DATASETS]
    # The XComArgs resolve to the five summaries at run time.
    quality = quality_check(loads)  # type: ignore[arg-type]
    chain(*loads, quality, refresh_aggregates(), extract_text(root), embed_chunks(), trigger_insights(day))


merchant_daily()
