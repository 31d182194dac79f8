"""Decoding Yahoo's v8 chart JSON into validated bars — shared by the HTTP client and the Airbyte decoder.

A chart result holds parallel arrays: ``timestamp[]`` and ``indicators.quote[0].{open,high,low,close,volume}``.
Yahoo sends ``null`` in all five arrays for some minutes, and includes the still-forming current minute;
:func:`chart_bars` drops both (a minute is closed once ``ts + 60 s <= meta.regularMarketTime``) and
reports every bar that fails validation instead of passing it on.
"""

from __future__ import annotations

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


def chart_result(payload: dict[str, Any]) -> dict[str, Any]:
    """The single result of a chart response, or ChartError with Yahoo's own error text."""
    chart = payload.get("chart") if isinstance(payload, dict) else None
    if not isinstance(chart, dict):
        raise ChartError("not a Yahoo chart response: no 'chart' object")
    err = chart.get("error")
    if err:
        raise ChartError(f"Yahoo chart error {err.get('code')}: {err.get('description')}")
    results = chart.get("result") or []
    if not results or not isinstance(results[0], dict):
        raise ChartError("Yahoo chart response has no result")
    return dict(results[0])


def chart_bars(payload: dict[str, Any], source: str, closed_only: bool = True) -> ChartBars:
    """Validated bars of one chart response (closed minutes only unless ``closed_only=False``)."""
    result = chart_result(payload)
    meta = result.get("meta") or {}
    symbol = meta.get("symbol")
    if not isinstance(symbol, str):
        raise ChartError("chart result has no meta.symbol")
    timestamps = result.get("timestamp") or []
    quotes = ((result.get("indicators") or {}).get("quote") or [{}])[0]
    columns = {k: quotes.get(k) or [] for k in ("open", "high", "low", "close", "volume")}
    for name, values in columns.items():
        if len(values) != len(timestamps):
            raise ChartError(f"{symbol}: quote.{name} has {len(values)} values for {len(timestamps)} timestamps")
    market_time = meta.get("regularMarketTime")
    out = ChartBars(symbol=symbol)
    if isinstance(market_time, int | float):
        out.market_time = datetime.fromtimestamp(int(market_time), UTC)
    for i, ts in enumerate(timestamps):
        row = {k: v[i] for k, v in columns.items()}
        if any(v is None for v in row.values()):
            out.skipped_null += 1
            continue
        if closed_only and market_time is not None and ts + 60 > market_time:
            out.skipped_forming += 1
            continue
        try:
            out.bars.append(
                parse_bar(
                    {
                        "symbol": symbol,
                        "ts": datetime.fromtimestamp(int(ts), UTC),
                        "source": source,
                        **row,
                    }
                )
            )
        except (BarError, TypeError, ValueError, OverflowError) as err:
            out.rejected.append((int(ts) if isinstance(ts, int | float) else -1, str(err)))
    return out
