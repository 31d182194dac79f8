"""Hostile bar-topic messages: each pill is refused with its reason, nothing else is raised, and its dead letter
is bounded (what the ingest consumer does with every message, without a broker)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.hostile import Pill, batch_doc, pills
from tickcast.ingest.messages import (
    DEAD_LETTER_PAYLOAD_MAX,
    DecodeLimits,
    UndecodableMessage,
    dead_letter,
    decode_message,
)
from tickcast.market.airbyte import decode_airbyte_record
from tickcast.market.chart import ChartError, chart_bars
from tickcast.settings import load_settings

SYMBOL = "SPY"
DAY = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
NOW = DAY + timedelta(hours=1)
LIMITS = DecodeLimits.from_settings(load_settings(_env_file=None), now=NOW)
BROKER_MESSAGE_LIMIT = 1024 * 1024  # Kafka's default message.max.bytes (and kafka-python's max_request_size)


def refusal(pill: Pill) -> tuple[str, int | None]:
    """(reason, index) of what the consumer would dead-letter for ``pill``."""
    try:
        decoded = decode_message(pill.value, key=pill.key, limits=LIMITS)
    except UndecodableMessage as err:
        return str(err), None
    assert not decoded.columns, f"{pill.name}: no bar of a pill may be stored"
    assert len(decoded.rejected) == 1, pill.name
    return decoded.rejected[0].reason, decoded.rejected[0].index


@pytest.mark.parametrize("pill", pills(SYMBOL, DAY), ids=lambda p: p.name)
def test_every_pill_is_refused_with_its_reason_and_a_bounded_dead_letter(pill: Pill) -> None:
    reason, index = refusal(pill)
    assert pill.reason in reason
    assert (index is None) == pill.whole
    letter = dead_letter(reason, topic="t", partition=0, offset=7, key=pill.key, value=pill.value, index=index)
    assert len(letter) < BROKER_MESSAGE_LIMIT // 8
    doc = json.loads(letter)
    assert doc["error"] == reason and doc["offset"] == 7


def test_the_same_pills_decode_the_same_without_limits_except_the_window() -> None:
    """Without limits (tools, tests) the Bar rules and the size bounds still hold; only the clock window and the
    day count are the consumer's."""
    for pill in pills(SYMBOL, DAY):
        if pill.name in {"ts-far-future", "ts-before-floor", "nine-days"}:
            continue
        if pill.whole:
            with pytest.raises(UndecodableMessage):
                decode_message(pill.value, key=pill.key)
        else:
            assert decode_message(pill.value, key=pill.key).rejected, pill.name


def test_a_good_batch_keyed_with_its_symbol_or_unkeyed_passes_every_check() -> None:
    value = json.dumps(batch_doc(SYMBOL, DAY, 30)).encode()
    for key in (SYMBOL.encode(), None):
        decoded = decode_message(value, key=key, limits=LIMITS)
        assert decoded.bar_count == 30 and not decoded.rejected


def test_a_batch_keeps_its_bars_inside_the_window_and_rejects_the_others_alone() -> None:
    doc = batch_doc(SYMBOL, DAY, 3)
    doc["ts"][1] = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp())
    decoded = decode_message(json.dumps(doc).encode(), key=SYMBOL.encode(), limits=LIMITS)
    assert decoded.bar_count == 2
    (rejected,) = decoded.rejected
    assert rejected.index == 1 and "later than the source clock" in rejected.reason
    assert json.loads(rejected.payload)["ts"] == [doc["ts"][1]], "the bar as sent, replayable"


def test_the_window_follows_the_settings() -> None:
    s = load_settings(_env_file=None, ingest={"max_future_s": 0, "min_bar_ts": "2026-11-23T00:00:00Z"})
    limits = DecodeLimits.from_settings(s, now=DAY)
    assert limits.refusal(int(DAY.timestamp())) is None
    assert "later than" in str(limits.refusal(int(DAY.timestamp()) + 60))
    assert "before 2026-11-23T00:00:00Z" in str(limits.refusal(int(DAY.timestamp()) - 86_400))


def test_a_two_megabyte_dead_letter_keeps_its_head_length_and_hash() -> None:
    value = bytes(range(256)) * 8192  # 2 MiB, not text
    letter = json.loads(dead_letter("not JSON", topic="t", partition=1, offset=2, key=b"K" * 5000, value=value))
    assert letter["payload_truncated"] is True and letter["payload_bytes"] == len(value)
    assert letter["payload_sha256"] == hashlib.sha256(value).hexdigest()
    assert letter["payload_encoding"] == "base64"
    assert base64.b64decode(letter["payload"]) == value[:DEAD_LETTER_PAYLOAD_MAX]
    assert len(letter["key"]) == 256


def test_a_long_text_payload_is_cut_on_a_character_boundary() -> None:
    value = ("é" * DEAD_LETTER_PAYLOAD_MAX).encode()  # 2 bytes a character: the cut falls inside one
    letter = json.loads(dead_letter("x", topic="t", partition=0, offset=0, key=None, value=value))
    assert letter["payload_encoding"] == "utf-8" and set(letter["payload"]) == {"é"}
    assert len(letter["payload"].encode()) in (DEAD_LETTER_PAYLOAD_MAX, DEAD_LETTER_PAYLOAD_MAX - 1)


def test_small_payloads_stay_whole_and_unmarked() -> None:
    letter = json.loads(dead_letter("x", topic="t", partition=0, offset=0, key=b"SPY", value=b"{}"))
    assert letter["payload"] == "{}" and "payload_truncated" not in letter


CHART_MUTATIONS: list[Any] = [
    None,
    [],
    "text",
    {"chart": None},
    {"chart": {"error": "boom"}},
    {"chart": {"error": ["a"]}},
    {"chart": {"result": "x"}},
    {"chart": {"result": [None]}},
    {"chart": {"result": [{"meta": "x"}]}},
    {"chart": {"result": [{"meta": {"symbol": 5}}]}},
    {"chart": {"result": [{"meta": {"symbol": "SPY"}, "timestamp": "x"}]}},
    {"chart": {"result": [{"meta": {"symbol": "SPY"}, "timestamp": [1], "indicators": "x"}]}},
    {"chart": {"result": [{"meta": {"symbol": "SPY"}, "timestamp": [1], "indicators": {"quote": ["x"]}}]}},
    {"chart": {"result": [{"meta": {"symbol": "SPY"}, "timestamp": [1], "indicators": {"quote": [{"open": 1}]}}]}},
]


@pytest.mark.parametrize("payload", CHART_MUTATIONS, ids=lambda p: json.dumps(p)[:60])
def test_a_malformed_chart_is_a_chart_error_never_anything_else(payload: Any) -> None:
    with pytest.raises(ChartError):
        chart_bars(payload, source="test")


def test_chart_rows_with_any_timestamp_are_bars_or_rejections() -> None:
    stamps: list[Any] = [float("nan"), float("inf"), "1", None, True, 10**30, -(10**30), 1e300, 1763994600.5, -60]
    quote = {k: [1.0] * len(stamps) for k in ("open", "high", "low", "close", "volume")}
    payload = {
        "chart": {
            "result": [
                {
                    "meta": {"symbol": "SPY", "regularMarketTime": float("nan")},
                    "timestamp": stamps,
                    "indicators": {"quote": [quote]},
                }
            ]
        }
    }
    got = chart_bars(payload, source="test")
    assert got.market_time is None
    assert len(got.bars) + len(got.rejected) == len(stamps)
    assert [b.epoch for b in got.bars] == [1763994600], "the one real minute (1763994600.5 floors to it)"


def test_an_oversized_chart_is_refused_before_any_row_is_read() -> None:
    record = {"_airbyte_data": {"meta": {"symbol": "SPY"}, "timestamp": [0] * 20_000, "indicators": {"quote": [{}]}}}
    with pytest.raises(ChartError, match="20000 timestamps, more than 11520"):
        decode_airbyte_record(record, max_bars=11_520)


def test_random_bytes_and_random_json_never_raise_anything_but_undecodable() -> None:
    rng = random.Random(3)
    atoms: list[Any] = [None, True, 1, -1.5, "SPY", "x" * 50, 10**40, [], {}, float("nan")]
    keys = ["symbol", "ts", "open", "high", "low", "close", "volume", "source", "_airbyte_data", "chart", "meta"]

    def value(depth: int) -> Any:
        kind = rng.random()
        if depth > 4 or kind < 0.4:
            return rng.choice(atoms)
        if kind < 0.7:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {rng.choice(keys): value(depth + 1) for _ in range(rng.randrange(6))}

    for i in range(3000):
        raw = (
            bytes(rng.randrange(256) for _ in range(rng.randrange(40))) if i % 3 == 0 else json.dumps(value(0)).encode()
        )
        with contextlib.suppress(UndecodableMessage):
            decode_message(raw, key=rng.choice([None, b"SPY", b"\xff"]), limits=LIMITS)
