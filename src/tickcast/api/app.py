"""The public prediction API (FastAPI): the body of the Function app, and of the local ``function`` service.

Routes (all under ``/api``, so local uvicorn URLs and Azure Functions URLs are the same — see
``cloud/function/host.json``):

* ``GET /api/predictions/{symbol}`` — the forecast from the symbol's latest session in the lake
  (:func:`tickcast.api.backend.latest_session`), scored by the online endpoint;
* ``POST /api/predict`` — the forecast from the caller's ``{symbol, bars}``
  (:class:`tickcast.scoring.contract.PredictRequest`, validated here with the scoring fast path before the
  endpoint is called, then forwarded byte for byte);
* ``GET /api/health`` — liveness (no lake, no endpoint call) and the prediction log's counts;
* ``GET /api/openapi.json`` and ``GET /api/docs`` — the OpenAPI document and Swagger UI.

Both prediction routes answer :class:`~tickcast.api.schema.Prediction`: the endpoint's
:class:`~tickcast.scoring.contract.PredictResponse` ``{symbol, as_of, horizon_minutes, predicted_close,
model_version, model_kind, interval}`` plus ``data_age_s``, the age of the newest bar used
(:mod:`tickcast.api.freshness`); during
the regular session ``GET`` answers 503 ``stale_data`` instead of a forecast from a lake that is behind.
Every error body is :class:`~tickcast.scoring.contract.ErrorBody` ``{"error", "code", "detail"}`` — also
FastAPI's own 404/405 and body-validation errors — with the statuses of the table in
:mod:`tickcast.api.backend` (404 unknown symbol / no bars, 413 body too large, 422 invalid or too few bars,
503 + ``Retry-After`` when the endpoint or the lake cannot answer). Bad input never yields a 5xx.
Every answer served is recorded in the lake's prediction log off the request path
(:class:`tickcast.api.prediction_log.PredictionRecorder`; a failed write never fails a request).

Local: ``uvicorn tickcast.api.app:app_factory --factory`` (the stack's ``function`` service). Azure:
``cloud/function/function_app.py`` wraps :func:`create_app` in ``func.AsgiFunctionApp``. Nothing here does
I/O at import or in :func:`create_app`: the endpoint client is opened in the lifespan (or on first use when
the host runs no lifespan), the lake client on the first ``GET``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Final, cast

import httpx
from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tickcast.api.backend import (
    LAKE_BARS,
    BarSource,
    PredictionError,
    read_latest,
    resolve_symbol,
    score,
)
from tickcast.api.body import BODY_TOO_LARGE, parse_body, read_body
from tickcast.api.freshness import STALE_DATA, Clock, check_fresh, data_age_s, make_clock
from tickcast.api.prediction_log import PredictionRecorder, Sink
from tickcast.api.schema import Prediction
from tickcast.endpoint.client import AsyncEndpointClient
from tickcast.endpoint.errors import RETRY_AFTER_S
from tickcast.errors import TickcastError
from tickcast.lake.fast_fail import FastFailContainer
from tickcast.scoring.contract import (
    INVALID_REQUEST,
    NOT_ENOUGH_BARS,
    ErrorBody,
    InvalidRequest,
    PredictRequest,
    PredictResponse,
)
from tickcast.settings import Settings, get_settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import ContainerClient

__all__ = ["API_PREFIX", "Health", "app_factory", "create_app"]

log = logging.getLogger("tickcast.api.app")

API_PREFIX: Final = "/api"
API_VERSION: Final = "1"
_MAX_REPORTED_ERRORS = 20
_MAX_MESSAGE = 300
_EXAMPLE_BODY = (
    '{"symbol": "SPY", "bars": [{"ts": "2024-06-03T13:30:00Z", "open": 530.1, "high": 530.4, "low": 529.9, '
    '"close": 530.2, "volume": 120000}, ...]}'
)


class Health(BaseModel):
    """``GET /api/health``: the process is up (the endpoint and the lake are not checked)."""

    status: str = Field(examples=["ok"])
    profile: str = Field(examples=["local"])
    symbols: list[str] = Field(description="the symbols this API serves")
    prediction_log: dict[str, Any] = Field(
        default_factory=dict,
        description="served forecasts recorded / written to the lake / pending, write failures, dropped, last error",
    )


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description, **extra}


GET_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    404: _error("`unknown_symbol`: not a served symbol (the message lists them); `no_bars`: nothing ingested yet"),
    422: _error("`not_enough_bars`: the lake's latest session is still shorter than the model's window"),
    503: _error(
        "`endpoint_unavailable` / `lake_unavailable` / `invalid_lake_data` / `corrupt_lake_data`: try again after "
        f"Retry-After seconds; `{STALE_DATA}`: during the regular session the lake's newest bar is older than the "
        "API serves forecasts from (the message names it and its age)",
        headers=_RETRY_AFTER,
    ),
}
POST_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    404: _error("`unknown_symbol`: not a served symbol, or one the model was not trained on"),
    413: _error(f"`{BODY_TOO_LARGE}`: the body is longer than the API accepts (`detail.limit` bytes)"),
    422: _error("`invalid_request`: the body or a bar breaks the schema; `not_enough_bars`: too few consecutive bars"),
    503: _error("`endpoint_unavailable`: try again after Retry-After seconds", headers=_RETRY_AFTER),
}


def _validation_message(err: RequestValidationError) -> tuple[str, list[dict[str, str]]]:
    """One line naming every field problem (like :func:`tickcast.scoring.contract.parse_predict_request`)."""
    problems: list[dict[str, str]] = []
    for e in err.errors():
        loc = [str(p) for p in e.get("loc", ())]
        if loc and loc[0] == "body":
            loc = loc[1:]
        kind = str(e.get("type", ""))
        if kind == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "")
            return (
                f"the body is not valid JSON ({reason or 'decode error'}); send {_EXAMPLE_BODY}",
                [{"loc": "", "message": "JSON decode error"}],
            )
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if kind == "missing" and not loc:
            msg = f"the body is missing; send {_EXAMPLE_BODY}"
        elif kind in ("model_attributes_type", "dict_type") and not loc:
            msg = f'the body must be a JSON object {{"symbol": …, "bars": [...]}} sent as application/json; {msg}'
        if len(msg) > _MAX_MESSAGE:  # a validator echoing a huge input: keep both ends (the rule is at the end)
            msg = msg[: _MAX_MESSAGE // 2] + "…" + msg[-_MAX_MESSAGE // 2 :]
        problems.append({"loc": ".".join(loc), "message": msg})
    shown = problems[:_MAX_REPORTED_ERRORS]
    text = "; ".join(f"{p['loc']}: {p['message']}" if p["loc"] else p["message"] for p in shown)
    more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
    return f"invalid request: {text}{more}", shown


def _json_error(
    status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=message, code=code, detail=detail).model_dump(mode="json")
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(
    settings: Settings | None = None,
    *,
    lake: BarSource | None = None,
    endpoint_transport: httpx.AsyncBaseTransport | None = None,
    credential: TokenCredential | None = None,
    token_transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    prediction_sink: Sink | None = None,
) -> FastAPI:
    """The API. ``lake`` replaces the Blob lake (tests: any object with ``days`` and ``read_day``);
    ``endpoint_transport`` replaces the network to the endpoint (tests: ``httpx.ASGITransport(stand_in)``);
    ``credential`` replaces :func:`tickcast.azure.credential` in profile cloud, ``token_transport`` the network to
    Azure Resource Manager's AML token API; ``clock`` replaces the clock ``settings.serving.clock`` names
    (:func:`tickcast.api.freshness.make_clock`); ``prediction_sink`` replaces the lake's prediction log (tests).
    """
    cfg = settings or get_settings()
    endpoint = AsyncEndpointClient(
        cfg, transport=endpoint_transport, credential=credential, token_transport=token_transport
    )
    now = clock or make_clock(cfg)

    def lake_sink() -> Sink:
        from tickcast.lake.predictions import PredictionLog

        return PredictionLog.from_settings(cfg).append

    logging_on = cfg.evaluation.log_predictions
    recorder = PredictionRecorder(
        (lambda: prediction_sink) if prediction_sink is not None else lake_sink,
        batch=cfg.evaluation.log_batch,
        flush_s=cfg.evaluation.log_flush_s,
        buffer_max=cfg.evaluation.log_buffer_max,
    )
    state: dict[str, BarSource | None] = {"lake": lake}
    if endpoint.problem:
        log.error("the prediction API cannot score: %s", endpoint.problem)

    def get_lake() -> BarSource:
        source = state["lake"]
        if source is None:
            from tickcast.azure import lake_container
            from tickcast.lake.store import Lake

            # read-only (never creates the container), and failing fast instead of the SDK's ~90 s of retries
            container = cast("ContainerClient", FastFailContainer(lake_container(cfg)))
            source = state["lake"] = Lake(container)
        return source

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        endpoint.open()
        try:
            yield
        finally:
            await endpoint.aclose()
            await now.aclose()
            recorder.close()

    app = FastAPI(
        title="tickcast prediction API",
        version=API_VERSION,
        description=(
            "Next-minute close forecasts with an interval, from the baseline or an LSTM+attention model served by "
            "an Azure ML online endpoint. "
            "Behind API Management every call needs `Ocp-Apim-Subscription-Key` (401 without it, 429 with "
            "`Retry-After` past the rate limit). Errors are `{error, code, detail}`."
        ),
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        swagger_ui_oauth2_redirect_url=f"{API_PREFIX}/docs/oauth2-redirect",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.endpoint = endpoint
    app.state.clock = now
    app.state.prediction_log = recorder

    @app.exception_handler(TickcastError)
    async def tickcast_error(_: Request, err: TickcastError) -> JSONResponse:
        """The one handler of deliberate errors: status, stable code, what to do, Retry-After on a 503."""
        retry_after = getattr(err, "retry_after", None)
        if retry_after is None and err.http_status == 503:
            retry_after = RETRY_AFTER_S
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return _json_error(err.http_status, err.code or err.default_code, err.message, err.detail, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
        message, problems = _validation_message(err)
        return _json_error(422, INVALID_REQUEST, message, problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 404:
            code, message = "not_found", f"no route {request.method} {request.url.path}; see {API_PREFIX}/docs"
        elif err.status_code == 405:
            code, message = "method_not_allowed", f"{request.method} is not allowed on {request.url.path}"
        elif err.status_code == 400:  # FastAPI: the body is JSON-ish but cannot be decoded (nesting, huge ints)
            cause = err.__cause__
            reason = f" ({type(cause).__name__}: {str(cause)[:200]})" if cause is not None else ""
            return _json_error(
                422, INVALID_REQUEST, f"the body could not be parsed{reason}; send {_EXAMPLE_BODY}", None
            )
        else:
            code, message = "http_error", str(err.detail)
        return _json_error(err.status_code, code, message, None, dict(err.headers or {}))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, err: Exception) -> JSONResponse:  # a bug: logged, JSON like the rest
        log.exception("unhandled error")
        return _json_error(500, "internal_error", "internal error; it was logged")

    router = APIRouter(prefix=API_PREFIX)

    @router.get("/health", response_model=Health, tags=["health"], summary="Liveness")
    async def health() -> Health:
        return Health(
            status="ok",
            profile=cfg.profile,
            symbols=[s.upper() for s in cfg.symbols],
            prediction_log=recorder.stats().as_dict(),
        )

    @router.get(
        "/predictions/{symbol}",
        response_model=Prediction,
        responses=GET_ERRORS,
        tags=["predictions"],
        summary="Forecast from the latest bars in the lake",
    )
    async def prediction(
        symbol: Annotated[str, Path(description="ticker, e.g. SPY (case-insensitive)", examples=["SPY"])],
    ) -> Prediction:
        """The close of the minute after the symbol's latest stored bar, from its latest session."""
        sym = resolve_symbol(symbol, cfg.symbols)
        latest = await read_latest(get_lake(), sym, cap=LAKE_BARS)
        at = await now.now()
        if latest.last_ts is not None:
            check_fresh(sym, latest.last_ts, at, cfg.serving.max_data_age_s)
        answer = await score(endpoint, {"symbol": sym, "bars": latest.bars}, source="lake", latest=latest)
        if logging_on:
            recorder.record(answer, "GET")
        return _with_age(answer, at)

    @router.post(
        "/predict",
        response_model=Prediction,
        responses=POST_ERRORS,
        openapi_extra=_PREDICT_REQUEST_BODY,
        tags=["predictions"],
        summary="Forecast from your own bars",
    )
    async def predict(request: Request) -> Prediction:
        """The close of the minute after your last bar; send at least the model's window of consecutive minutes."""
        raw = await read_body(request, cfg.serving.max_body_bytes)
        if not raw.strip():
            raise PredictionError(422, INVALID_REQUEST, f"the body is missing; send {_EXAMPLE_BODY}")
        try:
            body = await parse_body(raw)
        except InvalidRequest as err:
            raise PredictionError(422, INVALID_REQUEST, str(err), err.detail) from None
        resolve_symbol(body.symbol, cfg.symbols)
        minimum = cfg.serving.min_bars
        if minimum and body.bars.size < minimum:
            raise PredictionError(
                422,
                NOT_ENOUGH_BARS,
                f"bars: {body.bars.size} given, this API needs at least {minimum}; send more consecutive minutes",
                {"needed": minimum, "given": body.bars.size},
            )
        answer = await score(endpoint, raw, source="caller")  # valid: forwarded as sent, not re-encoded
        if logging_on:
            recorder.record(answer, "POST")
        return _with_age(answer, await now.now())

    app.include_router(router)
    app.openapi = lambda: _openapi_with_request_schema(app)  # type: ignore[method-assign]
    return app


def _with_age(answer: PredictResponse, at: datetime | None) -> Prediction:
    """The endpoint's answer with the age of its newest bar (``as_of``) at ``at``."""
    return Prediction(**answer.model_dump(), data_age_s=data_age_s(answer.as_of, at))


_PREDICT_REQUEST_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
    }
}


def _openapi_with_request_schema(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the ``PredictRequest`` schema that ``POST /api/predict`` validates against.

    The route reads the raw body (validated column-wise by :func:`parse_scoring_request`, ~50x faster than a
    pydantic body parameter), so FastAPI does not see the model; the schema is added here instead.
    """
    if app.openapi_schema is None:
        document = FastAPI.openapi(app)
        request = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(request.pop("$defs", {}))
        schemas["PredictRequest"] = request
        app.openapi_schema = document
    return app.openapi_schema


def app_factory() -> FastAPI:
    """``uvicorn tickcast.api.app:app_factory --factory``: the app from the process settings."""
    return create_app()
