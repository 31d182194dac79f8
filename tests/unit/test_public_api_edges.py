"""The public API's edges, in-process against the REAL endpoint stand-in: timestamps the contract refuses,
the body size limit, parsing off the event loop, corrupt lake data, and the age of the data behind a forecast.

Same chain as ``test_public_api.py``: ``TestClient`` → ``tickcast.api.app`` → ``httpx.ASGITransport`` → the
endpoint stand-in → score.py → ONNX Runtime; the lake is the real :class:`tickcast.lake.store.Lake` over the
in-memory TEST DOUBLE of a Blob container.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.support.models import NEEDED, make_bars
from tests.support.public_api import api_settings, filled_lake, make_stand_in
from tickcast.api.app import create_app
from tickcast.lake.store import Lake

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
