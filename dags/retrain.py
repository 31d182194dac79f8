"""retrain: every 15 minutes, train a challenger on the lake window and promote it only if it is better.

    serve_baseline ──► enough_data ──► train_and_register ──► judge ──► deploy
    (when nothing     (skip cleanly)   (MLflow run + version,   (challenger vs production   (endpoint first,
     serves yet)                        alias "challenger")      and persistence, unseen     then the alias;
                                                                 minutes; verdict recorded)  on a positive
                                                                                             verdict only)

``serve_baseline`` deploys the baseline when nothing is in production yet (a fresh stack), so the LSTM is
always a challenger of whatever serves. Tasks hand over version numbers only; models and data live in
MLflow and the lake. A run with too little data skips with a message and registers nothing. All the work
is in ``tickcast.retrain``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="retrain",
    schedule="*/15 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=30),
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["tickcast", "model"],
    doc_md=__doc__,
)
def retrain() -> None:
    @task
    def serve_baseline() -> str:
        from tickcast.release.targets import deployer_for
        from tickcast.retrain import ensure_serving
        from tickcast.settings import get_settings

        settings = get_settings()
        outcome = ensure_serving(settings, deploy=deployer_for(settings))
        print(outcome.message)
        return outcome.message

    @task.short_circuit
    def enough_data() -> bool:
        from tickcast.retrain import data_summary
        from tickcast.settings import get_settings

        summary = data_summary(get_settings())
        print(summary.message)
        return summary.enough

    @task(execution_timeout=timedelta(minutes=20))
    def train_and_register() -> str:
        from airflow.sdk.exceptions import AirflowSkipException

        from tickcast.model.training import NotEnoughData
        from tickcast.retrain import train_and_register
        from tickcast.settings import get_settings
        from tickcast_dev.oracle import emulator_oracle  # None outside the local synthetic market

        settings = get_settings()
        try:
            result, version = train_and_register(settings, oracle=emulator_oracle(settings))
        except NotEnoughData as err:
            raise AirflowSkipException(f"not enough data, nothing registered: {err}") from None
        print(f"registered version {version}: {result.metrics}")
        return version

    @task
    def judge(version: str) -> dict[str, Any]:
        from tickcast.retrain import judge as judge_version

        verdict = judge_version(version=version)
        print(verdict.description())
        return {"version": version, "promote": verdict.promote, "reason": verdict.reason}

    @task
    def deploy(decision: dict[str, Any]) -> str:
        from tickcast.release.targets import deployer_for
        from tickcast.settings import get_settings

        if not decision["promote"]:
            return f"kept the production model: {decision['reason']}"
        deployer_for(get_settings())(decision["version"])
        return f"deployed version {decision['version']}"

    version = train_and_register()
    serve_baseline() >> enough_data() >> version
    deploy(judge(version))  # type: ignore[arg-type]  # XComArgs resolve to values at run time


retrain_dag = retrain()
