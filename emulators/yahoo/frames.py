"""Synthetic-market data as lake-shaped DataFrames, for tests and benchmarks that need bars without a server.

``lake_frame`` gives the same bars the emulator would serve (closed minutes, nulls dropped) in the lake's
column layout; ``oracle_function`` gives the generating process's best next-close forecast for given
minutes, in the shape ``tickcast.model.training.train(oracle=...)`` expects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from emulators.yahoo import sessions
from emulators.yahoo.synthetic import SyntheticMarket


def lake_frame(market: SyntheticMarket, symbols: Sequence[str], days: int, end_epoch: float) -> pd.DataFrame:
    """The last ``days`` complete sessions before ``end_epoch`` of every symbol, lake columns, nulls dropped."""
    session_days = sessions.recent_sessions(end_epoch, days + 1)[:-1] if days else []
    if not session_days:
        raise ValueError("ask for at least one day")
    start = sessions.session_open(session_days[0])
    end = sessions.session_open(session_days[-1]) + 24 * 3600
    frames = []
    for sym in symbols:
        b = market.bars(sym, start, end, now=end + 3600)
        frame = pd.DataFrame(
            {
                "symbol": sym,
                "ts": pd.to_datetime(b.ts, unit="s", utc=True),
                "open": b.open,
                "high": b.high,
                "low": b.low,
                "close": b.close,
                "volume": b.volume,
                "source": "synthetic",
                "ingested_at": pd.Timestamp.now(tz="UTC"),
            }
        )
        frames.append(frame.dropna(subset=["open", "high", "low", "close", "volume"]))
    out = pd.concat(frames, ignore_index=True)
    out["ts"] = out["ts"].astype("datetime64[s, UTC]")
    return out


def oracle_function(market: SyntheticMarket) -> Callable[[str, pd.Series], np.ndarray]:
    """(symbol, as-of minutes) -> the oracle's forecast of the next close (NaN where the next bar is unknown)."""

    def oracle(symbol: str, ts: pd.Series) -> np.ndarray:
        stamps = pd.to_datetime(ts, utc=True)
        p1 = int(stamps.min().timestamp())
        p2 = int(stamps.max().timestamp()) + 60
        cols = market.oracle_arrays(symbol, p1, p2)
        lookup = pd.Series(cols["oracle"], index=pd.to_datetime(cols["ts"], unit="s", utc=True))
        return np.asarray(lookup.reindex(stamps).to_numpy(), dtype=float)

    return oracle
