"""The live-evaluation job's I/O: read the prediction log and the bars, score, record, roll back when told to.

:func:`run_evaluation` (the ``evaluate`` DAG, every 5 minutes, and ``tickcast evaluate``):

1. reads the last ``evaluation.lookback_minutes`` of the prediction log and the lake's bars of every symbol,
   on the DATA clock: the window ends at the lake's newest bar (a replayed or emulated market keeps its own
   time; on a live market the two clocks agree within the ingest delay);
2. scores every model version found there (:mod:`tickcast.validation.live`, pure);
3. records each version's numbers in MLflow (``live_*`` metrics of its run, a new point each run, and the
   one-line ``live_evaluation`` version tag that ``tickcast status`` shows);
4. asks :func:`~tickcast.validation.live.rollback_reason` about ``production``. When it answers, production
   goes back to ``previous`` through the deployer (blue/green, smoke, then the aliases), and the reason is
   recorded on the rolled-back version (tag ``rollback_reason`` and its description). The baseline is the
   floor: a baseline in production is never rolled back (its point forecast IS persistence; a coverage
   alarm is recorded instead), and when ``previous`` is missing or was itself rolled back for cause, a fresh
   baseline is registered and deployed instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from tickcast.settings import Settings, get_settings
from tickcast.validation.live import LiveScores, evaluate, rollback_reason

if TYPE_CHECKING:
    from tickcast.lake.predictions import PredictionLog
    from tickcast.lake.store import Lake
    from tickcast.registry.mlflow_registry import Registry

log = logging.getLogger(__name__)


class Rollback(Protocol):
    """What rolls production back (``BlueGreenDeployer`` has both)."""

    def rollback(self) -> Any: ...

    def __call__(self, version: str) -> None: ...


@dataclass
class EvaluationReport:
    """What one evaluation found and did."""

    at: str
    production: str | None
    scores: list[LiveScores] = field(default_factory=list)
    action: str = "none"  # "none" | "rolled_back" | "baseline_deployed" | "alarm"
    reason: str | None = None

    def lines(self) -> list[str]:
        out = [f"live evaluation at {self.at}: production v{self.production or '-'}; action {self.action}"]
        if self.reason:
            out.append(f"  reason: {self.reason}")
        out.extend("  " + s.summary() for s in self.scores)
        return out


def read_inputs(
    settings: Settings, now: datetime, *, lake: Lake, predictions: PredictionLog
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(prediction-log rows, bars) of every configured symbol for the evaluation window ending ``now``."""
    start = now - timedelta(minutes=settings.evaluation.lookback_minutes)
    logs, bars = [], []
    for sym in settings.symbols:
        rows = predictions.read(sym, start, now + timedelta(minutes=1))
        if len(rows):
            logs.append(rows)
            bars.append(lake.read(sym, start, now + timedelta(minutes=2)))
    log_rows = pd.concat(logs, ignore_index=True) if logs else pd.DataFrame()
    bar_rows = pd.concat(bars, ignore_index=True) if bars else pd.DataFrame(columns=["symbol", "ts", "close"])
    return log_rows, bar_rows


def data_now(settings: Settings, lake: Lake) -> datetime | None:
    """The end of the lake's newest minute over the configured symbols (None when the lake is empty)."""
    marks = [t for t in (lake.last_ts(sym) for sym in settings.symbols) if t is not None]
    return max(marks) + timedelta(minutes=1) if marks else None


def run_evaluation(
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
    lake: Lake | None = None,
    predictions: PredictionLog | None = None,
    deployer: Rollback | None = None,
    now: datetime | None = None,
) -> EvaluationReport:
    """One evaluation (module docstring). ``deployer`` rolls back (the caller chooses it: the DAG and the CLI pass
    :func:`tickcast.release.targets.deployer_for`); without one a rollback is only reported. ``now`` (default: the
    data clock, :func:`data_now`) ends the window."""
    from tickcast.lake.predictions import PredictionLog
    from tickcast.lake.store import Lake
    from tickcast.model.kinds import BASELINE
    from tickcast.registry.mlflow_registry import Registry
    from tickcast.registry.vocabulary import PREVIOUS, PRODUCTION, ROLLBACK_REASON

    s = settings or get_settings()
    cfg = s.evaluation
    registry = registry or Registry(s)
    lake = lake or Lake.from_settings(s)
    predictions = predictions or PredictionLog.from_settings(s)
    when = now or data_now(s, lake) or datetime.now(UTC)
    log_rows, bars = read_inputs(s, when, lake=lake, predictions=predictions)
    results = evaluate(log_rows, bars, when)
    prod = registry.version(PRODUCTION)
    production = str(prod.version) if prod is not None else None
    report = EvaluationReport(when.isoformat(timespec="seconds"), production, results)
    for live in results:
        if live.model_version.isdigit():
            try:
                registry.log_live_evaluation(live.model_version, live.metrics(), live.summary()[:500])
            except Exception as err:  # a version MLflow does not know (another registry's log rows): skip it
                log.warning("live evaluation of v%s not recorded: %s", live.model_version, err)
    mine = next((r for r in results if r.model_version == production), None)
    if production is None or mine is None:
        return report
    reason = rollback_reason(
        mine, min_minutes=cfg.min_minutes, alpha=cfg.alpha, coverage_tolerance=cfg.coverage_tolerance
    )
    if reason is None:
        return report
    report.reason = reason
    if registry.kind(production) == BASELINE:
        report.action = "alarm"  # the floor: nothing to roll back to that is known to be better
        registry.log_live_evaluation(production, {}, f"ALARM (baseline kept): {reason}"[:500])
        return report
    if not cfg.rollback:
        report.action = "alarm"
        return report
    from tickcast.model import baseline
    from tickcast.retrain import load_window

    if deployer is None:
        report.action = "alarm"
        report.reason = f"{reason} (no deployer given: nothing was rolled back)"
        return report
    target = deployer
    prev = registry.version(PREVIOUS)
    if prev is not None and not registry.version_tags(str(prev.version)).get(ROLLBACK_REASON):
        target.rollback()
        report.action = "rolled_back"
    else:
        model, prep = baseline.build(s.symbols, bars=load_window(s, lake), level=s.interval_level)
        logged = registry.log_baseline(model, prep, params=dict(baseline.params_of(prep)))
        target(logged.version)
        report.action = "baseline_deployed"
    registry.record_rollback(production, reason)
    log.warning("production v%s rolled back (%s): %s", production, report.action, reason)
    return report
