"""The scoring contract: request, response and error bodies of ``POST /score`` — one definition for all sides.

Used by ``score.py`` (the Azure ML entry script), by the local endpoint stand-in (``emulators/aml_endpoint``)
and by the public API (``POST /api/predict`` takes the same request). Imports pydantic and NumPy only (pandas
lazily, in :meth:`PredictRequest.bars_frame`): it must load in the TensorFlow-free AML serving environment
(``cloud/aml/requirements.txt``), which has no ``tickcast.settings``.

Request::

    {"symbol": "SPY",
     "bars": [{"ts": "2024-06-03T13:30:00Z", "open": 530.1, "high": 530.4, "low": 529.9, "close": 530.2,
               "volume": 120000}, ...]}

* ``symbol``: a ticker; surrounding blanks are dropped and it is upper-cased (``" spy"`` → ``"SPY"``).
* ``bars``: the symbol's most recent 1-minute bars, any order, at most :data:`MAX_BARS`, one per minute. Each
  is validated like :class:`tickcast.market.bar.Bar` (finite positive prices, ``low ≤ open, close ≤ high``,
  volume ≥ 0, ``ts`` the START of a minute). ``ts`` is ISO-8601 WITH a zone (``Z`` / ``+00:00``; naive is
  refused) or a number of epoch seconds. The model needs ``bars_needed`` consecutive minutes of one session
  ending at the last bar (81 for a 30-minute window); fewer is an error that says how many.

Response (200): :class:`PredictResponse` — ``{"symbol", "as_of", "horizon_minutes", "predicted_close",
"model_version", "model_kind", "interval": {"level", "lower", "upper"}}``; ``as_of`` is the start of the last
bar used (UTC, ISO-8601 ``Z``), the forecast is the close of the minute after it; ``model_kind`` is
``"baseline"`` or ``"lstm-attention"``; ``interval`` is the central ``level`` interval of that close, in price
units (``lower <= predicted_close <= upper``).

Errors: :class:`ErrorBody` — ``{"error": "<what is wrong and how to fix it>", "code": "<machine code>",
"detail": <structured extra or null>}`` with the HTTP status of :data:`STATUS`:

================== ====== ==========================================================================
code               status when
================== ====== ==========================================================================
``invalid_request`` 400   body is not JSON / not an object, a field is missing or invalid, duplicate ts
``not_enough_bars`` 400   fewer consecutive bars than the model needs (``detail``: needed, given, …)
``unknown_symbol``  422   the model was not trained on that symbol (``detail.known``: the ones it knows)
``model_not_loaded`` 503  ``init()`` did not run or failed (a deployment problem, not the caller's)
================== ====== ==========================================================================

Unknown symbol is 422, not 404, on purpose: at the endpoint a 404 means "no deployment to route to", a
routing fault. The public API maps ``unknown_symbol`` to its documented 404.

**Through a real AML online endpoint** a non-200 answer of the scoring container reaches the caller as
**424** with the container's status in the ``ms-azureml-model-error-statuscode`` header and the body
unchanged; :func:`model_status` undoes that, so callers handle both hosts with one code path.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tickcast.market.bar import SYMBOL_RE, Bar, BarError, parse_bar
from tickcast.market.columns import BarArrays

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEPLOYMENT_HEADER",
    "INVALID_REQUEST",
    "MAX_BARS",
    "MODEL_ERROR_REASON_HEADER",
    "MODEL_ERROR_STATUS_HEADER",
    "MODEL_NOT_LOADED",
    "NOT_ENOUGH_BARS",
    "STATUS",
    "UNKNOWN_SYMBOL",
    "BarIn",
    "ErrorBody",
    "Interval",
    "InvalidRequest",
    "PredictRequest",
    "PredictResponse",
    "ScoringRequest",
    "model_status",
    "parse_predict_request",
    "parse_scoring_request",
]

MAX_BARS: Final = 5000  # ~13 sessions of minutes; only the last bars_needed are used anyway

# error codes and their HTTP status
INVALID_REQUEST: Final = "invalid_request"
NOT_ENOUGH_BARS: Final = "not_enough_bars"
UNKNOWN_SYMBOL: Final = "unknown_symbol"
MODEL_NOT_LOADED: Final = "model_not_loaded"
STATUS: Final[dict[str, int]] = {INVALID_REQUEST: 400, NOT_ENOUGH_BARS: 400, UNKNOWN_SYMBOL: 422, MODEL_NOT_LOADED: 503}

# headers of an AML online endpoint (and of the local stand-in)
DEPLOYMENT_HEADER: Final = "azureml-model-deployment"  # request: target a deployment; response: who answered
MODEL_ERROR_STATUS_HEADER: Final = "ms-azureml-model-error-statuscode"  # on a 424: the container's own status
MODEL_ERROR_REASON_HEADER: Final = "ms-azureml-model-error-reason"

_SYMBOL_PLACEHOLDER = "X"  # Bar needs a symbol; a request's symbol is checked once, on the request
_MAX_REPORTED_ERRORS = 20
_MAX_MESSAGE = 300  # longest field message; longer ones keep both ends


class InvalidRequest(ValueError):
    """The request body cannot be used; ``str()`` says what to fix, ``detail`` lists the field errors."""

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.detail = detail


class BarIn(BaseModel):
    """One 1-minute bar of a request (the symbol is the request's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ts: datetime = Field(description="start of the minute: ISO-8601 with a zone (UTC) or epoch seconds")
    open: float
    high: float
    low: float
    close: float
    volume: float

    @field_validator("ts", mode="before")
    @classmethod
    def _epoch_seconds(cls, v: Any) -> Any:
        # pydantic would read a number above 2e10 as milliseconds; the contract says seconds, always.
        if isinstance(v, bool):
            raise ValueError("ts must be an ISO-8601 time with a zone or epoch seconds, not a boolean")
        if isinstance(v, int | float):
            if not math.isfinite(v):
                raise ValueError(f"ts {v!r} is not a finite number of epoch seconds")
            try:
                return datetime.fromtimestamp(v, UTC)
            except (OverflowError, OSError, ValueError):
                raise ValueError(f"ts {v!r} is out of range for epoch seconds") from None
        return v

    # the lake's rules, reused from Bar (one definition of a valid bar)
    @field_validator("ts")
    @classmethod
    def _ts(cls, v: datetime) -> datetime:
        return Bar._ts(v)

    @field_validator("open", "high", "low", "close")
    @classmethod
    def _price(cls, v: float) -> float:
        return Bar._price(v)

    @field_validator("volume")
    @classmethod
    def _volume(cls, v: float) -> float:
        return Bar._volume(v)

    @model_validator(mode="after")
    def _ohlc(self) -> BarIn:
        try:
            parse_bar({"symbol": _SYMBOL_PLACEHOLDER, **self.__dict__})
        except BarError as err:
            raise ValueError(str(err)) from None
        return self


class PredictRequest(BaseModel):
    """``POST /score`` body: one symbol and its latest 1-minute bars."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(description="ticker, e.g. SPY (upper-cased)")
    bars: list[BarIn] = Field(max_length=MAX_BARS, description="the symbol's latest 1-minute bars, any order")

    @field_validator("symbol", mode="before")
    @classmethod
    def _ticker(cls, v: Any) -> Any:
        if not isinstance(v, str):
            raise ValueError('symbol must be a string, e.g. "SPY"')
        v = v.strip().upper()
        if not SYMBOL_RE.match(v):
            raise ValueError(f"symbol {v!r} is not a ticker (letters, digits, . - = ^; at most 16 characters)")
        return v

    @model_validator(mode="after")
    def _one_bar_per_minute(self) -> PredictRequest:
        seen: dict[datetime, int] = {}
        for i, bar in enumerate(self.bars):
            if bar.ts in seen:
                raise ValueError(
                    f"bars {seen[bar.ts]} and {i} have the same ts {bar.ts.isoformat()}: send one bar per minute"
                )
            seen[bar.ts] = i
        return self

    def bar_arrays(self) -> BarArrays:
        """The bars as :class:`~tickcast.market.columns.BarArrays` (request order)."""
        return BarArrays(
            np.array([int(b.ts.timestamp()) for b in self.bars], dtype=np.int64),
            *(np.array([getattr(b, c) for b in self.bars], dtype=np.float64) for c in _PRICE_VOLUME),
        )

    def bars_frame(self) -> pd.DataFrame:
        """The bars as a lake-shaped frame: symbol, ts (UTC, seconds), open, high, low, close, volume; sorted."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "symbol": self.symbol,
                "ts": pd.to_datetime([b.ts for b in self.bars], utc=True).astype("datetime64[s, UTC]"),
                "open": [b.open for b in self.bars],
                "high": [b.high for b in self.bars],
                "low": [b.low for b in self.bars],
                "close": [b.close for b in self.bars],
                "volume": [b.volume for b in self.bars],
            }
        )
        return frame.sort_values("ts", kind="stable").reset_index(drop=True)


class Interval(BaseModel):
    """The central ``level`` interval of the forecast close, in price units."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    level: float = Field(gt=0, lt=1, description="nominal share of closes inside the interval, e.g. 0.8")
    lower: float = Field(gt=0, description="lower end of the interval (price)")
    upper: float = Field(gt=0, description="upper end of the interval (price)")

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if not (math.isfinite(self.lower) and math.isfinite(self.upper) and self.lower <= self.upper):
            raise ValueError(f"interval [{self.lower}, {self.upper}] must be finite with lower <= upper")
        return self


class PredictResponse(BaseModel):
    """The 200 body: the close forecast for the minute after ``as_of``, with its interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    as_of: datetime = Field(description="start of the last bar used (UTC); the forecast is for the next minute")
    horizon_minutes: int = Field(ge=1)
    predicted_close: float
    model_version: str
    model_kind: Literal["baseline", "lstm-attention"] = Field(description="which kind of model answered")
    interval: Interval

    @field_validator("as_of")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("as_of must carry a time zone (UTC)")
        return v.astimezone(UTC)

    @field_validator("predicted_close")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"predicted_close {v!r} is not finite")
        return v


class ErrorBody(BaseModel):
    """Every non-200 body of score.py: ``error`` says what is wrong and what to do; ``code`` is stable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    error: str
    code: str
    detail: Any = None


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _field_errors(err: ValidationError) -> list[dict[str, str]]:
    out = []
    for e in err.errors(include_url=False, include_input=False):
        msg = str(e["msg"]).removeprefix("Value error, ")
        if len(msg) > _MAX_MESSAGE:  # a validator echoing a huge input: keep both ends (the rule is at the end)
            msg = msg[: _MAX_MESSAGE // 2] + "…" + msg[-_MAX_MESSAGE // 2 :]
        out.append({"loc": _loc(tuple(e["loc"])), "message": msg})
    return out


def parse_predict_request(raw: str | bytes | bytearray | Mapping[str, Any]) -> PredictRequest:
    """Validate a raw ``POST /score`` body (JSON text/bytes, or an already-decoded object).

    Raises :class:`InvalidRequest` whose message names every field problem (the first
    ``_MAX_REPORTED_ERRORS``) and what a valid body looks like when it is not even JSON.
    """
    data = _decode(raw)
    if not isinstance(data, Mapping):
        raise InvalidRequest(
            f'the body must be a JSON object {{"symbol": …, "bars": [...]}}, got {type(data).__name__}'
        )
    try:
        return PredictRequest.model_validate(dict(data))
    except ValidationError as err:
        errors = _field_errors(err)
        shown = errors[:_MAX_REPORTED_ERRORS]
        text = "; ".join(f"{e['loc']}: {e['message']}" if e["loc"] else e["message"] for e in shown)
        more = f" (and {len(errors) - len(shown)} more)" if len(errors) > len(shown) else ""
        raise InvalidRequest(f"invalid request: {text}{more}", detail=shown) from None


class ScoringRequest(NamedTuple):
    """A validated ``POST /score`` body as arrays: what :func:`parse_scoring_request` returns."""

    symbol: str
    bars: BarArrays


_REQUEST_KEYS: Final = frozenset(("symbol", "bars"))
_BAR_KEYS: Final = frozenset(("ts", "open", "high", "low", "close", "volume"))
_PRICE_VOLUME: Final = ("open", "high", "low", "close", "volume")
_NUMBER_TYPES: Final = frozenset((int, float))
_UTC_SECOND_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:Z|\+00:00)\Z")
_MAX_EPOCH_S: Final = 253_402_300_799  # 9999-12-31T23:59:59Z


def _decode(raw: str | bytes | bytearray | Mapping[str, Any]) -> Any:
    if isinstance(raw, bytes | bytearray):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidRequest(f"the body is not UTF-8 text ({err}); send JSON") from None
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except RecursionError:
            raise InvalidRequest(
                'the body is nested too deeply to be a request; send {"symbol": …, "bars": [{…}, …]}'
            ) from None
        except ValueError as err:
            raise InvalidRequest(
                f"the body is not valid JSON ({err}); send "
                '{"symbol": "SPY", "bars": [{"ts": "2024-06-03T13:30:00Z", "open": …, "high": …, "low": …, '
                '"close": …, "volume": …}, …]}'
            ) from None
    return raw


def _fast_ts(values: list[Any]) -> npt.NDArray[np.int64] | None:
    """Epoch seconds when every ts is canonical (``YYYY-MM-DDTHH:MM:SSZ``/``+00:00`` or plain numbers) and not
    before 1970; ``None`` sends the body to the pydantic path, which refuses it with the contract's message."""
    kinds = set(map(type, values))
    if kinds == {str}:
        if not all(_UTC_SECOND_RE.match(v) for v in values):
            return None
        ts = np.array([v[:19] for v in values], dtype="datetime64[s]").astype(np.int64)
        if (ts < 0).any():  # before 1970: pydantic refuses it and says so
            return None
    elif kinds and kinds <= _NUMBER_TYPES:
        try:
            seconds = np.array(values, dtype=np.float64)
        except OverflowError:
            return None
        if not (np.isfinite(seconds).all() and (seconds >= 0).all() and (seconds <= _MAX_EPOCH_S).all()):
            return None
        ts = seconds.astype(np.int64)
        if (ts != seconds).any():
            return None
    else:
        return None
    return None if (ts % 60 != 0).any() else ts


def _fast_request(data: Mapping[str, Any]) -> ScoringRequest | None:
    """The request as arrays when it is plainly valid, else ``None`` (then pydantic decides and explains)."""
    if data.keys() != _REQUEST_KEYS:
        return None
    symbol, bars = data["symbol"], data["bars"]
    if type(symbol) is not str or type(bars) is not list or len(bars) > MAX_BARS:
        return None
    symbol = symbol.strip().upper()
    if not SYMBOL_RE.match(symbol) or not all(type(b) is dict and b.keys() == _BAR_KEYS for b in bars):
        return None
    ts = _fast_ts([b["ts"] for b in bars])
    if ts is None:
        return None
    columns = []
    for name in _PRICE_VOLUME:
        values = [b[name] for b in bars]
        if not set(map(type, values)) <= _NUMBER_TYPES:
            return None
        try:
            columns.append(np.array(values, dtype=np.float64))
        except OverflowError:
            return None
    arrays = BarArrays(ts, *columns)
    prices = np.stack([arrays.open, arrays.high, arrays.low, arrays.close])
    ok = (
        np.isfinite(prices).all()
        and (prices > 0).all()
        and (arrays.high >= np.maximum(arrays.open, arrays.close)).all()
        and (arrays.low <= np.minimum(arrays.open, arrays.close)).all()
        and np.isfinite(arrays.volume).all()
        and (arrays.volume >= 0).all()
        and len(np.unique(ts)) == len(ts)
    )
    return ScoringRequest(symbol, arrays) if ok else None


def parse_scoring_request(raw: str | bytes | bytearray | Mapping[str, Any]) -> ScoringRequest:
    """:func:`parse_predict_request` as arrays, ~50x faster on a valid body (the serving hot path).

    A body that is plainly valid (canonical UTC ``ts`` strings or epoch seconds, numbers as JSON numbers,
    every rule of :class:`BarIn` and :class:`PredictRequest` checked on whole columns) never builds a model.
    Anything else goes through :func:`parse_predict_request`, so what is refused, and the message saying
    why, is exactly the pydantic contract's.
    """
    data = _decode(raw)
    if isinstance(data, Mapping):
        fast = _fast_request(data)
        if fast is not None:
            return fast
    request = parse_predict_request(data)
    return ScoringRequest(request.symbol, request.bar_arrays())


def model_status(status_code: int, headers: Mapping[str, str]) -> int:
    """The scoring container's own status behind an AML endpoint answer.

    A real AML online endpoint turns any non-200 answer of ``score.py`` into 424 and puts the original
    status in ``ms-azureml-model-error-statuscode``; the local stand-in does the same by default. Pass the
    response's status and headers (any case-insensitive mapping, e.g. ``httpx.Headers``).
    """
    if status_code == 424:
        value = headers.get(MODEL_ERROR_STATUS_HEADER)
        if value is None:  # a plain dict with other casing
            value = next((v for k, v in headers.items() if k.lower() == MODEL_ERROR_STATUS_HEADER), None)
        if value is not None and str(value).strip().isdigit():
            return int(str(value).strip())
    return status_code
