"""Predictor: a handmade ONNX graph (no Keras, no training) + preprocessing.json, served through ONNX Runtime."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emulators.yahoo import sessions
from emulators.yahoo.synthetic import SyntheticMarket
from tests.support.models import GAIN, WINDOW, handmade_onnx
from tests.support.synthetic import session_bars
from tickcast.features.indicators import LOOKBACK, compute_features
from tickcast.features.windows import make_windows
from tickcast.model.predictor import MODEL_FILE, PREPROCESSING_FILE, NotEnoughBars, Predictor, UnknownSymbol
from tickcast.model.preprocessing import Preprocessing

SYMBOLS = ["SPY", "IBM"]
DAYS = [date(2024, 6, 3) + timedelta(days=i) for i in range(2)]
MARKET = SyntheticMarket(5, SYMBOLS, default_phi=0.3, null_fraction=0.0)


def lake_bars(symbol: str) -> pd.DataFrame:
    return session_bars(MARKET, symbol, DAYS)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return pd.concat([lake_bars(s) for s in SYMBOLS], ignore_index=True)


@pytest.fixture(scope="module")
def model_dir(bars: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    train = {s: make_windows(compute_features(bars[bars["symbol"] == s]), WINDOW).trainable() for s in SYMBOLS}
    prep = Preprocessing.fit(
        {s: w.x for s, w in train.items()},
        {s: w.target for s, w in train.items()},
        window=WINDOW,
        data_window=(bars["ts"].min(), bars["ts"].max()),
        extra={"train_end": bars["ts"].max().isoformat()},
    )
    folder = tmp_path_factory.mktemp("model")
    (folder / MODEL_FILE).write_bytes(handmade_onnx())
    (folder / PREPROCESSING_FILE).write_text(prep.to_json())
    return folder


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.from_dir(model_dir)


def test_from_dir_round_trips_the_preprocessing(predictor: Predictor, model_dir: Path) -> None:
    text = (model_dir / PREPROCESSING_FILE).read_text()
    assert predictor.preprocessing == Preprocessing.from_json(text)
    assert predictor.preprocessing.to_json() == text
    assert predictor.symbols == SYMBOLS and predictor.input_name == "windows"
    again = Predictor((model_dir / MODEL_FILE).read_bytes(), Preprocessing.from_json(text))
    assert again.input_name == predictor.input_name


def test_predict_latest_returns_a_finite_close_near_the_last_one(predictor: Predictor, bars: pd.DataFrame) -> None:
    spy = bars[bars["symbol"] == "SPY"]
    cutoff = pd.Timestamp(sessions.session_open(DAYS[1]), unit="s", tz="UTC") + pd.Timedelta(minutes=200)
    p = predictor.predict_latest(spy[spy["ts"] <= cutoff], "SPY")
    assert p.symbol == "SPY" and p.as_of == cutoff.to_pydatetime() and p.horizon_minutes == 1
    assert p.last_close == float(spy.loc[spy["ts"] == cutoff, "close"].iloc[0])
    assert np.isfinite(p.predicted_close) and abs(p.predicted_close / p.last_close - 1) < 0.01
    # exactly what the graph computes, mapped back through the target scaler
    prep = predictor.preprocessing
    x = prep.prepare_latest(spy[spy["ts"] <= cutoff], "SPY").x
    expected = prep.to_close(GAIN * float(x[0, -1, 0]), p.last_close, "SPY")
    assert p.predicted_close == pytest.approx(expected, rel=1e-12)
    assert p.as_dict()["as_of"] == cutoff.isoformat()


def test_predict_frame_scores_every_window_of_every_symbol(predictor: Predictor, bars: pd.DataFrame) -> None:
    frame = predictor.predict_frame(bars)
    assert list(frame.columns) == [
        "symbol", "ts", "last_close", "predicted_close", "next_close", "sigma", "lower", "upper"
    ]  # fmt: skip
    per_session = sessions.MINUTES_PER_SESSION - (LOOKBACK + WINDOW - 1) + 1
    assert frame.groupby("symbol").size().to_dict() == {s: per_session * len(DAYS) for s in SYMBOLS}
    assert np.isfinite(frame["predicted_close"]).all()
    last_minutes = frame.groupby(["symbol", frame["ts"].dt.date])["ts"].transform("max") == frame["ts"]
    assert frame.loc[last_minutes, "next_close"].isna().all() and frame.loc[~last_minutes, "next_close"].notna().all()
    row = frame[frame["symbol"] == "IBM"].iloc[-7]
    ibm = bars[bars["symbol"] == "IBM"]
    latest = predictor.predict_latest(ibm[ibm["ts"] <= row["ts"]], "IBM")
    assert latest.predicted_close == pytest.approx(row["predicted_close"], rel=1e-12)
    assert row["next_close"] == ibm.loc[ibm["ts"] == row["ts"] + pd.Timedelta(minutes=1), "close"].iloc[0]


def test_a_location_only_model_gets_the_training_returns_spread_as_its_interval(
    predictor: Predictor, bars: pd.DataFrame
) -> None:
    # the handmade graph outputs [batch, 1] like every model exported before models had a scale
    spy = bars[bars["symbol"] == "SPY"]
    p = predictor.predict_latest(spy, "SPY", level=0.8)
    assert p.model_kind == "lstm-attention" and p.level == 0.8
    assert p.sigma == pytest.approx(predictor.preprocessing.y_scalers["SPY"].std, rel=1e-12)
    mu = np.log(p.predicted_close / p.last_close)
    assert p.lower == pytest.approx(p.last_close * np.exp(mu - 1.2815515655446004 * p.sigma), rel=1e-12)
    assert p.upper == pytest.approx(p.last_close * np.exp(mu + 1.2815515655446004 * p.sigma), rel=1e-12)
    assert p.lower < p.predicted_close < p.upper
    wider = predictor.predict_latest(spy, "SPY", level=0.95)
    assert wider.lower < p.lower and wider.upper > p.upper
    assert p.as_dict()["interval"] == {"level": 0.8, "lower": p.lower, "upper": p.upper}
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        predictor.predict_latest(spy, "SPY", level=80)


def test_too_few_bars_raise_not_enough_bars_with_the_numbers(predictor: Predictor, bars: pd.DataFrame) -> None:
    needed = LOOKBACK + WINDOW - 1
    spy = bars[bars["symbol"] == "SPY"].iloc[: needed - 1]
    with pytest.raises(NotEnoughBars, match=f"needs {needed} consecutive") as err:
        predictor.predict_latest(spy, "SPY")
    assert (err.value.needed, err.value.given) == (needed, needed - 1)
    assert f"got {needed - 1}" in str(err.value)
    assert len(predictor.predict_frame(spy)) == 0


def test_unknown_symbol_names_the_known_ones(predictor: Predictor, bars: pd.DataFrame) -> None:
    aig = bars[bars["symbol"] == "SPY"].assign(symbol="AIG")
    with pytest.raises(UnknownSymbol, match="SPY, IBM") as err:
        predictor.predict_latest(aig, "AIG")
    assert err.value.known == SYMBOLS and "'AIG'" in str(err.value)
    with pytest.raises(UnknownSymbol):
        predictor.predict_frame(pd.concat([bars, aig]))


def test_a_model_whose_input_does_not_match_the_preprocessing_is_refused(predictor: Predictor) -> None:
    with pytest.raises(ValueError, match="input 'windows' has shape"):
        Predictor(handmade_onnx(window=WINDOW + 1), predictor.preprocessing)


def test_serving_imports_no_tensorflow() -> None:
    code = (
        "import sys; import tickcast.model.predictor, tickcast.model.preprocessing, tickcast.features.indicators, "
        "tickcast.features.windows, tickcast.features.scaling; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')); "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
