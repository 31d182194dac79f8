"""Column-wise bars: :class:`BarArrays`, one symbol's bars as NumPy arrays (the serving hot path's shape).

A request of 100 bars costs ~10 ms as pandas frames and pydantic models, ~0.1 ms as six arrays. The feature
code (:mod:`tickcast.features.indicators`) works on this shape underneath its pandas entry points, so training
(frames) and serving (arrays) share one implementation. NumPy only: it loads in the AML serving environment.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["BarArrays"]


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
