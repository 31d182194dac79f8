"""Training -> MLflow -> registry -> promotion gate, against the stack's real MLflow server and Azurite lake.

Each module run uses its own registered-model name and its own synthetic symbols (written to the lake),
so it never collides with other tests or with a developer's models.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from emulators.yahoo.frames import lake_frame
from emulators.yahoo.synthetic import SyntheticMarket
from tickcast.lake.store import Lake
from tickcast.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained_settings(stack: Settings) -> Iterator[Settings]:
    run = uuid.uuid4().hex[:4].upper()
    symbols = ["REGA", "REGB", "REGC"]  # fixed names: the synthetic series (seeded by name) are the same every run
    market = SyntheticMarket(9, symbols, {}, 0.4, null_fraction=0.0)
    Lake.from_settings(stack).upsert_frame(lake_frame(market, symbols, 5, time.time()))
    yield stack.model_copy(
        update={
            "symbols": symbols,
            "mlflow": stack.mlflow.model_copy(
                update={"model_name": f"it-model-{run.lower()}", "experiment": f"it-retrain-{run.lower()}"}
            ),
        }
    )


def test_a_fresh_registry_serves_the_baseline_first_then_the_lstm_must_beat_it(trained_settings: Settings) -> None:
    from tickcast.model.predictor import Predictor
    from tickcast.registry.mlflow_registry import Registry
    from tickcast.retrain import AliasOnlyDeployer, ensure_serving, retrain_cycle

    reg = Registry(trained_settings)
    first = ensure_serving(trained_settings, deploy=AliasOnlyDeployer(reg), registry=reg)
    assert first.deployed and first.version == "1", first.message
    assert reg.kind("1") == "baseline" and str(reg.version("production").version) == "1"  # type: ignore[union-attr]
    assert {"model/model.onnx", "model/preprocessing.json"} == reg.artifact_paths(
        reg.model_version("1").run_id, "model"
    )
    again = ensure_serving(trained_settings, deploy=AliasOnlyDeployer(reg), registry=reg)
    assert not again.deployed and again.version == "1" and "baseline" in again.message

    outcome = retrain_cycle(trained_settings)
    assert outcome.status == "promoted", outcome.message
    prod = reg.version("production")
    assert prod is not None and str(prod.version) == outcome.version and reg.kind(outcome.version) == "lstm-attention"
    assert str(reg.version("previous").version) == "1"  # type: ignore[union-attr]  # the baseline: rollback target
    assert reg.version("challenger") is not None
    description = prod.description or ""
    for fragment in ("PROMOTE", "persistence", "production v1 (baseline)", "interval score", "Intervals at level 80%"):
        assert fragment in description, fragment
    tags = reg.version_tags(outcome.version)
    assert 0.77 <= float(tags["gate_coverage"]) <= 0.83 and float(tags["gate_dm_p_interval"]) < 0.05

    run = reg.run(prod.run_id)
    for tag in ("data_window_start", "data_window_end", "dataset_hash", "git_commit", "train_end"):
        assert run.data.tags.get(tag), tag
    for metric in (
        "model_rmse", "persistence_rmse", "skill", "onnx_max_abs_diff", "model_coverage", "gate_interval_score_bp"
    ):  # fmt: skip
        assert metric in run.data.metrics, metric
    artifacts = reg.artifact_paths(prod.run_id, "model")
    assert {"model/model.onnx", "model/preprocessing.json", "model/model.keras"} <= artifacts
    plots = reg.artifact_paths(prod.run_id, "plots")
    assert {"plots/training_curve.png", "plots/predicted_vs_actual.png"} <= plots

    # the registered artifacts serve: load by alias and predict from the lake's latest bars
    predictor = Predictor.from_dir(reg.download(str(prod.version)))
    sym = trained_settings.symbols[0]
    lake = Lake.from_settings(trained_settings)
    last = lake.last_ts(sym)
    assert last is not None
    bars = lake.read(sym, last.replace(hour=0, minute=0), last.replace(hour=23, minute=59))
    prediction = predictor.predict_latest(bars, sym)
    assert abs(prediction.predicted_close / prediction.last_close - 1) < 0.01


def test_a_challenger_that_does_not_beat_the_production_by_the_margin_is_not_promoted(
    trained_settings: Settings,
) -> None:
    from tickcast.registry.mlflow_registry import Registry
    from tickcast.retrain import retrain_cycle

    strict = trained_settings.model_copy(
        update={
            "mlflow": trained_settings.mlflow.model_copy(update={"promotion_margin": 0.5}),
        }
    )
    reg = Registry(strict)
    before = reg.version("production")
    outcome = retrain_cycle(strict)
    assert outcome.status == "kept", outcome.message
    assert "does not beat the production" in outcome.message
    after = reg.version("production")
    assert before is not None and after is not None and after.version == before.version, "production unmoved"
    challenger = reg.version("challenger")
    assert challenger is not None and str(challenger.version) == outcome.version
    assert "KEEP PRODUCTION" in (reg.model_version(outcome.version).description or "")


def test_a_production_whose_artifacts_are_gone_is_recorded_and_a_fresh_baseline_decides(
    trained_settings: Settings,
) -> None:
    from tickcast.azure import container
    from tickcast.registry.mlflow_registry import Registry
    from tickcast.retrain import judge

    reg = Registry(trained_settings)
    prod = reg.version("production")
    challenger = reg.version("challenger")
    assert prod is not None and challenger is not None and prod.version != challenger.version
    blobs = container(trained_settings.storage.mlflow_container, trained_settings)
    removed = 0
    for blob in blobs.list_blobs():
        if prod.run_id in blob.name:
            blobs.delete_blob(blob.name)
            removed += 1
    assert removed, "the production's artifacts live in Azurite"
    verdict = judge(trained_settings, str(challenger.version))
    assert (
        verdict.production is not None and verdict.production_kind == "baseline" and verdict.production_version is None
    )
    assert verdict.production_note is not None and "could not be scored" in verdict.production_note
    assert verdict.production_note in reg.model_version(str(challenger.version)).description


def test_mlflow_down_fails_before_training_and_registers_nothing(trained_settings: Settings) -> None:
    from tickcast.registry.mlflow_registry import Registry, RegistryError
    from tickcast.retrain import train_and_register

    reg = Registry(trained_settings)
    count = len(reg.versions())
    down = trained_settings.model_copy(
        update={
            "mlflow": trained_settings.mlflow.model_copy(update={"tracking_uri": "http://127.0.0.1:9"}),
        }
    )
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match=r"not reachable.*nothing was registered"):
        train_and_register(down)
    assert time.monotonic() - t0 < 30
    assert len(reg.versions()) == count


def test_live_evaluation_rolls_a_production_model_that_is_worse_than_persistence_back(
    trained_settings: Settings,
) -> None:
    from datetime import timedelta

    from tickcast.lake.predictions import PredictionLog
    from tickcast.registry.mlflow_registry import Registry
    from tickcast.retrain import AliasOnlyDeployer
    from tickcast.validation.evaluate import run_evaluation

    reg = Registry(trained_settings)
    prod, prev = reg.version("production"), reg.version("previous")
    assert prod is not None and prev is not None and reg.kind(str(prod.version)) == "lstm-attention"
    sym = trained_settings.symbols[0]
    lake = Lake.from_settings(trained_settings)
    last = lake.last_ts(sym)
    assert last is not None
    bars = lake.read(sym, last - timedelta(minutes=119), last + timedelta(minutes=1))
    served = [
        {
            "symbol": sym, "as_of": ts.to_pydatetime(), "served_at": ts.to_pydatetime() + timedelta(seconds=3),
            "model_version": str(prod.version), "model_kind": "lstm-attention",
            "predicted_close": close * 1.001, "lower": close * 1.0005, "upper": close * 1.0015, "level": 0.8,
            "route": "GET",
        }
        for ts, close in zip(bars["ts"], bars["close"], strict=True)
    ]  # fmt: skip  # a 10 bp bias: clearly worse than persistence, and an interval that misses
    log = PredictionLog.from_settings(trained_settings)
    assert log.append(served + served[:5]) == len(served) + 5  # duplicates are tolerated
    report = run_evaluation(
        trained_settings, registry=reg, deployer=AliasOnlyDeployer(reg), now=last + timedelta(minutes=5)
    )
    restored = str(prev.version)
    mine = next(s for s in report.scores if s.model_version == str(prod.version))
    assert mine.forecasts == len(served) and mine.n == len(served) - 1 and mine.missing == 1
    assert report.action == "rolled_back", report.lines()
    assert "significantly worse than persistence" in (report.reason or "")
    assert str(reg.version("production").version) == str(prev.version)  # type: ignore[union-attr]
    tags = reg.version_tags(str(prod.version))
    assert "significantly worse" in tags["rollback_reason"] and tags["live_evaluation"].startswith(f"v{prod.version}")
    assert "Rolled back" in (reg.model_version(str(prod.version)).description or "")
    assert "live_rmse_bp" in reg.run(prod.run_id).data.metrics

    # the restored version underperforms too: a baseline stays (alarm); an LSTM whose `previous` was rolled back
    # for cause gives way to a FRESH baseline, never back to the bad one
    log.append([{**row, "model_version": restored, "model_kind": reg.kind(restored)} for row in served])
    again = run_evaluation(
        trained_settings, registry=reg, deployer=AliasOnlyDeployer(reg), now=last + timedelta(minutes=5)
    )
    now_serving = str(reg.version("production").version)  # type: ignore[union-attr]
    if reg.kind(restored) == "baseline":
        assert again.action == "alarm" and now_serving == restored, again.lines()
        assert reg.version_tags(restored)["live_evaluation"].startswith("ALARM (baseline kept)")
    else:
        assert again.action == "baseline_deployed" and reg.kind(now_serving) == "baseline", again.lines()
        assert now_serving not in (restored, str(prod.version))
        assert "significantly worse" in reg.version_tags(restored)["rollback_reason"]


def test_two_fresh_stack_callers_racing_to_serve_the_baseline_deploy_it_once(trained_settings: Settings) -> None:
    import threading

    from tickcast.azure import lake_container
    from tickcast.lake.lock import BlobLock
    from tickcast.registry.mlflow_registry import Registry
    from tickcast.retrain import Serving, ensure_serving

    name = f"{trained_settings.mlflow.model_name}-race"
    fresh = trained_settings.model_copy(
        update={"mlflow": trained_settings.mlflow.model_copy(update={"model_name": name})}
    )
    reg = Registry(fresh)
    deployed: list[str] = []

    def slow_deploy(version: str) -> None:  # a blue/green deploy takes seconds: the window of the race
        time.sleep(3)
        deployed.append(version)
        reg.promote(version)

    outcomes: list[Serving] = []
    callers = [
        threading.Thread(target=lambda: outcomes.append(ensure_serving(fresh, deploy=slow_deploy, registry=reg)))
        for _ in range(2)
    ]
    for t in callers:
        t.start()
    for t in callers:
        t.join(120)
    assert len(outcomes) == 2 and len(deployed) == 1, (outcomes, deployed)
    assert sorted(o.deployed for o in outcomes) == [False, True]
    assert {o.version for o in outcomes} == {deployed[0]} == {str(reg.version("production").version)}  # type: ignore[union-attr]
    assert len(reg.versions()) == 1, "the loser registered nothing"

    # a holder that died leaves an expired lock: the next caller breaks it
    dead = BlobLock(lake_container(fresh), "drill", ttl_s=0)
    assert dead.try_acquire()
    assert BlobLock(lake_container(fresh), "drill").acquire(wait_s=5)
