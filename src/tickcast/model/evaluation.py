"""Forecast scores on prices, always beside persistence (pure NumPy; no TensorFlow here).

Every forecaster predicts the NEXT close given the LAST close. :func:`forecast_metrics` scores one
forecaster:

* ``rmse``, ``mae``: in price units; ``mape``: mean |actual - predicted| / |actual|, in percent.
* ``directional_accuracy`` (a fraction in [0, 1]): does the predicted move (predicted - last) have the
  sign of the actual move (actual - last)? Minutes where the actual close did not move are EXCLUDED
  (there is no direction to get right). A predicted move of exactly zero is "no call" and counts as
  half right, like a coin toss, so persistence scores exactly 0.5 and a model must beat 0.5 to show
  directional skill. ``direction_n`` is the number of minutes scored; when it is 0 the accuracy is NaN.
* ``n``: number of forecasts.

:func:`compare` scores the model, persistence (predicted = last close) and, when given, an oracle
(e.g. the synthetic market's best possible forecast) on the same minutes, and computes
``skill = 1 - RMSE_model / RMSE_persistence`` (> 0: better than persistence; the ratio itself is
Theil's U2) and ``oracle_skill``, the best skill achievable on this window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

METRICS = ("rmse", "mae", "mape", "directional_accuracy", "direction_n", "n")
FORECASTERS = ("model", "persistence", "oracle")


def _vectors(**arrays: ArrayLike) -> dict[str, np.ndarray]:
    out = {name: np.asarray(a, dtype=np.float64).reshape(-1) for name, a in arrays.items()}
    lengths = {name: len(a) for name, a in out.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays must have the same length, got {lengths}")
    if next(iter(lengths.values())) == 0:
        raise ValueError("no forecasts to score")
    for name, a in out.items():
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinity ({int((~np.isfinite(a)).sum())} values)")
    return out


def directional_accuracy(actual_move: np.ndarray, predicted_move: np.ndarray) -> tuple[float, int]:
    """(accuracy, minutes scored): actual zero moves excluded, predicted zero moves count 0.5."""
    scored = actual_move != 0
    n = int(scored.sum())
    if n == 0:
        return math.nan, 0
    a = np.sign(actual_move[scored])
    p = np.sign(predicted_move[scored])
    hits = np.where(p == 0, 0.5, (a == p).astype(np.float64))
    return float(hits.mean()), n


def forecast_metrics(actual_close: ArrayLike, predicted_close: ArrayLike, last_close: ArrayLike) -> dict[str, float]:
    """rmse ($), rmse_bp (bp of last close), mae, mape (%), directional_accuracy (fraction), direction_n, n."""
    v = _vectors(actual_close=actual_close, predicted_close=predicted_close, last_close=last_close)
    actual, predicted, last = v["actual_close"], v["predicted_close"], v["last_close"]
    if (actual == 0).any():
        raise ValueError("actual_close contains zeros; MAPE is undefined")
    err = predicted - actual
    accuracy, direction_n = directional_accuracy(actual - last, predicted - last)
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        # the same error in basis points of the last close: comparable across symbols of any price level
        "rmse_bp": float(1e4 * np.sqrt(np.mean((err / last) ** 2))),
        "mae": float(np.mean(np.abs(err))),
        "mape": float(100.0 * np.mean(np.abs(err) / np.abs(actual))),
        "directional_accuracy": accuracy,
        "direction_n": direction_n,
        "n": len(actual),
    }


def diebold_mariano(err_model: ArrayLike, err_reference: ArrayLike) -> tuple[float, float]:
    """One-sided Diebold-Mariano test that the model's squared errors are smaller than the reference's.

    Returns (statistic, p-value); a small p-value means the improvement is unlikely to be luck. Horizon 1,
    so the loss differential's variance needs no autocorrelation correction. Errors are taken relative to
    nothing: pass errors in the same unit (e.g. bp of the last close) for both forecasters.
    """
    a = np.asarray(err_model, dtype=np.float64)
    b = np.asarray(err_reference, dtype=np.float64)
    return diebold_mariano_losses(a**2, b**2)


def diebold_mariano_losses(loss_model: ArrayLike, loss_reference: ArrayLike) -> tuple[float, float]:
    """:func:`diebold_mariano` on any per-minute losses (e.g. interval scores): is the model's mean loss lower?"""
    a = np.asarray(loss_model, dtype=np.float64)
    b = np.asarray(loss_reference, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError("need two 1-d loss arrays of the same length (>= 2)")
    d = b - a  # > 0 where the model is better
    sd = float(np.std(d, ddof=1))
    if sd == 0.0:
        return 0.0, 0.5 if float(np.mean(d)) == 0.0 else (0.0 if float(np.mean(d)) > 0 else 1.0)
    stat = float(np.mean(d) / (sd / math.sqrt(len(d))))
    pvalue = 0.5 * math.erfc(stat / math.sqrt(2.0))  # P(Z > stat)
    return stat, pvalue


def interval_metrics(
    actual_close: ArrayLike, lower: ArrayLike, upper: ArrayLike, last_close: ArrayLike, level: float
) -> dict[str, float]:
    """coverage (fraction), interval_score_bp and width_bp (mean, in bp of the last close) of central intervals."""
    from tickcast.model.uncertainty import interval_scores

    v = _vectors(actual_close=actual_close, lower=lower, upper=upper, last_close=last_close)
    bp = 1e4 / v["last_close"]
    y, lo, hi = v["actual_close"] * bp, v["lower"] * bp, v["upper"] * bp
    return {
        "coverage": float(((y >= lo) & (y <= hi)).mean()),
        "interval_score_bp": float(interval_scores(y, lo, hi, level).mean()),
        "width_bp": float((hi - lo).mean()),
    }


def interval_losses_bp(
    actual_close: ArrayLike, lower: ArrayLike, upper: ArrayLike, last_close: ArrayLike, level: float
) -> np.ndarray:
    """Per-minute interval scores in bp of the last close (for :func:`diebold_mariano_losses`)."""
    from tickcast.model.uncertainty import interval_scores

    v = _vectors(actual_close=actual_close, lower=lower, upper=upper, last_close=last_close)
    bp = 1e4 / v["last_close"]
    return interval_scores(v["actual_close"] * bp, v["lower"] * bp, v["upper"] * bp, level)


def _skill(rmse: float, rmse_persistence: float) -> float:
    if rmse_persistence == 0:
        return 0.0 if rmse == 0 else -math.inf
    return 1.0 - rmse / rmse_persistence


@dataclass(frozen=True)
class Comparison:
    """Scores of the model, persistence and (optionally) the oracle on the same minutes."""

    metrics: dict[str, dict[str, float]]
    skill: float
    oracle_skill: float | None = None

    @property
    def forecasters(self) -> tuple[str, ...]:
        """Forecaster names in table order: model, persistence[, oracle]."""
        return tuple(self.metrics)

    def skill_of(self, forecaster: str) -> float:
        """1 - RMSE_forecaster / RMSE_persistence."""
        return _skill(self.metrics[forecaster]["rmse"], self.metrics["persistence"]["rmse"])

    def to_rows(self) -> list[dict[str, float | str]]:
        """One row per forecaster: forecaster, the metrics of :func:`forecast_metrics`, skill."""
        return [{"forecaster": name, **self.metrics[name], "skill": self.skill_of(name)} for name in self.forecasters]

    def flat_metrics(self) -> dict[str, float]:
        """``{forecaster}_{metric}`` for every forecaster, plus ``skill``, ``rmse_ratio``, ``oracle_skill``."""
        out: dict[str, float] = {}
        for name in self.forecasters:
            for key, value in self.metrics[name].items():
                out[f"{name}_{key}"] = float(value)
        out["skill"] = self.skill
        out["rmse_ratio"] = 1.0 - self.skill
        if self.oracle_skill is not None:
            out["oracle_skill"] = self.oracle_skill
        return out


def compare(
    actual: ArrayLike,
    last_close: ArrayLike,
    model_pred: ArrayLike,
    oracle_pred: ArrayLike | None = None,
) -> Comparison:
    """Score ``model_pred``, persistence (= ``last_close``) and ``oracle_pred`` against ``actual`` closes."""
    last = np.asarray(last_close, dtype=np.float64)
    metrics = {
        "model": forecast_metrics(actual, model_pred, last),
        "persistence": forecast_metrics(actual, last, last),
    }
    if oracle_pred is not None:
        metrics["oracle"] = forecast_metrics(actual, oracle_pred, last)
    base = metrics["persistence"]["rmse"]
    return Comparison(
        metrics=metrics,
        skill=_skill(metrics["model"]["rmse"], base),
        oracle_skill=_skill(metrics["oracle"]["rmse"], base) if "oracle" in metrics else None,
    )
