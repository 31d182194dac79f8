"""The public API's edges, in-process against the REAL endpoint stand-in: timestamps the contract refuses,
the body size limit, parsing off the event loop, corrupt lake data, and the age of the data behind a forecast.

Same chain as ``test_public_api.py``: ``TestClient`` → ``tickcast.api.app`` → ``httpx.ASGITransport`` → the
endpoint stand-in → score.py → ONNX Runtime; the lake is the real :class:`tickcast.lake.store.Lake` over the
in-memory TEST DOUBLE of a Blob container.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.support.models import NEEDED, make_bars
from tests.support.public_api import LATEST, MemoryContainer, api_settings, filled_lake, make_stand_in
from tickcast.api.app import create_app
from tickcast.lake.store import Lake, day_path

ERROR_KEYS = {"error", "code", "detail"}


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return make_stand_in(tmp_path_factory.mktemp("stand-in"))


@pytest.fixture(scope="module")
def lake() -> Lake:
    return filled_lake()


@pytest.fixture
def make_api(stand_in: FastAPI, lake: Lake) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**kwargs: Any) -> TestClient:
        kwargs.setdefault("lake", lake)
        kwargs.setdefault("endpoint_transport", httpx.ASGITransport(app=stand_in))
        settings = kwargs.pop("settings", None) or api_settings()
        client = TestClient(create_app(settings, **kwargs), base_url="http://function")
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Callable[..., TestClient]) -> TestClient:
    return make_api()


def assert_error(r: httpx.Response, status: int, code: str, *fragments: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == ERROR_KEYS and body["code"] == code, body
    for fragment in fragments:
        assert fragment in body["error"], (fragment, body["error"])
    return dict(body)


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
        api_settings(serving={"max_body_bytes": limit}), lake=lake, endpoint_transport=httpx.ASGITransport(stand_in)
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
