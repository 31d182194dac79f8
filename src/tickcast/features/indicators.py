"""Causal technical indicators of ONE symbol's 1-minute bars: the one feature code path of training AND serving.

:func:`compute_features` turns lake bars (``ts`` = START of the minute, UTC) into one row per minute with
the columns :data:`FEATURES` + ``close`` + ``session``, indexed by ``ts``. Every feature at minute ``t`` is
a function of the bars ``t - LOOKBACK + 1 … t`` of the same session and of nothing else:

* **causal** — no value ever looks at a bar after ``t``;
* **finite look-back** — also no value depends on bars older than :data:`LOOKBACK` minutes (the EMAs are
  truncated, see below), so serving with only the last :func:`bars_needed` bars gives bit-for-bit the
  features training computed from the whole session.

Features (``c`` close, ``h`` high, ``l`` low, ``v`` volume, ``c₋k`` the close k minutes earlier;
"bars" counts the bars of look-back, current bar included):

================ =========================================================== ===== ================================
name             formula                                                     bars  why
================ =========================================================== ===== ================================
``ret_1``        ``log(c / c₋1)``                                            2     the last move (AR structure)
``ret_5``        ``log(c / c₋5)``                                            6     short momentum
``ema_ratio``    ``c / EMA12(c) − 1``                                        18    distance to the fast trend
``sma_ratio``    ``c / SMA20(c) − 1``                                        20    distance to the slow mean
``rsi``          ``(G − L) / (G + L)`` = ``2·RSI14/100 − 1`` in [−1, 1];     15    overbought / oversold
                 G, L = mean gain / loss of the last 14 close-to-close moves
                 (Cutler's RSI); 0 when nothing moved
``macd_hist``    ``(MACD − EMA9(MACD)) / c``, ``MACD = EMA12(c) − EMA26(c)``  52    trend acceleration, price-free
``bb_pctb``      Bollinger %B(20, 2σ) = ``0.5 + (c − SMA20) / (4·σ20)``,     20    position in the recent band
                 σ20 the population sd of the last 20 closes
``atr``          ``ATR14 / c``; ATR14 = mean of the last 14 true ranges,     15    recent volatility, relative
                 ``TR = max(h − l, |h − c₋1|, |l − c₋1|)``
``volume_z``     ``(log1p v − mean20) / sd20`` of ``log1p v``                20    unusual activity
``hl_range``     ``(h − l) / c``                                             1     this minute's volatility
================ =========================================================== ===== ================================

Price-level-free on purpose: every feature is a return, a ratio or a bounded oscillator, so one scaler per
symbol fitted on a few days stays valid when the price drifts.

**EMAs are finite.** ``EMAn`` is the exponentially weighted mean with ``α = 2/(n+1)`` over the last
``taps(n)`` values only (weights ``(1−α)^age``, normalised to sum 1), ``taps(n)`` the smallest count that
holds ≥ 95 % of the infinite EMA's weight: 18 for EMA12, 39 for EMA26, 14 for EMA9. A recursive EMA would
make every value depend on where the series started (the session's first bar, or the first bar a caller
happened to send); the truncated one does not.

Floors keep every retained row finite: σ20 is floored at ``c·1e-9`` (flat prices give %B 0.5), sd20 of
log volume at 1e-6 (constant volume gives z 0), G + L at ``c·1e-12``.

**Sessions.** Features are computed per session = per UTC day (US regular sessions never cross a UTC
midnight). Nothing is filled or carried from one session into the next: each session starts cold.

**Missing minutes** (a minute with no bar inside a session, or a bar with a non-finite or non-positive
price, or a negative or non-finite volume): each session is re-indexed to the full 1-minute grid between
its first and last bar; a missing minute stays EMPTY (no forward fill, no zero). Every feature whose
look-back touches it is then undefined, so the missing minute and the next ``LOOKBACK − 1`` minutes get
no row: a gap costs the same warm-up as a session start, and no feature, hence no window built from
these rows, ever spans a gap. Rows outside that shadow are identical to the ones a gap-free tape gives.

**Warm-up** rows (fewer than :data:`LOOKBACK` bars of history in the session) are DROPPED, never filled:
every row :func:`compute_features` returns is finite.

**Duplicates**: the last revision of a minute wins — the latest ``ingested_at`` when that column is
present, else the later row of the input (the lake's own upsert rule).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from tickcast.market.columns import BarArrays

FloatArray = npt.NDArray[np.float64]

FEATURES: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "ema_ratio",
    "sma_ratio",
    "rsi",
    "macd_hist",
    "bb_pctb",
    "atr",
    "volume_z",
    "hl_range",
)
SESSION_COLUMN = "session"  # int YYYYMMDD of the UTC day (= the US regular session)
MINUTE = 60  # seconds
EMA_TAIL = 0.05  # truncated EMAs keep ≥ 95 % of the infinite EMA's weight
BAR_COLUMNS = ("open", "high", "low", "close", "volume")


def ema_taps(span: int) -> int:
    """How many values a truncated ``EMA(span)`` averages (see the module docstring)."""
    alpha = 2.0 / (span + 1.0)
    return math.ceil(math.log(EMA_TAIL) / math.log(1.0 - alpha))


# Bars of history (current bar included) each feature needs; LOOKBACK is the longest.
FEATURE_LOOKBACK: dict[str, int] = {
    "ret_1": 2,
    "ret_5": 6,
    "ema_ratio": ema_taps(12),
    "sma_ratio": 20,
    "rsi": 15,
    "macd_hist": max(ema_taps(12), ema_taps(26)) + ema_taps(9) - 1,
    "bb_pctb": 20,
    "atr": 15,
    "volume_z": 20,
    "hl_range": 1,
}
LOOKBACK: int = max(FEATURE_LOOKBACK.values())


def bars_needed(window: int) -> int:
    """Consecutive bars of one session a window of ``window`` feature rows needs (warm-up included)."""
    return LOOKBACK + window - 1


# --- input hygiene --------------------------------------------------------------------------------


def bar_arrays(bars: pd.DataFrame) -> tuple[BarArrays, npt.NDArray[np.int64] | None]:
    """One symbol's bars frame as :class:`BarArrays` (input order kept) + ``ingested_at`` in ns, if complete.

    Accepts ``ts`` as a column or as the index. Raises ``ValueError`` for a missing column, several symbols,
    a missing ts or a ts that is not the start of a minute. Numbers that do not parse become NaN.
    """
    frame = bars.reset_index() if "ts" not in bars.columns and bars.index.name == "ts" else bars
    missing = [c for c in ("ts", *BAR_COLUMNS) if c not in frame.columns]
    if missing:
        raise ValueError(f"bars need the columns ts, open, high, low, close, volume; missing {missing}")
    if "symbol" in frame.columns:
        symbols = pd.unique(frame["symbol"].dropna())
        if len(symbols) > 1:
            raise ValueError(f"compute features of one symbol at a time; got {sorted(map(str, symbols))}")
    ts = pd.to_datetime(frame["ts"], utc=True)
    if ts.isna().any():
        raise ValueError("bars have a missing ts")
    ns = ts.to_numpy(dtype="datetime64[ns]").astype(np.int64)  # UTC nanoseconds (numpy: no per-op pandas cost)
    off_minute = ns % 60_000_000_000 != 0
    if off_minute.any():
        bad = pd.Timestamp(int(ns[np.argmax(off_minute)]), tz="UTC")
        raise ValueError(f"bar ts must be the start of a minute; got {bad.isoformat()}")
    cols = [pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64) for c in BAR_COLUMNS]
    ingested: npt.NDArray[np.int64] | None = None
    if "ingested_at" in frame.columns and not frame["ingested_at"].isna().any():
        ingested = pd.to_datetime(frame["ingested_at"], utc=True).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return BarArrays(ns // 1_000_000_000, *cols), ingested


def clean_arrays(bars: BarArrays, ingested: npt.NDArray[np.int64] | None = None) -> BarArrays:
    """Sorted by ts, one bar per minute (the last revision: latest ``ingested`` if given, else the later row), valid.

    Bars with a non-finite or non-positive price or a negative or non-finite volume are dropped here;
    :func:`feature_rows` then treats their minutes as missing.
    """
    ts = bars.ts
    order = np.lexsort((ingested, ts)) if ingested is not None else np.argsort(ts, kind="stable")
    sorted_ts = ts[order]
    # the later revision of a minute wins (and no rows in, no rows out)
    last_of_minute = np.append(sorted_ts[1:] != sorted_ts[:-1], True)[: len(sorted_ts)]
    idx = order[last_of_minute]
    prices = np.column_stack([bars.open[idx], bars.high[idx], bars.low[idx], bars.close[idx]])
    vol = bars.volume[idx]
    ok = np.isfinite(prices).all(axis=1) & (prices > 0).all(axis=1) & np.isfinite(vol) & (vol >= 0)
    return bars.take(idx[ok])


def clean_bars(bars: pd.DataFrame) -> pd.DataFrame:
    """One symbol's bars sorted by ts (UTC, whole minutes), one row per minute (last revision), valid only.

    :func:`bar_arrays` then :func:`clean_arrays`, back as a frame with columns ts, open, high, low, close, volume.
    """
    clean = clean_arrays(*bar_arrays(bars))
    out = pd.DataFrame({"ts": pd.DatetimeIndex(clean.ts.astype("datetime64[s]")).tz_localize("UTC")})
    for col in BAR_COLUMNS:
        out[col] = getattr(clean, col)
    return out


# --- numpy kernels: each value from its own trailing window only (no running state) ---------------


def _windows(x: FloatArray, n: int) -> FloatArray:
    """``[len(x) - n + 1, n]`` trailing windows (oldest first in each row), a read-only view of ``x``.

    Built directly on ``x``'s buffer: ``sliding_window_view`` costs ~15x more per call, and serving calls
    this ten times per request.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    step = x.itemsize
    view: FloatArray = np.ndarray((len(x) - n + 1, n), dtype=np.float64, buffer=x, strides=(step, step))
    view.flags.writeable = False
    return view


def _pad(values: FloatArray, n: int, length: int) -> FloatArray:
    out = np.full(length, np.nan)
    if length >= n:
        out[n - 1 :] = values
    return out


def _window_mean(w: FloatArray) -> FloatArray:
    """Row means of ``w``, bit for bit ``w.mean(axis=1)`` (numpy's mean is this sum over the count)."""
    out: FloatArray = np.add.reduce(w, axis=1) / w.shape[1]
    return out


def _rolling_mean(x: FloatArray, n: int) -> FloatArray:
    if len(x) < n:
        return np.full(len(x), np.nan)
    return _pad(_window_mean(_windows(x, n)), n, len(x))


def _rolling_std(x: FloatArray, n: int) -> FloatArray:
    """Population standard deviation of the last ``n`` values."""
    if len(x) < n:
        return np.full(len(x), np.nan)
    w = _windows(x, n)
    dev = w - _window_mean(w)[:, np.newaxis]
    return _pad(np.sqrt(_window_mean(dev * dev)), n, len(x))


@functools.cache
def _ema_weights(span: int) -> FloatArray:
    """The ``ema_taps(span)`` normalised weights of a truncated EMA, oldest first (read-only, cached)."""
    alpha = 2.0 / (span + 1.0)
    weights = (1.0 - alpha) ** np.arange(ema_taps(span) - 1, -1, -1, dtype=np.float64)  # oldest … newest
    weights /= weights.sum()
    weights.flags.writeable = False
    return weights


def _ema(x: FloatArray, span: int) -> FloatArray:
    """Truncated, normalised EMA (module docstring): a fixed weighted mean of the last ``ema_taps(span)``."""
    weights = _ema_weights(span)
    taps = len(weights)
    if len(x) < taps:
        return np.full(len(x), np.nan)
    return _pad((_windows(x, taps) * weights).sum(axis=1), taps, len(x))


def _lag(x: FloatArray, k: int) -> FloatArray:
    out = np.full(len(x), np.nan)
    if len(x) > k:
        out[k:] = x[:-k]
    return out


def _session_features(h: FloatArray, low: FloatArray, c: FloatArray, v: FloatArray) -> FloatArray:
    """``[m, len(FEATURES)]`` on one session's full minute grid (NaN = missing bar; NaN propagates)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        c1 = _lag(c, 1)
        ret_1 = np.log(c / c1)
        ret_5 = np.log(c / _lag(c, 5))
        ema12 = _ema(c, 12)
        ema_ratio = c / ema12 - 1.0
        sma20 = _rolling_mean(c, 20)
        sma_ratio = c / sma20 - 1.0
        move = c - c1
        gain = _rolling_mean(np.maximum(move, 0.0), 14)
        loss = _rolling_mean(np.maximum(-move, 0.0), 14)
        rsi = (gain - loss) / np.maximum(gain + loss, c * 1e-12)
        macd = ema12 - _ema(c, 26)
        macd_hist = (macd - _ema(macd, 9)) / c
        sd20 = _rolling_std(c, 20)
        bb_pctb = 0.5 + (c - sma20) / (4.0 * np.maximum(sd20, c * 1e-9))
        true_range = np.maximum(h - low, np.maximum(np.abs(h - c1), np.abs(low - c1)))
        atr = _rolling_mean(true_range, 14) / c
        log_vol = np.log1p(v)
        volume_z = (log_vol - _rolling_mean(log_vol, 20)) / np.maximum(_rolling_std(log_vol, 20), 1e-6)
        hl_range = (h - low) / c
    columns = {
        "ret_1": ret_1,
        "ret_5": ret_5,
        "ema_ratio": ema_ratio,
        "sma_ratio": sma_ratio,
        "rsi": rsi,
        "macd_hist": macd_hist,
        "bb_pctb": bb_pctb,
        "atr": atr,
        "volume_z": volume_z,
        "hl_range": hl_range,
    }
    return np.column_stack([columns[name] for name in FEATURES])


def epoch_seconds(ts: pd.Series) -> npt.NDArray[np.int64]:
    """Epoch seconds of a tz-aware datetime Series (any resolution)."""
    seconds: npt.NDArray[np.int64] = ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    return seconds


def session_ids(ts_seconds: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """YYYYMMDD of the UTC day of each epoch second (one US regular session per UTC day)."""
    days = (np.asarray(ts_seconds, dtype=np.int64) // 86_400).astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    year = days.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (days - months).astype(np.int64) + 1
    ids: npt.NDArray[np.int64] = year * 10_000 + month * 100 + day
    return ids


def empty_features() -> pd.DataFrame:
    frame = pd.DataFrame({name: np.empty(0) for name in (*FEATURES, "close")})
    frame[SESSION_COLUMN] = np.empty(0, dtype=np.int64)
    frame.index = pd.DatetimeIndex(np.empty(0, dtype="datetime64[s]"), name="ts").tz_localize("UTC")
    return frame


class FeatureRows(NamedTuple):
    """Feature rows of one symbol: ``ts`` epoch seconds, ``x`` ``[n, len(FEATURES)]``, close, session (YYYYMMDD)."""

    ts: npt.NDArray[np.int64]
    x: FloatArray
    close: FloatArray
    session: npt.NDArray[np.int64]


def feature_rows(clean: BarArrays) -> FeatureRows:
    """The features of bars already through :func:`clean_arrays`: the array core of :func:`compute_features`."""
    ts = clean.ts
    values = np.column_stack(clean[1:]) if clean.size else np.empty((0, len(BAR_COLUMNS)))
    day = ts // 86_400
    cuts = np.flatnonzero(np.diff(day)) + 1
    parts_ts: list[npt.NDArray[np.int64]] = []
    parts_x: list[FloatArray] = []
    parts_c: list[FloatArray] = []
    for idx in np.split(np.arange(len(ts)), cuts) if len(ts) else []:
        s_ts = ts[idx]
        grid = np.arange(s_ts[0], s_ts[-1] + MINUTE, MINUTE, dtype=np.int64)
        pos = (s_ts - s_ts[0]) // MINUTE
        full = np.full((len(grid), len(BAR_COLUMNS)), np.nan)
        full[pos] = values[idx]
        feats = _session_features(full[:, 1], full[:, 2], full[:, 3], full[:, 4])
        keep = np.isfinite(feats).all(axis=1)
        parts_ts.append(grid[keep])
        parts_x.append(feats[keep])
        parts_c.append(full[keep, 3])
    if not parts_ts:
        return FeatureRows(np.empty(0, np.int64), np.empty((0, len(FEATURES))), np.empty(0), np.empty(0, np.int64))
    out_ts = np.concatenate(parts_ts)
    return FeatureRows(out_ts, np.concatenate(parts_x), np.concatenate(parts_c), session_ids(out_ts))


def compute_features(bars: pd.DataFrame) -> pd.DataFrame:
    """Features of one symbol's bars: index ``ts`` (UTC), columns FEATURES + close + session; all finite.

    See the module docstring for the formulas, the session rule, the missing-minute rule and warm-up.
    """
    rows = feature_rows(clean_arrays(*bar_arrays(bars)))
    if not len(rows.ts):
        return empty_features()
    data: dict[str, Any] = dict(zip(FEATURES, rows.x.T, strict=True))
    data["close"] = rows.close
    data[SESSION_COLUMN] = rows.session
    index = pd.DatetimeIndex(rows.ts.astype("datetime64[s]"), name="ts").tz_localize("UTC")
    return pd.DataFrame(data, index=index)
