"""The Bar: one closed 1-minute OHLCV bar of one symbol — the contract between source, Kafka and lake.

A bar is rejected (``BarError`` with a reason a person can act on) when a price is not a finite
positive number, ``high`` is below ``max(open, close)`` or ``low`` above ``min(open, close)``, the
volume is negative, ``ts`` is not on a minute boundary, has no time zone or one other than UTC, lies
before 1970 (or cannot be represented at all), or the symbol is not a ticker (the WHOLE string:
``"SPY\n"`` is not one). ``ts`` is the START of the minute, in UTC.

Nothing here raises anything but ``BarError`` for any input: a bar comes from outside.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

# \A...\Z, not ^...$: ``$`` also matches before a final newline, so "SPY\n" passed (and became a blob path)
SYMBOL_RE = re.compile(r"\A[A-Z0-9][A-Z0-9.\-=^]{0,15}\Z")
EPOCH_MIN = 0  # 1970-01-01T00:00:00Z: the lake's day files and epoch-second columns start there
SOURCE_MAX_CHARS = 64  # the source's name is stored on every row of the lake


def is_symbol(value: object) -> bool:
    """Whether ``value`` is a ticker, the whole string (it becomes part of a blob path)."""
    return isinstance(value, str) and SYMBOL_RE.fullmatch(value) is not None


class BarError(ValueError):
    """A bar that must not enter the lake; the message says why."""


class Bar(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    source: str = "unknown"

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str) -> str:
        if not is_symbol(v):
            raise ValueError(f"symbol {v[:40]!r} is not a ticker (upper-case letters, digits, . - = ^; max 16)")
        return v

    @field_validator("ts")
    @classmethod
    def _ts(cls, v: datetime) -> datetime:
        offset = v.utcoffset()
        if offset is None:
            raise ValueError("ts has no time zone; send UTC (e.g. 2026-11-25T14:31:00Z)")
        if offset:
            raise ValueError(f"ts {v.isoformat()} is not in UTC; send it with Z or +00:00 (e.g. 2026-11-25T14:31:00Z)")
        v = v.replace(tzinfo=UTC)
        if v.year < 1970:
            raise ValueError(f"ts {v.isoformat()} is before 1970")
        if v.second or v.microsecond:
            raise ValueError(f"ts {v.isoformat()} is not on a minute boundary (bars start at :00 seconds)")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if len(v) > SOURCE_MAX_CHARS:
            raise ValueError(f"source is {len(v)} characters long, more than {SOURCE_MAX_CHARS}")
        return v

    @field_validator("open", "high", "low", "close")
    @classmethod
    def _price(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"price {v!r} is not a finite positive number")
        return v

    @field_validator("volume")
    @classmethod
    def _volume(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"volume {v!r} is negative or not finite")
        return v

    @model_validator(mode="after")
    def _ohlc(self) -> Bar:
        if self.high < max(self.open, self.close):
            raise ValueError(f"high {self.high} is below max(open {self.open}, close {self.close})")
        if self.low > min(self.open, self.close):
            raise ValueError(f"low {self.low} is above min(open {self.open}, close {self.close})")
        return self

    @property
    def epoch(self) -> int:
        return int(self.ts.timestamp())

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    def to_record(self) -> dict[str, Any]:
        return self.model_dump()


def _reason(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_bar(data: dict[str, Any] | bytes | str) -> Bar:
    """Validate one bar from a dict or JSON; raises ``BarError`` with the reason."""
    try:
        if isinstance(data, bytes | str):
            return Bar.model_validate_json(data)
        return Bar.model_validate(data)
    except ValidationError as err:
        raise BarError(_reason(err)) from None
    except (ArithmeticError, RecursionError) as err:  # belt and braces: a validator meeting an extreme value
        raise BarError(f"bar cannot be read: {type(err).__name__}: {err}") from None
