"""evaluate: every 5 minutes, score the served forecasts against the closes that came true, per model version.

    evaluate ──► (numbers to MLflow; production rolled back to `previous` when it underperforms live)

Reads the lake's prediction log and bars, records n, RMSE vs persistence, skill, interval coverage and the
Diebold-Mariano p per version, and rolls production back (the baseline at worst) when it is significantly
worse than persistence live or its coverage is more than 10 points off over at least 60 evaluated minutes.
All the work is in ``tickcast.validation.evaluate``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="evaluate",
    schedule="*/5 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=5),
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["tickcast", "model"],
    doc_md=__doc__,
)
def evaluate() -> None:
    @task(execution_timeout=timedelta(minutes=4))
    def evaluate_live() -> dict[str, str | None]:
        from tickcast.release.targets import deployer_for
        from tickcast.settings import get_settings
        from tickcast.validation.evaluate import run_evaluation

        settings = get_settings()
        report = run_evaluation(settings, deployer=deployer_for(settings))
        for line in report.lines():
            print(line)
        return {"production": report.production, "action": report.action, "reason": report.reason}

    evaluate_live()


evaluate_dag = evaluate()
