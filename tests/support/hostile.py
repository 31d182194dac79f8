"""The catalogue of hostile bar-topic messages: each one once stopped ingest or the producer, or slipped in.

Shared by the unit tests (decoding, dead letters) and the hostile-input integration test (a real librdkafka
producer, every codec). A :class:`Pill` is one message (key, value) and the words its dead letter must hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Pill:
    name: str
    key: bytes | None
    value: bytes | None
    reason: str  # a fragment of the dead letter's error
    whole: bool = True  # the whole message is refused (else: one bar of a batch, with ``index``)


def batch_doc(symbol: str, start: datetime, n: int = 1, step: timedelta = timedelta(minutes=1)) -> dict[str, Any]:
    """A valid batch document of ``n`` bars from ``start`` (epoch seconds)."""
    ts = [int((start + i * step).timestamp()) for i in range(n)]
    return {
        "symbol": symbol,
        "source": "hostile",
        "ts": ts,
        "open": [10.0] * n,
        "high": [10.5] * n,
        "low": [9.5] * n,
        "close": [10.2] * n,
        "volume": [100] * n,
    }


def one_bar(symbol: str, ts: str) -> bytes:
    return json.dumps(
        {"symbol": symbol, "ts": ts, "open": 10.0, "high": 10.5, "low": 9.5, "close": 10.2, "volume": 1}
    ).encode()


def airbyte(data: Any) -> bytes:
    return json.dumps({"_airbyte_ab_id": "x", "_airbyte_emitted_at": 1, "_airbyte_data": data}).encode()


def pills(symbol: str, day: datetime) -> list[Pill]:
    """Every message-level pill for ``symbol`` (keyed with it unless the pill is about the key); ``day`` is a
    valid minute the good bars of a test also use."""
    key = symbol.encode()
    chart_nan = {
        "meta": {"symbol": symbol, "regularMarketTime": 2_000_000_000},
        "timestamp": [float("nan")],
        "indicators": {"quote": [{"open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [1]}]},
    }
    nan_batch = json.dumps(batch_doc(symbol, day)).replace(f"[{int(day.timestamp())}]", "[NaN]").encode()
    big_int = batch_doc(symbol, day)
    big_int["volume"] = [10**400]
    return [
        Pill("not-json", key, b"\xff\xfe\x00 not json", "not JSON"),
        Pill("tombstone", key, None, "tombstone"),
        Pill("deep-array", key, b"[" * 1001, "nested deeper"),
        Pill("deep-object", key, b'{"a":' * 600 + b"1" + b"}" * 600, "nested deeper"),
        Pill("binary-2mb", key, bytes(range(256)) * 8192, "not JSON"),
        Pill("ts-year-1-plus-1h", key, one_bar(symbol, "0001-01-01T00:00:00+01:00"), "not in UTC"),
        Pill("ts-non-utc", key, one_bar(symbol, "2026-11-23T15:30:00+01:00"), "not in UTC"),
        Pill("ts-pre-1970", key, one_bar(symbol, "1969-12-31T23:59:00Z"), "before 1970"),
        Pill("ts-before-floor", key, one_bar(symbol, "1999-12-31T23:59:00Z"), "before 2000-01-01"),
        Pill("ts-far-future", key, one_bar(symbol, "9999-12-31T23:59:00Z"), "later than the source clock"),
        Pill("ts-nan-in-batch", key, nan_batch, "NaN", whole=False),
        Pill("volume-1e400", key, json.dumps(big_int).encode(), "volume", whole=False),
        Pill("airbyte-chart-error-text", key, airbyte({"chart": {"error": "boom"}}), "Yahoo chart error: boom"),
        Pill(
            "airbyte-chart-error",
            key,
            airbyte({"chart": {"result": None, "error": {"code": "Not Found", "description": "gone"}}}),
            "Not Found: gone",
        ),
        Pill("airbyte-nan-ts", key, airbyte(chart_nan), "not a Unix time"),
        Pill("airbyte-not-a-chart", key, airbyte([1, 2, 3]), "not an object"),
        Pill(
            "symbol-newline",
            f"{symbol}\n".encode(),
            json.dumps(batch_doc(f"{symbol}\n", day)).encode(),
            "is not a ticker",
        ),
        Pill("key-disagrees", b"OTHER", json.dumps(batch_doc(symbol, day)).encode(), "disagrees"),
        Pill("501-bars", key, json.dumps(batch_doc(symbol, day, 501)).encode(), "more than 500"),
        Pill(
            "nine-days",
            key,
            json.dumps(batch_doc(symbol, day - timedelta(days=9), 9, timedelta(days=1))).encode(),
            "9 day files",
        ),
    ]


def far_future_bar(symbol: str) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "ts": datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
        "open": 1.0,
        "high": 1.0,
        "low": 1.0,
        "close": 1.0,
        "volume": 1.0,
    }
