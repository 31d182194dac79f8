"""The significance rule of the gate and the Diebold-Mariano test behind it.

A challenger that beats persistence only by luck must not be promoted: the gate refuses it unless the
one-sided Diebold-Mariano p-value (model vs persistence, squared errors) is below ``alpha``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tickcast.model.evaluation import diebold_mariano
from tickcast.validation.gate import MIN_EVAL_POINTS, Scores, VsProduction, decide


def s(rmse: float, n: int = 500, p: float | None = None) -> Scores:
    """Scores with a calibrated 80 % interval (the interval rules are tested in test_promotion.py)."""
    return Scores(
        rmse=rmse, mae=rmse * 0.8, mape=0.01, directional_accuracy=0.55, n=n, pvalue_vs_persistence=p,
        coverage=0.8, interval_score=10.0 * rmse,
    )  # fmt: skip


SIGNIFICANT = VsProduction(point_pvalue=0.001, interval_pvalue=0.001)


# --- Diebold-Mariano --------------------------------------------------------------------------------------


def test_dm_matches_the_statistic_computed_by_hand() -> None:
    # d = ref^2 - model^2 = [1, 3]: mean 2, sd sqrt(2), n 2 -> stat = 2 / (sqrt(2)/sqrt(2)) = 2
    stat, p = diebold_mariano([0.0, 0.0], [1.0, math.sqrt(3.0)])
    assert stat == pytest.approx(2.0)
    assert p == pytest.approx(0.5 * math.erfc(2.0 / math.sqrt(2.0)))  # 1 - Phi(2) = 0.02275
    assert p == pytest.approx(0.0227501, abs=1e-6)


def test_dm_identical_forecasts_are_a_coin_toss() -> None:
    errors = np.random.default_rng(1).normal(size=300)
    stat, p = diebold_mariano(errors, errors)
    assert stat == 0.0 and p == 0.5


def test_dm_a_clearly_better_model_has_a_small_p_and_a_worse_one_a_large_p() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(size=2000)
    better = reference * 0.8 + rng.normal(scale=0.05, size=2000)
    _, p_better = diebold_mariano(better, reference)
    _, p_worse = diebold_mariano(reference, better)
    assert p_better < 1e-6
    assert p_worse > 1 - 1e-6


def test_dm_is_not_fooled_by_a_tiny_lucky_edge() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=400)
    lucky = reference + rng.normal(scale=0.3, size=400)  # noise on top: no real edge
    lucky[:5] = 0.0  # ... except a handful of perfect minutes
    _, p = diebold_mariano(lucky, reference)
    assert p > 0.05


def test_dm_constant_differential_gives_a_certain_answer() -> None:
    assert diebold_mariano([1.0, 1.0, 1.0], [2.0, 2.0, 2.0])[1] == 0.0  # always better
    assert diebold_mariano([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])[1] == 1.0  # always worse


@pytest.mark.parametrize(("a", "b"), [([1.0], [1.0]), ([1.0, 2.0], [1.0, 2.0, 3.0]), ([[1.0, 2.0]], [[1.0, 2.0]])])
def test_dm_refuses_inputs_it_cannot_test(a: list[float], b: list[float]) -> None:
    with pytest.raises(ValueError, match="same length"):
        diebold_mariano(a, b)


# --- the gate's significance branch -------------------------------------------------------------------------


def test_beating_persistence_without_significance_is_refused() -> None:
    v = decide(s(0.95, p=0.20), s(1.0), margin=0.01, alpha=0.05)
    assert not v.promote
    assert "not significantly" in v.reason and "p = 0.200" in v.reason


def test_beating_persistence_significantly_is_promoted_when_there_is_no_production_model() -> None:
    v = decide(s(0.95, p=0.01), s(1.0), margin=0.01, alpha=0.05)
    assert v.promote and "beats persistence by 5.00%" in v.reason


def test_a_p_value_equal_to_alpha_is_not_significant() -> None:
    assert not decide(s(0.95, p=0.05), s(1.0), margin=0.01, alpha=0.05).promote
    assert decide(s(0.95, p=0.0499), s(1.0), margin=0.01, alpha=0.05).promote


def test_alpha_is_the_configured_threshold() -> None:
    assert decide(s(0.95, p=0.08), s(1.0), margin=0.01, alpha=0.10).promote
    assert not decide(s(0.95, p=0.08), s(1.0), margin=0.01, alpha=0.05).promote


def test_significance_does_not_excuse_missing_the_margin_over_production() -> None:
    v = decide(s(0.945, p=0.001), s(1.0), margin=0.01, alpha=0.05, production=s(0.95), vs_production=SIGNIFICANT)
    assert not v.promote and "margin" in v.reason


def test_significant_and_beyond_the_margin_is_promoted_over_production() -> None:
    v = decide(s(0.90, p=0.001), s(1.0), margin=0.01, alpha=0.05, production=s(0.95), vs_production=SIGNIFICANT)
    assert v.promote


def test_too_few_evaluation_minutes_are_refused_whatever_the_scores() -> None:
    v = decide(s(0.5, n=MIN_EVAL_POINTS - 1, p=1e-9), s(1.0, n=MIN_EVAL_POINTS - 1), margin=0.01)
    assert not v.promote and f"need {MIN_EVAL_POINTS}" in v.reason
    assert decide(s(0.5, n=MIN_EVAL_POINTS, p=1e-9), s(1.0, n=MIN_EVAL_POINTS), margin=0.01).promote


def test_the_verdict_records_the_p_value_in_its_description() -> None:
    v = decide(s(0.95, p=0.20), s(1.0), margin=0.01, alpha=0.05, challenger_version="4")
    assert "0.2" in v.description()


def scored_minutes(challenger_half_width: float, n: int = 400) -> pd.DataFrame:
    """Minutes where the challenger is far better than persistence and the production (the last close with a
    realistic interval); the challenger's interval is as wide as asked (wide: it covers nearly every minute)."""
    rng = np.random.default_rng(1)
    last = 100 + np.cumsum(rng.normal(0, 0.05, n))
    actual = last * (1 + rng.normal(0, 0.001, n))
    challenger = actual + rng.normal(0, 0.01, n)
    return pd.DataFrame(
        {
            "symbol": "X",
            "ts": pd.date_range("2026-01-05 15:00", periods=n, freq="min", tz="UTC"),
            "last_close": last,
            "next_close": actual,
            "challenger": challenger,
            "challenger_lower": challenger - challenger_half_width,
            "challenger_upper": challenger + challenger_half_width,
            "production": last,
            "production_lower": last * (1 - 0.0013),
            "production_upper": last * (1 + 0.0013),
        }
    )


def test_judge_frame_applies_the_configured_thresholds_to_scored_minutes() -> None:
    """`judge_frame` is what the retrain gate and the markets benchmark share: the settings reach `decide`."""
    from tickcast.retrain import judge_frame
    from tickcast.settings import load_settings

    frame = scored_minutes(challenger_half_width=0.03)  # covers ~100 % of the minutes at a nominal 80 %
    strict = judge_frame(frame, load_settings(_env_file=None, mlflow={"coverage_tolerance": 0.03}))
    assert not strict.promote and "not calibrated" in strict.reason
    lenient = judge_frame(frame, load_settings(_env_file=None, mlflow={"coverage_tolerance": 0.5}))
    assert lenient.promote, lenient.reason
    unreachable = judge_frame(
        frame, load_settings(_env_file=None, mlflow={"coverage_tolerance": 0.5, "promotion_margin": 0.95})
    )
    assert not unreachable.promote and unreachable.margin == 0.95
    assert lenient.eval_window == (frame["ts"].min().isoformat(), frame["ts"].max().isoformat())
