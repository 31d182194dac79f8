"""The Yahoo chart-API emulator: Yahoo's shape and errors, determinism, the clock, tape replay, the oracle.

Everything runs in-process through httpx's ASGI transport (no server, no network). Data comes from the
synthetic market or from a tiny hand-made CSV written to tmp_path, never from the recorded tape.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from emulators.settings import load_stand_in_settings
from emulators.yahoo.app import create_app
from emulators.yahoo.clock import EmulatorClock, clock_from_setting
from emulators.yahoo.synthetic import SyntheticMarket, day_index
from emulators.yahoo.tape import TapeReplay
from tickcast.market.bar import parse_bar

NY = ZoneInfo("America/New_York")
# Tuesday 2026-11-24, 10:00:30 New York (EST) = 15:00:30Z
T0 = datetime(2026, 11, 24, 15, 0, 30, tzinfo=UTC)
SYMBOLS = ["SPY", "IBM"]

# Field names and JSON types of a real v8 chart response (interval=1m), written down by hand from Yahoo's
# documented/observed shape; only the shape is mirrored here, no real prices.
YAHOO_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "currency": str,
    "symbol": str,
    "exchangeName": str,
    "fullExchangeName": str,
    "instrumentType": str,
    "firstTradeDate": int,
    "regularMarketTime": int,
    "hasPrePostMarketData": bool,
    "gmtoffset": int,
    "timezone": str,
    "exchangeTimezoneName": str,
    "regularMarketPrice": float,
    "regularMarketDayHigh": float,
    "regularMarketDayLow": float,
    "regularMarketVolume": int,
    "chartPreviousClose": float,
    "previousClose": float,
    "scale": int,
    "priceHint": int,
    "currentTradingPeriod": dict,
    "tradingPeriods": list,
    "dataGranularity": str,
    "range": str,
    "validRanges": list,
}
YAHOO_PERIOD_TYPES = {"timezone": str, "start": int, "end": int, "gmtoffset": int}
QUOTE_FIELDS = {"open", "high", "low", "close", "volume"}


class Client:
    """A synchronous face over httpx.AsyncClient + ASGITransport."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
            return await client.request(method, url, **kwargs)

    def get(self, url: str, **params: Any) -> httpx.Response:
        return asyncio.run(self._request("GET", url, params=params))

    def post(self, url: str, body: dict[str, Any]) -> httpx.Response:
        return asyncio.run(self._request("POST", url, json=body))

    def chart(self, symbol: str = "SPY", **params: Any) -> dict[str, Any]:
        resp = self.get(f"/v8/finance/chart/{symbol}", interval="1m", **params)
        assert resp.status_code == 200, resp.text
        result: dict[str, Any] = resp.json()["chart"]["result"][0]
        return result


class FakeTicker:
    """The real clock an EmulatorClock runs on, moved by the test instead of by waiting."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_client(
    *,
    seed: int = 7,
    phi: float = 0.3,
    at: datetime = T0,
    speed: float = 0.0,
    null_fraction: float = 0.002,
    ticker: FakeTicker | None = None,
) -> Client:
    market = SyntheticMarket(seed, SYMBOLS, default_phi=phi, null_fraction=null_fraction)
    clock = EmulatorClock(at, speed, monotonic=ticker or FakeTicker())
    return Client(create_app(load_stand_in_settings(), clock=clock, source=market))


def bars_of(result: dict[str, Any]) -> list[tuple[Any, ...]]:
    quote = result["indicators"]["quote"][0]
    return list(zip(result["timestamp"], *(quote[k] for k in ("open", "high", "low", "close", "volume")), strict=True))


@pytest.fixture
def client() -> Client:
    return make_client()


# --- Yahoo's shape ----------------------------------------------------------------------------------


def test_response_has_yahoos_shape_and_types(client: Client) -> None:
    resp = client.get("/v8/finance/chart/SPY", interval="1m", range="1d", includePrePost="false")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"chart"} and set(body["chart"]) == {"result", "error"}
    assert body["chart"]["error"] is None
    result = body["chart"]["result"][0]
    assert {"meta", "timestamp", "indicators"} <= set(result)
    meta = result["meta"]
    for field, typ in YAHOO_META_TYPES.items():
        assert field in meta, field
        assert isinstance(meta[field], typ), (field, meta[field])
        if typ is int:
            assert not isinstance(meta[field], bool), field
    assert meta["symbol"] == "SPY" and meta["exchangeTimezoneName"] == "America/New_York"
    assert meta["dataGranularity"] == "1m" and meta["range"] == "1d"
    assert meta["regularMarketTime"] == int(T0.timestamp())
    assert meta["gmtoffset"] == -5 * 3600 and meta["timezone"] == "EST"
    assert set(meta["currentTradingPeriod"]) == {"pre", "regular", "post"}
    for period in [*meta["currentTradingPeriod"].values(), *(p for day in meta["tradingPeriods"] for p in day)]:
        assert {k: type(v) for k, v in period.items()} == YAHOO_PERIOD_TYPES
    regular = meta["currentTradingPeriod"]["regular"]
    assert datetime.fromtimestamp(regular["start"], NY).time().isoformat() == "09:30:00"
    assert regular["end"] - regular["start"] == 390 * 60
    assert meta["tradingPeriods"] == [[regular]]

    quote = result["indicators"]["quote"][0]
    assert set(quote) == QUOTE_FIELDS
    n = len(result["timestamp"])
    assert n == 31  # 09:30 ... 10:00 (the forming minute included)
    assert all(isinstance(t, int) for t in result["timestamp"])
    for k in QUOTE_FIELDS - {"volume"}:
        assert len(quote[k]) == n and all(v is None or isinstance(v, float) for v in quote[k])
    assert all(v is None or (isinstance(v, int) and v >= 0) for v in quote["volume"])


def test_period_request_reports_empty_range_and_one_trading_period_per_day(client: Client) -> None:
    start = datetime(2026, 11, 19, 14, 30, tzinfo=UTC)  # Thursday open
    result = client.chart(period1=int(start.timestamp()), period2=int((start + timedelta(days=4, hours=1)).timestamp()))
    assert result["meta"]["range"] == ""
    days = {datetime.fromtimestamp(t, NY).date() for t in result["timestamp"]}
    assert days == {date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 23)}
    assert len(result["meta"]["tradingPeriods"]) == 3
    assert len(result["timestamp"]) == 2 * 390 + 60  # period2 is exclusive: Monday 09:30-10:29


def test_window_without_bars_looks_like_yahoos_empty_chart(client: Client) -> None:
    sat = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
    result = client.chart(period1=int(sat.timestamp()), period2=int((sat + timedelta(hours=5)).timestamp()))
    assert "timestamp" not in result
    assert result["indicators"] == {"quote": [{}]}


# --- errors -----------------------------------------------------------------------------------------


def test_unknown_symbol_is_yahoos_404(client: Client) -> None:
    resp = client.get("/v8/finance/chart/NOPE", interval="1m", range="1d")
    assert resp.status_code == 404
    assert resp.json() == {
        "chart": {
            "result": None,
            "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
        }
    }


@pytest.mark.parametrize(
    ("params", "status", "starts_with"),
    [
        ({"interval": "7m"}, 422, "Invalid input - interval=7m is not supported. Valid intervals: [1m, 2m, 5m"),
        ({"interval": "5m"}, 422, "Invalid input - interval=5m is not supported"),
        ({"interval": "1m", "range": "1mo"}, 422, "1m data not available for startTime="),
        ({"interval": "1m", "range": "banana"}, 422, "Invalid input - range=banana is not supported"),
        ({"interval": "1m", "period1": "1", "period2": "2"}, 422, "1m data not available for startTime=1 and"),
        ({"interval": "1m", "period1": "200", "period2": "100"}, 400, "Invalid input - start date cannot be after"),
        ({"interval": "1m", "period1": "yesterday"}, 400, "Invalid input - period1=yesterday"),
    ],
)
def test_invalid_requests_get_yahoos_error_bodies(
    client: Client, params: dict[str, str], status: int, starts_with: str
) -> None:
    resp = client.get("/v8/finance/chart/SPY", **params)
    assert resp.status_code == status
    body = resp.json()["chart"]
    assert body["result"] is None
    assert body["error"]["code"] == {400: "Bad Request", 422: "Unprocessable Entity"}[status]
    assert body["error"]["description"].startswith(starts_with), body["error"]["description"]


def test_more_than_8_days_or_older_than_30_days_is_refused(client: Client) -> None:
    now = int(T0.timestamp())
    too_long = client.get("/v8/finance/chart/SPY", interval="1m", period1=now - 9 * 86400, period2=now)
    assert too_long.status_code == 422
    assert "Only 8 days worth of 1m granularity data are allowed to be fetched per request." in too_long.text
    too_old = client.get("/v8/finance/chart/SPY", interval="1m", period1=now - 35 * 86400, period2=now - 34 * 86400)
    assert too_old.status_code == 422
    assert "The requested range must be within the last 30 days." in too_old.text
    assert client.get("/v8/finance/chart/SPY", interval="1m", range="7d").status_code == 200


# --- the synthetic market ---------------------------------------------------------------------------


def test_same_seed_same_bars_other_seed_other_bars() -> None:
    a = make_client(seed=11).chart(range="5d")
    b = make_client(seed=11).chart(range="5d")
    c = make_client(seed=12).chart(range="5d")
    assert a == b
    assert a["timestamp"] == c["timestamp"]
    assert a["indicators"]["quote"][0]["close"] != c["indicators"]["quote"][0]["close"]


def test_overlapping_requests_give_identical_bars_on_the_overlap(client: Client) -> None:
    t = int(datetime(2026, 11, 17, 14, 30, tzinfo=UTC).timestamp())
    first = bars_of(client.chart(period1=t, period2=t + 3 * 86400))
    second = bars_of(client.chart(period1=t + 86400 + 7200, period2=t + 6 * 86400))
    recent = bars_of(client.chart(range="7d"))
    overlap = {b[0] for b in first} & {b[0] for b in second}
    assert len(overlap) > 390
    by_ts = [{b[0]: b for b in bars} for bars in (first, second, recent)]
    for ts in overlap:
        assert by_ts[0][ts] == by_ts[1][ts] == by_ts[2][ts]


def test_only_regular_session_minutes_of_weekdays(client: Client) -> None:
    result = client.chart(range="7d")
    assert result["meta"]["tradingPeriods"] and len(result["meta"]["tradingPeriods"]) == 7
    stamps = result["timestamp"]
    assert stamps == sorted(set(stamps))
    for t in stamps:
        local = datetime.fromtimestamp(t, NY)
        assert t % 60 == 0
        assert local.weekday() < 5
        assert (9, 30) <= (local.hour, local.minute) <= (15, 59)
    assert len(stamps) == 6 * 390 + 31


def test_every_non_null_bar_is_a_valid_bar_and_nulls_are_all_null() -> None:
    result = make_client(null_fraction=0.01).chart(range="7d")
    nulls = 0
    for ts, o, h, low, c, v in bars_of(result):
        if c is None:
            assert (o, h, low, v) == (None, None, None, None)
            nulls += 1
            continue
        parse_bar({"symbol": "SPY", "ts": datetime.fromtimestamp(ts, UTC), "open": o, "high": h, "low": low,
                   "close": c, "volume": v, "source": "emulator"})  # fmt: skip
    assert 0 < nulls < 0.03 * len(result["timestamp"])


def test_default_null_fraction_is_small_but_present() -> None:
    market = SyntheticMarket(7, SYMBOLS)
    start = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
    days = 0
    nulls = 0
    for k in range(4):  # ~ 80 sessions
        bars = market.bars("SPY", start + k * 8 * 86400, start + (k + 1) * 8 * 86400 - 1, now=2e9)
        nulls += int(np.sum(~bars.valid()))
        days += len(bars)
    assert 0 < nulls / days < 0.006


def test_prices_are_plausible_and_rounded(client: Client) -> None:
    result = client.chart(range="5d")
    closes = [c for c in result["indicators"]["quote"][0]["close"] if c is not None]
    assert all(5 < c < 2000 for c in closes)
    assert all(round(c, 4) == c for c in closes)
    rets = np.diff(np.log(closes))
    assert 2e-4 < float(np.median(np.abs(rets))) < 2e-3  # a few basis points a minute


def test_generation_is_fast() -> None:
    market = SyntheticMarket(3, ["SPY"])
    days = [date(2026, 11, 16) + timedelta(days=i) for i in range(9)]
    days = [d for d in days if d.weekday() < 5]
    market.block("SPY", days[:1])  # the daily level sequence is built once per symbol
    t0 = time.perf_counter()
    for _ in range(5):
        market._generate("SPY", days, [day_index(d) for d in days])
    per_call = (time.perf_counter() - t0) / 5
    assert per_call < 0.05, f"one symbol x {len(days)} days took {per_call * 1e3:.1f} ms"


# --- the clock --------------------------------------------------------------------------------------


def test_forming_minute_is_served_partial_and_a_new_minute_appears_after_60_s(client: Client) -> None:
    before = bars_of(client.chart(range="1d"))
    t_forming = int(datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp())
    assert before[-1][0] == t_forming
    assert client.post("/_emulator/clock", {"advance_s": 20}).status_code == 200
    later = bars_of(client.chart(range="1d"))
    assert later[:-1] == before[:-1]
    assert later[-1][0] == t_forming and later[-1] != before[-1]
    assert later[-1][5] >= before[-1][5]  # volume accumulates
    client.post("/_emulator/clock", {"advance_s": 40})
    after = bars_of(client.chart(range="1d"))
    assert [b[0] for b in after] == [b[0] for b in later] + [t_forming + 60]
    client.post("/_emulator/clock", {"advance_s": 3600})
    final = {b[0]: b for b in bars_of(client.chart(range="1d"))}
    assert after[-2] == final[t_forming]  # once closed, the minute never changes again
    for partial in (before[-1], later[-1]):
        _, o, h, low, _c, v = partial
        _, fo, fh, fl, _fc, fv = final[t_forming]
        assert o == fo and h <= fh and low >= fl and v <= fv


def test_frozen_clock_serves_nothing_new_and_a_running_one_does() -> None:
    ticker = FakeTicker()
    frozen = make_client(speed=0.0, ticker=ticker)
    first = frozen.chart(range="1d")
    ticker.t += 600  # ten real minutes
    assert frozen.chart(range="1d") == first
    running_ticker = FakeTicker()
    running = make_client(speed=900.0, ticker=running_ticker)
    n0 = len(running.chart(range="1d")["timestamp"])
    running_ticker.t += 0.15  # 135 emulated seconds: two more closed minutes
    assert len(running.chart(range="1d")["timestamp"]) >= n0 + 2


def test_clock_endpoints_and_health(client: Client) -> None:
    assert client.get("/_emulator/clock").json()["now"] == "2026-11-24T15:00:30Z"
    state = client.post("/_emulator/clock", {"set": "2026-11-23T20:00:00Z", "advance_s": -60}).json()
    assert state["now"] == "2026-11-23T19:59:00Z" and state["speed"] == 0.0
    assert client.post("/_emulator/clock", {"speed": 2.5}).json()["speed"] == 2.5
    assert client.post("/_emulator/clock", {}).status_code == 422
    assert client.post("/_emulator/clock", {"set": "not a time"}).status_code == 422
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["mode"] == "synthetic" and health["clock"].startswith("2026-11-23T19:59")


def test_clock_runs_at_its_speed_and_can_be_set() -> None:
    ticker = FakeTicker()
    clock = EmulatorClock(T0, 100.0, monotonic=ticker)
    ticker.t += 0.05
    assert (clock.now() - T0).total_seconds() == pytest.approx(5.0)
    clock.set_speed(0)
    clock.set(T0)
    clock.advance(90)
    assert clock.now() == T0 + timedelta(seconds=90)


@pytest.mark.parametrize(
    ("real_now", "expected"),
    [
        (datetime(2026, 11, 28, 12, 0, tzinfo=UTC), datetime(2026, 11, 27, 16, 30, tzinfo=UTC)),  # Sat -> Fri
        (datetime(2026, 11, 24, 13, 0, tzinfo=UTC), datetime(2026, 11, 23, 16, 30, tzinfo=UTC)),  # Tue pre-open
        (datetime(2026, 11, 24, 18, 0, tzinfo=UTC), datetime(2026, 11, 24, 16, 30, tzinfo=UTC)),  # Tue in session
        (datetime(2026, 7, 1, 18, 0, tzinfo=UTC), datetime(2026, 7, 1, 15, 30, tzinfo=UTC)),  # summer time
    ],
)
def test_session_clock_starts_two_hours_into_the_latest_session(real_now: datetime, expected: datetime) -> None:
    assert clock_from_setting("session", 0, real_now=real_now).now() == expected


def test_clock_setting_now_iso_and_tape_day() -> None:
    real_now = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
    assert clock_from_setting("now", 0, real_now=real_now).now() == real_now
    assert clock_from_setting("2026-01-02T15:00:00Z", 0).now() == datetime(2026, 1, 2, 15, tzinfo=UTC)
    assert clock_from_setting("session", 0, session_day=date(2013, 10, 11), real_now=real_now).now() == datetime(
        2013, 10, 11, 15, 30, tzinfo=UTC
    )
    # emulated minutes close when real minutes do: the seconds within the minute are kept
    mid_minute = datetime(2026, 11, 24, 18, 0, 42, 500_000, tzinfo=UTC)
    clock = clock_from_setting("session", 0, session_day=date(2013, 10, 11), real_now=mid_minute)
    assert clock.now() == datetime(2013, 10, 11, 15, 30, 42, 500_000, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO-8601"):
        clock_from_setting("tomorrow", 1)


# --- tape replay ------------------------------------------------------------------------------------

TAPE_ROWS = [  # hand-made: 2013-10-04 13:30Z = 09:30 EDT, 13:33Z missing on purpose
    "2013-10-04T13:30:00Z,100.00,100.20,99.90,100.10,1000",
    "2013-10-04T13:31:00Z,100.10,100.30,100.00,100.25,800",
    "2013-10-04T13:32:00Z,100.25,100.40,100.05,100.15,600",
    "2013-10-04T13:34:00Z,100.15,100.15,99.80,99.85,700",
    "2013-10-04T13:35:00Z,99.85,100.00,99.70,99.95,900",
]


@pytest.fixture
def tape_client(tmp_path: Path) -> Client:
    with gzip.open(tmp_path / "TST.csv.gz", "wt") as fh:
        fh.write("ts,open,high,low,close,volume\n" + "\n".join(TAPE_ROWS) + "\n")
    clock = EmulatorClock(datetime(2013, 10, 4, 13, 32, 30, tzinfo=UTC), 0)
    return Client(create_app(load_stand_in_settings(), clock=clock, source=TapeReplay(tmp_path)))


def test_tape_replay_follows_the_clock_and_keeps_gaps(tape_client: Client) -> None:
    start = int(datetime(2013, 10, 4, 13, 30, tzinfo=UTC).timestamp())
    result = tape_client.chart("TST", range="1d")
    bars = bars_of(result)
    assert [b[0] for b in bars] == [start, start + 60, start + 120]
    assert bars[0] == (start, 100.0, 100.2, 99.9, 100.1, 1000)
    assert bars[2][1] == 100.25 and bars[2][5] == 300  # forming: halfway through the minute
    assert result["meta"]["regularMarketTime"] == start + 150
    assert result["meta"]["firstTradeDate"] == start
    tape_client.post("/_emulator/clock", {"advance_s": 300})
    bars = bars_of(tape_client.chart("TST", range="1d"))
    assert [b[0] - start for b in bars] == [0, 60, 120, 240, 300]  # 13:33 stays missing
    assert bars[-1] == (start + 300, 99.85, 100.0, 99.7, 99.95, 900)
    assert tape_client.get("/v8/finance/chart/SPY", interval="1m").status_code == 404
    assert tape_client.get("/health").json()["mode"] == "tape"
    oracle = tape_client.get("/_emulator/oracle/TST")
    assert oracle.status_code == 409 and "synthetic" in oracle.json()["error"]


def test_tape_session_clock_defaults_to_the_tapes_last_day(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "TST.csv.gz", "wt") as fh:
        fh.write("ts,open,high,low,close,volume\n" + "\n".join(TAPE_ROWS) + "\n")
    tape = TapeReplay(tmp_path)
    assert tape.symbols() == ["TST"]
    assert tape.default_session_day(datetime.now(UTC)) == date(2013, 10, 4)


# --- the oracle -------------------------------------------------------------------------------------


def _rmse(a: Any, b: Any) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


@pytest.mark.parametrize("phi", [0.3, 0.0])
def test_oracle_beats_persistence_exactly_when_returns_are_autocorrelated(phi: float) -> None:
    market = SyntheticMarket(7, ["SPY", "IBM", "AIG", "BAC"], default_phi=phi)
    start, end = datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC)  # 5 sessions
    for symbol in market.symbols():
        frame = market.oracle_frame(symbol, start, end)
        assert list(frame.columns) == ["ts", "close", "next_close", "oracle"]
        assert len(frame) == 5 * 390
        scored = frame.dropna()
        assert len(scored) == 5 * 389  # the last minute of a day has no next bar
        oracle = _rmse(scored["oracle"], scored["next_close"])
        persistence = _rmse(scored["close"], scored["next_close"])
        theory = market.oracle_rmse(symbol, start, end)
        assert abs(oracle / theory - 1) < 0.1
        if phi == 0.3:
            assert oracle < 0.975 * persistence, (symbol, oracle, persistence)
        else:
            assert abs(oracle / persistence - 1) < 1e-3, (symbol, oracle, persistence)
        ts = scored["ts"].iloc[10].to_pydatetime()
        assert math.isclose(market.oracle_next_close(symbol, ts), scored["oracle"].iloc[10])


def test_oracle_endpoint_lists_only_bars_whose_next_bar_has_closed(client: Client) -> None:
    body = client.get("/_emulator/oracle/SPY").json()
    assert body["phi"] == 0.3 and 3e-4 <= body["sigma"] <= 8e-4
    open_ = int(datetime(2026, 11, 24, 14, 30, tzinfo=UTC).timestamp())
    assert body["ts"][0] == open_ and body["ts"][-1] + 120 <= int(T0.timestamp())
    served = {b[0]: b[4] for b in bars_of(client.chart(range="1d"))}
    for ts, nxt in zip(body["ts"], body["next_close"], strict=True):
        assert served[ts + 60] is None or abs(served[ts + 60] - nxt) < 1e-4
    assert client.get("/_emulator/oracle/NOPE").status_code == 404
