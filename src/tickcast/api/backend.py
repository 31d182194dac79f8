"""The work behind the public prediction API: the latest bars from the lake, one call to the endpoint, errors.

:mod:`tickcast.api.app` only wires these into FastAPI routes. Three parts:

* :func:`resolve_symbol` — the path/body symbol, normalised like the scoring schema (blanks dropped,
  upper-cased) and checked against ``settings.symbols`` (404 otherwise, listing the served ones).
* :func:`latest_session` — the newest UTC day file of a symbol in the lake (a UTC day is one US session, see
  :mod:`tickcast.lake.store`), cleaned (sorted, one row per minute, invalid rows dropped) and capped to the
  last :data:`LAKE_BARS` bars. The API does not know the deployed model's ``bars_needed``, so it sends the
  whole latest session; a regular session is 390 minutes, so the cap only trims extended hours.
* :class:`EndpointClient` — ONE pooled ``httpx.AsyncClient`` (over aiohttp:
  :mod:`tickcast.endpoint.http_transport`) for ``POST {settings.endpoint_url}/score``,
  authenticated with ``Authorization: Bearer <serving.endpoint_key>`` in profile local and with an Entra ID
  token for :data:`AML_SCOPE` from :func:`tickcast.azure.credential` (managed identity) in profile cloud
  (:class:`BearerToken` caches it until :data:`TOKEN_REFRESH_MARGIN_S` before it expires; the credential is
  not called per request). :func:`interpret` turns the endpoint's answer into a
  :class:`~tickcast.scoring.contract.PredictResponse` or a :class:`PredictionError`.

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
* 503 ``endpoint_unavailable`` — refused/broken connection, timeout, 5xx, ``model_not_loaded``, 408, 404 (no
  deployment with traffic), 401/403 (the API's key or identity is refused), 429, or a 200 that is not a
  prediction; ``Retry-After`` :data:`RETRY_AFTER_S` (or the endpoint's own for 429/503); the details go to the
  log only;
* 503 ``lake_unavailable`` — Blob cannot be read (down, auth); ``Retry-After``.

AML's 424 (``ms-azureml-model-error-statuscode``) is undone with :func:`tickcast.scoring.contract.model_status`
first, so the stand-in in either ``--model-errors`` mode and a real AML endpoint are handled alike. Internal
addresses, keys and upstream bodies of 5xx answers are logged, never returned to the (public) caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import httpx
from pydantic import ValidationError

from tickcast.endpoint.http_transport import AiohttpTransport
from tickcast.scoring.contract import (
    INVALID_REQUEST,
    MODEL_NOT_LOADED,
    NOT_ENOUGH_BARS,
    UNKNOWN_SYMBOL,
    ErrorBody,
    PredictResponse,
    model_status,
)

if TYPE_CHECKING:
    import pandas as pd
    from azure.core.credentials import AccessToken, TokenCredential

    from tickcast.settings import Settings

__all__ = [
    "AML_SCOPE",
    "ENDPOINT_UNAVAILABLE",
    "INVALID_LAKE_DATA",
    "LAKE_BARS",
    "LAKE_UNAVAILABLE",
    "NO_BARS",
    "RETRY_AFTER_S",
    "BarSource",
    "BearerToken",
    "EndpointClient",
    "FastFailContainer",
    "LatestBars",
    "PredictionError",
    "interpret",
    "latest_session",
    "read_latest",
    "resolve_symbol",
]

log = logging.getLogger("tickcast.api.app")

# error codes of the public API besides the scoring contract's (schema.INVALID_REQUEST, NOT_ENOUGH_BARS, ...)
NO_BARS: Final = "no_bars"
ENDPOINT_UNAVAILABLE: Final = "endpoint_unavailable"
LAKE_UNAVAILABLE: Final = "lake_unavailable"
INVALID_LAKE_DATA: Final = "invalid_lake_data"

AML_SCOPE: Final = "https://ml.azure.com/.default"  # audience of AML online endpoints with auth_mode aad_token
TOKEN_REFRESH_MARGIN_S: Final = 300.0  # refresh a token this long before it expires (azure-core does the same)
LAKE_BARS: Final = 400  # bars of the latest session sent to the model (a regular session has 390)
RETRY_AFTER_S: Final = 5  # Retry-After of a 503
MAX_RETRY_AFTER_S: Final = 300
CONNECT_TIMEOUT_S: Final = 3.0
TIMEOUT_MARGIN_S: Final = 1.0  # wait this much past request_timeout_ms, so the endpoint's own 408 arrives first
_SHOWN_SYMBOL: Final = 24  # longest symbol echoed back in a message

Source = Literal["caller", "lake"]


class PredictionError(Exception):
    """A request the API cannot answer with a prediction: status, stable code, what to do, optional Retry-After."""

    def __init__(
        self, status: int, code: str, message: str, detail: Any = None, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
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


LAKE_CALL_OPTIONS: Final[dict[str, Any]] = {"retry_total": 0, "connection_timeout": 3, "read_timeout": 10}


class _FastFailBlob:
    def __init__(self, blob: Any, options: Mapping[str, Any]) -> None:
        self._blob, self._options = blob, options

    def download_blob(self, *args: Any, **kwargs: Any) -> Any:
        return self._blob.download_blob(*args, **{**self._options, **kwargs})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blob, name)


class FastFailContainer:
    """A Blob ``ContainerClient`` whose reads fail fast: no SDK retries, short timeouts (per-call options).

    The storage SDK's default retry policy backs off 15 s, then longer: with Blob unreachable one ``GET`` took
    ~90 s. The API answers 503 + ``Retry-After`` instead and lets the caller retry. Wraps the two read calls
    :class:`tickcast.lake.store.Lake` makes (``list_blob_names``, ``get_blob_client().download_blob``); anything
    else passes through unchanged.
    """

    def __init__(self, container: Any, options: Mapping[str, Any] = LAKE_CALL_OPTIONS) -> None:
        self._container, self._options = container, dict(options)

    def list_blob_names(self, *args: Any, **kwargs: Any) -> Any:
        return self._container.list_blob_names(*args, **{**self._options, **kwargs})

    def get_blob_client(self, *args: Any, **kwargs: Any) -> _FastFailBlob:
        return _FastFailBlob(self._container.get_blob_client(*args, **kwargs), self._options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)


async def read_latest(lake: BarSource, symbol: str, *, cap: int = LAKE_BARS) -> LatestBars:
    """:func:`latest_session` in a worker thread (the Blob SDK blocks); Blob failures become a 503."""
    from anyio import to_thread
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    try:
        return await to_thread.run_sync(lambda: latest_session(lake, symbol, cap=cap))
    except ResourceNotFoundError:  # no lake container yet: nothing was ever ingested
        raise no_bars(symbol) from None
    except (AzureError, OSError) as err:
        log.warning("lake: reading %s failed: %s: %s", symbol, type(err).__name__, err)
        raise unavailable(
            "the market-data lake cannot be read right now; try again shortly", LAKE_UNAVAILABLE
        ) from None


# --- the endpoint ----------------------------------------------------------------------------------------


class BearerToken:
    """``Bearer <token>`` for ``scope`` from a token credential, cached until ``margin_s`` before it expires.

    The credential is created lazily by ``credential_factory`` (importing azure-identity costs time) and
    called in a worker thread (its ``get_token`` blocks); one refresh at a time.
    """

    def __init__(
        self,
        credential_factory: Callable[[], TokenCredential],
        scope: str = AML_SCOPE,
        *,
        margin_s: float = TOKEN_REFRESH_MARGIN_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._factory = credential_factory
        self._credential: TokenCredential | None = None
        self.scope = scope
        self.margin_s = margin_s
        self.clock = clock
        self._token: AccessToken | None = None
        self._lock: asyncio.Lock | None = None

    def _fresh(self) -> bool:
        return self._token is not None and self._token.expires_on - self.margin_s > self.clock()

    def _fetch(self) -> AccessToken:
        if self._credential is None:
            self._credential = self._factory()
        return self._credential.get_token(self.scope)

    async def header(self) -> str:
        if not self._fresh():
            from anyio import to_thread

            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if not self._fresh():
                    self._token = await to_thread.run_sync(self._fetch)
                    log.info("endpoint: new token for %s, expires at %d", self.scope, self._token.expires_on)
        assert self._token is not None
        return f"Bearer {self._token.token}"


def _retry_after(headers: Mapping[str, str]) -> int:
    value = str(headers.get("retry-after") or "").strip()
    if value.isdigit():
        return max(1, min(int(value), MAX_RETRY_AFTER_S))
    return RETRY_AFTER_S


def _decode(content: bytes) -> Any:
    import json

    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return content[:500].decode("utf-8", "replace")


def interpret(
    status_code: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    source: Source,
    latest: LatestBars | None = None,
) -> PredictResponse:
    """The endpoint's answer as a :class:`PredictResponse`, or the :class:`PredictionError` the caller gets.

    ``source`` says whose bars were sent: the caller's (``POST /api/predict``) or the lake's (``GET``), which
    decides whether a refusal of the bars is the caller's to fix (422) or a server-side problem (503).
    """
    status = model_status(status_code, headers)
    body = _decode(content)
    if status == 200:
        try:
            return PredictResponse.model_validate(body)
        except ValidationError as err:
            log.error("endpoint: a 200 answer that is not a prediction: %s; body %.300r", err, body)
            raise unavailable("the model endpoint answered something that is not a prediction; try again") from None
    data = body if isinstance(body, Mapping) else {}
    code = str(data.get("code") or "")
    message = str(data.get("error") or data.get("message") or "").strip()
    detail = data.get("detail")
    if code == UNKNOWN_SYMBOL:
        raise PredictionError(404, UNKNOWN_SYMBOL, message or "the model does not know this symbol", detail)
    if status == 400 and code == NOT_ENOUGH_BARS:
        if source == "lake" and latest is not None:
            raise _lake_not_enough(latest, detail, message)
        raise PredictionError(422, NOT_ENOUGH_BARS, message, detail)
    if status == 400:
        if source == "caller":
            raise PredictionError(422, INVALID_REQUEST, message or "the model refused the request", detail)
        log.error("endpoint: the model refused the lake's bars: %s", message)
        raise PredictionError(
            503,
            INVALID_LAKE_DATA,
            f"the model refused the stored bars: {message}; this is a server-side data problem, not your "
            "request's; POST /api/predict with your own bars meanwhile",
            detail,
            retry_after=RETRY_AFTER_S,
        )
    what = {
        401: "the endpoint refused the API's credentials (endpoint key / managed identity role)",
        403: "the endpoint refused the API's credentials (endpoint key / managed identity role)",
        404: "the endpoint has no deployment with traffic",
        408: "the model did not answer within the endpoint's request timeout",
        429: "the endpoint is throttling requests",
    }.get(status, f"the endpoint answered HTTP {status}" + (f" ({code})" if code else ""))
    if code == MODEL_NOT_LOADED:
        what = "the deployed model is not loaded"
    level = logging.ERROR if status in (401, 403) else logging.WARNING
    log.log(level, "endpoint: %s (HTTP %d, model status %d): %.300r", what, status_code, status, body)
    raise unavailable(
        "predictions are unavailable right now: the model endpoint "
        + {401: "is misconfigured", 403: "is misconfigured", 429: "is busy", 408: "is too slow"}.get(
            status, "is not serving"
        )
        + "; try again shortly",
        retry_after=_retry_after(headers) if status in (429, 503) else RETRY_AFTER_S,
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


class EndpointClient:
    """``POST /score`` on the online endpoint through ONE pooled ``httpx.AsyncClient``.

    :meth:`open` creates the client (the app's lifespan does, and :meth:`score` does on first use when no
    lifespan ran); :meth:`aclose` closes it. ``transport`` replaces the network (tests); ``credential``
    replaces :func:`tickcast.azure.credential` in profile cloud.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        credential: TokenCredential | None = None,
    ) -> None:
        self.base_url = settings.endpoint_url
        self.timeout_s = settings.serving.request_timeout_ms / 1000
        self.timeout = httpx.Timeout(self.timeout_s + TIMEOUT_MARGIN_S, connect=min(CONNECT_TIMEOUT_S, self.timeout_s))
        self.transport = transport
        self.problem: str | None = None  # a configuration error: every score() is a 503 saying so (logged)
        self._auth: Callable[[], Awaitable[str | None]]
        if settings.profile == "cloud":
            if not settings.serving.endpoint_url:
                self.problem = "TICKCAST_SERVING__ENDPOINT_URL is not set (the AML endpoint's scoring URI)"
            if credential is not None:
                fixed = credential
                token = BearerToken(lambda: fixed)
            else:
                from tickcast.azure import credential as make_credential

                token = BearerToken(lambda: make_credential(settings))
            self._auth = token.header
        else:
            secret = settings.serving.endpoint_key.get_secret_value() if settings.serving.endpoint_key else ""
            header = f"Bearer {secret}" if secret else None

            async def static() -> str | None:
                return header

            self._auth = static
        self._client: httpx.AsyncClient | None = None

    def open(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self.timeout,
                transport=self.transport or AiohttpTransport(),
                headers={"Accept": "application/json", "User-Agent": "tickcast-api"},
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def score(
        self, payload: dict[str, Any] | bytes, *, source: Source, latest: LatestBars | None = None
    ) -> PredictResponse:
        """Score ``payload`` (``{symbol, bars}``, or that body as JSON bytes, sent as is); raises
        :class:`PredictionError` as in the module table."""
        if self.problem:
            log.error("endpoint: %s", self.problem)
            raise unavailable("predictions are unavailable: the API is misconfigured; the operators were told")
        client = self.open()
        try:
            auth = await self._auth()
        except Exception as err:  # azure-identity raises several types; all mean "no token now"
            log.error("endpoint: no token for %s: %s: %s", AML_SCOPE, type(err).__name__, err)
            raise unavailable("predictions are unavailable: the API could not authenticate to the model") from None
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = auth
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        started = time.perf_counter()
        try:
            response = await client.post("/score", content=body, headers=headers)
        except httpx.TimeoutException as err:
            log.warning("endpoint: no answer from %s within %.1f s: %r", self.base_url, self.timeout_s, err)
            raise unavailable("the model endpoint did not answer in time; try again shortly") from None
        except httpx.HTTPError as err:
            log.warning("endpoint: %s unreachable: %r", self.base_url, err)
            raise unavailable("the model endpoint is unreachable; try again shortly") from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.debug("endpoint: HTTP %d in %.1f ms", response.status_code, elapsed_ms)
        return interpret(response.status_code, response.headers, response.content, source=source, latest=latest)
