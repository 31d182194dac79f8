"""Column-wise bars, one type per shape:

* :class:`BarArrays` — one symbol's bars as NumPy arrays (the serving hot path's shape);
* :class:`BarColumns` — validated bars of one symbol with their symbol and source (what ingest hands the
  lake: a batch message's bars, kept as columns from decoding to the Parquet write).

A request of 100 bars costs ~10 ms as pandas frames and pydantic models, ~0.1 ms as six arrays. The feature
code (:mod:`tickcast.features.indicators`) works on this shape underneath its pandas entry points, so training
(frames) and serving (arrays) share one implementation. NumPy and the Bar model only: it loads in the AML
serving environment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from tickcast.market.bar import Bar

__all__ = ["BarArrays", "BarColumns", "FloatArray", "IntArray"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class BarArrays(NamedTuple):
    """One symbol's bars: ``ts`` int64 epoch seconds of the START of each minute (UTC) and float64 OHLCV."""

    ts: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]

    @property
    def size(self) -> int:
        """How many bars (``len()`` of a NamedTuple is its field count)."""
        return len(self.ts)

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_] | slice) -> BarArrays:
        """The bars at ``index`` (an index array, a mask or a slice), every column alike."""
        return BarArrays(
            self.ts[index], self.open[index], self.high[index], self.low[index], self.close[index], self.volume[index]
        )

    def tail(self, n: int) -> BarArrays:
        """The last ``n`` bars (all of them when there are fewer)."""
        return self.take(slice(max(0, self.size - n), None))


@dataclass
class BarColumns:
    """Validated bars of one symbol as columns (message order kept: later rows win on a repeated ts)."""

    symbol: str
    ts: IntArray  # epoch seconds, start of the minute
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    source: npt.NDArray[np.object_]

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def from_bars(cls, bars: Sequence[Bar]) -> BarColumns:
        """Columns of bars that all have the same symbol (already validated)."""
        if not bars:
            raise ValueError("no bars")
        return cls(
            symbol=bars[0].symbol,
            ts=np.fromiter((b.epoch for b in bars), dtype=np.int64, count=len(bars)),
            open=np.fromiter((b.open for b in bars), dtype=np.float64, count=len(bars)),
            high=np.fromiter((b.high for b in bars), dtype=np.float64, count=len(bars)),
            low=np.fromiter((b.low for b in bars), dtype=np.float64, count=len(bars)),
            close=np.fromiter((b.close for b in bars), dtype=np.float64, count=len(bars)),
            volume=np.fromiter((b.volume for b in bars), dtype=np.float64, count=len(bars)),
            source=np.array([b.source for b in bars], dtype=object),
        )

    @staticmethod
    def concat(parts: Sequence[BarColumns]) -> BarColumns:
        """One block of several blocks of the same symbol, in the given order."""
        symbols = {p.symbol for p in parts}
        if len(symbols) != 1:
            raise ValueError(f"blocks of one symbol expected, got {sorted(symbols)}")
        return BarColumns(
            symbol=parts[0].symbol,
            ts=np.concatenate([p.ts for p in parts]),
            open=np.concatenate([p.open for p in parts]),
            high=np.concatenate([p.high for p in parts]),
            low=np.concatenate([p.low for p in parts]),
            close=np.concatenate([p.close for p in parts]),
            volume=np.concatenate([p.volume for p in parts]),
            source=np.concatenate([p.source for p in parts]),
        )

    def bars(self) -> list[Bar]:
        """The rows as ``Bar`` objects (re-validated; for callers that want objects, not the hot path)."""
        return [
            Bar(
                symbol=self.symbol,
                ts=datetime.fromtimestamp(int(t), UTC),
                open=float(o),
                high=float(h),
                low=float(lo),
                close=float(c),
                volume=float(v),
                source=str(s),
            )
            for t, o, h, lo, c, v, s in zip(
                self.ts, self.open, self.high, self.low, self.close, self.volume, self.source, strict=True
            )
        ]
