"""The work behind the public prediction API: the latest bars from the lake, one call to the endpoint, errors.

:mod:`tickcast.api.app` only wires these into FastAPI routes. Three parts:

* :func:`resolve_symbol` — the path/body symbol, normalised like the scoring schema (blanks dropped,
  upper-cased) and checked against ``settings.symbols`` (404 otherwise, listing the served ones).
* :func:`latest_session` — the newest UTC day file of a symbol in the lake (a UTC day is one US session, see
  :mod:`tickcast.lake.store`), cleaned (sorted, one row per minute, invalid rows dropped) and capped to the
  last :data:`LAKE_BARS` bars. The API does not know the deployed model's ``bars_needed``, so it sends the
  whole latest session; a regular session is 390 minutes, so the cap only trims extended hours.
* :func:`score` — one ``POST /score`` through the async endpoint client
  (:class:`tickcast.endpoint.client.AsyncEndpointClient`: pooling, auth and timeouts live there);
  :func:`interpret` turns the endpoint's refusal into the :class:`PredictionError` the caller gets.

Every refusal is a :class:`PredictionError` (HTTP status, stable ``code``, a message that says what to do, a
structured ``detail``, and ``Retry-After`` seconds for 503s); its body is
:class:`tickcast.scoring.contract.ErrorBody` — the same ``{"error", "code", "detail"}`` shape as score.py's.

Errors (status, code — when):

* 404 ``unknown_symbol`` — the symbol is not in ``settings.symbols`` (the message lists them), or the model
  answers ``unknown_symbol`` (its 422; the model's message and ``detail.known``);
* 404 ``no_bars`` — the lake holds no bar of the symbol ("is ingestion running?");
* 422 ``not_enough_bars`` — too few consecutive bars (the model's 400, its message and ``detail``); for
  ``GET`` the message says how many the lake's latest session has and when to try again;
* 422 ``invalid_request`` — the body or a bar breaks the schema (checked here before the endpoint is called;
  a model 400 on the caller's bars maps here too);
* 503 ``invalid_lake_data`` — the model refuses the LAKE's bars for another reason (server-side data problem);
* 503 ``no_model`` — the endpoint has no deployment to route to yet ("No valid deployments to route to", AML's
  own 404): nothing is deployed; the pipeline or the retrain job deploys the first model;
* 503 ``endpoint_unavailable`` — refused/broken connection, timeout, 5xx, ``model_not_loaded``, 408, another 404,
  401/403 (the API's key or AML token is refused, or no AML token could be had), 429, or a 200 that is not a
  prediction; ``Retry-After`` :data:`RETRY_AFTER_S` (or the endpoint's own for 429/503); the details go to the
  log only;
* 503 ``lake_unavailable`` — Blob cannot be read (down, auth); ``Retry-After``;
* 503 ``corrupt_lake_data`` — the newest day file of the symbol is not a readable lake table
  (:class:`tickcast.lake.store.CorruptDayFile`; the next ingest of that day quarantines and rewrites it,
  decision 0031); ``Retry-After``; the blob and Arrow's message go to the log only.

AML's 424 (``ms-azureml-model-error-statuscode``) is undone with :func:`tickcast.scoring.contract.model_status`
first, so the stand-in in either ``--model-errors`` mode and a real AML endpoint are handled alike. Internal
addresses, keys and upstream bodies of 5xx answers are logged, never returned to the (public) caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from anyio import to_thread
from azure.core.exceptions import AzureError, ResourceNotFoundError
from pydantic import ValidationError

from tickcast.endpoint.client import AsyncEndpointClient
from tickcast.endpoint.errors import RETRY_AFTER_S, EndpointError
from tickcast.errors import TickcastError
from tickcast.scoring.contract import (
    INVALID_REQUEST,
    MODEL_NOT_LOADED,
    NOT_ENOUGH_BARS,
    UNKNOWN_SYMBOL,
    ErrorBody,
    PredictResponse,
)

if TYPE_CHECKING:
    import pandas as pd


__all__ = [
    "CORRUPT_LAKE_DATA",
    "ENDPOINT_UNAVAILABLE",
    "INVALID_LAKE_DATA",
    "LAKE_BARS",
    "LAKE_UNAVAILABLE",
    "NO_BARS",
    "NO_MODEL",
    "RETRY_AFTER_S",
    "BarSource",
    "LatestBars",
    "PredictionError",
    "interpret",
    "latest_session",
    "read_latest",
    "resolve_symbol",
    "score",
]

log = logging.getLogger("tickcast.api.app")

# error codes of the public API besides the scoring contract's (schema.INVALID_REQUEST, NOT_ENOUGH_BARS, ...)
NO_BARS: Final = "no_bars"
ENDPOINT_UNAVAILABLE: Final = "endpoint_unavailable"
LAKE_UNAVAILABLE: Final = "lake_unavailable"
CORRUPT_LAKE_DATA: Final = "corrupt_lake_data"  # = tickcast.lake.store.CorruptDayFile.default_code
INVALID_LAKE_DATA: Final = "invalid_lake_data"
NO_MODEL: Final = "no_model"
# AML's (and the stand-in's) 404 when no deployment has traffic: "No valid deployments to route to. ..."
NO_DEPLOYMENT_MESSAGE: Final = "no valid deployments to route to"

LAKE_BARS: Final = 400  # bars of the latest session sent to the model (a regular session has 390)
_SHOWN_SYMBOL: Final = 24  # longest symbol echoed back in a message

Source = Literal["caller", "lake"]


class PredictionError(TickcastError):
    """A request the API cannot answer with a prediction: status, stable code, what to do, optional Retry-After."""

    def __init__(
        self, status: int, code: str, message: str, detail: Any = None, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message, code=code, detail=detail)
        self.status = self.http_status = status
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return ErrorBody(error=self.message, code=self.code, detail=self.detail).model_dump(mode="json")

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


def unavailable(message: str, code: str = ENDPOINT_UNAVAILABLE, retry_after: int = RETRY_AFTER_S) -> PredictionError:
    return PredictionError(503, code, message, retry_after=retry_after)


def shown(symbol: str) -> str:
    """A symbol safe to echo in a message: ``repr`` of at most :data:`_SHOWN_SYMBOL` characters."""
    return repr(symbol if len(symbol) <= _SHOWN_SYMBOL else symbol[:_SHOWN_SYMBOL] + "…")


def resolve_symbol(raw: str, served: Sequence[str]) -> str:
    """``raw`` stripped and upper-cased, if it is one of ``served``; else a 404 listing the served symbols."""
    symbol = raw.strip().upper()
    known = [s.strip().upper() for s in served]
    if symbol not in known:
        raise PredictionError(
            404,
            UNKNOWN_SYMBOL,
            f"unknown symbol {shown(raw)}: this API serves {', '.join(known) or 'no symbols (none configured)'}",
            {"known": known},
        )
    return symbol


# --- the lake --------------------------------------------------------------------------------------------


class BarSource(Protocol):
    """What the API reads from the lake (:class:`tickcast.lake.store.Lake` has both methods)."""

    def days(self, symbol: str) -> list[date]:
        """The UTC days that have a day file for ``symbol``, sorted."""
        ...

    def read_day(self, symbol: str, day: date) -> pd.DataFrame:
        """One day file as a lake-schema frame (empty when missing)."""
        ...


@dataclass(frozen=True)
class LatestBars:
    """The bars of the newest session of one symbol, ready for ``POST /score`` (``ts`` as ISO-8601 ``Z``)."""

    symbol: str
    day: date
    bars: list[dict[str, Any]]
    dropped: int = 0  # invalid rows left out
    last_ts: datetime | None = field(default=None)


def _clean(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Sorted by ts, one row per minute (last one wins), rows that break the Bar rules dropped."""
    import numpy as np

    if frame.empty:
        return frame, 0
    ts = frame["ts"]
    prices = frame[["open", "high", "low", "close"]].astype("float64")
    volume = frame["volume"].astype("float64")
    ok = (
        np.isfinite(prices).all(axis=1)
        & (prices > 0).all(axis=1)
        & np.isfinite(volume)
        & (volume >= 0)
        & (prices["high"] >= prices[["open", "close"]].max(axis=1))
        & (prices["low"] <= prices[["open", "close"]].min(axis=1))
        & ts.notna()
        & (ts.dt.second == 0)
    )
    dropped = int((~ok).sum())
    good = frame[ok].sort_values("ts", kind="stable").drop_duplicates(subset="ts", keep="last")
    return good, dropped


def latest_session(lake: BarSource, symbol: str, *, cap: int = LAKE_BARS) -> LatestBars:
    """The last ``cap`` valid bars of the newest day file of ``symbol``; 404 ``no_bars`` when there is none."""
    days = lake.days(symbol)
    for day in reversed(days[-2:]):  # the newest day; the one before only if the newest holds no valid bar
        frame, dropped = _clean(lake.read_day(symbol, day))
        if dropped:
            log.warning("lake: %d invalid bar(s) of %s on %s left out", dropped, symbol, day)
        if frame.empty:
            continue
        frame = frame.tail(cap)
        ts = frame["ts"]
        bars = [
            {"ts": t, "open": o, "high": h, "low": lo, "close": c, "volume": v}
            for t, o, h, lo, c, v in zip(
                ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                frame["open"].astype("float64"),
                frame["high"].astype("float64"),
                frame["low"].astype("float64"),
                frame["close"].astype("float64"),
                frame["volume"].astype("float64"),
                strict=True,
            )
        ]
        return LatestBars(symbol, day, bars, dropped, ts.iloc[-1].to_pydatetime())
    raise no_bars(symbol)


def no_bars(symbol: str) -> PredictionError:
    return PredictionError(
        404,
        NO_BARS,
        f"no bars yet for {symbol}; is ingestion running? (locally: tickcast status; the ingest DAG fills the lake "
        "every minute)",
        {"symbol": symbol},
    )


async def read_latest(lake: BarSource, symbol: str, *, cap: int = LAKE_BARS) -> LatestBars:
    """:func:`latest_session` in a worker thread (the Blob SDK blocks); Blob failures become a 503."""
    from tickcast.lake.store import CorruptDayFile  # pyarrow: loaded with the lake, not at the API's import

    try:
        return await to_thread.run_sync(lambda: latest_session(lake, symbol, cap=cap))
    except ResourceNotFoundError:  # no lake container yet: nothing was ever ingested
        raise no_bars(symbol) from None
    except CorruptDayFile as err:
        log.error("lake: %s", err)
        raise PredictionError(
            503,
            CORRUPT_LAKE_DATA,
            f"the stored bars of {symbol} cannot be read: a day file in the lake is damaged (a server-side data "
            "problem, not your request's; the operators see it in the log and the next ingest of that day "
            "rewrites it); try again later, or POST /api/predict with your own bars meanwhile",
            {"symbol": symbol},
            retry_after=RETRY_AFTER_S,
        ) from None
    except (AzureError, OSError) as err:
        log.warning("lake: reading %s failed: %s: %s", symbol, type(err).__name__, err)
        raise unavailable(
            "the market-data lake cannot be read right now; try again shortly", LAKE_UNAVAILABLE
        ) from None


# --- the endpoint ----------------------------------------------------------------------------------------


def interpret(err: EndpointError, *, source: Source, latest: LatestBars | None = None) -> PredictionError:
    """The :class:`PredictionError` the caller gets for the endpoint's refusal ``err``.

    ``source`` says whose bars were sent: the caller's (``POST /api/predict``) or the lake's (``GET``), which
    decides whether a refusal of the bars is the caller's to fix (422) or a server-side problem (503).
    """
    if err.status is None:  # no answer: refused, timed out, no token, misconfigured
        level = logging.ERROR if err.code in ("no_token", "misconfigured") else logging.WARNING
        log.log(level, "endpoint: %s", err)
        what = {
            "no_token": "predictions are unavailable: the API could not authenticate to the model",
            "misconfigured": "predictions are unavailable: the API is misconfigured; the operators were told",
        }.get(err.code or "", "the model endpoint is unreachable or did not answer in time; try again shortly")
        return unavailable(what)
    status = err.model_status if err.model_status is not None else err.status
    body = err.body
    code, message = err.code or "", err.message.strip()
    detail = body.get("detail") if isinstance(body, Mapping) else None
    if code == UNKNOWN_SYMBOL:
        return PredictionError(404, UNKNOWN_SYMBOL, message or "the model does not know this symbol", detail)
    if status == 400 and code == NOT_ENOUGH_BARS:
        if source == "lake" and latest is not None:
            return _lake_not_enough(latest, detail, message)
        return PredictionError(422, NOT_ENOUGH_BARS, message, detail)
    if status == 400:
        if source == "caller":
            return PredictionError(422, INVALID_REQUEST, message or "the model refused the request", detail)
        log.error("endpoint: the model refused the lake's bars: %s", message)
        return PredictionError(
            503,
            INVALID_LAKE_DATA,
            f"the model refused the stored bars: {message}; this is a server-side data problem, not your "
            "request's; POST /api/predict with your own bars meanwhile",
            detail,
            retry_after=RETRY_AFTER_S,
        )
    if status == 404 and NO_DEPLOYMENT_MESSAGE in message.lower():
        log.warning("endpoint: no deployment has traffic yet: %.300r", body)
        return PredictionError(
            503,
            NO_MODEL,
            "no model is deployed yet: predictions start once the first model version is deployed (by the pipeline "
            "or the retrain job); try again later",
            retry_after=RETRY_AFTER_S,
        )
    what = {
        401: "the endpoint refused the API's credentials (endpoint key / AML token / managed identity role)",
        403: "the endpoint refused the API's credentials (endpoint key / AML token / managed identity role)",
        404: "the endpoint has no deployment with traffic",
        408: "the model did not answer within the endpoint's request timeout",
        429: "the endpoint is throttling requests",
    }.get(status, f"the endpoint answered HTTP {status}" + (f" ({code})" if code else ""))
    if code == MODEL_NOT_LOADED:
        what = "the deployed model is not loaded"
    level = logging.ERROR if status in (401, 403) else logging.WARNING
    log.log(level, "endpoint: %s (HTTP %d, model status %d): %.300r", what, err.status, status, body)
    return unavailable(
        "predictions are unavailable right now: the model endpoint "
        + {401: "is misconfigured", 403: "is misconfigured", 429: "is busy", 408: "is too slow"}.get(
            status, "is not serving"
        )
        + "; try again shortly",
        retry_after=err.retry_after if status in (429, 503) else RETRY_AFTER_S,
    )


def _lake_not_enough(latest: LatestBars, detail: Any, message: str) -> PredictionError:
    info = detail if isinstance(detail, Mapping) else {}
    needed, have = info.get("needed"), info.get("consecutive")
    last = latest.last_ts.strftime("%Y-%m-%d %H:%MZ") if latest.last_ts else str(latest.day)
    if isinstance(needed, int) and isinstance(have, int):
        wait = max(1, needed - have)
        text = (
            f"not enough bars yet for {latest.symbol}: the lake's latest session ends at {last} with {have} "
            f"consecutive 1-minute bars and the model needs {needed}; try again in about {wait} minute(s) "
            "(while ingestion runs), or POST /api/predict with your own bars"
        )
    else:
        text = f"not enough bars yet for {latest.symbol} in the lake's latest session (up to {last}): {message}"
    return PredictionError(
        422, NOT_ENOUGH_BARS, text, {**info, "session": latest.day.isoformat(), "endpoint_error": message}
    )


async def score(
    endpoint: AsyncEndpointClient,
    payload: dict[str, Any] | bytes,
    *,
    source: Source,
    latest: LatestBars | None = None,
) -> PredictResponse:
    """Score ``payload`` (``{symbol, bars}``, or that body as JSON bytes, sent as is) on the endpoint; the
    answer as a :class:`PredictResponse`, or the :class:`PredictionError` of the module table."""
    try:
        answer = await endpoint.score(payload)
    except EndpointError as err:
        raise interpret(err, source=source, latest=latest) from None
    try:
        return PredictResponse.model_validate(answer.body)
    except ValidationError as err:
        log.error("endpoint: a 200 answer that is not a prediction: %s; body %.300r", err, answer.body)
        raise unavailable("the model endpoint answered something that is not a prediction; try again") from None
