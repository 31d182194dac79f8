"""The public API's edges, in-process against the REAL endpoint stand-in: timestamps the contract refuses,
the body size limit, parsing off the event loop, corrupt lake data, and the age of the data behind a forecast.

Same chain as ``test_public_api.py``: ``TestClient`` → ``tickcast.api.app`` → ``httpx.ASGITransport`` → the
endpoint stand-in → score.py → ONNX Runtime; the lake is the real :class:`tickcast.lake.store.Lake` over the
in-memory TEST DOUBLE of a Blob container.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.support.models import NEEDED, make_bars
from tests.support.public_api import (
    AFTER_CLOSE,
    EARLIER,
    ERROR_KEYS,
    LATEST,
    SPY_BARS,
    FixedClock,
    MemoryContainer,
    api_clients,
    api_settings,
    assert_error,
    filled_lake,
    make_stand_in,
)
from tickcast.api.app import create_app
from tickcast.api.freshness import SourceClock, WallClock, make_clock
from tickcast.lake.store import Lake, day_path
from tickcast.market.sessions import is_session_day, regular_session
from tickcast.settings import Settings


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return make_stand_in(tmp_path_factory.mktemp("stand-in"))


@pytest.fixture(scope="module")
def lake() -> Lake:
    return filled_lake()


@pytest.fixture
def make_api(stand_in: FastAPI, lake: Lake) -> Iterator[Callable[..., TestClient]]:
    with api_clients(stand_in, lake) as make:
        yield make


@pytest.fixture
def api(make_api: Callable[..., TestClient]) -> TestClient:
    return make_api()


# --- timestamps -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "fragment"),
    [
        ("1969-12-31T23:00:00Z", "is before 1970"),
        ("1969-12-31T23:59:00+00:00", "is before 1970"),
        ("1900-01-01T00:00:00Z", "is before 1970"),
        ("2024-06-03T15:30:00+02:00", "is not in UTC"),
        ("0001-01-01T00:00:00+01:00", "is not in UTC"),
        ("0001-01-01T00:00:00Z", "is before 1970"),
    ],
)
def test_a_bar_before_1970_or_off_utc_is_a_422_naming_the_bar(api: TestClient, ts: str, fragment: str) -> None:
    bars = make_bars(NEEDED + 2, seed=5)
    bars[4]["ts"] = ts
    r = api.post("/api/predict", json={"symbol": "SPY", "bars": bars})
    body = assert_error(r, 422, "invalid_request", fragment)
    assert body["detail"][0]["loc"].startswith("bars.4"), body
    # every bar at the same edge: the whole-column fast path must refuse it as well
    same = [dict(b, ts=ts) for b in bars[:1]]
    assert_error(api.post("/api/predict", json={"symbol": "SPY", "bars": same}), 422, "invalid_request", fragment)


# --- the body size limit --------------------------------------------------------------------------------


def _asgi_post(app: FastAPI, headers: list[tuple[bytes, bytes]], chunks: Iterator[bytes]) -> tuple[int, Any, int]:
    """POST /api/predict straight through ASGI: (status, JSON body, body chunks the app asked for)."""
    import asyncio
    import json

    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        nonlocal pulled
        chunk = next(chunks, None)
        pulled += chunk is not None
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/predict",
        "raw_path": b"/api/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"function"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("function", 80),
    }
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), pulled


def test_a_body_over_the_limit_is_413_before_it_is_read(stand_in: FastAPI, lake: Lake) -> None:
    limit = 4096
    app = create_app(
        api_settings(serving={"max_body_bytes": limit}),
        lake=lake,
        endpoint_transport=httpx.ASGITransport(stand_in),
        clock=FixedClock(),
    )

    def endless() -> Iterator[bytes]:
        while True:
            yield b" " * 1000

    # Content-Length says too much: refused before a byte of the body is read
    status, body, pulled = _asgi_post(app, [(b"content-length", b"10000000")], endless())
    assert status == 413 and pulled == 0
    assert set(body) == ERROR_KEYS and body["code"] == "body_too_large", body
    assert "10000000 bytes long" in body["error"] and f"{limit} bytes" in body["error"]
    assert body["detail"] == {"limit": limit, "size": 10_000_000}
    # chunked, no Content-Length: refused as soon as the limit is passed, not after the (endless) body
    status, body, pulled = _asgi_post(app, [], endless())
    assert status == 413 and body["code"] == "body_too_large" and "at least 5000 bytes" in body["error"]
    assert pulled == 5


def test_a_body_within_the_limit_is_served_and_the_limit_is_a_setting(make_api: Callable[..., TestClient]) -> None:
    raw = httpx.Request("POST", "http://x", json={"symbol": "SPY", "bars": make_bars(NEEDED + 2, seed=5)}).content
    roomy = make_api(settings=api_settings(serving={"max_body_bytes": len(raw)}))
    assert roomy.post("/api/predict", content=raw, headers={"Content-Type": "application/json"}).status_code == 200
    tight = make_api(settings=api_settings(serving={"max_body_bytes": len(raw) - 1}))
    r = tight.post("/api/predict", content=raw, headers={"Content-Type": "application/json"})
    body = assert_error(r, 413, "body_too_large", f"{len(raw)} bytes long")
    assert body["detail"]["limit"] == len(raw) - 1
    # the default (the gateway's max-size) takes the largest body the contract allows: MAX_BARS bars
    default = make_api()
    big = httpx.Request("POST", "http://x", json={"symbol": "SPY", "bars": make_bars(5000, seed=6)}).content
    assert len(big) > 500_000
    r = default.post("/api/predict", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "not_enough_bars", r.text[:300]  # read, parsed, scored


# --- parsing off the event loop -------------------------------------------------------------------------


def test_a_large_body_is_parsed_in_a_worker_thread_a_small_one_inline(
    make_api: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from tickcast.api import body as body_module

    threads: list[tuple[int, str]] = []
    parse = body_module.parse_scoring_request  # type: ignore[attr-defined]

    def recording(raw: bytes) -> Any:
        threads.append((len(raw), threading.current_thread().name))
        return parse(raw)

    monkeypatch.setattr(body_module, "parse_scoring_request", recording)
    api = make_api()
    loop_thread: list[str] = []

    app: FastAPI = api.app  # type: ignore[assignment]

    @app.get("/api/_thread")  # a probe route: which thread runs the event loop
    async def where() -> str:
        loop_thread.append(threading.current_thread().name)
        return "ok"

    api.get("/api/_thread")
    small = make_bars(NEEDED + 2, seed=5)
    large = make_bars(1000, seed=7)
    assert api.post("/api/predict", json={"symbol": "SPY", "bars": small}).status_code == 200
    assert api.post("/api/predict", json={"symbol": "SPY", "bars": large}).status_code in (200, 422)
    (small_size, small_thread), (large_size, large_thread) = threads
    assert small_size < body_module.PARSE_IN_THREAD_BYTES < large_size
    assert small_thread == loop_thread[0], "a small body is parsed inline, on the event loop's thread"
    assert large_thread != loop_thread[0], "a large body must not be parsed on the event loop's thread"


# --- corrupt lake data ----------------------------------------------------------------------------------


def test_a_corrupt_day_file_is_a_503_with_retry_after_not_a_500(
    make_api: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    damaged = filled_lake()
    container = damaged.container
    assert isinstance(container, MemoryContainer)
    path = day_path("SPY", LATEST)
    assert path in container.blobs
    container.blobs[path] = (b"PAR1 this is not a parquet file PAR1", '"damaged"')
    api = make_api(lake=damaged)
    with caplog.at_level("ERROR", logger="tickcast.api.app"):
        r = api.get("/api/predictions/SPY")
    body = assert_error(r, 503, "corrupt_lake_data", "stored bars of SPY cannot be read", "damaged", "try again")
    assert int(r.headers["Retry-After"]) > 0
    assert body["detail"] == {"symbol": "SPY"}
    assert path not in r.text, "the blob's path goes to the log, not to the public caller"
    assert path in caplog.text
    # the other symbols, and POST, still answer
    assert api.get("/api/predictions/IBM").status_code == 422  # 12 bars: not enough, but read fine
    assert api.post("/api/predict", json={"symbol": "SPY", "bars": make_bars(NEEDED + 2)}).status_code == 200


# --- data age -------------------------------------------------------------------------------------------

SPY_LAST = datetime(2024, 6, 3, 13, 30, tzinfo=UTC) + timedelta(minutes=SPY_BARS - 1)  # the lake's newest SPY bar
SPY_CLOSED = SPY_LAST + timedelta(minutes=1)  # 2024-06-03 15:11Z, inside the session (13:30-20:00Z in June)


def staleness(limit: float = 180) -> Settings:
    return api_settings(serving={"max_data_age_s": limit})


def test_get_carries_the_age_of_the_lakes_newest_bar(make_api: Callable[..., TestClient]) -> None:
    api = make_api(settings=staleness(), clock=FixedClock(SPY_CLOSED + timedelta(seconds=42.5)))
    r = api.get("/api/predictions/SPY")
    assert r.status_code == 200, r.text
    assert r.json()["data_age_s"] == 42.5
    assert r.json()["as_of"] == SPY_LAST.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_lake_behind_during_the_session_is_a_503_naming_the_newest_bar(
    make_api: Callable[..., TestClient],
) -> None:
    transport = failing_endpoint()
    api = make_api(settings=staleness(), clock=FixedClock(SPY_CLOSED + timedelta(seconds=181)), **transport)
    body = assert_error(
        api.get("/api/predictions/SPY"),
        503,
        "stale_data",
        "newest bar of SPY in the lake is from 2024-06-03 15:10Z",
        "closed 181 s ago",
        "more than the 180 s",
    )
    r = api.get("/api/predictions/SPY")
    assert int(r.headers["Retry-After"]) == 60
    assert body["detail"] == {
        "symbol": "SPY",
        "newest_bar": "2024-06-03T15:10:00Z",
        "data_age_s": 181.0,
        "max_data_age_s": 180.0,
        "now": "2024-06-03T15:14:01Z",
    }
    assert transport["endpoint_transport"].seen == [], "a stale forecast is not even computed"
    # the limit is a setting; 0 turns the refusal off
    for limit in (600, 0):
        roomy = make_api(settings=staleness(limit), clock=FixedClock(SPY_CLOSED + timedelta(seconds=181)))
        r = roomy.get("/api/predictions/SPY")
        assert r.status_code == 200 and r.json()["data_age_s"] == 181.0


def test_outside_the_session_an_old_bar_is_normal(make_api: Callable[..., TestClient]) -> None:
    for now, age in [
        (AFTER_CLOSE, (AFTER_CLOSE - SPY_CLOSED).total_seconds()),  # the evening after
        (datetime(2024, 6, 8, 15, 0, tzinfo=UTC), None),  # Saturday, at a time that is in session on weekdays
        (datetime(2024, 6, 4, 13, 29, tzinfo=UTC), None),  # the next morning, a minute before the open
    ]:
        api = make_api(settings=staleness(), clock=FixedClock(now))
        r = api.get("/api/predictions/SPY")
        assert r.status_code == 200, (now, r.text)
        assert r.json()["data_age_s"] == (age or round((now - SPY_CLOSED).total_seconds(), 1))


def test_a_new_session_has_the_limit_to_ingest_its_first_bars(make_api: Callable[..., TestClient]) -> None:
    opens = datetime(2024, 6, 4, 13, 30, tzinfo=UTC)  # the session after LATEST's: the lake has none of it yet
    early = make_api(settings=staleness(), clock=FixedClock(opens + timedelta(seconds=170)))
    r = early.get("/api/predictions/SPY")
    assert r.status_code == 200 and r.json()["data_age_s"] == (opens - SPY_CLOSED).total_seconds() + 170
    late = make_api(settings=staleness(), clock=FixedClock(opens + timedelta(seconds=190)))
    assert_error(late.get("/api/predictions/SPY"), 503, "stale_data", "2024-06-03 15:10Z")


def test_post_carries_the_age_of_the_callers_last_bar_and_is_never_refused_as_stale(
    make_api: Callable[..., TestClient],
) -> None:
    bars = make_bars(NEEDED + 2, seed=5)
    last = max(datetime.fromisoformat(b["ts"]) for b in bars)
    api = make_api(settings=staleness(), clock=FixedClock(last + timedelta(hours=1)))  # in session, old bars
    r = api.post("/api/predict", json={"symbol": "SPY", "bars": bars})
    assert r.status_code == 200, r.text
    assert r.json()["data_age_s"] == 3600.0 - 60
    ahead = make_api(settings=staleness(), clock=FixedClock(last))  # the bar has not closed yet on this clock
    assert ahead.post("/api/predict", json={"symbol": "SPY", "bars": bars}).json()["data_age_s"] == 0.0


def test_without_a_clock_the_age_is_null_and_nothing_is_refused(make_api: Callable[..., TestClient]) -> None:
    api = make_api(settings=staleness(), clock=FixedClock(None))
    r = api.get("/api/predictions/SPY")
    assert r.status_code == 200 and r.json()["data_age_s"] is None
    r = api.post("/api/predict", json={"symbol": "SPY", "bars": make_bars(NEEDED + 2, seed=5)})
    assert r.status_code == 200 and r.json()["data_age_s"] is None


def failing_endpoint() -> dict[str, Any]:
    """An endpoint transport that records every call and refuses it (a stale request must not reach it)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError("must not be called")

    transport = httpx.MockTransport(handler)
    transport.seen = seen  # type: ignore[attr-defined]
    return {"endpoint_transport": transport}


# --- the source's clock: the Yahoo emulator's, read over its public chart route -------------------------


class Ticker:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t


def test_the_source_clock_is_the_chart_apis_regular_market_time(
    make_api: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    from emulators.yahoo.app import create_app as create_yahoo
    from emulators.yahoo.clock import EmulatorClock
    from emulators.yahoo.synthetic import SyntheticMarket

    ticker = Ticker()
    emulated = EmulatorClock(SPY_CLOSED + timedelta(seconds=30), 0.0)  # frozen: the test moves it
    yahoo = create_yahoo(clock=emulated, source=SyntheticMarket(7, ["SPY", "IBM"]))
    seen: list[str] = []
    up = True

    async def to_yahoo(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if not up:
            raise httpx.ConnectError("the emulator is down")
        return await httpx.ASGITransport(app=yahoo).handle_async_request(request)

    settings = api_settings(serving={"clock": "source", "max_data_age_s": 180, "clock_refresh_s": 10})
    assert settings.serving_clock == "source"
    clock = make_clock(settings, transport=httpx.MockTransport(to_yahoo))
    assert isinstance(clock, SourceClock)
    clock._monotonic = ticker  # the test's monotonic clock
    assert clock.url.startswith(settings.yahoo_base_url + "/v8/finance/chart/SPY?")
    api = make_api(settings=settings, clock=clock)

    assert api.get("/api/predictions/SPY").json()["data_age_s"] == 30.0
    assert seen == ["/v8/finance/chart/SPY"]  # a public route, not /_emulator/*
    # between readings the last one advances with the monotonic clock; the source is asked again after 10 s
    ticker.t += 5
    assert api.get("/api/predictions/SPY").json()["data_age_s"] == 35.0
    assert len(seen) == 1
    emulated.advance(200)  # the emulator's clock jumps: the lake is now 230 s behind the source
    ticker.t += 5
    assert_error(api.get("/api/predictions/SPY"), 503, "stale_data", "closed 230 s ago")
    assert len(seen) == 2
    # the source goes down: its last reading keeps advancing (logged once), the refusal stands
    up = False
    ticker.t += 10
    with caplog.at_level("WARNING", logger="tickcast.api.app"):
        assert_error(api.get("/api/predictions/SPY"), 503, "stale_data", "closed 240 s ago")
    assert "cannot be read" in caplog.text


def test_a_source_clock_never_read_leaves_the_age_unknown(make_api: Callable[..., TestClient]) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("nothing listens")

    settings = api_settings(serving={"clock": "source", "max_data_age_s": 180})
    api = make_api(settings=settings, clock=make_clock(settings, transport=httpx.MockTransport(down)))
    r = api.get("/api/predictions/SPY")
    assert r.status_code == 200 and r.json()["data_age_s"] is None


def test_the_clock_setting_defaults_to_the_source_locally_and_the_wall_in_the_cloud() -> None:
    from tickcast.settings import load_settings

    cloud: dict[str, Any] = {
        "profile": "cloud",
        "storage": {"account_url": "https://lake.blob.core.windows.net"},
        "serving": {"endpoint_url": "https://tickcast.eastus.inference.ml.azure.com/score", "endpoint_key": None},
    }
    assert load_settings(_env_file=None).serving_clock == "source"
    assert load_settings(_env_file=None, **cloud).serving_clock == "wall"
    cloud["serving"]["clock"] = "source"
    assert load_settings(_env_file=None, **cloud).serving_clock == "source"
    assert isinstance(make_clock(load_settings(_env_file=None, serving={"clock": "wall"})), WallClock)


def test_the_session_calendar_follows_new_york_time() -> None:
    summer, winter = date(2024, 6, 3), date(2024, 12, 2)  # Mondays, EDT and EST
    assert regular_session(datetime(2024, 6, 3, 13, 30, tzinfo=UTC)) == (
        datetime(2024, 6, 3, 13, 30, tzinfo=UTC),
        datetime(2024, 6, 3, 20, 0, tzinfo=UTC),
    )
    assert regular_session(datetime(2024, 6, 3, 13, 29, 59, tzinfo=UTC)) is None
    assert regular_session(datetime(2024, 6, 3, 20, 0, tzinfo=UTC)) is None
    assert regular_session(datetime(2024, 12, 2, 14, 0, tzinfo=UTC)) is None  # 09:00 EST
    assert regular_session(datetime(2024, 12, 2, 14, 30, tzinfo=UTC)) is not None
    assert regular_session(datetime(2024, 6, 8, 15, 0, tzinfo=UTC)) is None  # Saturday
    assert is_session_day(summer) and is_session_day(winter) and not is_session_day(EARLIER + timedelta(days=1))


def test_the_openapi_document_declares_data_age_and_the_new_answers(api: TestClient) -> None:
    doc = api.get("/api/openapi.json").json()
    get = doc["paths"]["/api/predictions/{symbol}"]["get"]["responses"]
    post = doc["paths"]["/api/predict"]["post"]["responses"]
    assert "stale_data" in get["503"]["description"] and "corrupt_lake_data" in get["503"]["description"]
    assert "body_too_large" in post["413"]["description"]
    age = doc["components"]["schemas"]["Prediction"]["properties"]["data_age_s"]
    assert {"type": "number", "minimum": 0.0} in age["anyOf"] and "closed" in age["description"]
