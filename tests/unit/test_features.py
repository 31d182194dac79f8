"""Features, windows, scalers and preprocessing.json: causality, sessions, gaps, duplicates, parity.

All bars come from the synthetic market (emulators.yahoo.synthetic), never from the real tape.
"""

from __future__ import annotations

import json
import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from emulators.yahoo import sessions
from emulators.yahoo.synthetic import SyntheticMarket
from tests.support.synthetic import session_bars
from tickcast.features.indicators import (
    FEATURES,
    LOOKBACK,
    SESSION_COLUMN,
    bar_arrays,
    bars_needed,
    compute_features,
)
from tickcast.features.scaling import Standardizer, TargetScaler
from tickcast.features.windows import NotEnoughBars, latest_window, make_windows
from tickcast.model.preprocessing import Preprocessing
from tickcast.settings import ModelSettings

WINDOW = ModelSettings().window
SYMBOLS = ["SPY", "IBM"]
DAYS = [date(2024, 3, 4) + timedelta(days=i) for i in range(3)]  # Monday to Wednesday
MARKET = SyntheticMarket(11, SYMBOLS, phi={"SPY": 0.3}, default_phi=0.2, null_fraction=0.0)
MIN = pd.Timedelta(minutes=1)


def lake_bars(symbol: str = "SPY", days: list[date] = DAYS, market: SyntheticMarket = MARKET) -> pd.DataFrame:
    """Lake-schema bars of ``symbol`` for whole sessions ``days``."""
    return session_bars(market, symbol, days).assign(
        source="synthetic", ingested_at=pd.Timestamp("2024-03-07", tz="UTC")
    )


def fitted(bars: pd.DataFrame, symbol: str = "SPY") -> Preprocessing:
    w = make_windows(compute_features(bars), WINDOW).trainable()
    return Preprocessing.fit(
        {symbol: w.x}, {symbol: w.target}, window=WINDOW, data_window=(bars["ts"].min(), bars["ts"].max())
    )


def perturb_after(bars: pd.DataFrame, t: pd.Timestamp, seed: int) -> pd.DataFrame:
    """Every bar after ``t`` changed (prices scaled, volumes shuffled); bars ≤ t untouched."""
    out = bars.copy()
    later = out["ts"] > t
    rng = np.random.default_rng(seed)
    factor = np.exp(rng.normal(0, 0.01, later.sum()))
    for col in ("open", "high", "low", "close"):
        out.loc[later, col] = out.loc[later, col] * factor
    out.loc[later, "volume"] = rng.permutation(out.loc[later, "volume"].to_numpy()) + 1
    return out


# --- shape, warm-up, formulas -----------------------------------------------------------------------


def test_features_are_finite_and_warm_up_rows_are_dropped() -> None:
    bars = lake_bars()
    feats = compute_features(bars)
    assert list(feats.columns) == [*FEATURES, "close", SESSION_COLUMN]
    assert feats.index.name == "ts" and str(feats.index.tz) == "UTC"
    assert np.isfinite(feats[list(FEATURES)].to_numpy()).all()
    assert not (feats[list(FEATURES)] == 0).all(axis=1).any()  # nothing zero-filled
    for day in DAYS:
        rows = feats[feats[SESSION_COLUMN] == int(day.strftime("%Y%m%d"))]
        opened = pd.Timestamp(sessions.session_open(day), unit="s", tz="UTC")
        assert rows.index[0] == opened + (LOOKBACK - 1) * MIN  # cold start every session
        assert len(rows) == sessions.MINUTES_PER_SESSION - LOOKBACK + 1
    assert bars_needed(WINDOW) == LOOKBACK + WINDOW - 1


def test_feature_values_follow_the_documented_formulas() -> None:
    bars = lake_bars().set_index("ts")
    feats = compute_features(bars.reset_index())
    t = feats.index[200]
    hist = bars.loc[:t].iloc[-LOOKBACK:]
    c, h, low, v = (hist[k].to_numpy() for k in ("close", "high", "low", "volume"))
    row = feats.loc[t]
    assert row["close"] == c[-1]
    assert row["ret_1"] == pytest.approx(math.log(c[-1] / c[-2]), rel=1e-9)
    assert row["ret_5"] == pytest.approx(math.log(c[-1] / c[-6]), rel=1e-9)
    assert row["sma_ratio"] == pytest.approx(c[-1] / c[-20:].mean() - 1, rel=1e-7)
    moves = np.diff(c[-15:])
    gain, loss = np.clip(moves, 0, None).mean(), np.clip(-moves, 0, None).mean()
    assert row["rsi"] == pytest.approx(2 * (100 - 100 / (1 + gain / loss)) / 100 - 1, rel=1e-9)
    assert row["bb_pctb"] == pytest.approx((c[-1] - (c[-20:].mean() - 2 * c[-20:].std())) / (4 * c[-20:].std()))
    tr = np.maximum(h[-14:] - low[-14:], np.maximum(abs(h[-14:] - c[-15:-1]), abs(low[-14:] - c[-15:-1])))
    assert row["atr"] == pytest.approx(tr.mean() / c[-1], rel=1e-9)
    lv = np.log1p(v[-20:])
    assert row["volume_z"] == pytest.approx((lv[-1] - lv.mean()) / lv.std(), rel=1e-9)
    assert row["hl_range"] == pytest.approx((h[-1] - low[-1]) / c[-1], rel=1e-12)
    alpha = 2 / 13
    weights = (1 - alpha) ** np.arange(17, -1, -1)
    assert row["ema_ratio"] == pytest.approx(c[-1] / (c[-18:] @ weights / weights.sum()) - 1, rel=1e-7)
    assert feats["rsi"].min() >= -1 and feats["rsi"].max() <= 1


# --- causality ----------------------------------------------------------------------------------------


def test_changing_bars_after_t_changes_neither_features_nor_the_scaled_window_at_t() -> None:
    bars = lake_bars()
    prep = fitted(bars)
    feats = compute_features(bars)
    base = prep.prepare(bars, "SPY")
    rng = np.random.default_rng(3)
    for k, i in enumerate(sorted(rng.choice(len(base.ts), size=6, replace=False))):
        t = pd.Timestamp(base.ts[i], tz="UTC")
        changed = perturb_after(bars, t, seed=k)
        feats2 = compute_features(changed)
        pd.testing.assert_frame_equal(feats2.loc[:t], feats.loc[:t], check_exact=True)
        assert not feats2.loc[t + MIN :].equals(feats.loc[t + MIN :]) or t == feats.index[-1]
        again = prep.prepare(changed, "SPY")
        j = int(np.flatnonzero(again.ts == base.ts[i])[0])
        np.testing.assert_array_equal(again.x[j], base.x[i])
        assert again.last_close[j] == base.last_close[i]


def test_sessions_start_cold_and_no_window_spans_two_sessions() -> None:
    bars = lake_bars()
    feats = compute_features(bars)
    w = make_windows(feats, WINDOW)
    first = w.ts - np.timedelta64(WINDOW - 1, "m")
    assert (first.astype("datetime64[D]") == w.ts.astype("datetime64[D]")).all()
    assert (np.isnan(w.target) == np.isnan(w.next_close)).all()
    # the last minute of each session has no next bar in the session: NaN target, not the next morning's open
    last_of_day = pd.Series(w.ts).groupby(w.session).transform("max").to_numpy() == w.ts
    assert np.isnan(w.target[last_of_day]).all() and np.isfinite(w.target[~last_of_day]).all()
    # nothing carries across the night: rewriting day 1 leaves days 2 and 3 bit-identical
    day2 = pd.Timestamp(sessions.session_open(DAYS[1]), unit="s", tz="UTC")
    changed = bars.copy()
    first_day = changed["ts"] < day2
    changed.loc[first_day, ["open", "high", "low", "close"]] *= 1.7
    changed.loc[first_day, "volume"] *= 9
    pd.testing.assert_frame_equal(compute_features(changed).loc[day2:], feats.loc[day2:], check_exact=True)


def test_target_is_the_next_minute_log_return_of_the_synthetic_tape() -> None:
    bars = lake_bars()
    w = make_windows(compute_features(bars), WINDOW)
    start, end = sessions.session_open(DAYS[0]), sessions.session_close(DAYS[-1])
    oracle = MARKET.oracle_frame("SPY", start, end).set_index("ts")
    truth = oracle.loc[w.ts_utc()]
    np.testing.assert_array_equal(w.last_close, truth["close"].to_numpy())
    np.testing.assert_array_equal(w.next_close, truth["next_close"].to_numpy())
    ok = np.isfinite(w.target)
    np.testing.assert_allclose(w.target[ok], np.log(truth["next_close"] / truth["close"]).to_numpy()[ok], rtol=1e-12)
    tr = w.trainable()
    assert len(tr) == ok.sum() and np.isfinite(tr.target).all()
    assert w.x.dtype == np.float32 and w.x.shape == (len(w), WINDOW, len(FEATURES))


# --- missing minutes, duplicates -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["absent", "null"])
def test_a_missing_minute_blanks_its_look_back_shadow_and_no_window_spans_it(how: str) -> None:
    bars = lake_bars()
    full = compute_features(bars)
    gap = pd.Timestamp(sessions.session_open(DAYS[1]), unit="s", tz="UTC") + 150 * MIN
    if how == "absent":
        holed = bars[bars["ts"] != gap]
    else:  # a Yahoo-style null minute: the row is there, its values are not
        holed = bars.copy()
        holed.loc[holed["ts"] == gap, ["open", "high", "low", "close", "volume"]] = np.nan
    feats = compute_features(holed)
    # no row for the gap nor for the LOOKBACK - 1 minutes whose look-back includes it; no forward fill
    shadow = pd.date_range(gap, gap + (LOOKBACK - 1) * MIN, freq="1min")
    assert not feats.index.isin(shadow).any()
    assert gap + LOOKBACK * MIN in feats.index
    outside = ~full.index.isin(shadow)
    pd.testing.assert_frame_equal(feats, full.loc[outside], check_exact=True)  # the rest is untouched
    w = make_windows(feats, WINDOW)
    ends = w.ts_utc()
    assert not ((ends >= gap) & (ends - (WINDOW - 1) * MIN <= gap)).any()
    before = int(np.flatnonzero(ends == gap - MIN)[0])
    assert np.isnan(w.next_close[before]) and np.isnan(w.target[before])  # t + 1 is the missing bar
    assert gap - MIN not in w.trainable().ts_utc()


def test_duplicates_keep_the_last_revision_and_order_does_not_matter() -> None:
    bars = lake_bars()
    feats = compute_features(bars)
    t = feats.index[100]
    revised = bars[bars["ts"] == t].assign(close=lambda d: d["close"] * 1.001)
    later = pd.concat([bars, revised], ignore_index=True)  # the later row wins
    assert compute_features(later).loc[t, "close"] == revised["close"].iloc[0]
    earlier = pd.concat([revised, bars], ignore_index=True)  # ... and the earlier row loses
    assert compute_features(earlier).loc[t, "close"] == bars.set_index("ts").loc[t, "close"]
    # with ingested_at, the latest ingestion wins wherever it sits in the input
    stamped = revised.assign(ingested_at=pd.Timestamp("2024-03-08", tz="UTC"))
    first = pd.concat([stamped, bars], ignore_index=True)
    assert compute_features(first).loc[t, "close"] == revised["close"].iloc[0]
    pd.testing.assert_frame_equal(compute_features(bars.sample(frac=1.0, random_state=1)), feats)  # unsorted input


# --- scalers and preprocessing.json ---------------------------------------------------------------------


def _plain_json(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    return isinstance(value, str | int | float | bool) and (not isinstance(value, float) or math.isfinite(value))


def test_per_symbol_scalers_fit_on_train_rows_only_and_serialise_to_plain_json() -> None:
    windows = {s: make_windows(compute_features(lake_bars(s)), WINDOW).trainable() for s in SYMBOLS}
    cut = np.datetime64(pd.Timestamp(sessions.session_open(DAYS[2]), unit="s").to_datetime64(), "s")
    train = {s: w.select(w.ts < cut) for s, w in windows.items()}
    prep = Preprocessing.fit(
        {s: w.x for s, w in train.items()},
        {s: w.target for s, w in train.items()},
        window=WINDOW,
        data_window=(pd.Timestamp(sessions.session_open(DAYS[0]), unit="s"), pd.Timestamp(cut, tz="UTC")),
        extra={"train_end": str(cut)},
    )
    for s in SYMBOLS:
        rows = train[s].x.astype(np.float64).reshape(-1, len(FEATURES))
        np.testing.assert_allclose(prep.x_scalers[s].mean, rows.mean(axis=0), rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(prep.x_scalers[s].std, rows.std(axis=0), rtol=1e-9)
        assert prep.y_scalers[s].mean == pytest.approx(train[s].target.mean(), rel=1e-12)
        everything = windows[s].x.astype(np.float64).reshape(-1, len(FEATURES)).mean(axis=0)
        assert not np.allclose(prep.x_scalers[s].mean, everything, rtol=1e-6, atol=0)  # the held-out rows are unseen
        scaled = prep.scale_x(train[s].x, s).astype(np.float64).reshape(-1, len(FEATURES))
        np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-3)
        np.testing.assert_allclose(scaled.std(axis=0), 1, atol=1e-3)
    assert prep.x_scalers["SPY"] != prep.x_scalers["IBM"]
    text = prep.to_json()
    data = json.loads(text)
    assert _plain_json(data)
    assert data["features"] == list(FEATURES) and data["window"] == WINDOW and data["horizon"] == 1
    assert data["target"] == "log_return" and data["symbols"] == SYMBOLS
    assert set(data["data_window"]) == {"start", "end"} and data["data_window"]["start"].endswith("+00:00")
    assert Preprocessing.from_json(text) == prep
    assert Preprocessing.from_json(text).to_json() == text


def test_scalers_handle_constant_columns_and_reject_bad_json() -> None:
    x = np.ones((10, 3, 2))
    x[..., 1] = np.arange(30).reshape(10, 3)
    sc = Standardizer.fit(x)
    assert sc.std[0] == 1.0  # constant feature: centred only
    assert np.isfinite(sc.transform(x)).all()
    assert Standardizer.from_dict(json.loads(json.dumps(sc.to_dict()))) == sc
    ts = TargetScaler.fit([0.001, np.nan, -0.001])
    assert ts.mean == 0.0 and ts.std == pytest.approx(0.001)
    np.testing.assert_allclose(ts.inverse(ts.transform([0.002])), [0.002], rtol=1e-6)
    with pytest.raises(ValueError, match="non-finite"):
        Standardizer.from_dict({"mean": [0.0, float("nan")], "std": [1.0, 1.0]})
    data = json.loads(fitted(lake_bars()).to_json())
    with pytest.raises(ValueError, match="unknown"):
        Preprocessing.from_dict({**data, "features": [*data["features"][:-1], "moon_phase"]})
    with pytest.raises(ValueError, match="version"):
        Preprocessing.from_dict({**data, "version": 99})


# --- training / serving parity ------------------------------------------------------------------------


def test_prepare_latest_on_bars_up_to_t_equals_the_training_window_ending_at_t() -> None:
    bars = lake_bars()
    prep = fitted(bars)
    every = prep.prepare(bars, "SPY")
    rng = np.random.default_rng(8)
    for i in rng.choice(len(every.ts), size=8, replace=False):
        t = pd.Timestamp(every.ts[i], tz="UTC")
        upto = bars[bars["ts"] <= t]
        latest = prep.prepare_latest(upto, "SPY")
        assert latest.x.shape == (1, WINDOW, len(FEATURES)) and latest.x.dtype == np.float32
        assert latest.ts[0] == every.ts[i]
        np.testing.assert_allclose(latest.x[0], every.x[i], rtol=0, atol=1e-6)
        assert latest.last_close[0] == every.last_close[i]
        # the serving fast path (arrays, no pandas) gives the very same bits
        from_arrays = prep.prepare_latest(bar_arrays(upto)[0], "SPY")
        np.testing.assert_array_equal(from_arrays.x, latest.x)
        assert from_arrays.ts[0] == latest.ts[0] and from_arrays.last_close[0] == latest.last_close[0]
    # serving only needs the last bars_needed bars of the session
    t = pd.Timestamp(every.ts[-5], tz="UTC")
    tail = bars[bars["ts"] <= t].iloc[-prep.bars_needed :]
    np.testing.assert_allclose(prep.prepare_latest(tail, "SPY").x[0], every.x[-5], rtol=0, atol=1e-6)
    with pytest.raises(NotEnoughBars) as err:
        prep.prepare_latest(tail.iloc[1:], "SPY")
    assert (err.value.needed, err.value.given) == (prep.bars_needed, prep.bars_needed - 1)


def test_latest_window_says_how_many_rows_it_needs() -> None:
    feats = compute_features(lake_bars(days=DAYS[:1]))
    assert latest_window(feats, WINDOW).ts[0] == feats.index[-1].tz_convert(None).to_datetime64()
    with pytest.raises(NotEnoughBars, match=f"needs {WINDOW} consecutive") as err:
        latest_window(feats.iloc[: WINDOW - 1], WINDOW)
    assert (err.value.needed, err.value.given) == (WINDOW, WINDOW - 1)
    assert len(make_windows(feats.iloc[:0], WINDOW)) == 0


def test_no_bars_in_gives_no_rows_out() -> None:
    from tickcast.features.indicators import clean_bars

    empty = pd.DataFrame(
        {"ts": pd.to_datetime([], utc=True), "open": [], "high": [], "low": [], "close": [], "volume": []}
    )
    assert clean_bars(empty).empty
    assert compute_features(empty).empty
