"""Yahoo's v8 chart API as data: request validation, Yahoo's error bodies, and the response JSON.

The response mirrors ``query1.finance.yahoo.com/v8/finance/chart/{symbol}?interval=1m``:
``{"chart": {"result": [{"meta": {...}, "timestamp": [...], "indicators": {"quote": [{open, high,
low, close, volume}]}}], "error": null}}``. As on Yahoo, a window without bars has no ``timestamp``
key and ``"quote": [{}]``; a null minute has ``null`` in all five arrays; epoch times are ints,
prices floats, volumes ints; ``range`` is ``""`` for ``period1``/``period2`` requests.

Rules mirrored from Yahoo (errors are ``{"chart": {"result": null, "error": {"code", "description"}}}``):

* ``interval`` must be one of Yahoo's (``1m 2m 5m 15m 30m 60m 90m 1h 4h 1d 5d 1wk 1mo 3mo``), else 422
  with Yahoo's "Invalid input - interval=… is not supported" text; the emulator serves only ``1m``
  (another valid interval: 422 saying so). Default ``1m``.
* ``range``: ``Nd`` with N ≤ 7 = the N most recent sessions that began by the clock (``1d`` = the
  current or last session); longer ranges (``8d``…, ``1mo``, ``1y``, ``max`` …) fail Yahoo's
  "Only 8 days worth of 1m granularity data" check; an unparseable range → 422. Default ``1d``.
* ``period1``/``period2`` (epoch seconds; they win over ``range``): bars with ``period1 <= ts < period2``;
  ``period2`` defaults to now and is clamped to the clock. More than 8 days between them → 422 "Only 8
  days worth…"; ``period1`` older than 30 days before the clock → 422 "…within the last 30 days"
  (the span check comes first, as on Yahoo); ``period1 > period2`` → 400.
* Prices carry ``priceHint + 2`` decimals (4 for stocks above $1), like Yahoo's sub-penny 1m values.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from emulators.yahoo import sessions
from emulators.yahoo.source import Bars, MarketSource

VALID_INTERVALS = ["1m", "2m", "5m", "15m", "30m", "60m", "90m", "1h", "4h", "1d", "5d", "1wk", "1mo", "3mo"]
SUPPORTED_INTERVALS = ["1m"]
VALID_RANGES = ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"]
MAX_RANGE_SESSIONS = 7
MAX_SPAN_DAYS = 8
MAX_AGE_DAYS = 30

_RANGE_RE = re.compile(r"^(\d+)(d|wk|mo|y)$")
_RANGE_DAYS = {"d": 1, "wk": 7, "mo": 30, "y": 365}

# exchangeName, fullExchangeName, instrumentType as Yahoo reports them; others default to Nasdaq stocks
_LISTINGS: dict[str, tuple[str, str, str]] = {
    "SPY": ("PCX", "NYSEArca", "ETF"),
    "IWM": ("PCX", "NYSEArca", "ETF"),
    "DIA": ("PCX", "NYSEArca", "ETF"),
    "QQQ": ("NMS", "NasdaqGM", "ETF"),
    "IBM": ("NYQ", "NYSE", "EQUITY"),
    "AIG": ("NYQ", "NYSE", "EQUITY"),
    "BAC": ("NYQ", "NYSE", "EQUITY"),
}
_DEFAULT_LISTING = ("NMS", "NasdaqGS", "EQUITY")


class ChartError(Exception):
    """An error Yahoo answers with ``{"chart": {"result": null, "error": {...}}}``."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description

    def body(self) -> dict[str, Any]:
        return {"chart": {"result": None, "error": {"code": self.code, "description": self.description}}}


def not_found() -> ChartError:
    return ChartError(404, "Not Found", "No data found, symbol may be delisted")


def _unprocessable(description: str) -> ChartError:
    return ChartError(422, "Unprocessable Entity", description)


def _bad_request(description: str) -> ChartError:
    return ChartError(400, "Bad Request", description)


def _span_error(interval: str, start: int, end: int) -> ChartError:
    return _unprocessable(
        f"{interval} data not available for startTime={start} and endTime={end}. "
        f"Only {MAX_SPAN_DAYS} days worth of {interval} granularity data are allowed to be fetched per request."
    )


def _age_error(interval: str, start: int, end: int) -> ChartError:
    return _unprocessable(
        f"{interval} data not available for startTime={start} and endTime={end}. "
        f"The requested range must be within the last {MAX_AGE_DAYS} days."
    )


@dataclass(frozen=True)
class Window:
    """What one chart request asks for: bars with ``start <= ts < end`` and the sessions it spans."""

    start: int
    end: int
    range_label: str  # Yahoo's meta.range: the range asked for, "" for period1/period2
    days: list[date]


def check_interval(interval: str | None) -> str:
    value = interval or "1m"
    if value not in VALID_INTERVALS:
        raise _unprocessable(
            f"Invalid input - interval={value} is not supported. Valid intervals: [{', '.join(VALID_INTERVALS)}]"
        )
    if value not in SUPPORTED_INTERVALS:
        raise _unprocessable(
            f"Invalid input - interval={value} is not supported by this emulator. "
            f"Supported intervals: [{', '.join(SUPPORTED_INTERVALS)}]"
        )
    return value


def _parse_epoch(name: str, value: str) -> int:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise _bad_request(f"Invalid input - {name}={value} is not a number of epoch seconds")
    return math.floor(number)


def resolve_window(
    source: MarketSource,
    symbol: str,
    now: float,
    *,
    interval: str,
    range_: str | None,
    period1: str | None,
    period2: str | None,
) -> Window:
    """Turn ``range`` or ``period1``/``period2`` into a window, or raise Yahoo's error."""
    now_s = math.floor(now)
    if period1 is not None or period2 is not None:
        p1 = _parse_epoch("period1", period1) if period1 is not None else 0
        p2 = _parse_epoch("period2", period2) if period2 is not None else now_s
        if p1 > p2:
            raise _bad_request(f"Invalid input - start date cannot be after end date. startDate = {p1}, endDate = {p2}")
        end = min(p2, now_s + 1)
        if min(p2, now_s) - p1 > MAX_SPAN_DAYS * sessions.DAY_SECONDS:
            raise _span_error(interval, p1, min(p2, now_s))
        if p1 < now_s - MAX_AGE_DAYS * sessions.DAY_SECONDS:
            raise _age_error(interval, p1, min(p2, now_s))
        return Window(p1, max(end, p1), "", sessions.sessions_overlapping(p1, max(end, p1)))
    label = range_ or "1d"
    match = _RANGE_RE.match(label)
    if label not in ("ytd", "max") and not match:
        raise _unprocessable(
            f"Invalid input - range={label} is not supported. Valid ranges: [{', '.join(VALID_RANGES)}]"
        )
    if match and match.group(2) == "d" and 1 <= int(match.group(1)) <= MAX_RANGE_SESSIONS:
        days = source.recent_sessions(symbol, now, int(match.group(1)))
        if not days:
            return Window(now_s + 1, now_s + 1, label, [])
        return Window(sessions.session_open(days[0]), now_s + 1, label, days)
    if label == "max":
        start = 0
    elif label == "ytd":
        start = sessions.local_epoch(date(sessions.ny_date(now).year, 1, 1), sessions.PRE_OPEN)
    else:
        assert match is not None
        start = now_s - int(match.group(1)) * _RANGE_DAYS[match.group(2)] * sessions.DAY_SECONDS
    raise _span_error(interval, start, now_s)


def _decimals(price: float | None) -> tuple[int, int]:
    """Yahoo's priceHint for a price, and the decimals the emulator keeps (priceHint + 2)."""
    hint = 2 if price is None or price >= 1.0 else 4
    return hint, hint + 2


def _price(value: float | None, decimals: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), decimals)


def _column(values: np.ndarray, decimals: int) -> list[float | None]:
    rounded = np.round(values, decimals)
    return [None if not math.isfinite(v) else float(v) for v in rounded.tolist()]


def _volumes(values: np.ndarray) -> list[int | None]:
    return [None if not math.isfinite(v) else int(v) for v in values.tolist()]


def chart_result(source: MarketSource, symbol: str, window: Window, now: float, interval: str) -> dict[str, Any]:
    """The whole JSON body of a successful chart request."""
    bars = source.bars(symbol, window.start, window.end, now) if window.end > window.start else Bars.empty()
    current = source.recent_sessions(symbol, now, 1)
    if current:
        today = source.bars(symbol, sessions.session_open(current[0]), sessions.session_close(current[0]), now)
        previous_close = source.last_close_before(symbol, sessions.session_open(current[0]))
    else:
        today, previous_close = Bars.empty(), None
    ok = today.valid()
    market_price = float(today.close[ok][-1]) if ok.any() else source.last_close_before(symbol, now)
    day_high = float(np.max(today.high[ok])) if ok.any() else market_price
    day_low = float(np.min(today.low[ok])) if ok.any() else market_price
    day_volume = int(np.sum(today.volume[ok])) if ok.any() else 0
    chart_previous = source.last_close_before(symbol, int(bars.ts[0]) if len(bars) else window.start)
    if previous_close is None:
        previous_close = chart_previous
    if market_price is None:
        market_price = previous_close
    hint, decimals = _decimals(market_price)
    exchange, full_exchange, instrument = _LISTINGS.get(symbol, _DEFAULT_LISTING)
    abbrev, offset = sessions.tz_abbrev_and_offset(now)
    today_cal = sessions.ny_date(now)
    period_day = today_cal if sessions.is_session_day(today_cal) else sessions.latest_session_started(now)
    meta: dict[str, Any] = {
        "currency": "USD",
        "symbol": symbol,
        "exchangeName": exchange,
        "fullExchangeName": full_exchange,
        "instrumentType": instrument,
        "firstTradeDate": int(source.first_trade_epoch(symbol)),
        "regularMarketTime": math.floor(now),
        "hasPrePostMarketData": True,
        "gmtoffset": offset,
        "timezone": abbrev,
        "exchangeTimezoneName": sessions.EXCHANGE_TZ_NAME,
        "regularMarketPrice": _price(market_price, decimals),
        "regularMarketDayHigh": _price(day_high, decimals),
        "regularMarketDayLow": _price(day_low, decimals),
        "regularMarketVolume": day_volume,
        "longName": f"{symbol} ({source.mode} market, tickcast emulator)",
        "shortName": symbol,
        "chartPreviousClose": _price(chart_previous, decimals),
        "previousClose": _price(previous_close, decimals),
        "scale": 3,
        "priceHint": hint,
        "currentTradingPeriod": sessions.trading_periods(period_day),
        "tradingPeriods": [[sessions.regular_period(d)] for d in window.days],
        "dataGranularity": interval,
        "range": window.range_label,
        "validRanges": list(VALID_RANGES),
    }
    result: dict[str, Any] = {"meta": meta}
    if len(bars):
        result["timestamp"] = [int(t) for t in bars.ts.tolist()]
        result["indicators"] = {
            "quote": [
                {
                    "open": _column(bars.open, decimals),
                    "high": _column(bars.high, decimals),
                    "low": _column(bars.low, decimals),
                    "close": _column(bars.close, decimals),
                    "volume": _volumes(bars.volume),
                }
            ]
        }
    else:
        result["indicators"] = {"quote": [{}]}
    return {"chart": {"result": [result], "error": None}}
