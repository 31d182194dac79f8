"""Whole sessions of the synthetic market as lake-schema frames, for tests of features, models and predictors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import pandas as pd

from emulators.yahoo import sessions
from emulators.yahoo.synthetic import SyntheticMarket


def session_bars(market: SyntheticMarket, symbol: str, days: Sequence[date]) -> pd.DataFrame:
    """Lake-schema bars (``symbol, ts, open, high, low, close, volume``) of ``symbol`` for whole sessions ``days``."""
    start, end = sessions.session_open(days[0]), sessions.session_close(days[-1])
    b = market.bars(symbol, start, end, now=end + 86_400)
    return pd.DataFrame(
        {
            "symbol": symbol,
            "ts": pd.to_datetime(b.ts, unit="s", utc=True).astype("datetime64[s, UTC]"),
            "open": b.open,
            "high": b.high,
            "low": b.low,
            "close": b.close,
            "volume": b.volume,
        }
    )
