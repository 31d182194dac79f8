"""Market data contracts: bar validation, chart decoding, the Airbyte envelope, message decoding, client retries.

The Yahoo client's retry policy is exercised with httpx.MockTransport standing in for the remote API
(status sequences such as 503-then-200 cannot be provoked from the emulator); everything else runs on
the real code paths.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tickcast.ingest.messages import UndecodableMessage, dead_letter, decode_value, encode_bar
from tickcast.market.airbyte import decode_airbyte_record
from tickcast.market.bar import BarError, parse_bar
from tickcast.market.chart import ChartError, chart_bars
from tickcast.market.yahoo import YahooClient, YahooError, YahooUnavailable
from tickcast.settings import load_settings

T0 = 1763994600  # 2025-11-24 14:30:00Z, a minute boundary
GOOD = {
    "symbol": "SPY",
    "ts": "2025-11-24T14:30:00Z",
    "open": 10.0,
    "high": 10.5,
    "low": 9.5,
    "close": 10.2,
    "volume": 100,
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"high": 10.1}, "high 10.1 is below max(open 10.0, close 10.2)"),
        ({"low": 10.1}, "low 10.1 is above min(open 10.0, close 10.2)"),
        ({"volume": -1}, "volume -1.0 is negative"),
        ({"close": float("nan")}, "not a finite positive number"),
        ({"open": 0}, "not a finite positive number"),
        ({"ts": "2025-11-24T14:30:05Z"}, "not on a minute boundary"),
        ({"ts": "2025-11-24T14:30:00"}, "no time zone"),
        ({"symbol": "spy"}, "not a ticker"),
        ({"symbol": "WAY-TOO-LONG-SYMBOL"}, "not a ticker"),
        ({"symbol": "SPY\n"}, "not a ticker"),  # ``$`` matched before a final newline; it became a blob path
        ({"ts": "2025-11-24T09:30:00-05:00"}, "not in UTC"),
        ({"ts": "0001-01-01T00:00:00+01:00"}, "not in UTC"),  # was an OverflowError out of the validator
        ({"ts": "9999-12-31T23:59:00-01:00"}, "not in UTC"),
        ({"ts": "1969-12-31T23:59:00Z"}, "before 1970"),
        ({"ts": "0001-01-01T00:00:00Z"}, "before 1970"),
        ({"ts": float("nan")}, "NaN values not permitted"),
        ({"ts": 10**30}, "dates after 9999"),
        ({"source": "x" * 65}, "more than 64"),
    ],
)
def test_invalid_bars_are_rejected_with_a_reason(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(BarError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_bar(GOOD | change)


def test_a_valid_bar_round_trips_through_json_in_utc() -> None:
    bar = parse_bar(GOOD | {"ts": "2025-11-24T14:30:00+00:00"})
    assert bar.ts == datetime(2025, 11, 24, 14, 30, tzinfo=UTC)
    key, value = encode_bar(bar)
    assert key == b"SPY"
    assert decode_value(value) == [bar]


def chart(timestamps: list[int], closes: list[float | None], market_time: int, symbol: str = "SPY") -> dict[str, Any]:
    def around(c: float | None, d: float) -> float | None:
        return None if c is None else round(c + d, 4)

    quote = {
        "open": list(closes),
        "close": list(closes),
        "volume": [None if c is None else 100 for c in closes],
        "high": [around(c, 0.1) for c in closes],
        "low": [around(c, -0.1) for c in closes],
    }
    return {
        "chart": {
            "result": [
                {
                    "meta": {"symbol": symbol, "regularMarketTime": market_time},
                    "timestamp": timestamps,
                    "indicators": {"quote": [quote]},
                }
            ],
            "error": None,
        }
    }


def test_chart_decoding_drops_the_forming_minute_and_null_minutes() -> None:
    ts = [T0, T0 + 60, T0 + 120, T0 + 180]
    got = chart_bars(chart(ts, [10.0, None, 10.2, 10.3], market_time=T0 + 200), source="emulator")
    assert [b.epoch for b in got.bars] == [T0, T0 + 120]
    assert got.skipped_null == 1 and got.skipped_forming == 1
    assert got.market_time == datetime.fromtimestamp(T0 + 200, UTC)


def test_chart_decoding_reports_invalid_rows_instead_of_passing_them() -> None:
    payload = chart([T0, T0 + 60], [10.0, 10.1], market_time=T0 + 600)
    payload["chart"]["result"][0]["indicators"]["quote"][0]["high"][1] = 5.0
    got = chart_bars(payload, source="emulator")
    assert len(got.bars) == 1 and got.rejected[0][0] == T0 + 60 and "high 5.0" in got.rejected[0][1]


def test_yahoo_error_body_becomes_a_chart_error() -> None:
    body = {"chart": {"result": None, "error": {"code": "Not Found", "description": "No data found"}}}
    with pytest.raises(ChartError, match="Not Found: No data found"):
        chart_bars(body, source="yahoo")


def test_mismatched_arrays_are_refused() -> None:
    payload = chart([T0, T0 + 60], [10.0, 10.1], market_time=T0 + 600)
    payload["chart"]["result"][0]["indicators"]["quote"][0]["close"].pop()
    with pytest.raises(ChartError, match=r"quote\.close has 1 values for 2 timestamps"):
        chart_bars(payload, source="yahoo")


@pytest.mark.parametrize("shape", ["envelope", "string", "flat-result"])
def test_airbyte_records_in_every_shape_decode_to_bars(shape: str) -> None:
    inner = chart([T0, T0 + 60], [10.0, 10.1], market_time=T0 + 600)
    data: Any = inner
    if shape == "string":
        data = json.dumps(inner)
    elif shape == "flat-result":
        data = inner["chart"]["result"][0]
    record = {"_airbyte_ab_id": "abc", "_airbyte_emitted_at": 1, "_airbyte_data": data}
    got = decode_airbyte_record(record)
    assert [b.close for b in got.bars] == [10.0, 10.1] and {b.source for b in got.bars} == {"airbyte"}
    assert decode_value(json.dumps(record).encode()) == got.bars


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "tombstone"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (json.dumps(GOOD | {"low": 11}).encode(), "invalid bar: low 11.0"),
        (json.dumps({"_airbyte_data": {"chart": {"result": []}}}).encode(), "Airbyte record without a usable chart"),
    ],
)
def test_undecodable_messages_say_why(value: bytes | None, reason: str) -> None:
    with pytest.raises(UndecodableMessage, match=reason):
        decode_value(value)


def test_dead_letters_keep_the_original_payload() -> None:
    text = json.loads(dead_letter("bad", topic="t", partition=1, offset=7, key=b"SPY", value=b'{"x": 1}'))
    assert text["payload"] == '{"x": 1}' and text["payload_encoding"] == "utf-8" and text["offset"] == 7
    binary = json.loads(dead_letter("bad", topic="t", partition=1, offset=8, key=None, value=b"\xff"))
    assert binary["payload"] == "/w==" and binary["payload_encoding"] == "base64"


def client_with(responses: list[httpx.Response | Exception]) -> tuple[YahooClient, list[float], list[str]]:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    settings = load_settings(_env_file=None, yahoo={"base_url": "http://yahoo.test", "retries": 3, "backoff_s": 0.5})
    slept: list[float] = []
    return YahooClient(settings, transport=httpx.MockTransport(handler), sleep=slept.append), slept, calls


def test_transient_failures_are_retried_with_backoff_and_retry_after() -> None:
    ok = httpx.Response(200, json=chart([T0], [10.0], market_time=T0 + 120))
    client, slept, calls = client_with(
        [
            httpx.ConnectError("refused"),
            httpx.Response(503),
            httpx.Response(429, headers={"Retry-After": "7"}),
            ok,
        ]
    )
    got = client.bars("SPY")
    assert len(got.bars) == 1 and len(calls) == 4
    assert slept[2] == 7.0, "Retry-After is honoured"
    assert 0 <= slept[0] <= 0.5 and 0 <= slept[1] <= 1.0, "full jitter under an exponential cap"
    assert "interval=1m" in calls[0] and "range=1d" in calls[0]


def test_a_refusal_is_not_retried_and_keeps_yahoos_words() -> None:
    body = {
        "chart": {
            "result": None,
            "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
        }
    }
    client, slept, calls = client_with([httpx.Response(404, json=body)])
    with pytest.raises(YahooError, match="HTTP 404: Not Found: No data found, symbol may be delisted"):
        client.bars("NOPE")
    assert slept == [] and len(calls) == 1


def test_giving_up_says_where_and_how_often() -> None:
    client, slept, _ = client_with([httpx.ConnectError("refused")] * 4)
    with pytest.raises(YahooUnavailable, match=r"http://yahoo.test.*unreachable after 4 attempts \(ConnectError"):
        client.bars("SPY")
    assert len(slept) == 3
