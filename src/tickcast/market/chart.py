"""Decoding Yahoo's v8 chart JSON into validated bars — shared by the HTTP client and the Airbyte decoder.

A chart result holds parallel arrays: ``timestamp[]`` and ``indicators.quote[0].{open,high,low,close,volume}``.
Yahoo sends ``null`` in all five arrays for some minutes, and includes the still-forming current minute;
:func:`chart_bars` drops both (a minute is closed once ``ts + 60 s <= meta.regularMarketTime``) and
reports every bar that fails validation instead of passing it on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tickcast.market.bar import Bar, BarError, parse_bar


class ChartError(ValueError):
    """The payload is not a usable chart result (or is Yahoo's error body); the message says which."""


@dataclass
class ChartBars:
    symbol: str
    bars: list[Bar] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (epoch ts, reason)
    skipped_null: int = 0
    skipped_forming: int = 0
    market_time: datetime | None = None


def chart_result(payload: Any) -> dict[str, Any]:
    """The single result of a chart response, or ChartError with Yahoo's own error text."""
    chart = payload.get("chart") if isinstance(payload, dict) else None
    if not isinstance(chart, dict):
        raise ChartError("not a Yahoo chart response: no 'chart' object")
    err = chart.get("error")
    if err:
        if isinstance(err, dict):
            raise ChartError(f"Yahoo chart error {_short(err.get('code'))}: {_short(err.get('description'))}")
        raise ChartError(f"Yahoo chart error: {_short(err)}")
    results = chart.get("result")
    if not isinstance(results, list) or not results or not isinstance(results[0], dict):
        raise ChartError("Yahoo chart response has no result")
    return dict(results[0])


def chart_bars(payload: Any, source: str, closed_only: bool = True, max_bars: int | None = None) -> ChartBars:
    """Validated bars of one chart response (closed minutes only unless ``closed_only=False``).

    Any payload, however malformed, gives either bars (each invalid row reported in ``rejected``) or a
    ``ChartError``; ``max_bars`` refuses a chart with more timestamps than that before reading any row.
    """
    result = chart_result(payload)
    meta = result.get("meta")
    if not isinstance(meta, dict):
        meta = {}
    symbol = meta.get("symbol")
    if not isinstance(symbol, str):
        raise ChartError("chart result has no meta.symbol")
    timestamps = result.get("timestamp") or []
    if not isinstance(timestamps, list):
        raise ChartError(f"{symbol[:40]!r}: timestamp is not an array")
    if max_bars is not None and len(timestamps) > max_bars:
        raise ChartError(f"{symbol[:40]!r}: {len(timestamps)} timestamps, more than {max_bars} in one chart")
    indicators = result.get("indicators") or {}
    quote_list = indicators.get("quote") if isinstance(indicators, dict) else None
    quotes = quote_list[0] if isinstance(quote_list, list) and quote_list else {}
    if not isinstance(quotes, dict):
        raise ChartError(f"{symbol[:40]!r}: indicators.quote[0] is not an object")
    columns = {k: quotes.get(k) or [] for k in ("open", "high", "low", "close", "volume")}
    for name, values in columns.items():
        if not isinstance(values, list):
            raise ChartError(f"{symbol[:40]!r}: quote.{name} is not an array")
        if len(values) != len(timestamps):
            raise ChartError(f"{symbol[:40]!r}: quote.{name} has {len(values)} values for {len(timestamps)} timestamps")
    out = ChartBars(symbol=symbol)
    market_epoch = _epoch(meta.get("regularMarketTime"))
    out.market_time = _utc(market_epoch)
    for i, raw_ts in enumerate(timestamps):
        row = {k: v[i] for k, v in columns.items()}
        if any(v is None for v in row.values()):
            out.skipped_null += 1
            continue
        ts = _epoch(raw_ts)
        when = _utc(ts)
        if ts is None or when is None:
            out.rejected.append((-1, f"timestamp {_short(raw_ts)} is not a Unix time in seconds"))
            continue
        if closed_only and market_epoch is not None and ts + 60 > market_epoch:
            out.skipped_forming += 1
            continue
        try:
            bar = parse_bar({"symbol": symbol, "ts": when, "source": source, **row})
        except BarError as err:
            out.rejected.append((ts, str(err)))
        else:
            out.bars.append(bar)
    return out


# Unix seconds a datetime can hold (years 1..9999); anything else is not a chart timestamp
_EPOCH_RANGE = (-62_135_596_800, 253_402_300_799)


def _epoch(value: Any) -> int | None:
    """``value`` as whole Unix seconds when it is a finite number a datetime can hold, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    seconds = int(value)
    return seconds if _EPOCH_RANGE[0] <= seconds <= _EPOCH_RANGE[1] else None


def _utc(epoch: int | None) -> datetime | None:
    if epoch is None:
        return None
    try:
        return datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _short(value: Any, limit: int = 200) -> str:
    """A value of untrusted size, for a message."""
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
