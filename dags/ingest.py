"""ingest: every minute, move new bars from Kafka (``market.bars.1m``) into the Parquet lake on Blob.

One run consumes for a bounded slice (``TICKCAST_INGEST__CONSUME_SLICE_S``, default 45 s) and ends, so
runs never pile up (``max_active_runs=1``) and a failure is retried by Airflow. Offsets are committed
only after the lake write, so a failed or killed run loses nothing: the next run gets the same messages
and the lake upsert makes them harmless. All the work is in ``tickcast.ingest.consumer``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="ingest",
    schedule="* * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=5),
    default_args={"retries": 3, "retry_delay": timedelta(seconds=10)},
    tags=["tickcast", "ingest"],
    doc_md=__doc__,
)
def ingest() -> None:
    @task(execution_timeout=timedelta(minutes=3))
    def consume_to_lake() -> dict[str, object]:
        from tickcast.ingest.consumer import consume_to_lake as consume
        from tickcast.settings import get_settings

        settings = get_settings()
        return consume(settings, max_seconds=settings.ingest.consume_slice_s).as_dict()

    consume_to_lake()


ingest_dag = ingest()
