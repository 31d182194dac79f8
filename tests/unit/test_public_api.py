"""The public prediction API in-process, against the REAL endpoint stand-in (score.py + a tiny ONNX model).

Chain: ``TestClient`` → ``tickcast.api.app`` → ``httpx.ASGITransport`` → ``emulators.aml_endpoint`` (blue at
100 %, AML's 424 model errors) → score.py → ONNX Runtime. The lake is the real :class:`tickcast.lake.store.Lake`
over :class:`MemoryContainer`, an in-memory TEST DOUBLE of a Blob container (no Azurite in unit tests). Also
here: the Azure Functions host (``cloud/function/function_app.py`` through ``AsgiFunctionApp``), the deployment
zip and its requirements, the cloud token path, and ``tickcast.api.client`` through the APIM stand-in.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import azure.functions as func
import httpx
import pandas as pd
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ServiceRequestError,
)
from fastapi import FastAPI
from fastapi.testclient import TestClient

from emulators.aml_endpoint.app import create_app as create_stand_in
from emulators.apim.app import create_app as create_gateway
from emulators.settings import load_stand_in_settings
from tests.support.models import NEEDED, make_bars
from tests.support.public_api import (
    KEY,
    LATEST,
    SPY_BARS,
    SYMBOLS,
    FixedClock,
    MemoryContainer,
    api_clients,
    api_settings,
    assert_error,
    filled_lake,
    make_stand_in,
    session_frame,
)
from tests.support.stand_ins import stand_in_settings
from tickcast.api import app as api_module
from tickcast.api.app import create_app
from tickcast.api.client import GatewayError, predict, smoke
from tickcast.api.schema import Prediction
from tickcast.lake.predictions import PredictionLog
from tickcast.lake.store import Lake
from tickcast.scoring.contract import PredictResponse
from tickcast.settings import PROJECT_ROOT, load_settings

SUB_KEY = "test-subscription-key"
FUNCTION_DIR = PROJECT_ROOT / "cloud" / "function"


# --- test doubles ---------------------------------------------------------------------------------------


class BrokenLake:
    """TEST DOUBLE of the lake whose Blob account cannot be reached."""

    def days(self, symbol: str) -> list[date]:
        raise ServiceRequestError("connection refused")

    def read_day(self, symbol: str, day: date) -> pd.DataFrame:
        raise ServiceRequestError("connection refused")


def failing(exc: Exception | None = None, answer: httpx.Response | None = None) -> httpx.MockTransport:
    """An endpoint transport that raises ``exc`` or answers ``answer``; it records the requests it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if exc is not None:
            raise exc
        assert answer is not None
        return answer

    transport = httpx.MockTransport(handler)
    transport.seen = seen  # type: ignore[attr-defined]
    return transport


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return make_stand_in(tmp_path_factory.mktemp("stand-in"))


@pytest.fixture(scope="module")
def lake() -> Lake:
    return filled_lake()


@pytest.fixture
def make_api(stand_in: FastAPI, lake: Lake) -> Iterator[Callable[..., TestClient]]:
    with api_clients(stand_in, lake, prediction_sink=PredictionLog(MemoryContainer()).append) as make:
        yield make


@pytest.fixture
def api(make_api: Callable[..., TestClient]) -> TestClient:
    return make_api()


def latest_spy_bars(lake: Lake) -> list[dict[str, Any]]:
    frame = lake.read_day("SPY", LATEST)
    return [
        {"ts": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "open": o, "high": h, "low": lo, "close": c, "volume": v}
        for t, o, h, lo, c, v in frame[["ts", "open", "high", "low", "close", "volume"]].itertuples(index=False)
    ]


# --- predictions ----------------------------------------------------------------------------------------


def test_every_served_forecast_is_logged_off_the_request_path(make_api: Callable[..., TestClient], lake: Lake) -> None:
    container = MemoryContainer()
    log = PredictionLog(container)  # type: ignore[arg-type]
    api = make_api(prediction_sink=log.append)
    got = api.get("/api/predictions/SPY").json()
    posted = api.post("/api/predict", json={"symbol": "SPY", "bars": latest_spy_bars(lake)}).json()
    assert api.get("/api/predictions/TSLA").status_code == 404  # refusals are not forecasts: not logged
    assert container.blobs == {}, "nothing is written on the request path"
    recorder = api.app.state.prediction_log  # type: ignore[attr-defined]
    assert recorder.flush() == 2
    day = datetime.fromisoformat(got["as_of"].replace("Z", "+00:00"))
    rows = log.read("SPY", day - timedelta(days=1), day + timedelta(days=1))
    assert sorted(rows["route"]) == ["GET", "POST"] and set(rows["model_version"]) == {got["model_version"]}
    assert list(rows["predicted_close"]) == [got["predicted_close"], posted["predicted_close"]]
    assert (rows["lower"] == got["interval"]["lower"]).all() and (rows["level"] == 0.8).all()
    assert [n for n in container.blobs] == [f"predictions/symbol=SPY/date={day.date().isoformat()}.parquet"]
    health = api.get("/api/health").json()["prediction_log"]
    assert health["recorded"] == 2 and health["written"] == 2 and health["write_failures"] == 0


def test_a_prediction_log_that_cannot_be_written_never_fails_a_request(make_api: Callable[..., TestClient]) -> None:
    calls: list[int] = []

    def broken(rows: list[dict[str, Any]]) -> int:
        calls.append(len(rows))
        raise ServiceRequestError("connection refused")

    api = make_api(prediction_sink=broken)
    for _ in range(3):
        assert api.get("/api/predictions/SPY").status_code == 200
    recorder = api.app.state.prediction_log  # type: ignore[attr-defined]
    assert recorder.flush() == 0 and calls
    health = api.get("/api/health").json()["prediction_log"]
    assert health["recorded"] == 3 and health["written"] == 0 and health["pending"] == 3
    assert health["write_failures"] >= 1 and "connection refused" in health["last_error"]


def test_get_predicts_from_the_latest_session_in_the_lake(api: TestClient, lake: Lake) -> None:
    r = api.get("/api/predictions/SPY")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {*PredictResponse.model_fields, "data_age_s"}
    last = datetime(2024, 6, 3, 13, 30, tzinfo=UTC) + timedelta(minutes=SPY_BARS - 1)
    assert body["symbol"] == "SPY" and body["as_of"] == last.isoformat().replace("+00:00", "Z")
    assert body["horizon_minutes"] == 1 and body["model_version"] == "1"
    assert 0 < body["predicted_close"] < 1000
    # the same answer as POSTing the latest session's bars; lower case and blanks are fine
    post = api.post("/api/predict", json={"symbol": "spy", "bars": latest_spy_bars(lake)})
    assert post.status_code == 200 and post.json() == body
    assert api.get("/api/predictions/%20spy").json() == body


def test_post_predicts_from_the_callers_bars_in_any_order(api: TestClient) -> None:
    bars = make_bars(NEEDED + 3, seed=9)
    r = api.post("/api/predict", json={"symbol": "IBM", "bars": bars[::-1]})
    assert r.status_code == 200, r.text
    answer = Prediction.model_validate(r.json())
    assert answer.symbol == "IBM" and answer.as_of == datetime.fromisoformat(bars[-1]["ts"])


def test_unknown_symbols_are_404_listing_the_served_ones(api: TestClient) -> None:
    body = assert_error(api.get("/api/predictions/TSLA"), 404, "unknown_symbol", "'TSLA'", "SPY, IBM, AIG, BAC")
    assert body["detail"] == {"known": SYMBOLS}
    assert_error(
        api.post("/api/predict", json={"symbol": "TSLA", "bars": make_bars()}), 404, "unknown_symbol", "SPY, IBM"
    )
    # served by the API but not known to the model: the model's own message and list
    body = assert_error(api.get("/api/predictions/AIG"), 404, "unknown_symbol", "'AIG'", "trained on SPY, IBM")
    assert body["detail"]["known"] == ["SPY", "IBM"]
    # absurd symbols are echoed shortened, never a 5xx
    r = api.get("/api/predictions/" + "Ä" * 5000)
    assert_error(r, 404, "unknown_symbol")
    assert len(r.json()["error"]) < 200


def test_no_bars_in_the_lake_is_a_404_asking_about_ingestion(api: TestClient) -> None:
    assert_error(api.get("/api/predictions/BAC"), 404, "no_bars", "no bars yet for BAC; is ingestion running?")


def test_too_few_bars_is_a_422_with_the_endpoints_message(api: TestClient) -> None:
    body = assert_error(
        api.post("/api/predict", json={"symbol": "SPY", "bars": make_bars(12)}),
        422,
        "not_enough_bars",
        f"bars: 12 given, the model needs {NEEDED} consecutive 1-minute bars",
    )
    assert body["detail"]["needed"] == NEEDED and body["detail"]["given"] == 12
    # from the lake: the same refusal, told as "wait" (IBM's latest session has 12 bars)
    body = assert_error(
        api.get("/api/predictions/IBM"),
        422,
        "not_enough_bars",
        f"the lake's latest session ends at 2024-06-03 13:41Z with 12 consecutive 1-minute bars and the model "
        f"needs {NEEDED}; try again in about {NEEDED - 12} minute(s)",
    )
    assert body["detail"]["session"] == "2024-06-03" and "bars: 12 given" in body["detail"]["endpoint_error"]


def test_invalid_bars_are_a_422_naming_the_bar_and_the_rule(api: TestClient) -> None:
    bars = make_bars()
    bars[3]["high"] = bars[3]["low"] / 2
    bars[5]["volume"] = -1
    body = assert_error(
        api.post("/api/predict", json={"symbol": "SPY", "bars": bars}),
        422,
        "invalid_request",
        "bars.3: high",
        "is below max(open",
        "bars.5.volume: volume -1.0 is negative",
    )
    assert [p["loc"] for p in body["detail"]] == ["bars.3", "bars.5.volume"]
    for content, fragment in [
        (b"{not json", "the body is not valid JSON"),
        (b"[1, 2]", "the body must be a JSON object"),
        (b"", "the body is missing"),
        (b'{"symbol": "SPY"}', "bars: Field required"),
        (b'{"symbol": "SPY", "bars": [], "x": 1}', "x: Extra inputs are not permitted"),
        (b'{"symbol": "S P Y", "bars": []}', "symbol: symbol 'S P Y' is not a ticker"),
        (b'{"symbol": "SPY", "bars": [{"ts": NaN}]}', "bars.0.ts: ts nan is not a finite number"),
    ]:
        r = api.post("/api/predict", content=content, headers={"Content-Type": "application/json"})
        assert_error(r, 422, "invalid_request", fragment)
    r = api.post("/api/predict", json={"symbol": "X" * 100_000, "bars": []})
    assert_error(r, 422, "invalid_request", "is not a ticker")
    assert len(r.content) < 1000  # a huge input is not echoed back whole
    dup = make_bars()
    dup.append(dict(dup[10]))
    assert_error(api.post("/api/predict", json={"symbol": "SPY", "bars": dup}), 422, "invalid_request", "same ts")


def test_min_bars_setting_refuses_short_requests_without_calling_the_endpoint(
    make_api: Callable[..., TestClient],
) -> None:
    transport = failing(httpx.ConnectError("must not be called"))
    api = make_api(settings=api_settings(serving={"min_bars": 100}), endpoint_transport=transport)
    r = api.post("/api/predict", json={"symbol": "SPY", "bars": make_bars(90)})
    assert_error(r, 422, "not_enough_bars", "bars: 90 given, this API needs at least 100")
    assert transport.seen == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("transport", "fragment"),
    [
        (failing(httpx.ConnectError("connection refused")), "unreachable"),
        (failing(httpx.ReadTimeout("timed out")), "did not answer in time"),
        (
            failing(
                answer=httpx.Response(
                    424,
                    json={"error": "the model is not loaded", "code": "model_not_loaded", "detail": None},
                    headers={"ms-azureml-model-error-statuscode": "503"},
                )
            ),
            "not serving",
        ),
        (failing(answer=httpx.Response(404, json={"message": "Not Found"})), "not serving"),
        (failing(answer=httpx.Response(408, json={"message": "Request timed out"})), "too slow"),
        (failing(answer=httpx.Response(502, text="<html>bad gateway</html>")), "not serving"),
        (failing(answer=httpx.Response(200, json={"not": "a prediction"})), "not a prediction"),
    ],
    ids=["connect-error", "timeout", "model-not-loaded", "other-404", "408", "502-html", "bad-200"],
)
def test_endpoint_trouble_is_a_503_with_retry_after(
    make_api: Callable[..., TestClient], transport: httpx.MockTransport, fragment: str
) -> None:
    api = make_api(endpoint_transport=transport)
    for r in (
        api.get("/api/predictions/SPY"),
        api.post("/api/predict", json={"symbol": "SPY", "bars": make_bars()}),
    ):
        assert_error(r, 503, "endpoint_unavailable", fragment)
        assert r.headers["retry-after"] == "5"
        assert "endpoint:" not in r.text and "http://" not in r.text  # no internal address leaks


def test_an_endpoint_without_a_deployment_is_no_model_yet(make_api: Callable[..., TestClient]) -> None:
    """AML's own 404 when nothing has traffic becomes a distinct 503: the smoke test tells it from a failure."""
    message = (
        "No valid deployments to route to. Please check that the endpoint has at least one deployment with "
        "positive weight values or use a deployment specific header to route."
    )
    api = make_api(endpoint_transport=failing(answer=httpx.Response(404, json={"message": message})))
    for r in (
        api.get("/api/predictions/SPY"),
        api.post("/api/predict", json={"symbol": "SPY", "bars": make_bars()}),
    ):
        assert_error(r, 503, "no_model", "no model is deployed yet")
        assert r.headers["retry-after"] == "5"


def test_a_wrong_endpoint_key_is_a_503_not_the_callers_401(
    make_api: Callable[..., TestClient], stand_in: FastAPI
) -> None:
    api = make_api(settings=api_settings(serving={"endpoint_key": "wrong"}))
    r = api.get("/api/predictions/SPY")
    assert_error(r, 503, "endpoint_unavailable", "misconfigured")
    assert KEY not in r.text and "wrong" not in r.text


def test_the_endpoint_is_called_with_the_key_and_the_lakes_bars(make_api: Callable[..., TestClient]) -> None:
    answer = {
        "symbol": "SPY", "as_of": "2024-06-03T14:00:00Z", "horizon_minutes": 1, "predicted_close": 1.0,
        "model_kind": "baseline", "interval": {"level": 0.8, "lower": 0.99, "upper": 1.01},
    }  # fmt: skip
    transport = failing(answer=httpx.Response(200, json={**answer, "model_version": "4"}))
    api = make_api(endpoint_transport=transport)
    assert api.get("/api/predictions/SPY").status_code == 200
    (request,) = transport.seen  # type: ignore[attr-defined]
    assert request.url == "http://endpoint/score" and request.headers["authorization"] == f"Bearer {KEY}"
    sent = json.loads(request.content)
    assert sent["symbol"] == "SPY" and len(sent["bars"]) == SPY_BARS  # the latest session only
    assert sent["bars"][0]["ts"] == "2024-06-03T13:30:00Z"


def test_the_lake_payload_is_capped_and_skips_invalid_rows(make_api: Callable[..., TestClient]) -> None:
    lake = Lake(MemoryContainer())  # type: ignore[arg-type]
    frame = session_frame("SPY", LATEST, 450, seed=5)
    frame.loc[440, "high"] = frame.loc[440, "low"] / 2  # an invalid row that slipped into the lake
    lake.upsert_frame(frame, parallel=1)
    answer = {
        "symbol": "SPY", "as_of": "2024-06-03T14:00:00Z", "horizon_minutes": 1, "predicted_close": 1.0,
        "model_kind": "baseline", "interval": {"level": 0.8, "lower": 0.99, "upper": 1.01},
    }  # fmt: skip
    transport = failing(answer=httpx.Response(200, json={**answer, "model_version": "4"}))
    assert make_api(lake=lake, endpoint_transport=transport).get("/api/predictions/SPY").status_code == 200
    bars = json.loads(transport.seen[0].content)["bars"]  # type: ignore[attr-defined]
    assert len(bars) == 400 and bars[-1]["ts"] == "2024-06-03T20:59:00Z"
    assert "2024-06-03T20:50:00Z" not in {b["ts"] for b in bars}


def test_an_unreachable_lake_is_a_503(make_api: Callable[..., TestClient]) -> None:
    r = make_api(lake=BrokenLake()).get("/api/predictions/SPY")
    assert_error(r, 503, "lake_unavailable", "cannot be read")
    assert r.headers["retry-after"] == "5"


def test_routes_and_methods_that_do_not_exist_answer_json(api: TestClient) -> None:
    assert_error(api.get("/api/nothing"), 404, "not_found", "see /api/docs")
    assert_error(api.get("/api/predictions/"), 404, "not_found")
    assert_error(api.delete("/api/predict"), 405, "method_not_allowed")
    assert_error(api.get("/api/predict"), 405, "method_not_allowed")


def test_one_endpoint_client_is_reused_and_closed_at_shutdown(stand_in: FastAPI, lake: Lake) -> None:
    app = create_app(api_settings(), lake=lake, endpoint_transport=httpx.ASGITransport(app=stand_in))
    with TestClient(app) as client:
        opened = app.state.endpoint._client
        assert opened is not None and not opened.is_closed  # created by the lifespan, before any request
        for _ in range(3):
            assert client.get("/api/predictions/SPY").status_code == 200
        assert app.state.endpoint._client is opened
    assert opened.is_closed and app.state.endpoint._client is None


def test_health_calls_nothing(make_api: Callable[..., TestClient]) -> None:
    transport = failing(httpx.ConnectError("must not be called"))
    r = make_api(lake=BrokenLake(), endpoint_transport=transport).get("/api/health")
    body = r.json()
    assert r.status_code == 200 and body.pop("prediction_log")["recorded"] == 0
    assert body == {"status": "ok", "profile": "local", "symbols": SYMBOLS}
    assert transport.seen == []  # type: ignore[attr-defined]


def test_the_openapi_document_lists_both_routes_and_their_errors(api: TestClient) -> None:
    doc = api.get("/api/openapi.json").json()
    get = doc["paths"]["/api/predictions/{symbol}"]["get"]
    post = doc["paths"]["/api/predict"]["post"]
    assert set(doc["paths"]) == {"/api/predictions/{symbol}", "/api/predict", "/api/health"}
    assert set(get["responses"]) == {"200", "404", "422", "503"}
    assert set(post["responses"]) == {"200", "404", "413", "422", "503"}
    for op in (get, post):
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": "#/components/schemas/Prediction"}
        for status in set(op["responses"]) - {"200"}:
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}
        assert "Retry-After" in op["responses"]["503"]["headers"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PredictRequest"
    }
    schemas = doc["components"]["schemas"]
    assert "data_age_s" in schemas["Prediction"]["properties"]
    assert set(schemas["Prediction"]["required"]) == {
        "symbol",
        "as_of",
        "horizon_minutes",
        "predicted_close",
        "model_version",
        "model_kind",
        "interval",
    }
    assert schemas["Prediction"]["properties"]["model_kind"]["enum"] == ["baseline", "lstm-attention"]
    assert set(schemas["Interval"]["required"]) == {"level", "lower", "upper"}
    assert "HTTPValidationError" not in schemas  # FastAPI's default 422 is not what we answer
    docs = api.get("/api/docs")
    assert docs.status_code == 200 and "/api/openapi.json" in docs.text


# --- profile cloud: misconfiguration (the AML token path: tests/unit/test_aml_token.py) ------------------


class FakeCredential:
    """TEST DOUBLE of a managed-identity credential: counts calls, tokens valid for one hour."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.clock = clock

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append(scopes)
        return AccessToken(f"token-{len(self.calls)}", int(self.clock()) + 3600)


def test_profile_cloud_without_an_endpoint_url_is_a_503_not_a_crash(make_api: Callable[..., TestClient]) -> None:
    cfg = load_settings(
        _env_file=None,
        profile="cloud",
        symbols=SYMBOLS,
        storage={"account_url": "https://lake.blob.core.windows.net"},
        kafka={"bootstrap_servers": "broker:9093"},
        mlflow={"tracking_uri": "https://mlflow.example"},
    )
    api = make_api(settings=cfg, credential=FakeCredential(lambda: 0.0))
    assert api.get("/api/health").status_code == 200
    r = api.post("/api/predict", json={"symbol": "SPY", "bars": make_bars()})
    assert_error(r, 503, "endpoint_unavailable", "misconfigured")


# --- the Azure Functions host ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def function_app(stand_in: FastAPI, lake: Lake) -> Iterator[tuple[ModuleType, list[func.Function]]]:
    """cloud/function/function_app.py imported as the Functions host does, with the test doubles injected."""
    real = api_module.create_app

    def injected() -> FastAPI:
        return real(api_settings(), lake=lake, endpoint_transport=httpx.ASGITransport(app=stand_in), clock=FixedClock())

    mp = pytest.MonkeyPatch()
    mp.setattr(api_module, "create_app", injected)
    try:
        spec = importlib.util.spec_from_file_location("function_app_under_test", FUNCTION_DIR / "function_app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        mp.undo()
    functions = module.app.get_functions()  # ONCE: a second call raises (duplicate function names)
    yield module, functions
    if module.app.startup_task_done:
        asyncio.run(module.app.middleware.notify_shutdown())
        module.app.startup_task_done = False


def test_the_function_app_has_one_anonymous_catch_all_http_trigger(
    function_app: tuple[ModuleType, list[func.Function]],
) -> None:
    _, functions = function_app
    assert [f.get_function_name() for f in functions] == ["http_app_func"]
    (fn,) = functions
    assert fn.is_http_function()
    trigger = fn.get_bindings_dict()["bindings"][0]
    assert trigger["type"] == "httpTrigger" and trigger["route"] == "/{*route}"
    assert str(trigger["authLevel"]).upper().endswith("ANONYMOUS")
    assert {"GET", "POST"} <= {str(m).upper().rsplit(".", 1)[-1] for m in trigger["methods"]}


def test_host_json_keeps_azure_urls_equal_to_local_ones(api: TestClient) -> None:
    host = json.loads((FUNCTION_DIR / "host.json").read_text())
    assert host["version"] == "2.0" and host["extensions"]["http"]["routePrefix"] == ""
    # routePrefix "" + every FastAPI route under /api  ->  https://<app>.azurewebsites.net/api/... as locally
    paths = api.get("/api/openapi.json").json()["paths"]
    assert all(path.startswith("/api/") for path in paths)


def test_the_function_host_answers_like_uvicorn(
    function_app: tuple[ModuleType, list[func.Function]], api: TestClient
) -> None:
    module, functions = function_app
    user_function = functions[0].get_user_function()

    async def call(method: str, path: str, body: bytes = b"") -> func.HttpResponse:
        request = func.HttpRequest(
            method=method,
            url=f"https://tickcast-func.azurewebsites.net{path}",
            headers={"content-type": "application/json"} if body else {},
            params={},
            body=body,
        )
        response: func.HttpResponse = await user_function(request, SimpleNamespace(function_directory=None))
        return response

    async def calls() -> list[func.HttpResponse]:
        try:
            return [
                await call("GET", "/api/predictions/SPY"),
                await call("POST", "/api/predict", json.dumps({"symbol": "SPY", "bars": make_bars(12)}).encode()),
                await call("GET", "/api/predictions/TSLA"),
                await call("GET", "/api/health"),
            ]
        finally:  # shut the lifespan down in the loop it started in
            await module.app.middleware.notify_shutdown()
            module.app.startup_task_done = False

    got, short, unknown, health = asyncio.run(calls())
    assert got.status_code == 200 and json.loads(got.get_body()) == api.get("/api/predictions/SPY").json()
    assert got.mimetype == "application/json"
    assert short.status_code == 422 and json.loads(short.get_body())["code"] == "not_enough_bars"
    assert unknown.status_code == 404 and json.loads(unknown.get_body())["code"] == "unknown_symbol"
    assert health.status_code == 200


def test_the_function_requirements_are_the_packages_function_group() -> None:
    """One source for the Function's environment: pyproject's ``function`` dependency group."""
    import tomllib

    group = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["dependency-groups"]["function"]
    lines = (FUNCTION_DIR / "requirements.txt").read_text().splitlines()
    pinned = {line.split("==")[0].strip().lower() for line in lines if line.strip() and not line.startswith("#")}
    assert pinned == {name.lower() for name in group}


def test_the_deployment_zip_imports_without_the_project_venvs_extras(tmp_path: Path) -> None:
    """The zip = cloud/function + the API's import closure of tickcast; importing it loads only packages of its
    requirements.txt and only tickcast modules that travelled in the zip."""
    package = importlib.util.spec_from_file_location("function_package", FUNCTION_DIR / "package.py")
    assert package is not None and package.loader is not None
    builder = importlib.util.module_from_spec(package)
    package.loader.exec_module(builder)
    out = builder.build(tmp_path / "function.zip")
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert {"function_app.py", "host.json", "requirements.txt", "tickcast/__init__.py"} <= set(names)
        assert "tickcast/api/app.py" in names and not [n for n in names if "__pycache__" in n]
        assert {"tickcast/scoring/contract.py", "tickcast/endpoint/client.py", "tickcast/lake/store.py"} <= set(names)
        carried = {n.split("/")[1] for n in names if n.startswith("tickcast/") and n.count("/") > 1}
        assert not carried & {"model", "registry", "release", "ingest", "validation", "features"}, sorted(carried)
        assert not {"tickcast/cli/__init__.py", "tickcast/retrain.py", "tickcast/cloud_deploy/__init__.py"} & set(names)
        zf.extractall(tmp_path / "site")
    assert builder.build(tmp_path / "again.zip").read_bytes() == out.read_bytes()  # reproducible

    probe = textwrap.dedent(
        """
        import json, sys, importlib.metadata as md, pathlib
        before = set(sys.modules)
        import function_app, tickcast
        new = [sys.modules[n] for n in set(sys.modules) - before]
        files = {str(pathlib.Path(m.__file__).resolve()) for m in new if getattr(m, "__file__", None)}
        owners = md.packages_distributions()
        candidates = {d for top in {m.__name__.split(".")[0] for m in new} for d in owners.get(top, [])}
        used = set()
        for name in candidates:
            dist = md.distribution(name)
            paths = (str(pathlib.Path(dist.locate_file(f)).resolve()) for f in dist.files or [])
            if any(p in files for p in paths if p.endswith((".py", ".so"))):
                used.add(name)
        app = type(function_app.app).__name__
        print(json.dumps({"tickcast": tickcast.__file__, "used": sorted(used), "app": app}))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "TICKCAST_PROFILE": "local", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path / "site", capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["app"] == "AsgiFunctionApp"
    assert result["tickcast"].startswith(str(tmp_path / "site"))  # the zip's copy, not the installed one

    pins = {}
    for line in (FUNCTION_DIR / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt must pin every package: {line}"
            pins[name.lower()] = version
    import importlib.metadata as md

    for name, version in pins.items():
        assert md.version(name) == version, f"{name}: requirements.txt pins {version}, uv.lock has {md.version(name)}"
    allowed = _closure(set(pins)) | {"tickcast", "sniffio"}  # anyio imports sniffio only if it is installed
    used = {d.lower().replace("_", "-") for d in result["used"]}
    assert used <= allowed, f"imported but not required: {sorted(used - allowed)}"
    assert not used & {"tensorflow", "tensorflow-cpu", "keras", "onnxruntime", "mlflow", "apache-airflow"}


def _closure(names: set[str]) -> set[str]:
    """``names`` and every distribution they require, extras included: httpx and FastAPI import their optional
    extras (click, rich, python-multipart, ...) when they happen to be installed, as in the project venv."""
    import importlib.metadata as md
    import re

    seen: set[str] = set()
    todo = [n.lower() for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for req in requires:
            match = re.match(r"[A-Za-z0-9_.\-]+", req)
            if match:
                todo.append(match.group(0).lower().replace("_", "-"))
    return {s.replace("_", "-") for s in seen}


# --- smoke and predict through the APIM stand-in ------------------------------------------------------


@pytest.fixture
def gateway(stand_in: FastAPI, lake: Lake) -> Iterator[TestClient]:
    """APIM stand-in (cloud/apim/policy.xml) → the API (no lifespan: its client opens on first use) → stand-in."""
    api = create_app(api_settings(), lake=lake, endpoint_transport=httpx.ASGITransport(app=stand_in))
    cfg = load_stand_in_settings(_env_file=None, gateway={"subscription_keys": [SUB_KEY]})
    app = create_gateway(cfg, backend_url="http://function", transport=httpx.ASGITransport(app=api))
    with TestClient(app, base_url="http://gateway") as client:
        yield client


def test_smoke_passes_through_the_gateway(gateway: TestClient) -> None:
    report = smoke("http://gateway", SUB_KEY, ["SPY", "spy"], timeout=10, client=gateway)
    assert report.ok, report.table()
    assert [(c.name, c.expected, c.status) for c in report.checks] == [
        ("GET /api/predictions/SPY", 200, 200),
        ("GET /api/predictions/SPY", 200, 200),
        ("no subscription key", 401, 401),
        ("POST /api/predict with a session of bars", 200, 200),
        ("POST /api/predict with too few bars", 422, 422),
        ("unknown symbol", 404, 404),
    ]
    assert report.status == "PASS"
    rows = report.rows()
    assert rows[0]["ok"] is True and "predicted_close" in rows[0]["detail"]
    assert "PASS" in report.table() and "FAIL" not in report.table()


def test_smoke_reports_what_failed(gateway: TestClient) -> None:
    report = smoke("http://gateway", "wrong-key", ["SPY", "BAC"], timeout=10, client=gateway)
    assert not report.ok
    failed = {c.name: c for c in report.checks if not c.ok}
    assert set(failed) == {
        "GET /api/predictions/SPY",
        "GET /api/predictions/BAC",
        "POST /api/predict with a session of bars",
        "POST /api/predict with too few bars",
        "unknown symbol",
    }
    assert report.status == "FAIL"
    assert failed["GET /api/predictions/SPY"].status == 401 and "invalid subscription key" in (
        failed["GET /api/predictions/SPY"].detail
    )
    assert "FAIL" in report.table()


def empty_lake() -> Lake:
    return Lake(MemoryContainer())  # type: ignore[arg-type]


def gateway_to(api: FastAPI) -> TestClient:
    cfg = load_stand_in_settings(_env_file=None, gateway={"subscription_keys": [SUB_KEY]})
    app = create_gateway(cfg, backend_url="http://function", transport=httpx.ASGITransport(app=api))
    return TestClient(app, base_url="http://gateway")


def test_smoke_on_a_new_environment_says_no_model_yet_not_fail(tmp_path: Path) -> None:
    """An endpoint with no deployment and an empty lake: the first pipeline run of a new environment."""
    empty = create_stand_in(
        stand_in_settings(api_settings()), state_dir=tmp_path / "endpoint", model_loader=lambda v: tmp_path, seed=1
    )
    api = create_app(api_settings(), lake=empty_lake(), endpoint_transport=httpx.ASGITransport(app=empty))
    with gateway_to(api) as client:
        report = smoke("http://gateway", SUB_KEY, ["SPY"], client=client)
    assert report.status == "NO MODEL YET" and report.no_model and not report.ok, report.table()
    waiting = {c.name: c.waiting for c in report.checks if c.result == "WAIT"}
    assert waiting == {
        "GET /api/predictions/SPY": "no data yet",  # the lake is empty too
        "POST /api/predict with a session of bars": "no model yet",
        "POST /api/predict with too few bars": "no model yet",
    }
    assert {c.name for c in report.checks if c.ok} == {"no subscription key", "unknown symbol"}
    assert "NO MODEL YET" in report.table() and "WAIT" in report.table()


def test_smoke_with_a_model_but_an_empty_lake_passes_and_says_it_waits_for_data(stand_in: FastAPI) -> None:
    api = create_app(api_settings(), lake=empty_lake(), endpoint_transport=httpx.ASGITransport(app=stand_in))
    with gateway_to(api) as client:
        report = smoke("http://gateway", SUB_KEY, ["SPY"], client=client)
    assert report.status == "PASS", report.table()
    get = report.checks[0]
    assert get.result == "WAIT" and get.waiting == "no data yet" and "no_bars" in get.detail


def test_predict_returns_the_body_or_raises_the_apis_message(gateway: TestClient) -> None:
    body = predict("http://gateway", SUB_KEY, "spy", client=gateway)
    assert body["symbol"] == "SPY" and body["predicted_close"] > 0
    with pytest.raises(GatewayError, match=r"HTTP 404: no bars yet for BAC; is ingestion running\?") as info:
        predict("http://gateway", SUB_KEY, "BAC", client=gateway)
    assert info.value.status == 404 and info.value.code == "no_bars"
    with pytest.raises(GatewayError, match=r"HTTP 401.*missing subscription key"):
        predict("http://gateway", None, "SPY", client=gateway)


def test_retry_after_survives_the_gateway(lake: Lake) -> None:
    api = create_app(api_settings(), lake=lake, endpoint_transport=failing(httpx.ConnectError("refused")))
    cfg = load_stand_in_settings(_env_file=None, gateway={"subscription_keys": [SUB_KEY]})
    app = create_gateway(cfg, backend_url="http://function", transport=httpx.ASGITransport(app=api))
    with TestClient(app, base_url="http://gateway") as client:
        r = client.get("/api/predictions/SPY", headers={"Ocp-Apim-Subscription-Key": SUB_KEY})
        report = smoke("http://gateway", SUB_KEY, ["SPY"], client=client)
    assert_error(r, 503, "endpoint_unavailable")
    assert r.headers["retry-after"] == "5"
    assert not report.ok and "endpoint_unavailable" in report.checks[0].detail


def test_predict_says_when_nothing_answers() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with httpx.Client(transport=httpx.MockTransport(refuse), base_url="http://gateway") as client:
        with pytest.raises(GatewayError, match=r"cannot reach http://gateway .*tickcast up"):
            predict("http://gateway", SUB_KEY, "SPY", client=client)
        report = smoke("http://gateway", SUB_KEY, ["SPY"], timeout=1, client=client)
    assert not report.ok and all(c.status is None for c in report.checks)
