"""stack_check: a manual DAG that proves Airflow's task runners reach every service of the stack.

It reads the same TICKCAST_* settings as the CLI (the supervisor hands them to Airflow), lists the
Blob containers, the Kafka topics and the MLflow experiments, and fails when one is unreachable.
Trigger it from the UI or `tickcast` when a DAG cannot talk to a service.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="stack_check",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["tickcast", "ops"],
    doc_md=__doc__,
)
def stack_check() -> None:
    @task(retries=0)
    def reach_services() -> dict[str, list[str]]:
        from tickcast_dev.stack.reachability import reach_all

        return reach_all()

    reach_services()


stack_check_dag = stack_check()
