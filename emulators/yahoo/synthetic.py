"""A deterministic synthetic US equity market with a known best forecast (the ORACLE).

Per symbol, parameters are drawn from an RNG seeded by ``(seed, sha256(symbol))``: a start price
(log-uniform 20-400 $), the per-minute innovation volatility ``sigma`` (3-8 bp), the overnight gap
volatility (20-60 bp), a base volume (log-uniform 5k-200k shares a minute) and a wick scale.
``phi`` comes from settings (``TICKCAST_EMULATOR__PHI`` per symbol, else ``DEFAULT_PHI``).

Bars exist for the 390 regular-session minutes of every Monday-Friday from the anchor day
2000-01-03 on (:mod:`emulators.yahoo.sessions`; holidays ignored). Within one day d:

* 1-minute log returns follow an AR(1) that restarts each morning in its stationary law:
  ``r_0 = sigma/sqrt(1-phi²)·e_0`` and ``r_t = phi·r_{t-1} + sigma·e_t`` with ``e_t`` iid N(0, 1);
  ``close_t = open_0·exp(r_0 + … + r_t)``, ``open_t = close_{t-1}`` (``open_0`` = the day's open).
* high/low extend max(o,c)/min(o,c) by half-normal wicks (~0.6·sigma); volume is a U-shaped intraday
  curve (heavy open and close) x lognormal noise, floored to integers ≥ 0.

Computing any range quickly and identically, however it is requested: everything of day d comes
from an RNG seeded by ``(seed, symbol, day index)``, so a day is generated alone (one symbol x 7 days
takes about a millisecond; days are vectorised, the AR filter is one lfilter call). The price level
is carried across days without generating the past minutes: the day's total log return ``S_d`` is
drawn first from a per-symbol daily stream (blocks of 1024 days from the anchor), and the day's
innovations are then drawn *conditionally on their weighted sum being S_d* (draw iid normals, remove
their component along ``w = Lᵀ1`` and put ``S_d`` there). That is an exact sample of the same AR(1)
law, so the day's close level is known from the daily stream alone. The overnight gap is
``-kappa·level + gap_sigma·xi_d`` on the log level relative to the start price (kappa = 0.005 a day),
a slow pull that keeps prices in a plausible band for decades.

The ORACLE: given everything up to the bar starting at ``ts`` (same day), the close of the bar at
``ts + 1 min`` is ``close_ts · exp(r_{ts+1})`` with ``r_{ts+1} | past ~ N(phi·r_ts, sigma²)``, so the
conditional mean — the RMSE-optimal forecast — is ``close_ts · exp(phi·r_ts + sigma²/2)``; ``r_ts`` is
``log(close_ts/close_{ts-1})`` (or ``log(close/open)`` for the first bar). Its expected squared error
is ``oracle² · (exp(sigma²) - 1)``, i.e. a relative RMSE of ≈ sigma, against ≈ sigma/sqrt(1-phi²) for
persistence. The last bar of a day has no next bar in the session: its oracle and next close are NaN.

Serving quirks (see :meth:`SyntheticMarket.bars`): prices are exact here and rounded by the app; a
deterministic ``null_fraction`` of minutes (default 0.2 %) comes back with all values null, as
Yahoo's sometimes do; the still-forming minute follows a deterministic per-second path that starts
at the open, touches the bar's final high and low and ends at its close.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from emulators.yahoo import sessions
from emulators.yahoo.source import Bars, FloatArray, IntArray

ANCHOR = date(2000, 1, 3)  # a Monday: session day index 0
DAILY_BLOCK = 1024
KAPPA = 0.005
DEFAULT_NULL_FRACTION = 0.002
N = sessions.MINUTES_PER_SESSION

if TYPE_CHECKING:
    import pandas as pd

try:  # scipy comes with the project's ML dependencies; without it the matrix product does the same
    from scipy.signal import lfilter as _lfilter
except ImportError:  # pragma: no cover
    _lfilter = None

_TAG_PARAMS = 0x5041
_TAG_DAILY = 0x4441
_TAG_DAY = 0x4D49
_TAG_PATH = 0x5041_5448


@dataclass(frozen=True)
class SymbolParams:
    """The generating process of one symbol."""

    symbol: str
    start_price: float
    sigma: float  # sd of the per-minute innovation of log returns
    phi: float  # AR(1) coefficient of 1-minute log returns
    gap_sigma: float  # sd of the overnight log gap
    base_volume: float  # mean shares per minute (before the intraday curve)
    wick: float  # wick length in units of sigma


@dataclass(frozen=True)
class DayBlock:
    """Generated session days, one row per day, one column per minute (exact, unrounded)."""

    ts: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    null: np.ndarray[tuple[int, int], np.dtype[np.bool_]]
    ret: FloatArray  # log return of each bar: log(close/prev close), first bar log(close/open)


def _u64(value: int) -> int:
    return value & 0xFFFF_FFFF_FFFF_FFFF


def _symbol_key(symbol: str) -> int:
    return int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "big")


def day_index(day: date) -> int:
    """Session days (Mon-Fri) from the anchor to ``day``: 0 for 2000-01-03."""
    return int(np.busday_count(ANCHOR, day))


@lru_cache(maxsize=64)
def _ar_matrix(phi: float, sigma: float) -> tuple[FloatArray, FloatArray]:
    """``L`` with ``r = L @ e`` for one day's AR(1) (stationary start), and ``w = Lᵀ1``."""
    t = np.arange(N)
    lag = t[:, None] - t[None, :]
    mat = np.where(lag >= 0, sigma * np.power(phi, np.maximum(lag, 0).astype(np.float64)), 0.0)
    mat[:, 0] /= math.sqrt(1.0 - phi * phi)
    return mat, mat.sum(axis=0)


def _ar_filter(eps: FloatArray, phi: float, sigma: float, mat: FloatArray) -> FloatArray:
    """Each row's AR(1) returns ``r = L @ e``: scipy's lfilter when available (10x faster), else the matrix."""
    if _lfilter is None:
        out: FloatArray = eps @ mat.T
        return out
    x = eps.copy()
    x[:, 0] /= math.sqrt(1.0 - phi * phi)
    filtered: FloatArray = np.asarray(_lfilter([sigma], [1.0, -phi], x, axis=1), dtype=np.float64)
    return filtered


@lru_cache(maxsize=1)
def _volume_curve() -> FloatArray:
    """U-shaped intraday volume profile with mean 1 (busy open and close, quiet lunch)."""
    t = np.arange(N, dtype=np.float64)
    x = t / (N - 1)
    curve = 1.0 + 2.0 * (2.0 * x - 1.0) ** 2 + 2.5 * np.exp(-t / 6.0) + 2.0 * np.exp(-(N - 1 - t) / 5.0)
    normalised: FloatArray = curve / curve.mean()
    return normalised


class SyntheticMarket:
    """The synthetic market for a fixed seed and symbol list (see the module docstring)."""

    mode = "synthetic"

    def __init__(
        self,
        seed: int,
        symbols: Sequence[str],
        phi: Mapping[str, float] | None = None,
        default_phi: float = 0.3,
        *,
        null_fraction: float = DEFAULT_NULL_FRACTION,
    ) -> None:
        self.seed = _u64(seed)
        self._symbols = list(dict.fromkeys(symbols))
        self._phi = dict(phi or {})
        self.default_phi = default_phi
        if not 0.0 <= null_fraction < 1.0:
            raise ValueError(f"null_fraction {null_fraction} is not in [0, 1)")
        self.null_fraction = null_fraction
        for sym in self._symbols:
            p = self._phi.get(sym, default_phi)
            if not -1.0 < p < 1.0:
                raise ValueError(f"phi for {sym} is {p}: an AR(1) needs -1 < phi < 1")
        self._lock = threading.Lock()
        self._levels: dict[str, tuple[list[float], list[float], float]] = {}
        self._blocks: OrderedDict[tuple[str, tuple[int, ...]], DayBlock] = OrderedDict()

    # --- MarketSource ---------------------------------------------------------------------------

    def symbols(self) -> list[str]:
        return list(self._symbols)

    def has_symbol(self, symbol: str) -> bool:
        return symbol in self._symbols

    def first_trade_epoch(self, symbol: str) -> int:
        return sessions.session_open(ANCHOR)

    def default_session_day(self, real_now: datetime) -> date:
        return sessions.latest_session_started(real_now.timestamp())

    def recent_sessions(self, symbol: str, now: float, n: int) -> list[date]:
        return [d for d in sessions.recent_sessions(now, n) if d >= ANCHOR]

    def bars(self, symbol: str, start: int, end: int, now: float) -> Bars:
        """Bars in ``[start, end)`` that started by ``now``; nulls as NaN; the forming minute partial."""
        end_eff = min(end, math.floor(now) + 1)
        days = [d for d in sessions.sessions_overlapping(start, end_eff) if d >= ANCHOR]
        if not days:
            return Bars.empty()
        blk = self.block(symbol, days)
        ts = blk.ts.ravel()
        mask = (ts >= start) & (ts < end_eff)
        null = blk.null.ravel()[mask]
        cols = [a.ravel()[mask].copy() for a in (blk.open, blk.high, blk.low, blk.close, blk.volume)]
        for col in cols:
            col[null] = np.nan
        out = Bars(ts[mask], *cols)
        if len(out) and out.ts[-1] + sessions.BAR_SECONDS > now and not null[-1]:
            i = len(out) - 1
            o, h, low, c, v = (float(values[i]) for values in cols)
            po, ph, pl, pc, pv = self.partial_bar(symbol, int(out.ts[i]), o, h, low, c, v, now - out.ts[i])
            out.open[i], out.high[i], out.low[i], out.close[i], out.volume[i] = po, ph, pl, pc, pv
        return out

    def last_close_before(self, symbol: str, epoch: float) -> float | None:
        e = math.ceil(epoch) - 1  # last second strictly before epoch
        if e < sessions.session_open(ANCHOR):
            return None
        day = sessions.latest_session_started(e)
        for _ in range(10):
            blk = self.block(symbol, [day])
            idx = min(N - 1, (e - sessions.session_open(day)) // sessions.BAR_SECONDS)
            for i in range(idx, -1, -1):
                if not blk.null[0, i]:
                    return float(blk.close[0, i])
            day = sessions.previous_session_day(day)
            e = sessions.session_close(day)
            if day < ANCHOR:
                break
        return None

    # --- the process ----------------------------------------------------------------------------

    def params(self, symbol: str) -> SymbolParams:
        return self._params(symbol)

    @lru_cache(maxsize=256)  # noqa: B019 - the market lives as long as the app; few symbols
    def _params(self, symbol: str) -> SymbolParams:
        rng = np.random.default_rng([self.seed, _symbol_key(symbol), _TAG_PARAMS])
        u = rng.random(5)
        return SymbolParams(
            symbol=symbol,
            start_price=float(math.exp(math.log(20.0) + u[0] * math.log(400.0 / 20.0))),
            sigma=float(3e-4 + u[1] * 5e-4),
            phi=float(self._phi.get(symbol, self.default_phi)),
            gap_sigma=float(0.002 + u[2] * 0.004),
            base_volume=float(math.exp(math.log(5e3) + u[3] * math.log(2e5 / 5e3))),
            wick=float(0.4 + u[4] * 0.4),
        )

    def _day_levels(self, symbol: str, upto: int) -> tuple[list[float], list[float]]:
        """Log open level (relative to the start price) and total log return for days 0..upto."""
        p = self._params(symbol)
        _, w = _ar_matrix(p.phi, p.sigma)
        s_sd = float(math.sqrt(float(w @ w)))
        with self._lock:
            opens, totals, level = self._levels.get(symbol, ([], [], 0.0))
            opens, totals = list(opens), list(totals)
            while len(opens) <= upto:
                block = len(opens) // DAILY_BLOCK
                rng = np.random.default_rng([self.seed, _symbol_key(symbol), _TAG_DAILY, block])
                draws = rng.standard_normal((DAILY_BLOCK, 2)).tolist()
                for xi, z in draws:
                    o = (1.0 - KAPPA) * level + p.gap_sigma * xi
                    s = s_sd * z
                    opens.append(o)
                    totals.append(s)
                    level = o + s
            self._levels[symbol] = (opens, totals, level)
        return opens, totals

    def block(self, symbol: str, days: Sequence[date]) -> DayBlock:
        """The session days ``days`` (each ≥ the anchor, Mon-Fri) of ``symbol``, generated or cached."""
        key = (symbol, tuple(day_index(d) for d in days))
        with self._lock:
            hit = self._blocks.get(key)
            if hit is not None:
                self._blocks.move_to_end(key)
                return hit
        blk = self._generate(symbol, list(days), list(key[1]))
        with self._lock:
            self._blocks[key] = blk
            while len(self._blocks) > 128:
                self._blocks.popitem(last=False)
        return blk

    def _generate(self, symbol: str, days: list[date], idx: list[int]) -> DayBlock:
        p = self._params(symbol)
        mat, w = _ar_matrix(p.phi, p.sigma)
        opens, totals = self._day_levels(symbol, max(idx))
        n = len(days)
        key = _symbol_key(symbol)
        eps = np.empty((n, N))
        wick = np.empty((n, 2, N))
        vnoise = np.empty((n, N))
        unif = np.empty((n, N))
        for k, di in enumerate(idx):
            rng = np.random.default_rng([self.seed, key, _TAG_DAY, di])
            eps[k] = rng.standard_normal(N)
            wick[k] = rng.standard_normal((2, N))
            vnoise[k] = rng.standard_normal(N)
            unif[k] = rng.random(N)
        target = np.array([totals[i] for i in idx])
        eps -= np.outer((eps @ w - target) / float(w @ w), w)  # condition on the day's total return
        ret = _ar_filter(eps, p.phi, p.sigma, mat)
        log_open0 = math.log(p.start_price) + np.array([opens[i] for i in idx])
        log_close = log_open0[:, None] + np.cumsum(ret, axis=1)
        close = np.exp(log_close)
        open_ = np.exp(np.concatenate([log_open0[:, None], log_close[:, :-1]], axis=1))
        reach = p.wick * p.sigma
        high = np.maximum(open_, close) * np.exp(np.abs(wick[:, 0]) * reach)
        low = np.minimum(open_, close) * np.exp(-np.abs(wick[:, 1]) * reach)
        volume = np.floor(p.base_volume * _volume_curve()[None, :] * np.exp(0.5 * vnoise - 0.125))
        ts = np.array([sessions.session_open(d) for d in days], dtype=np.int64)[:, None] + np.arange(
            0, N * sessions.BAR_SECONDS, sessions.BAR_SECONDS, dtype=np.int64
        )
        return DayBlock(ts, open_, high, low, close, volume, unif < self.null_fraction, ret)

    def partial_bar(
        self, symbol: str, ts: int, o: float, h: float, low: float, c: float, v: float, elapsed: float
    ) -> tuple[float, float, float, float, float]:
        """The bar starting at ``ts`` after ``elapsed`` seconds: a per-second path from open to close.

        The path is deterministic per (seed, symbol, ts), touches ``h`` and ``low`` once each and stays
        inside them, so the partial bar is OHLC-consistent and becomes the final bar at 60 s.
        """
        s = int(min(max(math.floor(elapsed), 0), sessions.BAR_SECONDS - 1))
        rng = np.random.default_rng([self.seed, _symbol_key(symbol), _TAG_PATH, _u64(ts)])
        t_hi, t_lo = rng.choice(np.arange(1, sessions.BAR_SECONDS), size=2, replace=False)
        anchors = sorted([(0, o), (sessions.BAR_SECONDS, c), (int(t_hi), h), (int(t_lo), low)])
        grid = np.arange(sessions.BAR_SECONDS + 1, dtype=np.float64)
        path = np.interp(grid, [a[0] for a in anchors], [a[1] for a in anchors])
        walk = np.cumsum(rng.standard_normal(sessions.BAR_SECONDS + 1))
        walk -= walk[0] + (walk[-1] - walk[0]) * grid / sessions.BAR_SECONDS
        path = np.clip(path + walk * (h - low) * 0.05, low, h)
        for t, val in anchors:
            path[t] = val
        seen = path[: s + 1]
        return o, float(seen.max()), float(seen.min()), float(path[s]), float(np.floor(v * s / sessions.BAR_SECONDS))

    # --- the oracle -----------------------------------------------------------------------------

    def oracle_arrays(self, symbol: str, start: int, end: int) -> dict[str, np.ndarray]:
        """Columns ts (epoch s), close, next_close, oracle for every bar in ``[start, end)`` (no clock)."""
        days = [d for d in sessions.sessions_overlapping(start, end) if d >= ANCHOR]
        if not days:
            e = np.empty(0)
            return {"ts": np.empty(0, dtype=np.int64), "close": e, "next_close": e, "oracle": e}
        p = self._params(symbol)
        blk = self.block(symbol, days)
        nxt = np.full_like(blk.close, np.nan)
        nxt[:, :-1] = blk.close[:, 1:]
        oracle = blk.close * np.exp(p.phi * blk.ret + 0.5 * p.sigma**2)
        oracle[:, -1] = np.nan
        ts = blk.ts.ravel()
        mask = (ts >= start) & (ts < end)
        return {
            "ts": ts[mask],
            "close": blk.close.ravel()[mask],
            "next_close": nxt.ravel()[mask],
            "oracle": oracle.ravel()[mask],
        }

    def oracle_frame(self, symbol: str, start: datetime | float, end: datetime | float) -> pd.DataFrame:
        """The oracle as a DataFrame: ts (UTC Timestamp, bar start), close, next_close, oracle."""
        import pandas as pd  # only here: serving needs numpy alone

        cols = self.oracle_arrays(symbol, _epoch(start), _epoch(end))
        return pd.DataFrame(
            {
                "ts": pd.to_datetime(cols["ts"], unit="s", utc=True),
                "close": cols["close"],
                "next_close": cols["next_close"],
                "oracle": cols["oracle"],
            }
        )

    def oracle_next_close(self, symbol: str, ts: datetime | float) -> float:
        """Best forecast of the close of the bar at ``ts + 1 min`` given all bars up to ``ts``."""
        e = _epoch(ts)
        cols = self.oracle_arrays(symbol, e, e + 1)
        if not len(cols["ts"]) or int(cols["ts"][0]) != e:
            raise ValueError(f"{sessions.to_utc(e).isoformat()} is not the start of a session minute")
        value = float(cols["oracle"][0])
        if math.isnan(value):
            raise ValueError(f"{sessions.to_utc(e).isoformat()} is the session's last minute: no next bar")
        return value

    def oracle_rmse(self, symbol: str, start: datetime | float, end: datetime | float) -> float:
        """Theoretical RMSE ($) of the oracle over the bars in ``[start, end)`` that have a next bar."""
        p = self._params(symbol)
        oracle = self.oracle_arrays(symbol, _epoch(start), _epoch(end))["oracle"]
        oracle = oracle[np.isfinite(oracle)]
        if not len(oracle):
            return math.nan
        return float(np.sqrt(np.mean(oracle**2) * math.expm1(p.sigma**2)))


def _epoch(t: datetime | float) -> int:
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return math.floor(t.timestamp())
    return math.floor(t)
