"""The Kafka message formats of the market-data path: bar messages in, dead letters out.

* ``market.bars.1m``: key = symbol (UTF-8). The value is one of
  - a **bar batch** (what tickcast's producer sends): up to :data:`BATCH_MAX_BARS` bars of ONE symbol as
    columns, ``{"symbol": "SPY", "source": "emulator", "ts": [epoch s, ...], "open": [...], "high": [...],
    "low": [...], "close": [...], "volume": [...]}`` (``ts`` = start of the minute, Unix seconds, UTC;
    ``source`` may be left out: ``"unknown"``). A value whose ``ts`` is a JSON array is a batch;
  - one **bar** as JSON (``Bar.to_json``: ``symbol, ts`` ISO-8601, prices, ``volume``, ``source``);
  - an **Airbyte** Yahoo Finance record envelope (it may hold many bars).
* ``market.bars.1m.dlq``: key = the original key (cut to :data:`DEAD_LETTER_KEY_MAX` bytes), value = JSON
  ``{error, topic, partition, offset, key, payload, payload_encoding, failed_at}`` where ``payload`` is the
  original value (UTF-8 text, or base64 when it was not text) — so a fixed consumer can replay it. A value
  longer than :data:`DEAD_LETTER_PAYLOAD_MAX` bytes keeps only its head, with ``payload_truncated: true``,
  ``payload_bytes`` (the whole length) and ``payload_sha256`` (of the whole value): a dead letter always fits
  the broker's message limit. An invalid bar of a batch is dead-lettered alone: its ``payload`` is a batch of
  that one bar with its values as sent, and ``index`` says where it was in the batch; the batch's other bars
  are stored. A record batch that cannot even be decompressed is dead-lettered as a reference
  (``payload: null``, ``offset`` .. ``last_offset``; see :mod:`tickcast.ingest.record_batches`).

Besides the Bar rules a message must keep to :class:`DecodeLimits`: at most :data:`BATCH_MAX_BARS` bars in a
batch (:data:`CHART_MAX_BARS` in an Airbyte chart), JSON nested at most :data:`JSON_MAX_DEPTH` deep, bars
between a floor and the source clock plus a tolerance, at most ``max_days`` day files touched, and a key
that is the body's symbol (or no key).

Every bar is validated with the rules of :class:`~tickcast.market.bar.Bar`. For a batch the common case
(every value a JSON number) is checked column-wise with numpy, without building a ``Bar`` per row; a row
that fails those checks, or holds anything else than numbers, goes through
:func:`~tickcast.market.bar.parse_bar` with its values as sent, which decides and words the reason —
so a bar is accepted or rejected exactly as it would be on its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tickcast.market.airbyte import decode_airbyte_record, is_airbyte_record
from tickcast.market.bar import EPOCH_MIN, SOURCE_MAX_CHARS, Bar, BarError, is_symbol, parse_bar
from tickcast.market.chart import ChartError
from tickcast.market.columns import BarColumns

if TYPE_CHECKING:
    from tickcast.settings import Settings

BATCH_MAX_BARS = 500  # bars per batch message: ~30 KB of JSON, far below any broker's message size limit
CHART_MAX_BARS = 8 * 1440  # minutes in an Airbyte chart: Yahoo serves 1-minute bars for at most ~8 days a request
JSON_MAX_DEPTH = 16  # every format here nests 6 deep at most (a Yahoo chart's meta included)
DEAD_LETTER_PAYLOAD_MAX = 64 * 1024  # bytes of the original value a dead letter keeps (base64: 88 KB)
DEAD_LETTER_KEY_MAX = 256  # bytes of the original key a dead letter keeps
REASON_MAX_CHARS = 1000
DAY_S = 86_400
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


@dataclass(frozen=True)
class DecodeLimits:
    """What the consumer takes beyond the Bar rules (``settings.ingest``; decision 0030).

    ``not_before``/``not_after``: the oldest and newest minute (epoch seconds) a bar may start at — the
    floor, and the source clock plus a tolerance; ``max_days``: day files one message may touch.
    """

    not_before: int
    not_after: int
    max_days: int

    @classmethod
    def from_settings(cls, settings: Settings, now: datetime | None = None) -> DecodeLimits:
        cfg = settings.ingest
        clock = (now or datetime.now(UTC)).timestamp()
        return cls(
            not_before=max(EPOCH_MIN, int(cfg.min_bar_ts.timestamp())),
            not_after=int(clock + cfg.max_future_s),
            max_days=cfg.max_days_per_message,
        )

    def refusal(self, epoch: int) -> str | None:
        """Why a bar starting at ``epoch`` (a valid bar's ts) is refused, or None."""
        if epoch < self.not_before:
            return f"ts {_iso(epoch)} is before {_iso(self.not_before)}, the oldest minute ingest takes"
        if epoch > self.not_after:
            return f"ts {_iso(epoch)} is later than the source clock allows (newest: {_iso(self.not_after)})"
        return None


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


def decode_message(value: bytes | None, key: bytes | None = None, limits: DecodeLimits | None = None) -> DecodedMessage:
    """Decode one value of the bars topic.

    Raises ``UndecodableMessage`` when the value as a whole cannot become bars (not JSON, nested too deeply,
    a malformed or oversized batch, an invalid single bar, an Airbyte record with an invalid bar, a ``key``
    that is not the body's symbol, more day files than ``limits.max_days``). In a well-formed batch each
    invalid bar (by the Bar rules or ``limits``) is returned in ``rejected`` and the others in ``columns``.
    """
    if value is None:
        raise UndecodableMessage("empty message (tombstone)")
    if _nested_deeper_than(value, JSON_MAX_DEPTH):
        raise UndecodableMessage(f"JSON nested deeper than {JSON_MAX_DEPTH} levels")
    try:
        doc = json.loads(value)
    except RecursionError:
        raise UndecodableMessage(f"JSON nested deeper than {JSON_MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise UndecodableMessage(f"not JSON: {err}") from None
    if is_airbyte_record(doc):
        try:
            chart = decode_airbyte_record(doc, max_bars=CHART_MAX_BARS)
        except ChartError as err:
            raise UndecodableMessage(f"Airbyte record without a usable chart: {err}") from None
        _check_key(key, chart.symbol)
        rejected = list(chart.rejected)
        for bar in chart.bars:
            why = limits.refusal(bar.epoch) if limits else None
            if why:
                rejected.append((bar.epoch, why))
        if rejected:
            ts, reason = rejected[0]
            raise UndecodableMessage(f"Airbyte record has {len(rejected)} invalid bar(s), first at {ts}: {reason}")
        decoded = DecodedMessage(columns=[BarColumns.from_bars(chart.bars)] if chart.bars else [])
    elif not isinstance(doc, dict):
        raise UndecodableMessage(f"expected a JSON object, got {type(doc).__name__}")
    elif isinstance(doc.get("ts"), list):
        decoded = decode_batch(doc, limits)
        _check_key(key, doc["symbol"])
    else:
        try:
            bar = parse_bar(doc)
        except BarError as err:
            raise UndecodableMessage(f"invalid bar: {err}") from None
        _check_key(key, bar.symbol)
        why = limits.refusal(bar.epoch) if limits else None
        if why:
            raise UndecodableMessage(f"invalid bar: {why}")
        decoded = DecodedMessage(columns=[BarColumns.from_bars([bar])])
    if limits is not None:
        days = {int(d) for cols in decoded.columns for d in np.unique(cols.ts // DAY_S)}
        if len(days) > limits.max_days:
            raise UndecodableMessage(
                f"message touches {len(days)} day files, more than {limits.max_days} "
                "(TICKCAST_INGEST__MAX_DAYS_PER_MESSAGE)"
            )
    return decoded


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


def decode_batch(doc: dict[str, Any], limits: DecodeLimits | None = None) -> DecodedMessage:
    """Validate a parsed batch document (see the module docstring for the shape)."""
    symbol, source, raw = _batch_fields(doc)
    n = len(raw["ts"])
    ts, ok = _epoch_column(raw["ts"])
    ok &= ts >= EPOCH_MIN
    if limits is not None:
        ok &= (ts >= limits.not_before) & (ts <= limits.not_after)
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
        why = limits.refusal(bar.epoch) if limits else None
        if why:
            rejected.append(RejectedBar(i, why, _one_bar_batch(doc, i)))
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
    if not is_symbol(symbol):
        raise UndecodableMessage(
            f"invalid batch: symbol {symbol[:40]!r} is not a ticker (upper-case letters, digits, . - = ^; max 16)"
        )
    source = doc.get("source", "unknown")
    if not isinstance(source, str) or len(source) > SOURCE_MAX_CHARS:
        raise UndecodableMessage(f"batch source is not a string of at most {SOURCE_MAX_CHARS} characters")
    arrays: dict[str, list[Any]] = {}
    for name in ("ts", *NUMBER_FIELDS):
        values = doc.get(name)
        if not isinstance(values, list):
            raise UndecodableMessage(f"batch field {name!r} is not an array")
        arrays[name] = values
    n = len(arrays["ts"])
    if n == 0:
        raise UndecodableMessage("batch holds no bars")
    if n > BATCH_MAX_BARS:
        raise UndecodableMessage(f"batch holds {n} bars, more than {BATCH_MAX_BARS}")
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


def _check_key(key: bytes | None, symbol: str) -> None:
    """A keyed message's key must be its body's symbol (the key decides the partition, hence the order)."""
    if key is not None and key != symbol.encode():
        raise UndecodableMessage(f"key {_shown(key, 40)} disagrees with the body's symbol {symbol[:40]!r}")


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def _nested_deeper_than(value: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays/objects more than ``limit`` deep (brackets inside strings ignored).

    Linear in C: a count first (every real message has a handful of brackets), then strings blanked by one
    regex and the depth as a running sum. ``json.loads`` itself would recurse ~1000 deep and then raise.
    """
    if value.count(b"[") + value.count(b"{") <= limit:
        return False
    text = _JSON_STRING.sub(b'""', value)
    steps = _OPEN[np.frombuffer(text, dtype=np.uint8)]
    return bool(steps.size) and int(np.cumsum(steps, dtype=np.int64).max()) > limit


def _iso(epoch: int) -> str:
    try:
        return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return f"{epoch} (epoch seconds)"


def _shown(data: bytes, limit: int) -> str:
    """Untrusted bytes for a message: at most ``limit`` of them, as a Python literal."""
    head = repr(data[:limit])
    return head if len(data) <= limit else f"{head}... ({len(data)} bytes)"


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
    extra: dict[str, Any] | None = None,
) -> bytes:
    """A dead letter; ``index`` is the bar's position when ``value`` is one rejected bar of a batch.

    Bounded whatever it is given: the reason is cut to :data:`REASON_MAX_CHARS` characters, the key to
    :data:`DEAD_LETTER_KEY_MAX` bytes, the payload to :data:`DEAD_LETTER_PAYLOAD_MAX` bytes (with the
    whole value's length and SHA-256), so it always fits the broker's message limit. Never raises.
    """
    doc: dict[str, Any] = {
        "error": error if len(error) <= REASON_MAX_CHARS else error[:REASON_MAX_CHARS] + "...",
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key[:DEAD_LETTER_KEY_MAX].decode("utf-8", errors="replace") if key is not None else None,
    }
    payload: str | None = None
    encoding = "utf-8"
    if value is not None:
        head = value[:DEAD_LETTER_PAYLOAD_MAX]
        try:
            payload = head.decode("utf-8")
        except UnicodeDecodeError as err:
            # a head cut inside a multi-byte character is still text: drop the partial character only
            if len(value) > DEAD_LETTER_PAYLOAD_MAX and err.start >= len(head) - 3:
                try:
                    payload = head[: err.start].decode("utf-8")
                except UnicodeDecodeError:
                    payload = None
            if payload is None:
                payload, encoding = base64.b64encode(head).decode(), "base64"
        if len(value) > DEAD_LETTER_PAYLOAD_MAX:
            doc["payload_truncated"] = True
            doc["payload_bytes"] = len(value)
            doc["payload_sha256"] = hashlib.sha256(value).hexdigest()
    doc["payload"] = payload
    doc["payload_encoding"] = encoding
    doc["failed_at"] = datetime.now(UTC).isoformat()
    if index is not None:
        doc["index"] = index
    if extra:
        doc.update(extra)
    return json.dumps(doc).encode()


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The key a dead letter is sent with: the original one, cut to :data:`DEAD_LETTER_KEY_MAX` bytes."""
    return None if key is None else key[:DEAD_LETTER_KEY_MAX]
