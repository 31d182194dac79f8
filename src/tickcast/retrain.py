"""The retrain cycle, step by step, shared by the retrain DAG and the CLI (`tickcast train`, `tickcast promote`).

1. :func:`load_window`  — the last ``TICKCAST_MODEL__LOOKBACK_DAYS`` of bars of every symbol from the lake;
2. :func:`train_and_register` — train, export, evaluate, log one MLflow run, register a version (alias
   ``challenger``); MLflow is checked BEFORE training so an unreachable server registers nothing;
3. :func:`judge` — challenger vs production (``production``) vs persistence on the challenger's held-out
   window, each model loaded from the registry and scored with its OWN preprocessing; the verdict and
   its numbers go into the version's description;
4. deploying is the caller's: ``deploy(version)`` must make the endpoint serve the version and only then
   move the alias (:class:`AliasOnlyDeployer` does just the alias move, for stacks without an endpoint).

Steps hand over through MLflow only (version numbers), never through local files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from tickcast.registry.vocabulary import TEST_END, TEST_START
from tickcast.settings import Settings, get_settings

if TYPE_CHECKING:
    from tickcast.lake.store import Lake
    from tickcast.model.training import OracleFn, TrainingResult
    from tickcast.registry.mlflow_registry import Registry
    from tickcast.validation.gate import Verdict

log = logging.getLogger(__name__)


class Deployer(Protocol):
    def __call__(self, version: str) -> None: ...


class AliasOnlyDeployer:
    """Moves ``production`` (old one -> ``previous``) without touching an endpoint."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def __call__(self, version: str) -> None:
        self.registry.promote(version)

    def rollback(self) -> None:
        self.registry.rollback()


@dataclass
class CycleOutcome:
    status: str  # "skipped" | "kept" | "promoted"
    message: str
    version: str | None = None
    verdict: dict[str, Any] | None = None


@dataclass
class DataSummary:
    enough: bool
    message: str
    bars: dict[str, int]


def data_summary(settings: Settings, lake: Lake | None = None) -> DataSummary:
    """Is there enough in the lake to train? (A cheap count, before any heavy import.)"""
    bars = load_window(settings, lake)
    counts = {str(k): int(v) for k, v in bars.groupby("symbol").size().items()} if len(bars) else {}
    need = settings.model.min_train_windows / max(1.0, 1 - settings.model.val_fraction - settings.model.test_fraction)
    total = sum(counts.values())
    enough = total >= need
    missing = [s for s in settings.symbols if s not in counts]
    msg = (
        f"{total} bars in the last {settings.model.lookback_days} days ({counts or 'none'}); "
        f"about {need:.0f} needed" + (f"; no bars for {missing}" if missing else "")
    )
    return DataSummary(enough, ("enough data: " if enough else "not enough data, skipping: ") + msg, counts)


def load_window(settings: Settings, lake: Lake | None = None, end: datetime | None = None) -> pd.DataFrame:
    """Lake bars of every configured symbol for the lookback window ending at the newest bar (or ``end``)."""
    from tickcast.lake.store import Lake

    lake = lake or Lake.from_settings(settings)
    frames = []
    for sym in settings.symbols:
        last = end or lake.last_ts(sym)
        if last is None:
            log.warning("%s: no bars in the lake", sym)
            continue
        start = last - timedelta(days=settings.model.lookback_days)
        frames.append(lake.read(sym, start, last + timedelta(minutes=1)))
    if not frames:
        return pd.DataFrame(columns=["symbol", "ts", "open", "high", "low", "close", "volume"])
    return pd.concat(frames, ignore_index=True)


def train_and_register(
    settings: Settings | None = None,
    *,
    bars: pd.DataFrame | None = None,
    oracle: OracleFn | None = None,
    progress: bool = False,
    registry: Registry | None = None,
) -> tuple[TrainingResult, str]:
    """Train on the lake window and register the result; raises NotEnoughData when there is too little."""
    from tickcast.model.training import train
    from tickcast.registry.mlflow_registry import Registry

    s = settings or get_settings()
    registry = registry or Registry(s)
    registry.check_reachable()
    data = bars if bars is not None else load_window(s)
    result = train(
        data,
        s.model,
        symbols=[sym for sym in s.symbols if sym in set(data["symbol"])],
        oracle=oracle,
        progress=progress,
        level=s.interval_level,
    )
    logged = registry.log_training(result)
    registry.tag_version(
        logged.version,
        {TEST_START: result.test_window[0].isoformat(), TEST_END: result.test_window[1].isoformat()},
    )
    return result, logged.version


@dataclass
class Serving:
    """What :func:`ensure_serving` found or did."""

    version: str | None
    deployed: bool
    message: str


def ensure_serving(
    settings: Settings | None = None,
    *,
    deploy: Deployer,
    registry: Registry | None = None,
    bars: pd.DataFrame | None = None,
    lock_wait_s: float = 300.0,
) -> Serving:
    """A fresh stack serves the baseline before any training (decision 0053).

    When no version holds ``production``: build the baseline for the configured symbols, its interval
    calibrated on the lake window, register it (tag ``model_kind=baseline``) and deploy it like any version
    (blue/green, smoke, then the alias). With production already set, nothing changes. With no bars in the
    lake yet, nothing is deployed either (the deployment's smoke request needs bars) and the message says so.

    Two callers may race on a fresh stack (``tickcast run`` and the scheduled ``retrain`` run's first task).
    Only the holder of a lock in the lake container (:class:`tickcast.lake.lock.BlobLock`) registers and
    deploys; the other waits for it (up to ``lock_wait_s``), then finds ``production`` set and changes nothing.
    """
    from tickcast.azure import lake_container
    from tickcast.lake.lock import BlobLock
    from tickcast.registry.mlflow_registry import Registry
    from tickcast.registry.vocabulary import PRODUCTION

    s = settings or get_settings()
    registry = registry or Registry(s)
    # MLflow down must fail here in seconds: its client retries for minutes, and `version()` would then read
    # "no production" and try to deploy a baseline over whatever serves
    check = getattr(registry, "check_reachable", None)
    if check is not None:
        check()

    def serving_now() -> Serving | None:
        current = registry.version(PRODUCTION)
        if current is None:
            return None
        return Serving(
            str(current.version), False, f"production is v{current.version} ({registry.kind(str(current.version))})"
        )

    found = serving_now()
    if found is not None:
        return found
    lock = BlobLock(lake_container(s, create=True), f"serve-baseline-{s.mlflow.model_name}")
    if not lock.acquire(lock_wait_s):
        found = serving_now()
        if found is not None:
            return found
        raise RuntimeError(f"another process held the baseline-deployment lock for {lock_wait_s:.0f}s; try again")
    try:
        return serving_now() or _deploy_baseline(s, registry, deploy, bars)
    finally:
        lock.release()


def _deploy_baseline(s: Settings, registry: Registry, deploy: Deployer, bars: pd.DataFrame | None) -> Serving:
    from tickcast.model import baseline

    data = bars if bars is not None else load_window(s)
    if not len(data):
        return Serving(None, False, "no bars in the lake yet: the baseline is deployed once there are some")
    model, prep = baseline.build(s.symbols, bars=data, level=s.interval_level)
    logged = registry.log_baseline(model, prep, params=dict(baseline.params_of(prep)))
    deploy(logged.version)
    scales = ", ".join(f"{sym} {k:.2f}" for sym, k in prep.extra["interval_scale"].items())
    return Serving(
        logged.version,
        True,
        f"baseline v{logged.version} serves (no training; interval factor per symbol: {scales or 'none, no history'})",
    )


def scores_of(frame: pd.DataFrame, column: str, level: float = 0.8) -> Any:
    """Scores of one forecaster column of a frame with next_close and last_close (persistence: last_close).

    Where the frame also has ``{column}_lower`` and ``{column}_upper`` (its ``level`` interval), the scores
    include coverage, the interval score and the mean width (bp of the last close).
    """
    from tickcast.model.evaluation import diebold_mariano, forecast_metrics, interval_metrics
    from tickcast.validation.gate import Scores

    actual, last = frame["next_close"].to_numpy(), frame["last_close"].to_numpy()
    m: dict[str, Any] = dict(forecast_metrics(actual, frame[column].to_numpy(), last))
    if f"{column}_lower" in frame and f"{column}_upper" in frame:
        m.update(interval_metrics(actual, frame[f"{column}_lower"], frame[f"{column}_upper"], last, level))
    # the gate compares errors relative to the price (bp), so a high-priced symbol does not outweigh the others
    scores = Scores.from_dict({**m, "rmse": m["rmse_bp"]})
    if column != "persistence":
        _, p = diebold_mariano((frame[column].to_numpy() - actual) / last, (last - actual) / last)
        scores = Scores(**{**scores.__dict__, "pvalue_vs_persistence": p})
    return scores


def paired_tests(frame: pd.DataFrame, column: str, reference: str, level: float = 0.8) -> Any:
    """One-sided Diebold-Mariano p-values of ``column`` against ``reference``: point (bp) and interval score."""
    from tickcast.model.evaluation import diebold_mariano, diebold_mariano_losses, interval_losses_bp
    from tickcast.validation.gate import VsProduction

    actual, last = frame["next_close"].to_numpy(), frame["last_close"].to_numpy()
    err, ref = (frame[column].to_numpy() - actual) / last, (frame[reference].to_numpy() - actual) / last
    _, point = diebold_mariano(err, ref)
    interval: float | None = None
    if all(f"{c}_{b}" in frame for c in (column, reference) for b in ("lower", "upper")):

        def losses(name: str) -> np.ndarray:
            return interval_losses_bp(actual, frame[f"{name}_lower"], frame[f"{name}_upper"], last, level)

        _, interval = diebold_mariano_losses(losses(column), losses(reference))
    return VsProduction(point_pvalue=point, interval_pvalue=interval)


def _as(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """A predict_frame's forecast columns renamed for one forecaster (``name``, ``name_lower``, ``name_upper``)."""
    return frame.rename(columns={"predicted_close": name, "lower": f"{name}_lower", "upper": f"{name}_upper"})


def judge(
    settings: Settings | None = None,
    version: str | None = None,
    *,
    registry: Registry | None = None,
    lake: Lake | None = None,
) -> Verdict:
    """Score the challenger (``version``, default: alias challenger) against production and persistence.

    Production is "whatever serves": the baseline at least. Without a production version (or when it cannot
    be scored) the challenger is judged against a baseline calibrated on the lake's bars before the window,
    and the verdict says so.
    """
    from tickcast.lake.store import Lake
    from tickcast.model import baseline
    from tickcast.model.kinds import BASELINE
    from tickcast.model.predictor import Predictor
    from tickcast.registry.mlflow_registry import Registry, RegistryError
    from tickcast.registry.vocabulary import CHALLENGER, PRODUCTION

    s = settings or get_settings()
    level = s.interval_level
    registry = registry or Registry(s)
    lake = lake or Lake.from_settings(s)
    if version is None:
        mv = registry.version(CHALLENGER)
        if mv is None:
            raise RegistryError(f"{registry.name} has no 'challenger' version to judge")
        version = str(mv.version)
    tags = registry.version_tags(version)
    start = pd.Timestamp(tags[TEST_START])
    end = pd.Timestamp(tags[TEST_END])
    challenger = Predictor.from_dir(registry.download(version))
    symbols = list(challenger.preprocessing.symbols)
    history_start = start.normalize() - pd.Timedelta(days=s.model.lookback_days)  # the baseline's calibration
    bars = pd.concat(
        [
            lake.read(sym, history_start.to_pydatetime(), (end + pd.Timedelta(minutes=2)).to_pydatetime())
            for sym in symbols
        ],
        ignore_index=True,
    )
    window_bars = bars[bars["ts"] >= start.normalize()]  # whole sessions: indicators need their warm-up minutes
    frame = _as(challenger.predict_frame(window_bars, level=level), "challenger")
    frame = frame[(frame["ts"] >= start) & (frame["ts"] <= end) & frame["next_close"].notna()]

    production_version: str | None = None
    production_kind: str | None = None
    production_note: str | None = None
    scored: pd.DataFrame | None = None
    champ = registry.version(PRODUCTION)
    if champ is not None and str(champ.version) != version:
        production_version = str(champ.version)
        try:
            production = Predictor.from_dir(registry.download(production_version))
            production_kind = production.model_kind
            trained_to = champ.tags.get("train_end") or production.preprocessing.extra.get("train_end")
            cf = _as(production.predict_frame(window_bars, level=level), "production")
            merged = frame.merge(
                cf[["symbol", "ts", "production", "production_lower", "production_upper"]],
                on=["symbol", "ts"],
                how="inner",
            )
            if trained_to is not None:
                unseen_from = pd.Timestamp(trained_to) + pd.Timedelta(minutes=production.preprocessing.window)
                merged = merged[merged["ts"] > unseen_from]
            if len(merged) >= 50:
                scored = merged
            else:
                production_note = (
                    f"production v{production_version} has only {len(merged)} minutes it did not train on in this "
                    "window; judged against a fresh baseline instead"
                )
        except Exception as err:  # any failure to load or score the production is recorded, not fatal
            production_note = (
                f"production v{production_version} could not be scored ({type(err).__name__}: {err}); judged against "
                "a fresh baseline instead"
            )
    elif champ is None:
        production_note = "no production version yet; judged against a fresh baseline"
    if scored is None:
        model, prep = baseline.build(symbols, bars=bars[bars["ts"] < start], level=level)
        bf = _as(Predictor(model, prep).predict_frame(window_bars, level=level), "production")
        scored = frame.merge(
            bf[["symbol", "ts", "production", "production_lower", "production_upper"]], on=["symbol", "ts"], how="inner"
        )
        production_version, production_kind = None, BASELINE
    verdict = judge_frame(
        scored,
        s,
        production_note=production_note,
        challenger_version=version,
        production_version=production_version,
        challenger_kind=challenger.model_kind,
        production_kind=production_kind,
    )
    registry.record_verdict(version, verdict)
    return verdict


def judge_frame(
    frame: pd.DataFrame,
    settings: Settings,
    *,
    production_note: str | None = None,
    challenger_version: str | None = None,
    production_version: str | None = None,
    challenger_kind: str | None = None,
    production_kind: str | None = None,
) -> Verdict:
    """The gate on scored minutes: the one place the settings' thresholds (margin, alpha, interval level,
    coverage tolerance) reach :func:`tickcast.validation.gate.decide`, for :func:`judge` and the benchmarks.

    ``frame`` has ``ts``, ``next_close``, ``last_close`` and the ``challenger`` and ``production`` forecasts, each
    with its ``_lower`` / ``_upper`` interval; persistence (the last close) is added here.
    """
    from tickcast.validation.gate import decide

    level = settings.interval_level
    frame = frame.assign(persistence=frame["last_close"])
    return decide(
        scores_of(frame, "challenger", level),
        scores_of(frame, "persistence", level),
        margin=settings.mlflow.promotion_margin,
        alpha=settings.mlflow.promotion_alpha,
        level=level,
        coverage_tolerance=settings.mlflow.coverage_tolerance,
        production=scores_of(frame, "production", level) if len(frame) >= 2 else None,
        vs_production=paired_tests(frame, "challenger", "production", level) if len(frame) >= 2 else None,
        production_note=production_note,
        challenger_version=challenger_version,
        production_version=production_version,
        challenger_kind=challenger_kind,
        production_kind=production_kind,
        eval_window=(frame["ts"].min().isoformat(), frame["ts"].max().isoformat()) if len(frame) else None,
    )


def retrain_cycle(
    settings: Settings | None = None, *, deploy: Deployer | None = None, oracle: OracleFn | None = None
) -> CycleOutcome:
    """The whole cycle in one call (the DAG runs the same steps as separate tasks)."""
    from tickcast.model.training import NotEnoughData
    from tickcast.registry.mlflow_registry import Registry

    s = settings or get_settings()
    registry = Registry(s)
    ensure_serving(s, deploy=deploy or AliasOnlyDeployer(registry), registry=registry)
    try:
        _, version = train_and_register(s, oracle=oracle, registry=registry)
    except NotEnoughData as err:
        return CycleOutcome("skipped", f"not enough data: {err}")
    verdict = judge(s, version, registry=registry)
    if not verdict.promote:
        return CycleOutcome("kept", verdict.reason, version, verdict.as_dict())
    (deploy or AliasOnlyDeployer(registry))(version)
    return CycleOutcome("promoted", verdict.reason, version, verdict.as_dict())
