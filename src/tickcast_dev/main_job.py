"""The main job, end to end, on a running stack: backfill → ingest → baseline → a served prediction → retrain.

`just up` runs it after the stack is healthy. Each stage goes through the real path — the producer code
publishes to Kafka, the Airflow ``ingest`` DAG writes the lake, the baseline is registered and deployed
blue/green like any version (no training: the first prediction needs none), the prediction comes back
through the APIM gateway with a subscription key, and then the Airflow ``retrain`` DAG trains an LSTM as a
challenger of the baseline, judges and (only on a positive verdict) deploys it. The DAGs are triggered once
here instead of waiting for their schedule; they keep running on schedule afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tickcast.api.client import predict
from tickcast.errors import TickcastError
from tickcast.ingest.producer import backfill
from tickcast.lake.store import Lake
from tickcast.market.yahoo import YahooClient
from tickcast.registry.mlflow_registry import Registry
from tickcast.registry.vocabulary import CHALLENGER, PRODUCTION, PROMOTION_VERDICT
from tickcast.retrain import ensure_serving
from tickcast.settings import Settings
from tickcast_dev.airflow_client import AirflowClient

Report = Callable[[str], None]


class PipelineError(TickcastError):
    """A stage did not complete; the message names the stage and where to look."""


@dataclass
class Stage:
    name: str
    seconds: float
    detail: str


@dataclass
class MainJobResult:
    stages: list[Stage] = field(default_factory=list)
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    production_version: str | None = None
    production_kind: str | None = None
    first_prediction_s: float | None = None  # seconds from the job's start to the first served prediction


def _stage(result: MainJobResult, name: str, report: Report, fn: Callable[[], str]) -> None:
    report(f"[{len(result.stages) + 1}] {name} ...")
    t0 = time.monotonic()
    detail = fn()
    result.stages.append(Stage(name, time.monotonic() - t0, detail))
    report(f"    done in {time.monotonic() - t0:.1f}s: {detail}")


def newest_closed(settings: Settings) -> dict[str, datetime]:
    """The newest closed minute per symbol that the source serves now (symbols without bars are left out)."""

    marks: dict[str, datetime] = {}
    with YahooClient(settings) as client:
        for sym in settings.symbols:
            got = client.bars(sym, range_="1d")
            if got.bars:
                marks[sym] = max(b.ts for b in got.bars)
    return marks


def wait_for_lake(settings: Settings, until: dict[str, datetime], timeout_s: float) -> dict[str, datetime | None]:
    """Poll the lake until every symbol's newest minute reaches ``until`` (what the backfill published)."""

    lake = Lake.from_settings(settings)
    deadline = time.monotonic() + timeout_s
    last: dict[str, datetime | None] = {}
    while time.monotonic() < deadline:
        last = {sym: lake.last_ts(sym) for sym in until}
        if all(last[s] is not None and last[s] >= until[s] for s in until):  # type: ignore[operator]
            return last
        time.sleep(1.0)
    raise PipelineError(
        f"ingest: the lake did not reach the backfilled minutes within {timeout_s:.0f}s "
        f"(have {last}, want {until}); see `tickcast logs airflow`"
    )


def run_main_job(
    settings: Settings,
    *,
    days: int = 7,
    report: Report = print,
    ingest_timeout_s: float = 300,
    retrain_timeout_s: float = 600,
    retrain: bool = True,
) -> MainJobResult:

    result = MainJobResult()
    marks: dict[str, datetime] = {}
    t0 = time.monotonic()

    def do_backfill() -> str:
        rep = backfill(settings, days)
        if rep.errors:
            raise PipelineError(f"backfill: {rep.errors}")
        marks.update(newest_closed(settings))
        return f"{rep.bars} bars of {days} days for {', '.join(rep.per_symbol)} published to Kafka"

    def do_ingest() -> str:
        with AirflowClient(settings) as af:
            af.unpause("ingest")
            run_id = af.trigger("ingest")
        last = wait_for_lake(settings, marks, ingest_timeout_s)
        newest = max(v for v in last.values() if v is not None)
        return f"ingest DAG run {run_id}: lake holds every symbol up to {newest:%Y-%m-%d %H:%M}Z"

    def do_retrain() -> str:
        with AirflowClient(settings) as af:
            af.unpause("retrain")
            run_id = af.trigger("retrain")
            state = af.wait_for_run("retrain", run_id, timeout_s=retrain_timeout_s)
        if state != "success":
            raise PipelineError(f"retrain DAG run {run_id} ended {state}; see the Airflow UI at {settings.airflow_url}")
        reg = Registry(settings)
        challenger = reg.version(CHALLENGER)
        before = result.production_version
        _production(reg)
        verdict = (challenger.tags.get(PROMOTION_VERDICT) if challenger is not None else None) or "none"
        served = (
            f"production = v{result.production_version} ({result.production_kind})"
            if result.production_version is not None
            else "no model in production"
        )
        if result.production_version != before:
            do_predict()  # the table shows what serves now
        return f"challenger v{challenger.version if challenger else '?'}: {verdict}; {served}"

    def _production(reg: Registry) -> None:
        prod = reg.version(PRODUCTION)
        result.production_version = str(prod.version) if prod is not None else None
        result.production_kind = reg.kind(result.production_version) if result.production_version else None

    def do_baseline() -> str:
        from tickcast.release.targets import deployer_for

        serving = ensure_serving(settings, deploy=deployer_for(settings))
        _production(Registry(settings))
        return serving.message

    def do_predict() -> str:
        key = settings.gateway_client_key()
        result.predictions.clear()
        result.errors.clear()
        for sym in settings.symbols:
            try:
                result.predictions[sym] = predict(settings.gateway_url, key, sym)
            except Exception as err:  # reported per symbol; the caller decides the exit code
                result.errors[sym] = str(err)
        if result.predictions and result.first_prediction_s is None:
            result.first_prediction_s = time.monotonic() - t0
        return f"{len(result.predictions)}/{len(settings.symbols)} symbols predicted through the gateway"

    _stage(result, f"backfill {days} days from the chart API", report, do_backfill)
    _stage(result, "ingest into the lake (Airflow DAG `ingest`)", report, do_ingest)
    _stage(result, "serve the baseline (no training: registered and deployed blue/green)", report, do_baseline)
    _stage(result, "predict through the API gateway", report, do_predict)
    if not retrain:
        return result
    _stage(result, "retrain an LSTM challenger, judge and deploy (Airflow DAG `retrain`)", report, do_retrain)
    return result
