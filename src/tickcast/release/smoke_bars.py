"""Where a smoke request's bars come from: the newest real session of a symbol in the lake."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tickcast.features.indicators import bars_needed
from tickcast.scoring.contract import MAX_BARS
from tickcast.settings import Settings

if TYPE_CHECKING:
    from tickcast.lake.store import Lake

from tickcast.release.state import BarRows, SmokeBars

log = logging.getLogger(__name__)


# --- smoke bars -------------------------------------------------------------------------------------------


def _bar_rows(frame: Any) -> list[dict[str, Any]]:
    """Lake rows as ``POST /score`` bars (ts ISO-8601 Z)."""
    rows = []
    for rec in frame.sort_values("ts").itertuples(index=False):
        rows.append(
            {
                "ts": rec.ts.isoformat().replace("+00:00", "Z"),
                "open": float(rec.open),
                "high": float(rec.high),
                "low": float(rec.low),
                "close": float(rec.close),
                "volume": float(rec.volume),
            }
        )
    return rows


class LakeSmokeBars:
    """``symbol -> bars``: the newest session in the lake with at least ``min_bars`` bars (or the longest seen).

    ``min_bars`` defaults to what a model with ``settings.model.window`` needs; up to ``max_days`` day
    files are read, newest first. ``None`` when the lake has no bars for the symbol.
    """

    def __init__(
        self, settings: Settings, lake: Lake | None = None, *, min_bars: int | None = None, max_days: int = 5
    ) -> None:

        self.settings = settings
        self._lake = lake
        self.min_bars = min_bars if min_bars is not None else bars_needed(settings.model.window)
        self.max_days = max_days

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            from tickcast.lake.store import Lake

            self._lake = Lake.from_settings(self.settings)
        return self._lake

    def __call__(self, symbol: str) -> list[dict[str, Any]] | None:

        best: list[dict[str, Any]] = []
        for day in reversed(self.lake.days(symbol)[-self.max_days :]):
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            frame = self.lake.read(symbol, start, start + timedelta(days=1))
            rows = _bar_rows(frame)[-MAX_BARS:]
            if len(rows) >= self.min_bars:
                return rows
            if len(rows) > len(best):
                best = rows
        return best or None


def _ts_key(bar: Mapping[str, Any]) -> float:
    ts = bar["ts"]
    if isinstance(ts, int | float):
        return float(ts)
    if isinstance(ts, datetime):
        return ts.timestamp()
    return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()


def _as_source(smoke_bars: SmokeBars) -> Callable[[str], BarRows | None]:
    if isinstance(smoke_bars, Mapping):
        table = smoke_bars
        return lambda symbol: table.get(symbol)
    return smoke_bars
