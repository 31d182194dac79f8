"""Training on the synthetic market: it learns what is learnable, refuses what is not, and does not leak.

The synthetic market's 1-minute log returns follow an AR(1): with phi = 0.4 the oracle (the generating
process's own conditional mean) beats persistence by about 8 % RMSE; with phi = 0 the prices are a random
walk and nothing beats persistence except by luck.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from emulators.yahoo.frames import lake_frame, oracle_function
from emulators.yahoo.synthetic import SyntheticMarket
from tickcast.model import baseline
from tickcast.model.predictor import Predictor
from tickcast.model.training import NotEnoughData, TrainingResult, assign_splits, train
from tickcast.retrain import paired_tests, scores_of
from tickcast.settings import load_settings
from tickcast.validation.gate import decide

# every test here imports TensorFlow (train() loads the model code before it checks the data)
pytestmark = pytest.mark.slow

SYMBOLS = ["SYA", "SYB", "SYC", "SYD", "SYE"]
END = time.time()


def trained(phi: float) -> tuple[TrainingResult, pd.DataFrame]:
    market = SyntheticMarket(5, SYMBOLS, {}, phi, null_fraction=0.0)
    bars = lake_frame(market, SYMBOLS, 5, END)
    cfg = load_settings(_env_file=None).model
    return train(bars, cfg, oracle=oracle_function(market)), bars


@pytest.fixture(scope="module")
def ar1() -> tuple[TrainingResult, pd.DataFrame]:
    return trained(0.4)


@pytest.fixture(scope="module")
def random_walk() -> tuple[TrainingResult, pd.DataFrame]:
    return trained(0.0)


def verdict_for(result: TrainingResult, bars: pd.DataFrame) -> Any:
    """The gate on the held-out window against persistence and the baseline (as a fresh stack's production)."""
    test = result.test_frame
    model, prep = baseline.build(SYMBOLS, bars=bars[bars["ts"] < test["ts"].min()])
    base = Predictor(model, prep).predict_frame(bars)[["symbol", "ts", "predicted_close", "lower", "upper"]]
    frame = test.rename(
        columns={"predicted_close": "challenger", "lower": "challenger_lower", "upper": "challenger_upper"}
    )
    frame = frame.merge(
        base.rename(
            columns={"predicted_close": "production", "lower": "production_lower", "upper": "production_upper"}
        ),
        on=["symbol", "ts"],
    ).assign(persistence=lambda f: f["last_close"])
    return decide(
        scores_of(frame, "challenger"),
        scores_of(frame, "persistence"),
        margin=0.01,
        production=scores_of(frame, "production"),
        vs_production=paired_tests(frame, "challenger", "production"),
        production_kind="baseline",
    )


def test_the_model_captures_most_of_the_oracles_skill(ar1: tuple[TrainingResult, pd.DataFrame]) -> None:
    m = ar1[0].metrics
    assert m["oracle_skill"] >= 0.05, "the synthetic market must have a clearly learnable part"
    assert m["skill"] >= 0.8 * m["oracle_skill"], f"model skill {m['skill']:.4f} vs oracle {m['oracle_skill']:.4f}"
    assert m["model_directional_accuracy"] > 0.55
    verdict = verdict_for(*ar1)
    assert verdict.promote, verdict.reason
    # its intervals are calibrated on unseen minutes (the market's noise is Gaussian with a known scale)
    print(
        f"\nsynthetic AR(1): skill {m['skill']:.4f} vs oracle {m['oracle_skill']:.4f}; 80 % coverage "
        f"{m['model_coverage']:.3f} (baseline {m['baseline_coverage']:.3f}); interval score "
        f"{m['model_interval_score_bp']:.3f} bp vs baseline {m['baseline_interval_score_bp']:.3f} bp"
    )
    assert 0.77 <= m["model_coverage"] <= 0.83
    assert m["model_interval_score_bp"] < m["baseline_interval_score_bp"]


def test_on_a_random_walk_the_gate_refuses(random_walk: tuple[TrainingResult, pd.DataFrame]) -> None:
    result = random_walk[0]
    assert abs(result.metrics["oracle_skill"]) < 0.01, "phi = 0: the oracle itself is persistence"
    verdict = verdict_for(result, random_walk[1])
    assert not verdict.promote, verdict.reason


def test_onnx_matches_keras_and_everything_needed_to_serve_is_there(ar1: tuple[TrainingResult, pd.DataFrame]) -> None:
    result = ar1[0]
    assert result.metrics["onnx_max_abs_diff"] <= 1e-4
    prep = result.preprocessing
    assert sorted(prep.symbols) == SYMBOLS and prep.window == 30
    assert set(prep.x_scalers) == set(SYMBOLS)
    assert result.figures.keys() == {"training_curve", "predicted_vs_actual"}
    assert len(result.history["loss"]) == result.metrics["epochs_run"]


def test_split_is_temporal_with_an_embargo_and_scalers_see_only_train(ar1: tuple[TrainingResult, pd.DataFrame]) -> None:
    result, bars = ar1
    train_end = pd.Timestamp(result.params["split_train_end"])
    val_end = pd.Timestamp(result.params["split_val_end"])
    assert train_end < val_end < result.test_window[0]
    assert result.test_frame["ts"].min() > val_end + pd.Timedelta(minutes=30), "one window of embargo before test"
    ts = np.array(
        ["2026-01-05T14:59", "2026-01-05T15:00", "2026-01-05T15:20", "2026-01-05T15:31"], dtype="datetime64[ns]"
    )
    split = assign_splits(ts, np.datetime64("2026-01-05T15:00"), np.datetime64("2026-01-05T15:31"), window=30)
    assert split.tolist() == [0, 0, -1, 1]
    # the scaler of a symbol equals one fit on that symbol's training windows only
    from tickcast.features.indicators import compute_features
    from tickcast.features.windows import make_windows

    sym = SYMBOLS[0]
    w = make_windows(compute_features(bars[bars["symbol"] == sym]), 30).trainable()
    ts_w = pd.to_datetime(w.ts, utc=True)
    x_train = w.x[np.asarray(ts_w <= train_end)]
    mean = x_train.astype(np.float64).reshape(-1, x_train.shape[2]).mean(axis=0)
    assert np.allclose(result.preprocessing.x_scalers[sym].mean, mean, rtol=1e-6, atol=1e-12)


def test_too_little_data_says_how_much_is_needed() -> None:
    market = SyntheticMarket(5, ["TINY"], {}, 0.4, null_fraction=0.0)
    bars = lake_frame(market, ["TINY"], 1, END).head(150)
    with pytest.raises(NotEnoughData, match="need at least"):
        train(bars, load_settings(_env_file=None).model)


def test_no_complete_window_is_not_enough_data() -> None:
    market = SyntheticMarket(5, ["TINY"], {}, 0.4, null_fraction=0.0)
    bars = lake_frame(market, ["TINY"], 1, END).head(40)
    with pytest.raises(NotEnoughData, match="no symbol has a complete"):
        train(bars, load_settings(_env_file=None).model)
