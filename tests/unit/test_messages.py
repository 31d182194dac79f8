"""Batch messages of the bars topic: encoding, decoding, and per-bar validation identical to single bars."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tickcast.ingest.messages import (
    BATCH_MAX_BARS,
    UndecodableMessage,
    dead_letter,
    decode_message,
    decode_value,
    encode_bar,
    encode_batches,
)
from tickcast.market.bar import Bar, BarError, parse_bar

T0 = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)


def bars(symbol: str, n: int, start: datetime = T0, source: str = "emulator") -> list[Bar]:
    return [
        Bar(
            symbol=symbol,
            ts=start + timedelta(minutes=i),
            open=100.0 + i * 0.01,
            high=100.5 + i * 0.01,
            low=99.5,
            close=100.25,
            volume=1000.0 + i,
            source=source,
        )
        for i in range(n)
    ]


def batch(n: int = 5, symbol: str = "SPY") -> dict[str, Any]:
    ((_, value, _),) = encode_batches(bars(symbol, n))
    doc: dict[str, Any] = json.loads(value)
    return doc


def test_batches_round_trip_exactly_one_symbol_each_in_order_and_bounded() -> None:
    spy, ibm = bars("SPY", 1203), bars("IBM", 3, source="tape")
    mixed = [b for pair in zip(spy, ibm, strict=False) for b in pair] + spy[3:]
    messages = list(encode_batches(mixed))
    assert [(k, n) for k, _, n in messages] == [(b"SPY", 500), (b"SPY", 500), (b"SPY", 203), (b"IBM", 3)]
    assert all(len(v) < 256 * 1024 for _, v, _ in messages)
    decoded = [bar for _, value, _ in messages for bar in decode_value(value)]
    assert decoded == spy + ibm, "every bar back, unchanged (floats included), in each symbol's order"
    doc = json.loads(messages[0][1])
    assert set(doc) == {"symbol", "source", "ts", "open", "high", "low", "close", "volume"}
    assert doc["ts"][:2] == [int(T0.timestamp()), int(T0.timestamp()) + 60], "epoch seconds"


def test_a_change_of_source_starts_a_new_batch_and_max_bars_is_honoured() -> None:
    run = bars("SPY", 4) + bars("SPY", 2, start=T0 + timedelta(minutes=4), source="revision")
    assert [n for _, _, n in encode_batches(run, max_bars=3)] == [3, 1, 2]
    assert BATCH_MAX_BARS == 500
    with pytest.raises(ValueError, match="max_bars"):
        list(encode_batches(run, max_bars=0))


def test_single_bar_messages_and_batches_decode_to_the_same_columns() -> None:
    bar = bars("SPY", 1)[0]
    _, single = encode_bar(bar)
    ((_, one, _),) = encode_batches([bar])
    a, b = decode_message(single).columns[0], decode_message(one).columns[0]
    assert a.bars() == b.bars() == [bar]
    assert a.ts.tolist() == [bar.epoch] and a.source.tolist() == ["emulator"]


def test_an_invalid_bar_is_rejected_alone_with_the_reason_and_its_own_payload() -> None:
    doc = batch(6)
    doc["high"][1] = 1.0  # below open/close
    doc["ts"][3] += 5  # not on a minute
    doc["volume"][4] = -1
    decoded = decode_message(json.dumps(doc).encode())
    assert decoded.bar_count == 3
    assert decoded.columns[0].ts.tolist() == [doc["ts"][i] for i in (0, 2, 5)]
    assert [r.index for r in decoded.rejected] == [1, 3, 4]
    assert "high 1.0 is below max(open 100.01, close 100.25)" in decoded.rejected[0].reason
    assert "not on a minute boundary" in decoded.rejected[1].reason
    assert "volume -1.0 is negative" in decoded.rejected[2].reason
    payload = json.loads(decoded.rejected[0].payload)
    assert payload == {
        "symbol": "SPY",
        "source": "emulator",
        **{k: [doc[k][1]] for k in ("ts", "open", "high", "low", "close", "volume")},
    }, "the bar as it was sent, as a batch of one (replayable)"
    with pytest.raises(UndecodableMessage, match="3 invalid bar"):
        decode_value(json.dumps(doc).encode())


def test_values_the_bar_rules_accept_in_another_form_are_kept_like_a_single_bar() -> None:
    doc = batch(3)
    doc["open"][0] = "100.0"  # pydantic's lax float, exactly as for a single bar
    doc["ts"][1] = doc["ts"][1] * 1000  # epoch milliseconds, read as such by pydantic
    doc["volume"][2] = None
    decoded = decode_message(json.dumps(doc).encode())
    cols = decoded.columns[0]
    assert cols.open.tolist()[0] == 100.0 and cols.ts.tolist() == [doc["ts"][0], doc["ts"][1] // 1000]
    assert [(r.index, r.reason) for r in decoded.rejected] == [(2, "volume: Input should be a valid number")]


def test_column_checks_agree_with_parse_bar_on_every_row() -> None:
    """Random batches full of bad values: accepted rows and reasons are exactly parse_bar's."""
    rng = random.Random(7)
    specials: list[Any] = [0, -1.5, float("nan"), float("inf"), True, "12", None, 10**400, 2**70, [], 1e308]
    for _ in range(40):
        doc = batch(30)
        for _ in range(rng.randrange(0, 12)):
            i = rng.randrange(30)
            field = rng.choice(["ts", "open", "high", "low", "close", "volume"])
            if field == "ts":
                doc["ts"][i] = rng.choice([doc["ts"][i] + 30, "2026-11-23T14:30:00Z", 1.5, -(2**63) - 1, None])
            else:
                doc[field][i] = rng.choice([*specials, round(rng.uniform(50.0, 200.0), 2)])
        value = json.dumps(doc).encode()
        decoded = decode_message(value)
        accepted = [int(t) for c in decoded.columns for t in c.ts.tolist()]
        expected_ok, expected_bad = [], []
        for i in range(30):
            row = {"symbol": "SPY", "source": "emulator", **{k: doc[k][i] for k in doc if isinstance(doc[k], list)}}
            try:
                expected_ok.append(parse_bar(row).epoch)
            except BarError as err:
                expected_bad.append((i, str(err)))
        assert accepted == expected_ok
        assert [(r.index, r.reason) for r in decoded.rejected] == expected_bad


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"symbol": "spy"}, "symbol 'spy' is not a ticker"),
        ({"symbol": None}, "no symbol"),
        ({"source": 3}, "source is not a string"),
        ({"close": "x"}, "'close' is not an array"),
        ({"extra": 1}, r"unexpected field\(s\) \['extra'\]"),
        ({"ts": [], "open": [], "high": [], "low": [], "close": [], "volume": []}, "holds no bars"),
    ],
)
def test_a_malformed_batch_is_undecodable_as_a_whole(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(UndecodableMessage, match=reason):
        decode_message(json.dumps(batch(2) | change).encode())


def test_arrays_of_different_lengths_are_undecodable() -> None:
    doc = batch(3)
    doc["low"].pop()
    with pytest.raises(UndecodableMessage, match="'low' has 2 values for 3 timestamps"):
        decode_message(json.dumps(doc).encode())


def test_a_batch_without_source_is_unknown_like_a_single_bar() -> None:
    doc = batch(2)
    del doc["source"]
    assert decode_message(json.dumps(doc).encode()).columns[0].source.tolist() == ["unknown", "unknown"]


def test_dead_letter_of_one_bar_says_where_it_was() -> None:
    letter = json.loads(
        dead_letter("invalid bar: x", topic="t", partition=0, offset=3, key=b"SPY", value=b"{}", index=4)
    )
    assert letter["index"] == 4 and letter["offset"] == 3 and letter["payload"] == "{}"
    assert "index" not in json.loads(dead_letter("x", topic="t", partition=0, offset=3, key=None, value=None))
