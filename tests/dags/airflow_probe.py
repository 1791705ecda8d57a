"""Airflow in a child process for tests/dags: the pytest process never imports Airflow.

Importing Airflow reconfigures logging and warnings process-wide and fixes its
configuration for the life of the process, so the tests run it here instead::

    python airflow_probe.py dagbag OUT.json
    python airflow_probe.py test DAG_ID YYYY-MM-DD|none CONF_JSON OUT.json

Each writes one JSON document to OUT.json (Airflow's own logs go to stdout).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def _dagbag() -> Any:
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=conf.get("core", "dags_folder"))


def describe_dags() -> dict[str, Any]:
    bag = _dagbag()
    dags: dict[str, Any] = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "fileloc": dag.fileloc,
            "tags": sorted(dag.tags),
            "doc_md": dag.doc_md or "",
            "timetable": type(dag.timetable).__name__,
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "start_date": dag.start_date.isoformat() if dag.start_date else None,
            "params": dag.params.dump(),
            "tasks": {
                task.task_id: {
                    "retries": task.retries,
                    "upstream": sorted(task.upstream_task_ids),
                    "depends_on_past": task.depends_on_past,
                    "retry_exponential_backoff": task.retry_exponential_backoff,
                }
                for task in dag.tasks
            },
        }
    return {"import_errors": {str(k): v for k, v in bag.import_errors.items()}, "dags": dags}


def run_dag_test(dag_id: str, day: str, conf: dict[str, Any]) -> dict[str, Any]:
    import pendulum
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag = _dagbag().dags[dag_id]
    for task in dag.tasks:
        # dag.test() honours retry delays (minutes here): fail the test now instead.
        task.retries = 0
    started = time.perf_counter()
    run = dag.test(logical_date=None if day == "none" else pendulum.parse(day), run_conf=conf)
    seconds = time.perf_counter() - started
    with create_session() as session:
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances(session=session)}
        xcoms = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run.run_id, XComModel.key == "return_value"
            )
        ).all()
        returns = {x.task_id: XComModel.deserialize_value(x) for x in xcoms}
    return {"state": str(run.state), "tasks": states, "returns": returns, "seconds": round(seconds, 1)}


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "dagbag":
        (out,) = args
        result = describe_dags()
    elif command == "test":
        dag_id, day, conf, out = args
        result = run_dag_test(dag_id, day, json.loads(conf))
    else:
        raise SystemExit(f"unknown command {command!r}")
    Path(out).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
