"""Replay of recorded 1-minute bars (``SYMBOL.csv.gz`` files, header ``ts,open,high,low,close,volume``).

Files are read lazily from the tape directory at run time (the recorded data stays where it is; the
emulator never copies it). Bars are served with the tape's own timestamps, so the clock runs in
tape time (the shared tape covers 2013-10-04 … 2013-10-11) and only bars that started by the clock
are served. Minutes missing from a file stay missing; the tape has no null minutes. The still-forming
minute is the recorded bar interpolated toward its final values (:func:`source.interpolate_partial`).
Session days are the New York dates present in the symbol's file.
"""

from __future__ import annotations

import csv
import gzip
import threading
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

import numpy as np

from emulators.yahoo import sessions
from emulators.yahoo.source import Bars, interpolate_partial

SUFFIX = ".csv.gz"
COLUMNS = ["ts", "open", "high", "low", "close", "volume"]


class TapeError(ValueError):
    """A tape file is missing or malformed; the message names the file."""


def _read(path: Path) -> Bars:
    with gzip.open(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != COLUMNS:
            raise TapeError(f"{path}: header must be {','.join(COLUMNS)}, got {header}")
        rows = [r for r in reader if r]
    try:
        ts = np.array([int(datetime.fromisoformat(r[0]).timestamp()) for r in rows], dtype=np.int64)
        vals = np.array([[float(x) for x in r[1:6]] for r in rows], dtype=np.float64).reshape(-1, 5)
    except (ValueError, IndexError) as err:
        raise TapeError(f"{path}: unreadable row ({err})") from None
    order = np.argsort(ts, kind="stable")
    ts, vals = ts[order], vals[order]
    return Bars(ts, vals[:, 0], vals[:, 1], vals[:, 2], vals[:, 3], vals[:, 4])


class TapeReplay:
    """Bars of the symbols whose ``SYMBOL.csv.gz`` is in ``tape_dir`` (optionally only ``symbols``)."""

    mode = "tape"

    def __init__(self, tape_dir: Path | str, symbols: Iterable[str] | None = None) -> None:
        self.tape_dir = Path(tape_dir)
        present = (
            sorted(p.name[: -len(SUFFIX)] for p in self.tape_dir.glob(f"*{SUFFIX}")) if self.tape_dir.is_dir() else []
        )
        wanted = None if symbols is None else set(symbols)
        self._symbols = [s for s in present if wanted is None or s in wanted]
        self._bars: dict[str, Bars] = {}
        self._days: dict[str, list[date]] = {}
        self._lock = threading.Lock()

    def symbols(self) -> list[str]:
        return list(self._symbols)

    def has_symbol(self, symbol: str) -> bool:
        return symbol in self._symbols

    def load(self, symbol: str) -> Bars:
        """All bars of ``symbol`` (read on first use)."""
        with self._lock:
            bars = self._bars.get(symbol)
            if bars is None:
                if symbol not in self._symbols:
                    raise TapeError(f"no tape for {symbol} in {self.tape_dir}")
                bars = _read(self.tape_dir / f"{symbol}{SUFFIX}")
                self._bars[symbol] = bars
                self._days[symbol] = sorted({sessions.ny_date(int(t)) for t in bars.ts})
            return bars

    def session_days(self, symbol: str) -> list[date]:
        self.load(symbol)
        return self._days[symbol]

    def bars(self, symbol: str, start: int, end: int, now: float) -> Bars:
        all_bars = self.load(symbol)
        out = all_bars.select((all_bars.ts >= start) & (all_bars.ts < end) & (all_bars.ts <= now))
        if len(out) and out.ts[-1] + sessions.BAR_SECONDS > now:
            out = out.select(np.ones(len(out), dtype=bool))  # a copy we may change
            i = len(out) - 1
            po, ph, pl, pc, pv = interpolate_partial(
                float(out.open[i]),
                float(out.high[i]),
                float(out.low[i]),
                float(out.close[i]),
                float(out.volume[i]),
                (now - float(out.ts[i])) / sessions.BAR_SECONDS,
            )
            out.open[i], out.high[i], out.low[i], out.close[i], out.volume[i] = po, ph, pl, pc, pv
        return out

    def recent_sessions(self, symbol: str, now: float, n: int) -> list[date]:
        started = [d for d in self.session_days(symbol) if sessions.session_open(d) <= now]
        return started[-n:]

    def last_close_before(self, symbol: str, epoch: float) -> float | None:
        bars = self.load(symbol)
        i = int(np.searchsorted(bars.ts, epoch, side="left"))
        return float(bars.close[i - 1]) if i > 0 else None

    def first_trade_epoch(self, symbol: str) -> int:
        days = self.session_days(symbol)
        return sessions.session_open(days[0]) if days else 0

    def last_day(self) -> date | None:
        """The last New York date in any tape file (``"session"`` clock start in tape mode)."""
        last = [self.session_days(s)[-1] for s in self._symbols if self.session_days(s)]
        return max(last) if last else None

    def default_session_day(self, real_now: datetime) -> date:
        day = self.last_day()
        return day if day is not None else sessions.latest_session_started(real_now.timestamp())
