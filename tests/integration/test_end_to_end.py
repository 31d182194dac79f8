"""The user's main job on the real stack, then fault drills on the running pipeline.

1. ``run_main_job`` (what ``just up`` runs after the stack is healthy): backfill from the Yahoo emulator,
   the Airflow ``ingest`` DAG into the lake, the ``retrain`` DAG (train, judge, deploy), and a prediction
   for every configured symbol through the APIM gateway with a subscription key.
2. ``tickcast status`` on that pipeline.
3. Drills, in the order a bad day would bring them: ``kill -9`` the broker in the middle of an ingest run,
   and right after it Azurite and the endpoint stand-in, then a running DAG task; a retrain while MLflow is
   down. After each, ``tickcast up`` (the CLI, as a user would run it) and the pipeline recovers: predictions come
   from the production model, and at the end the lake holds every closed minute exactly once (what a
   crashed Azurite forgot, the producer's gap repair publishes again).

The ``ingest`` DAG stays on its one-minute schedule after the main job (that is how the pipeline catches
up after a fault); ``retrain`` is paused again so the production version only changes when a test says so.
These tests run last (see conftest): they kill and restart the shared stack's services.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import psutil
import pytest

from tickcast.lake.store import Lake
from tickcast.settings import PROJECT_ROOT, Settings
from tickcast_dev.main_job import MainJobResult, newest_closed, run_main_job, wait_for_lake
from tickcast_dev.stack import procs

pytestmark = pytest.mark.integration

KEY_HEADER = "Ocp-Apim-Subscription-Key"
RECOVERY_S = 300.0  # a fault, `tickcast up`, one producer poll (60 s) and an ingest run fit well inside


@dataclass
class Pipeline:
    settings: Settings
    result: MainJobResult
    production: str


@pytest.fixture(scope="module")
def pipeline(stack: Settings) -> Iterator[Pipeline]:
    from tickcast_dev.airflow_client import AirflowClient

    result = run_main_job(stack, days=7, report=print)
    with AirflowClient(stack) as af:
        af.pause("retrain")
    assert result.production_version is not None, f"no model in production after the main job: {result.stages}"
    try:
        yield Pipeline(stack, result, result.production_version)
    finally:
        with AirflowClient(stack) as af:
            af.pause("ingest")


def predict(settings: Settings, symbol: str, key: str | None = "default") -> httpx.Response:
    """GET a prediction through the gateway with the configured key, another ``key``, or none (``None``)."""
    if key == "default":
        key = settings.gateway_client_key()
    headers = {KEY_HEADER: key} if key is not None else {}
    return httpx.get(f"{settings.gateway_url}/api/predictions/{symbol}", headers=headers, timeout=10)


def served_version(settings: Settings, deadline_s: float = 180.0) -> str:
    """Poll the gateway until every symbol is predicted; the model version that answered (one for all).

    Polls gently (the policy allows 120 calls a minute per key) and waits out a 429's ``Retry-After``.
    """
    deadline = time.monotonic() + deadline_s
    versions: dict[str, str] = {}
    last = ""
    while time.monotonic() < deadline and len(versions) < len(settings.symbols):
        sym = next(s for s in settings.symbols if s not in versions)
        r = predict(settings, sym)
        if r.status_code == 200:
            versions[sym] = str(r.json()["model_version"])
            continue
        last = f"{sym}: {r.status_code} {r.text[:160]}"
        time.sleep(float(r.headers.get("retry-after", "2")) if r.status_code in (429, 503) else 2.0)
    assert len(versions) == len(settings.symbols), f"no prediction for every symbol within {deadline_s:.0f}s: {last}"
    assert len(set(versions.values())) == 1, f"symbols answered by different models: {versions}"
    return next(iter(versions.values()))


def kill_9(settings: Settings, *services: str) -> None:
    """SIGKILL each service's whole process tree, as a crash would leave it (no clean shutdown)."""
    from tickcast_dev.stack.supervisor import Supervisor

    sup = Supervisor(settings, report=lambda _: None)
    for name in services:
        record = sup.pid_file(name).read()
        proc = procs.live_process(record) if record else None
        assert proc is not None, f"{name} is not running before the drill"
        tree = procs.process_tree(proc)
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(tree, timeout=10)


def tickcast_up() -> str:
    """``tickcast up`` as a user runs it (the stack fixture exported this stack's TICKCAST_* variables)."""
    done = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "tickcast"), "up"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, f"tickcast up failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


# --- the main job -------------------------------------------------------------------------------------


def test_every_symbol_gets_a_numeric_prediction_from_the_production_model(pipeline: Pipeline) -> None:
    from tickcast.registry.mlflow_registry import Registry
    from tickcast.registry.vocabulary import PROMOTION_VERDICT

    s, result = pipeline.settings, pipeline.result
    assert [st.name.split(" ")[0] for st in result.stages] == ["backfill", "ingest", "serve", "predict", "retrain"]
    assert not result.errors and set(result.predictions) == set(s.symbols)
    assert result.first_prediction_s is not None
    reg = Registry(s)
    prod = reg.version("production")
    assert prod is not None and str(prod.version) == pipeline.production
    # the retrain DAG (run by the scheduler) registered its model and judged it against production
    newest = max(reg.versions(), key=lambda v: int(v.version))
    assert reg.kind(str(newest.version)) == "lstm-attention", newest
    assert newest.tags.get(PROMOTION_VERDICT) in {"promote", "keep_production"}, newest.tags
    for sym in s.symbols:
        r = predict(s, sym)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["symbol"] == sym and body["horizon_minutes"] == 1
        assert isinstance(body["predicted_close"], float) and math.isfinite(body["predicted_close"])
        assert body["predicted_close"] > 0 and str(body["model_version"]) == pipeline.production
        assert body["model_kind"] in ("baseline", "lstm-attention")
        assert body["interval"]["lower"] <= body["predicted_close"] <= body["interval"]["upper"]


def test_the_gateway_refuses_a_call_without_a_valid_key(pipeline: Pipeline) -> None:
    s = pipeline.settings
    missing = predict(s, s.symbols[0], key=None)
    assert missing.status_code == 401 and "subscription key" in missing.text.lower()
    assert predict(s, s.symbols[0], key="not-a-key").status_code == 401


def test_the_consumer_lag_drains_to_zero_after_an_ingest_run(pipeline: Pipeline) -> None:
    """What status reports as lag is what ingest has left to do: a run of the consumer takes it to 0."""
    from tickcast.ingest.consumer import consume_to_lake
    from tickcast_dev.status import consumer_lag

    s = pipeline.settings
    deadline = time.monotonic() + 90  # the producer keeps publishing: retry until one run catches up
    seen: list[int] = []
    while True:
        consume_to_lake(s, max_seconds=20, idle_seconds=1)
        seen.append(consumer_lag(s))
        if seen[-1] == 0:
            break
        assert time.monotonic() < deadline, f"lag after each ingest run: {seen}"


def test_status_shows_the_pipeline(pipeline: Pipeline) -> None:
    from tickcast_dev.status import EndpointView, LakeView, ModelView, snapshot

    s = pipeline.settings
    snap = snapshot(s)
    assert isinstance(snap.lake, LakeView), snap.lake
    assert [row.symbol for row in snap.lake.symbols] == list(s.symbols)
    assert all(row.last_bar is not None and row.age_s is not None for row in snap.lake.symbols)
    assert snap.lake.clock == "emulator"
    assert isinstance(snap.consumer_lag, int), snap.consumer_lag
    assert isinstance(snap.model, ModelView), snap.model
    assert snap.model.production_version == pipeline.production and snap.model.promoted_at
    assert snap.model.last_run_at is not None and snap.model.persistence_rmse is not None
    assert isinstance(snap.endpoint, EndpointView), snap.endpoint
    serving = [d for d in snap.endpoint.deployments if d["traffic"] == 100]
    assert len(serving) == 1 and str(serving[0]["model_version"]) == pipeline.production
    assert snap.gateway_url == s.gateway_url

    shown = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "tickcast"), "status"],
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for text in ("consumer lag", "production", "skill vs persistence", s.gateway_url, s.symbols[0], "Airflow runs"):
        assert text in shown.stdout, f"{text!r} missing from tickcast status:\n{shown.stdout}"
    assert "unreachable" not in shown.stdout
    assert "pipeline: moving" in shown.stdout, shown.stdout


# --- fault drills ---------------------------------------------------------------------------------------


def one_minute_later(settings: Settings) -> dict[str, datetime]:
    """Per symbol, the minute after the newest closed one: it can only reach the lake through the whole path
    (emulator clock -> producer poll -> broker -> ingest run -> lake) after the fault."""
    marks = newest_closed(settings)
    assert set(marks) == set(settings.symbols), f"the emulator serves no bars for {set(settings.symbols) - set(marks)}"
    return {sym: ts + timedelta(minutes=1) for sym, ts in marks.items()}


def test_kill_9_the_broker_during_an_ingest_run_then_azurite_and_the_endpoint(pipeline: Pipeline) -> None:
    """Two crashes in a row and one `tickcast up`: serving outlives the broker, answers 503 with Retry-After
    while the endpoint is gone, and afterwards the same production model serves and new minutes reach the lake
    (what Azurite forgot is published again by gap repair; the last test checks every minute)."""
    from tickcast_dev.airflow_client import AirflowClient

    s = pipeline.settings
    with AirflowClient(s) as af:
        af.trigger("ingest")
    kill_9(s, "kafka")
    target = one_minute_later(s)
    assert served_version(s) == pipeline.production, "serving does not need the broker"
    kill_9(s, "azurite", "endpoint")
    down = predict(s, s.symbols[0])
    assert down.status_code == 503 and down.headers.get("retry-after"), (down.status_code, down.text)
    tickcast_up()
    assert served_version(s) == pipeline.production, "the endpoint comes back with the same deployment"
    wait_for_lake(s, target, RECOVERY_S)
    assert served_version(s) == pipeline.production


def test_kill_9_a_running_ingest_task_is_retried(pipeline: Pipeline) -> None:
    from tickcast_dev.airflow_client import AirflowClient

    s = pipeline.settings
    with AirflowClient(s) as af:
        # our own run: it may queue behind a scheduled one (max_active_runs=1), then it has a whole slice to go
        run_id = af.trigger("ingest")
        deadline = time.monotonic() + 180
        running: list[dict[str, object]] = []
        while not running and time.monotonic() < deadline:
            running = [ti for ti in af.task_instances("ingest", run_id) if ti.get("state") == "running" and ti["pid"]]
            time.sleep(0.2)
        assert running, f"the triggered ingest task was not running within 180 s: {af.task_instances('ingest', run_id)}"
        victim = running[0]
        os.kill(int(str(victim["pid"])), signal.SIGKILL)
        state = af.wait_for_run("ingest", run_id, timeout_s=240)
        tis = af.task_instances("ingest", run_id)
    assert state == "success", f"the killed task was not retried to success: {tis}"
    assert max(int(ti.get("try_number") or 0) for ti in tis) > int(str(victim["try_number"])), tis


def test_a_retrain_with_mlflow_down_leaves_production_serving(pipeline: Pipeline) -> None:
    from tickcast.registry.mlflow_registry import Registry
    from tickcast_dev.airflow_client import AirflowClient

    s = pipeline.settings
    kill_9(s, "mlflow")
    with AirflowClient(s) as af:
        run_id = af.trigger("retrain")
        af.unpause("retrain")  # a paused DAG's runs stay queued
        try:
            # the run's first task fails (its retry would fail the same way 30 s later: not waited for here)
            deadline = time.monotonic() + 300
            failed: list[dict[str, object]] = []
            tis: list[dict[str, object]] = []
            while not failed and time.monotonic() < deadline:
                tis = af.task_instances("retrain", run_id)
                failed = [ti for ti in tis if ti.get("state") in ("up_for_retry", "failed")]
                assert not [ti for ti in tis if ti.get("state") == "success"], f"a task succeeded without MLflow: {tis}"
                time.sleep(0.5)
        finally:
            af.pause("retrain")
            for other in af.runs("retrain", state="queued") + af.runs("retrain", state="running"):
                af.mark_run("retrain", str(other["dag_run_id"]), "failed")  # this one, and the schedule's on unpause
    assert failed, f"a retrain without MLflow should fail, its tasks: {tis}"
    assert [ti["task_id"] for ti in failed] == ["serve_baseline"], failed
    assert served_version(s) == pipeline.production
    tickcast_up()
    prod = Registry(s).version("production")
    assert prod is not None and str(prod.version) == pipeline.production, "the alias did not move"


def test_after_the_faults_the_lake_has_every_minute_once(pipeline: Pipeline) -> None:
    """Every minute the source serves is in the lake exactly once. Azurite keeps its metadata in memory for up
    to 5 s, so its ``kill -9`` can undo acknowledged writes: the producer's gap repair publishes those minutes
    again (every poll on this stack, ``ingest.repair_every_polls=1``), so the holes close within minutes."""
    from tickcast.market.yahoo import YahooClient

    s = pipeline.settings
    until = newest_closed(s)
    assert set(until) == set(s.symbols), f"the emulator serves no bars for {set(s.symbols) - set(until)}"
    wait_for_lake(s, until, RECOVERY_S)
    lake = Lake.from_settings(s)
    deadline = time.monotonic() + RECOVERY_S
    problems: dict[str, str] = {s.symbols[0]: "not checked"}
    with YahooClient(s) as client:
        while problems and time.monotonic() < deadline:
            problems = {}
            for sym, newest in until.items():
                start = newest - timedelta(days=2)  # the drills' range and more, inside one chart request
                stored = lake.read(sym, start, newest + timedelta(minutes=1))
                want = {b.ts for b in client.bars(sym, start=start, end=newest + timedelta(minutes=1)).bars}
                have = set(stored["ts"].dt.to_pydatetime())
                if not stored["ts"].is_unique:
                    problems[sym] = "duplicated minutes"
                elif want != have:
                    problems[sym] = f"missing {sorted(want - have)[:5]}, extra {sorted(have - want)[:5]}"
            if problems:
                time.sleep(5.0)
    assert not problems, f"the lake does not match the source within {RECOVERY_S:.0f}s: {problems}"
    assert served_version(s) == pipeline.production
