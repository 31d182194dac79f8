"""Sliding windows over a feature frame: model inputs (unscaled) and the next-minute log-return target.

A window is ``window`` consecutive feature rows of ONE session whose minutes are consecutive too, so no
window spans two sessions or a gap (rows missing after :func:`tickcast.features.indicators.compute_features`
dropped a gap's shadow). It is labelled with its LAST minute ``t`` (the "as of" minute): the forecast made
at the close of ``t`` is the close of ``t + 1 min``. The target is ``log(next_close / last_close)`` when the
row of ``t + 1 min`` exists in the same session, else NaN (:meth:`Windows.trainable` drops those).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from tickcast.features.indicators import FEATURES, LOOKBACK, MINUTE, SESSION_COLUMN, FeatureRows, epoch_seconds


class NotEnoughBars(ValueError):
    """Too few consecutive bars (or feature rows) to form the requested window; says how many vs given."""

    def __init__(self, message: str, *, needed: int, given: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.given = given


@dataclass(frozen=True, eq=False)
class Windows:
    """``n`` windows: ``x`` float32 ``[n, window, n_features]`` (UNSCALED), labelled by their last minute."""

    x: npt.NDArray[np.float32]
    ts: npt.NDArray[np.datetime64]  # datetime64[s], UTC: the as-of minute (start of the window's last bar)
    session: npt.NDArray[np.int64]
    last_close: npt.NDArray[np.float64]
    next_close: npt.NDArray[np.float64]  # close of the bar at ts + 1 min in the same session, else NaN
    target: npt.NDArray[np.float64]  # log(next_close / last_close), NaN where next_close is unknown
    features: tuple[str, ...] = FEATURES

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def select(self, mask: npt.NDArray[np.bool_] | npt.NDArray[np.int64]) -> Windows:
        return Windows(
            self.x[mask],
            self.ts[mask],
            self.session[mask],
            self.last_close[mask],
            self.next_close[mask],
            self.target[mask],
            self.features,
        )

    def trainable(self) -> Windows:
        """Only the windows with a known target."""
        return self.select(np.isfinite(self.target))

    def ts_utc(self) -> pd.DatetimeIndex:
        """``ts`` as a tz-aware pandas index."""
        return pd.DatetimeIndex(self.ts, name="ts").tz_localize("UTC")


def _empty(window: int, features: Sequence[str]) -> Windows:
    f = np.empty(0, dtype=np.float64)
    return Windows(
        np.empty((0, window, len(features)), dtype=np.float32),
        np.empty(0, dtype="datetime64[s]"),
        np.empty(0, dtype=np.int64),
        f,
        f,
        f,
        tuple(features),
    )


def _columns(feats: pd.DataFrame, features: Sequence[str]) -> None:
    missing = [c for c in (*features, "close", SESSION_COLUMN) if c not in feats.columns]
    if missing:
        raise ValueError(f"feature frame lacks {missing}; build it with compute_features()")


def _seconds(feats: pd.DataFrame) -> npt.NDArray[np.int64]:
    return epoch_seconds(pd.Series(feats.index))


def make_windows(feats: pd.DataFrame, window: int, features: Sequence[str] = FEATURES) -> Windows:
    """Every complete window of ``feats`` (one symbol, from ``compute_features``), with its target."""
    if window < 1:
        raise ValueError(f"window must be ≥ 1, got {window}")
    _columns(feats, features)
    n = len(feats)
    if n < window:
        return _empty(window, features)
    ts = _seconds(feats)
    if (np.diff(ts) <= 0).any():
        raise ValueError("feature frame index must be strictly increasing (use compute_features)")
    session = feats[SESSION_COLUMN].to_numpy(np.int64)
    close = feats["close"].to_numpy(np.float64)
    values = feats[list(features)].to_numpy(np.float64)
    ends = np.arange(window - 1, n)
    starts = ends - (window - 1)
    ok = (ts[ends] - ts[starts] == (window - 1) * MINUTE) & (session[ends] == session[starts])
    ends = ends[ok]
    if not len(ends):
        return _empty(window, features)
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)  # [n - w + 1, f, w]
    x = np.ascontiguousarray(view[ends - (window - 1)].transpose(0, 2, 1)).astype(np.float32)
    following = np.minimum(ends + 1, n - 1)
    has_next = (ends + 1 < n) & (ts[following] - ts[ends] == MINUTE) & (session[following] == session[ends])
    next_close = np.where(has_next, close[following], np.nan)
    last_close = close[ends]
    with np.errstate(invalid="ignore"):
        target = np.log(next_close / last_close)
    return Windows(
        x,
        ts[ends].astype("datetime64[s]"),
        session[ends],
        last_close,
        next_close,
        target,
        tuple(features),
    )


def trailing_run(ts_seconds: npt.NDArray[np.int64], session: npt.NDArray[np.int64] | None = None) -> int:
    """How many rows at the end are consecutive minutes (of one session)."""
    if not len(ts_seconds):
        return 0
    step_ok = np.diff(ts_seconds) == MINUTE
    if session is not None:
        step_ok &= np.diff(session) == 0
    breaks = np.flatnonzero(~step_ok)
    return int(len(ts_seconds) - (breaks[-1] + 1)) if len(breaks) else len(ts_seconds)


def _not_enough(window: int, run: int) -> NotEnoughBars:
    needed_bars = LOOKBACK + window - 1
    return NotEnoughBars(
        f"a {window}-minute window needs {window} consecutive feature rows ending at the last minute, i.e. "
        f"{needed_bars} consecutive bars of one session ({LOOKBACK - 1} of indicator warm-up); "
        f"got {run} feature row(s)",
        needed=window,
        given=run,
    )


def latest_window(feats: pd.DataFrame, window: int, features: Sequence[str] = FEATURES) -> Windows:
    """The one window ending at the last row of ``feats`` (serving); :class:`NotEnoughBars` if incomplete."""
    _columns(feats, features)
    tail = feats.iloc[-window:] if len(feats) >= window else feats
    run = trailing_run(_seconds(tail), tail[SESSION_COLUMN].to_numpy(np.int64))
    if run < window:
        raise _not_enough(window, run)
    out = make_windows(tail, window, features)
    assert len(out) == 1
    return out


def latest_window_of_rows(rows: FeatureRows, window: int, features: Sequence[str] = FEATURES) -> Windows:
    """:func:`latest_window` on :class:`FeatureRows` (the serving hot path: no pandas); the same numbers."""
    if window < 1:
        raise ValueError(f"window must be ≥ 1, got {window}")
    ts, session = rows.ts[-window:], rows.session[-window:]
    run = trailing_run(ts, session)
    if run < window:
        raise _not_enough(window, run)
    columns = [FEATURES.index(f) for f in features]
    x = rows.x[-window:][:, columns].astype(np.float32)[np.newaxis]
    nan = np.full(1, np.nan)
    return Windows(
        x, ts[-1:].astype("datetime64[s]"), session[-1:], rows.close[-1:].copy(), nan, nan.copy(), tuple(features)
    )
