"""The DAG folder parses cleanly, fast, with the schedules we rely on, and without heavy imports.

Parsing runs in a subprocess with a throw-away AIRFLOW_HOME, so the test never touches ~/airflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tickcast.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow

PARSE = r"""
import json, sys, time
t0 = time.monotonic()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = sorted(m for m in ("tensorflow", "mlflow", "kafka", "pyarrow", "azure.storage.blob", "tickcast.ingest",
                           "tickcast.lake") if m in sys.modules)
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "seconds": time.monotonic() - t0,
    "heavy": heavy,
    "dags": {d.dag_id: {"schedule": getattr(d.timetable, "summary", None) or str(d.schedule),
                        "max_active_runs": d.max_active_runs,
                        "catchup": d.catchup, "tasks": sorted(t.task_id for t in d.tasks),
                        "retries": sorted({t.retries for t in d.tasks})} for d in bag.dags.values()},
}))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("airflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        }
    )
    proc = subprocess.run(
        [sys.executable, "-c", PARSE, str(PROJECT_ROOT / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_no_import_errors(parsed: dict[str, Any]) -> None:
    assert parsed["errors"] == {}
    files = {p.stem for p in Path(PROJECT_ROOT / "dags").glob("*.py")}
    assert set(parsed["dags"]) == files, "one DAG per file, named after it"


def test_nothing_heavy_is_imported_at_parse_time(parsed: dict[str, Any]) -> None:
    assert parsed["heavy"] == []


def test_ingest_runs_every_minute_one_at_a_time_with_retries(parsed: dict[str, Any]) -> None:
    ingest = parsed["dags"]["ingest"]
    assert ingest["schedule"] == "* * * * *"
    assert ingest["max_active_runs"] == 1
    assert ingest["catchup"] is False
    assert min(ingest["retries"]) >= 1


def test_retrain_serves_the_baseline_before_it_trains(parsed: dict[str, Any]) -> None:
    assert parsed["dags"]["retrain"]["tasks"] == [
        "deploy", "enough_data", "judge", "serve_baseline", "train_and_register"
    ]  # fmt: skip


def test_evaluate_runs_every_5_minutes_one_at_a_time(parsed: dict[str, Any]) -> None:
    evaluate = parsed["dags"]["evaluate"]
    assert evaluate["schedule"] == "*/5 * * * *" and evaluate["max_active_runs"] == 1 and not evaluate["catchup"]
    assert evaluate["tasks"] == ["evaluate_live"] and min(evaluate["retries"]) >= 1
