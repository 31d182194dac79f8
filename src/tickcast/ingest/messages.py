"""The Kafka message formats of the market-data path: bar messages in, dead letters out.

* ``market.bars.1m``: key = symbol (UTF-8), value = one bar as JSON (``Bar.to_json``). An Airbyte
  Yahoo Finance record envelope is accepted as a value too (it may hold many bars).
* ``market.bars.1m.dlq``: key = the original key, value = JSON ``{error, topic, partition, offset,
  key, payload, payload_encoding, failed_at}`` where ``payload`` is the original value (UTF-8 text,
  or base64 when it was not text) — so nothing is lost and a fixed consumer can replay it.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from tickcast.market.airbyte import decode_airbyte_record, is_airbyte_record
from tickcast.market.bar import Bar, BarError, parse_bar
from tickcast.market.chart import ChartError


class UndecodableMessage(ValueError):
    """The message cannot become bars; the message text is the reason stored in the DLQ."""


def decode_value(value: bytes | None) -> list[Bar]:
    """The bars in one message value (a bar JSON or an Airbyte envelope); UndecodableMessage otherwise."""
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
        return decoded.bars
    if not isinstance(doc, dict):
        raise UndecodableMessage(f"expected a JSON object, got {type(doc).__name__}")
    try:
        return [parse_bar(doc)]
    except BarError as err:
        raise UndecodableMessage(f"invalid bar: {err}") from None


def encode_bar(bar: Bar) -> tuple[bytes, bytes]:
    """(key, value) of a bar message."""
    return bar.symbol.encode(), bar.to_json()


def dead_letter(
    error: str, *, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> bytes:
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
    return json.dumps(doc).encode()
