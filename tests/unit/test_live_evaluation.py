"""Live evaluation: served forecasts joined with realized closes, per version, and the rollback rule."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from tickcast.model.uncertainty import z_of
from tickcast.validation.live import evaluate, joined, rollback_reason

START = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
NOW = START + timedelta(days=1)


def market(n: int = 200, seed: int = 3, vol: float = 5e-4) -> pd.DataFrame:
    """``n`` consecutive 1-minute closes of one symbol (a seeded random walk)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    return pd.DataFrame({"symbol": "SPY", "ts": [START + timedelta(minutes=i) for i in range(n)], "close": close})


def forecasts(bars: pd.DataFrame, version: str, *, shift: float = 0.0, sigma: float = 5e-4, level: float = 0.8):
    """One served forecast per minute: persistence (+ a bias of ``shift``) with a lognormal interval."""
    z = z_of(level)
    last = bars["close"].to_numpy()
    point = last * math.exp(shift)
    return pd.DataFrame(
        {
            "symbol": "SPY",
            "as_of": bars["ts"],
            "served_at": bars["ts"] + pd.Timedelta(seconds=5),
            "model_version": version,
            "model_kind": "baseline" if version == "1" else "lstm-attention",
            "predicted_close": point,
            "lower": point * math.exp(-z * sigma),
            "upper": point * math.exp(z * sigma),
            "level": level,
            "route": "GET",
        }
    )


def test_a_persistence_forecast_scores_skill_zero_and_a_calibrated_coverage() -> None:
    bars = market(400)
    (live,) = evaluate(forecasts(bars, "1"), bars, NOW)
    assert live.model_version == "1" and live.model_kind == "baseline"
    assert live.forecasts == 400 and live.n == 399 and live.missing == 1 and live.pending == 0
    assert live.skill == 0.0 and live.rmse_bp == pytest.approx(live.persistence_rmse_bp)
    assert 0.74 <= live.coverage <= 0.86 and live.interval_score_bp > 0
    assert "v1 (baseline): n 399" in live.summary()
    assert rollback_reason(live, min_minutes=60, alpha=0.01, coverage_tolerance=0.10) is None


def test_duplicates_count_once_and_each_version_is_scored_on_its_own_forecasts() -> None:
    bars = market(150)
    one, two = forecasts(bars.iloc[:75], "1"), forecasts(bars.iloc[75:], "2")
    log = pd.concat([one, one, two, two.iloc[:10]], ignore_index=True)  # every GET of a minute is logged
    by_version = {s.model_version: s for s in evaluate(log, bars, NOW)}
    assert [s.model_version for s in evaluate(log, bars, NOW)] == ["2", "1"]  # newest first
    assert by_version["1"].forecasts == 75 and by_version["1"].n == 75  # minute 75's bar exists
    assert by_version["2"].forecasts == 75 and by_version["2"].n == 74


def test_missing_bars_are_counted_never_invented_and_recent_ones_are_pending() -> None:
    bars = market(120)
    log = forecasts(bars, "3")
    halted = bars[(bars["ts"] < START + timedelta(minutes=50)) | (bars["ts"] >= START + timedelta(minutes=60))]
    now = START + timedelta(minutes=121, seconds=30)  # the newest forecast's target minute is not settled yet
    (live,) = evaluate(log, halted, now, grace_minutes=3)
    rows = joined(log, halted, now, grace_minutes=3)
    # as-of minutes 49..59 lack the realized close or their own last close: 11 missing; the last is pending
    assert live.missing == 11 and live.pending == 1 and live.n == 120 - 11 - 1
    assert (rows.loc[rows["state"] == "scored", "actual"].notna()).all()
    # a late bar is used by the next evaluation
    (again,) = evaluate(log, bars, now + timedelta(minutes=10), grace_minutes=3)
    assert again.missing == 1 and again.n == 119


def test_a_model_significantly_worse_than_persistence_is_rolled_back_after_enough_minutes() -> None:
    bars = market(300)
    bad = forecasts(bars, "4", shift=8e-4)  # a constant 8 bp bias: clearly worse than persistence
    (live,) = evaluate(bad, bars, NOW)
    assert live.skill < 0 and live.dm_p_worse < 0.01
    reason = rollback_reason(live, min_minutes=60, alpha=0.01, coverage_tolerance=0.10)
    assert reason is not None and "significantly worse than persistence" in reason and "v4" in reason
    (early,) = evaluate(bad.iloc[:40], bars, NOW)
    assert rollback_reason(early, min_minutes=60, alpha=0.01, coverage_tolerance=0.10) is None  # too few minutes


def test_coverage_more_than_10_points_off_rolls_back_both_ways() -> None:
    bars = market(300)
    for sigma, word in ((1.5e-4, "covered"), (3e-3, "covered")):
        (live,) = evaluate(forecasts(bars, "5", sigma=sigma), bars, NOW)
        reason = rollback_reason(live, min_minutes=60, alpha=0.01, coverage_tolerance=0.10)
        assert reason is not None and word in reason and "more than 10 points" in reason
    (fine,) = evaluate(forecasts(bars, "5", sigma=5e-4), bars, NOW)
    assert rollback_reason(fine, min_minutes=60, alpha=0.01, coverage_tolerance=0.10) is None


def test_an_empty_log_evaluates_nothing_and_an_unscored_version_says_so() -> None:
    assert evaluate(pd.DataFrame(), market(10), NOW) == []
    bars = market(10)
    (live,) = evaluate(forecasts(bars, "6"), bars.iloc[:0], NOW)
    assert live.n == 0 and live.missing == 10 and math.isnan(live.rmse_bp)
    assert "none evaluated yet" in live.summary() and live.metrics()["missing"] == 10.0
    assert "rmse_bp" not in live.metrics()
