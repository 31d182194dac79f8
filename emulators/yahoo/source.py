"""What the chart endpoint needs from a market (synthetic or tape): the ``MarketSource`` protocol and ``Bars``.

``Bars`` holds columns of 1-minute bars (epoch-second starts, prices, volume); a minute that Yahoo
would return as ``null`` has NaN in all five value columns. A source answers ``bars(symbol, start,
end, now)`` with every bar that starts in ``[start, end)`` and has STARTED by ``now``; the bar of
the still-forming minute (``ts <= now < ts + 60``) comes with partial values, like Yahoo's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Bars:
    """Columns of 1-minute bars, sorted by ``ts`` (epoch seconds of the minute's start)."""

    ts: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @staticmethod
    def empty() -> Bars:
        f = np.empty(0, dtype=np.float64)
        return Bars(np.empty(0, dtype=np.int64), f, f, f, f, f)

    def select(self, mask: NDArray[np.bool_]) -> Bars:
        return Bars(
            self.ts[mask], self.open[mask], self.high[mask], self.low[mask], self.close[mask], self.volume[mask]
        )

    def valid(self) -> NDArray[np.bool_]:
        """True where the bar has values (not a Yahoo-style null minute)."""
        return np.isfinite(self.close)


class MarketSource(Protocol):
    """A market the emulator can serve."""

    @property
    def mode(self) -> str: ...

    def symbols(self) -> list[str]: ...

    def has_symbol(self, symbol: str) -> bool: ...

    def bars(self, symbol: str, start: int, end: int, now: float) -> Bars:
        """Bars starting in ``[start, end)`` that have started by ``now`` (the forming one partial)."""
        ...

    def recent_sessions(self, symbol: str, now: float, n: int) -> list[date]:
        """The ``n`` most recent session days that began by ``now``, oldest first (fewer if none older)."""
        ...

    def last_close_before(self, symbol: str, epoch: float) -> float | None:
        """Close of the last non-null bar starting before ``epoch``, or None."""
        ...

    def first_trade_epoch(self, symbol: str) -> int: ...

    def default_session_day(self, real_now: datetime) -> date:
        """The day the ``"session"`` clock setting starts in."""
        ...


def interpolate_partial(
    o: float, h: float, low: float, c: float, v: float, fraction: float
) -> tuple[float, float, float, float, float]:
    """A bar ``fraction`` of the way through its minute, moving linearly toward the final bar.

    The partial close goes from ``o`` to ``c``; the wicks grow in proportion, so the partial bar is
    always OHLC-consistent and equals the final bar at ``fraction == 1``. Used where only final bars
    exist (tape replay).
    """
    f = min(max(fraction, 0.0), 1.0)
    pc = o + (c - o) * f
    ph = max(o, pc) + (h - max(o, c)) * f
    pl = min(o, pc) - (min(o, c) - low) * f
    return o, ph, pl, pc, float(np.floor(v * f))
