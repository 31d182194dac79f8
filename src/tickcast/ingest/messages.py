"""The Kafka message formats of the market-data path: bar messages in, dead letters out.

* ``market.bars.1m``: key = symbol (UTF-8). The value is one of
  - a **bar batch** (what tickcast's producer sends): up to :data:`BATCH_MAX_BARS` bars of ONE symbol as
    columns, ``{"symbol": "SPY", "source": "emulator", "ts": [epoch s, ...], "open": [...], "high": [...],
    "low": [...], "close": [...], "volume": [...]}`` (``ts`` = start of the minute, Unix seconds, UTC;
    ``source`` may be left out: ``"unknown"``). A value whose ``ts`` is a JSON array is a batch;
  - one **bar** as JSON (``Bar.to_json``: ``symbol, ts`` ISO-8601, prices, ``volume``, ``source``);
  - an **Airbyte** Yahoo Finance record envelope (it may hold many bars).
* ``market.bars.1m.dlq``: key = the original key, value = JSON ``{error, topic, partition, offset,
  key, payload, payload_encoding, failed_at}`` where ``payload`` is the original value (UTF-8 text,
  or base64 when it was not text) — so nothing is lost and a fixed consumer can replay it. An invalid
  bar of a batch is dead-lettered alone: its ``payload`` is a batch of that one bar with its values as
  sent, and ``index`` says where it was in the batch; the batch's other bars are stored.

Every bar is validated with the rules of :class:`~tickcast.market.bar.Bar`. For a batch the common case
(every value a JSON number) is checked column-wise with numpy, without building a ``Bar`` per row; a row
that fails those checks, or holds anything else than numbers, goes through
:func:`~tickcast.market.bar.parse_bar` with its values as sent, which decides and words the reason —
so a bar is accepted or rejected exactly as it would be on its own.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from tickcast.market.airbyte import decode_airbyte_record, is_airbyte_record
from tickcast.market.bar import SYMBOL_RE, Bar, BarError, parse_bar
from tickcast.market.chart import ChartError
from tickcast.market.columns import BarColumns

BATCH_MAX_BARS = 500  # bars per batch message: ~30 KB of JSON, far below any broker's message size limit
PRICE_FIELDS = ("open", "high", "low", "close")
NUMBER_FIELDS = (*PRICE_FIELDS, "volume")
BATCH_FIELDS = frozenset({"symbol", "source", "ts", *NUMBER_FIELDS})
# ints beyond this are read as epoch MILLIseconds by pydantic: leave those to parse_bar
_EPOCH_SECONDS_MAX = 20_000_000_000
_NUMBER_TYPES = frozenset({int, float})

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class UndecodableMessage(ValueError):
    """The message cannot become bars; the message text is the reason stored in the DLQ."""


@dataclass
class RejectedBar:
    """One bar of a batch that failed validation: why, where, and its own one-bar batch payload."""

    index: int
    reason: str
    payload: bytes


@dataclass
class DecodedMessage:
    """What one message value holds: valid bars (as columns) and the bars of a batch that were rejected."""

    columns: list[BarColumns] = field(default_factory=list)
    rejected: list[RejectedBar] = field(default_factory=list)

    @property
    def bar_count(self) -> int:
        return sum(len(c) for c in self.columns)


# --- decoding --------------------------------------------------------------------------------------------


def decode_message(value: bytes | None) -> DecodedMessage:
    """Decode one value of the bars topic.

    Raises ``UndecodableMessage`` when the value as a whole cannot become bars (not JSON, a malformed
    batch, an invalid single bar, an Airbyte record with an invalid bar). In a well-formed batch each
    invalid bar is returned in ``rejected`` and the others in ``columns``.
    """
    if value is None:
        raise UndecodableMessage("empty message (tombstone)")
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, ValueError) as err:
        raise UndecodableMessage(f"not JSON: {err}") from None
    if is_airbyte_record(doc):
        try:
            decoded = decode_airbyte_record(doc)
        except ChartError as err:
            raise UndecodableMessage(f"Airbyte record without a usable chart: {err}") from None
        if decoded.rejected:
            ts, reason = decoded.rejected[0]
            raise UndecodableMessage(
                f"Airbyte record has {len(decoded.rejected)} invalid bar(s), first at {ts}: {reason}"
            )
        return DecodedMessage(columns=[BarColumns.from_bars(decoded.bars)] if decoded.bars else [])
    if not isinstance(doc, dict):
        raise UndecodableMessage(f"expected a JSON object, got {type(doc).__name__}")
    if isinstance(doc.get("ts"), list):
        return decode_batch(doc)
    try:
        return DecodedMessage(columns=[BarColumns.from_bars([parse_bar(doc)])])
    except BarError as err:
        raise UndecodableMessage(f"invalid bar: {err}") from None


def decode_value(value: bytes | None) -> list[Bar]:
    """Every bar of one message value as ``Bar`` objects; ``UndecodableMessage`` if any of them is invalid.

    Strict and convenient (tests, tools); the consumer uses :func:`decode_message`, which keeps the valid
    bars of a batch and dead-letters only the invalid ones.
    """
    decoded = decode_message(value)
    if decoded.rejected:
        first = decoded.rejected[0]
        raise UndecodableMessage(
            f"batch has {len(decoded.rejected)} invalid bar(s), first at index {first.index}: {first.reason}"
        )
    return [bar for cols in decoded.columns for bar in cols.bars()]


def decode_batch(doc: dict[str, Any]) -> DecodedMessage:
    """Validate a parsed batch document (see the module docstring for the shape)."""
    symbol, source, raw = _batch_fields(doc)
    n = len(raw["ts"])
    ts, ok = _epoch_column(raw["ts"])
    numbers: list[FloatArray] = []
    for name in NUMBER_FIELDS:
        column, typed = _number_column(raw[name])
        numbers.append(column)
        ok &= typed
    o, h, lo, c, v = numbers
    with np.errstate(invalid="ignore"):
        ok &= ts % 60 == 0
        for price in (o, h, lo, c):
            ok &= np.isfinite(price) & (price > 0)
        ok &= np.isfinite(v) & (v >= 0)
        ok &= (h >= np.maximum(o, c)) & (lo <= np.minimum(o, c))
    rejected: list[RejectedBar] = []
    for i in np.flatnonzero(~ok).tolist():
        row = {"symbol": symbol, "source": source, **{name: raw[name][i] for name in raw}}
        try:
            bar = parse_bar(row)
        except BarError as err:
            rejected.append(RejectedBar(i, str(err), _one_bar_batch(doc, i)))
            continue
        # values in another form that the Bar rules accept (e.g. the string "10.5"): keep the row, normalised
        ok[i] = True
        ts[i] = bar.epoch
        o[i], h[i], lo[i], c[i], v[i] = bar.open, bar.high, bar.low, bar.close, bar.volume
    sources = np.full(n, source, dtype=object)
    if not rejected:
        return DecodedMessage(columns=[BarColumns(symbol, ts, o, h, lo, c, v, sources)])
    if not ok.any():
        return DecodedMessage(rejected=rejected)
    kept = BarColumns(symbol, ts[ok], o[ok], h[ok], lo[ok], c[ok], v[ok], sources[ok])
    return DecodedMessage(columns=[kept], rejected=rejected)


def _epoch_column(values: list[Any]) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    """Epoch seconds as int64 and which rows the column checks may judge (JSON integers in pydantic's
    seconds range); the other rows are left to ``parse_bar``."""
    if set(map(type, values)) == {int}:
        try:
            ts = np.array(values, dtype=np.int64)
        except OverflowError:
            pass
        else:
            return ts, np.abs(ts) <= _EPOCH_SECONDS_MAX
    ok = np.fromiter(
        (type(t) is int and -_EPOCH_SECONDS_MAX <= t <= _EPOCH_SECONDS_MAX for t in values),
        dtype=bool,
        count=len(values),
    )
    return np.array([t if good else 0 for t, good in zip(values, ok, strict=True)], dtype=np.int64), ok


def _number_column(values: list[Any]) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """A JSON number column as float64 and which rows were plain numbers (the others go to ``parse_bar``)."""
    if set(map(type, values)) <= _NUMBER_TYPES:
        try:
            return np.array(values, dtype=np.float64), np.ones(len(values), dtype=bool)
        except OverflowError:  # an int beyond float range
            pass
    ok = np.fromiter(
        (type(x) is float or (type(x) is int and -(2**1023) < x < 2**1023) for x in values),
        dtype=bool,
        count=len(values),
    )
    return np.array([x if good else np.nan for x, good in zip(values, ok, strict=True)], dtype=np.float64), ok


def _batch_fields(doc: dict[str, Any]) -> tuple[str, str, dict[str, list[Any]]]:
    """Symbol, source and the six arrays of a batch, or ``UndecodableMessage`` saying what is wrong."""
    extra = sorted(set(doc) - BATCH_FIELDS)
    if extra:
        raise UndecodableMessage(f"batch has unexpected field(s) {extra}")
    symbol = doc.get("symbol")
    if not isinstance(symbol, str):
        raise UndecodableMessage("batch has no symbol (a string)")
    if not SYMBOL_RE.match(symbol):
        raise UndecodableMessage(
            f"invalid batch: symbol {symbol!r} is not a ticker (upper-case letters, digits, . - = ^; max 16)"
        )
    source = doc.get("source", "unknown")
    if not isinstance(source, str):
        raise UndecodableMessage("batch source is not a string")
    arrays: dict[str, list[Any]] = {}
    for name in ("ts", *NUMBER_FIELDS):
        values = doc.get(name)
        if not isinstance(values, list):
            raise UndecodableMessage(f"batch field {name!r} is not an array")
        arrays[name] = values
    n = len(arrays["ts"])
    if n == 0:
        raise UndecodableMessage("batch holds no bars")
    for name, values in arrays.items():
        if len(values) != n:
            raise UndecodableMessage(f"batch field {name!r} has {len(values)} values for {n} timestamps")
    return symbol, source, arrays


def _one_bar_batch(doc: dict[str, Any], i: int) -> bytes:
    """The ``i``-th bar of a batch as a batch of its own, values exactly as sent (replayable)."""
    one: dict[str, Any] = {"symbol": doc["symbol"]}
    if "source" in doc:
        one["source"] = doc["source"]
    for name in ("ts", *NUMBER_FIELDS):
        one[name] = [doc[name][i]]
    return json.dumps(one, separators=(",", ":")).encode()


# --- encoding --------------------------------------------------------------------------------------------


def encode_bar(bar: Bar) -> tuple[bytes, bytes]:
    """(key, value) of a single-bar message."""
    return bar.symbol.encode(), bar.to_json()


def encode_batch(bars: Sequence[Bar]) -> bytes:
    """One batch value of bars that share symbol and source (callers keep it to :data:`BATCH_MAX_BARS`)."""
    if not bars:
        raise ValueError("a batch needs at least one bar")
    first = bars[0]
    doc = {
        "symbol": first.symbol,
        "source": first.source,
        "ts": [b.epoch for b in bars],
        "open": [b.open for b in bars],
        "high": [b.high for b in bars],
        "low": [b.low for b in bars],
        "close": [b.close for b in bars],
        "volume": [b.volume for b in bars],
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def encode_batches(bars: Iterable[Bar], max_bars: int = BATCH_MAX_BARS) -> Iterator[tuple[bytes, bytes, int]]:
    """(key, value, bar count) of batch messages for ``bars``, in order.

    A batch holds consecutive bars of one symbol with the same source, at most ``max_bars`` of them. Bars
    of several symbols become one run of batches per symbol: each symbol's order is kept, which is all
    that key-based partitioning preserves anyway.
    """
    if max_bars < 1:
        raise ValueError("max_bars must be >= 1")
    per_symbol: dict[str, list[Bar]] = {}
    for bar in bars:
        per_symbol.setdefault(bar.symbol, []).append(bar)
    for symbol, run in per_symbol.items():
        key = symbol.encode()
        start = 0
        while start < len(run):
            end = start + 1
            limit = min(start + max_bars, len(run))
            while end < limit and run[end].source == run[start].source:
                end += 1
            yield key, encode_batch(run[start:end]), end - start
            start = end


def dead_letter(
    error: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    index: int | None = None,
) -> bytes:
    """A dead letter; ``index`` is the bar's position when ``value`` is one rejected bar of a batch."""
    payload: str | None
    try:
        payload, encoding = (value.decode("utf-8") if value is not None else None), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(value or b"").decode(), "base64"
    doc: dict[str, Any] = {
        "error": error,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key.decode("utf-8", errors="replace") if key is not None else None,
        "payload": payload,
        "payload_encoding": encoding,
        "failed_at": datetime.now(UTC).isoformat(),
    }
    if index is not None:
        doc["index"] = index
    return json.dumps(doc).encode()
