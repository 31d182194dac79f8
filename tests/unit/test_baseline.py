"""The baseline forecaster: persistence + a realized-volatility interval, served through the same Predictor."""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from emulators.yahoo import sessions
from emulators.yahoo.synthetic import SyntheticMarket
from tests.support.synthetic import session_bars
from tickcast.features.indicators import compute_features
from tickcast.model import baseline
from tickcast.model.predictor import MODEL_FILE, PREPROCESSING_FILE, Predictor
from tickcast.model.preprocessing import Preprocessing
from tickcast.model.uncertainty import coverage, z_of

SYMBOLS = ["SPY", "IBM"]
DAYS = [date(2024, 6, 3) + timedelta(days=i) for i in range(4)]
MARKET = SyntheticMarket(11, SYMBOLS, default_phi=0.0, null_fraction=0.0)


def lake_bars(symbol: str) -> pd.DataFrame:
    return session_bars(MARKET, symbol, DAYS)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return pd.concat([lake_bars(s) for s in SYMBOLS], ignore_index=True)


def test_the_point_forecast_is_the_last_close_and_the_scale_is_the_rms_of_the_last_30_returns(
    bars: pd.DataFrame,
) -> None:
    model, prep = baseline.build(SYMBOLS)
    p = Predictor(model, prep)
    spy = bars[bars["symbol"] == "SPY"].iloc[:300]
    got = p.predict_latest(spy, "SPY", level=0.8)
    assert got.model_kind == "baseline" and got.predicted_close == got.last_close == spy["close"].iloc[-1]
    returns = np.log(spy["close"].to_numpy()[1:] / spy["close"].to_numpy()[:-1])[-baseline.WINDOW :]
    rms = math.sqrt(float(np.mean(returns**2)) + baseline.SIGMA_FLOOR**2)
    assert got.sigma == pytest.approx(rms, rel=1e-5)  # float32 graph
    assert got.lower == pytest.approx(got.last_close * math.exp(-z_of(0.8) * rms), rel=1e-6)
    assert got.upper == pytest.approx(got.last_close * math.exp(z_of(0.8) * rms), rel=1e-6)


def test_the_window_is_one_session_only(bars: pd.DataFrame) -> None:
    model, prep = baseline.build(SYMBOLS)
    frame = Predictor(model, prep).predict_frame(bars[bars["symbol"] == "IBM"])
    first_of_day = frame.groupby(frame["ts"].dt.date)["ts"].min()
    feats = compute_features(bars[bars["symbol"] == "IBM"])
    # the first forecast of each session comes after the same warm-up as the LSTM's: no window spans a night
    for day, ts in first_of_day.items():
        assert ts == feats[feats.index.date == day].index[baseline.WINDOW - 1]


def test_a_flat_market_still_gets_an_interval_of_nonzero_width(bars: pd.DataFrame) -> None:
    model, prep = baseline.build(SYMBOLS)
    flat = bars[bars["symbol"] == "SPY"].iloc[:200].assign(open=50.0, high=50.0, low=50.0, close=50.0)
    got = Predictor(model, prep).predict_latest(flat, "SPY")
    assert got.predicted_close == 50.0 and got.lower < 50.0 < got.upper
    assert got.sigma == pytest.approx(baseline.SIGMA_FLOOR, rel=1e-4)


def test_history_calibrates_the_interval_to_cover_its_level(bars: pd.DataFrame) -> None:
    cut = pd.Timestamp(sessions.session_open(DAYS[2]), unit="s", tz="UTC")
    model, prep = baseline.build(SYMBOLS, bars=bars[bars["ts"] < cut], level=0.8)
    scales = prep.extra["interval_scale"]
    assert set(scales) == set(SYMBOLS) and all(0.7 < k < 1.3 for k in scales.values())  # Gaussian noise: k ~ 1
    frame = Predictor(model, prep).predict_frame(bars[bars["ts"] >= cut], level=0.8).dropna()
    assert len(frame) > 1000
    assert 0.77 <= coverage(frame["next_close"], frame["lower"], frame["upper"]) <= 0.83
    # a symbol without history keeps k = 1 and says so
    _, lone = baseline.build(["SPY", "AIG"], bars=bars[bars["ts"] < cut])
    assert lone.interval_scale("AIG") == 1.0
    assert lone.extra["calibration"]["minutes"]["AIG"] == 0


def test_the_artifact_is_a_plain_model_folder_with_metadata(tmp_path: Path) -> None:
    model, prep = baseline.build(SYMBOLS)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / MODEL_FILE).write_bytes(model)
    (folder / PREPROCESSING_FILE).write_text(prep.to_json())
    again = Predictor.from_dir(folder)
    assert again.model_kind == "baseline" and Preprocessing.from_json(prep.to_json()) == prep
    proto = onnx.load_from_string(model)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["tickcast.model_kind"] == "baseline" and [o.name for o in proto.graph.output] == ["forecast_z"]
    with pytest.raises(ValueError, match="at least one symbol"):
        baseline.build([])


def test_a_preprocessing_with_an_unknown_kind_or_a_bad_scale_is_refused() -> None:
    _, prep = baseline.build(SYMBOLS)
    data = prep.to_dict()
    with pytest.raises(ValueError, match="model_kind"):
        Preprocessing.from_dict({**data, "extra": {**data["extra"], "model_kind": "gbm"}})
    with pytest.raises(ValueError, match="interval_scale"):
        Preprocessing.from_dict({**data, "extra": {**data["extra"], "interval_scale": {"SPY": 0.0}}})
    with pytest.raises(ValueError, match="interval_scale"):
        Preprocessing.from_dict({**data, "extra": {**data["extra"], "interval_scale": {"TSLA": 1.0}}})
