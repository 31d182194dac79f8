"""The public API's test fixtures: an in-memory lake with sessions of bars, API settings, the endpoint stand-in app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pandas as pd
from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from fastapi import FastAPI
from fastapi.testclient import TestClient

from emulators.aml_endpoint.app import create_app as create_stand_in
from tests.support.models import NEEDED, make_bars, write_model
from tests.support.stand_ins import stand_in_settings
from tickcast.lake.store import Lake
from tickcast.settings import Settings, load_settings

KEY = "test-endpoint-key"


class _Blob:
    """One blob of :class:`MemoryContainer`: the calls :class:`tickcast.lake.store.Lake` makes."""

    def __init__(self, store: dict[str, tuple[bytes, str]], name: str) -> None:
        self.store, self.name = store, name

    def download_blob(self) -> SimpleNamespace:
        if self.name not in self.store:
            raise ResourceNotFoundError(f"blob {self.name} not found")
        data, etag = self.store[self.name]
        return SimpleNamespace(properties=SimpleNamespace(etag=etag), readall=lambda: data)

    def upload_blob(
        self, data: bytes, *, overwrite: bool, etag: str | None = None, match_condition: Any = None
    ) -> None:
        current = self.store.get(self.name)
        if current is not None and not overwrite:
            raise ResourceExistsError("blob exists")
        if match_condition == MatchConditions.IfNotModified and (current is None or current[1] != etag):
            raise ResourceModifiedError("etag mismatch")
        self.store[self.name] = (bytes(data), f'"{len(self.store)}-{len(data)}"')


class MemoryContainer:
    """TEST DOUBLE of ``azure.storage.blob.ContainerClient``: blobs in a dict, ETags, prefix listing."""

    def __init__(self) -> None:
        self.blobs: dict[str, tuple[bytes, str]] = {}

    def get_blob_client(self, name: str) -> _Blob:
        return _Blob(self.blobs, name)

    def list_blob_names(self, name_starts_with: str = "") -> Iterator[str]:
        return iter(sorted(n for n in self.blobs if n.startswith(name_starts_with)))


AFTER_CLOSE = datetime(2024, 6, 3, 21, 0, tzinfo=UTC)  # the evening after LATEST's session: old bars are normal


class FixedClock:
    """The API's clock (:class:`tickcast.api.freshness.Clock`) stopped at ``at`` (None: it cannot be read)."""

    def __init__(self, at: datetime | None = AFTER_CLOSE) -> None:
        self.at = at

    async def now(self) -> datetime | None:
        return self.at

    async def aclose(self) -> None:
        return None


def session_frame(symbol: str, day: date, n: int, seed: int) -> pd.DataFrame:
    """``n`` consecutive valid bars of ``symbol`` from 13:30Z on ``day``, as the ingest job stores them."""
    frame = pd.DataFrame(make_bars(n, seed=seed))
    shift = pd.Timestamp(day, tz="UTC") - pd.Timestamp(LATEST, tz="UTC")
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True) + shift
    return frame.assign(symbol=symbol, source="test", ingested_at=pd.Timestamp("2024-06-03T21:00:00Z"))


def filled_lake() -> Lake:
    """SPY: two sessions (the latest long enough); IBM: 12 bars; AIG: enough bars, unknown to the model; BAC: none."""
    lake = Lake(MemoryContainer())  # type: ignore[arg-type]
    frames = [
        session_frame("SPY", EARLIER, 60, seed=3),
        session_frame("SPY", LATEST, SPY_BARS, seed=1),
        session_frame("IBM", LATEST, 12, seed=2),
        session_frame("AIG", LATEST, NEEDED + 5, seed=4),
    ]
    lake.upsert_frame(pd.concat(frames, ignore_index=True), parallel=1)
    return lake


def api_settings(**overrides: Any) -> Settings:
    # the wall clock, and no stale-data refusal: the lake's bars are from 2024 (tests/unit/test_public_api_edges.py
    # drives data age and staleness with its own clocks). No prediction log unless a test asks for one (and gives
    # it a sink): the default sink is the Blob lake of the default settings, which a unit test must not write to
    # (a developer's running stack) and whose unreachable address held every app's shutdown for 5 s.
    serving = {
        "endpoint_key": KEY,
        "endpoint_url": "http://endpoint",
        "clock": "wall",
        "max_data_age_s": 0,
        **overrides.pop("serving", {}),
    }
    evaluation = {"log_predictions": False, **overrides.pop("evaluation", {})}
    return load_settings(_env_file=None, symbols=SYMBOLS, serving=serving, evaluation=evaluation, **overrides)


def make_stand_in(state_dir: Path, *, settings: Settings | None = None) -> FastAPI:
    """The endpoint stand-in with model version 1 (the handmade ONNX graph) deployed as blue at 100 %."""

    def loader(version: str) -> Path:
        return write_model(state_dir / "mlflow" / version) / "model"

    app = create_stand_in(
        stand_in_settings(settings or api_settings()), state_dir=state_dir / "endpoint", model_loader=loader, seed=1
    )
    app.state.deployments.put("blue", "1")
    app.state.deployments.set_traffic({"blue": 100})
    return app


SYMBOLS = ["SPY", "IBM", "AIG", "BAC"]  # the model knows SPY and IBM; the lake holds SPY, IBM, AIG


LATEST = date(2024, 6, 3)  # make_bars starts at 2024-06-03 13:30Z


EARLIER = date(2024, 5, 31)


SPY_BARS = NEEDED + 20


ERROR_KEYS = {"error", "code", "detail"}


@contextmanager
def api_clients(stand_in: FastAPI, lake: Lake, **defaults: Any) -> Iterator[Callable[..., TestClient]]:
    """``make(**create_app kwargs)`` -> a started TestClient of the public API on ``lake`` and the stand-in
    (a fixed clock unless given); every client made is closed on exit."""
    from tickcast.api.app import create_app

    clients: list[TestClient] = []

    def make(**kwargs: Any) -> TestClient:
        for key, value in defaults.items():
            kwargs.setdefault(key, value)
        kwargs.setdefault("lake", lake)
        kwargs.setdefault("endpoint_transport", httpx.ASGITransport(app=stand_in))
        kwargs.setdefault("clock", FixedClock())
        logged = kwargs.get("prediction_sink") is not None  # a sink given: the test is about the prediction log
        settings = kwargs.pop("settings", None) or api_settings(evaluation={"log_predictions": logged})
        client = TestClient(create_app(settings, **kwargs), base_url="http://function")
        client.__enter__()  # runs the lifespan: the endpoint client opens
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.__exit__(None, None, None)


def assert_error(r: httpx.Response, status: int, code: str, *fragments: str) -> dict[str, Any]:
    """An error answer of the public API: ``status``, a JSON ``{error, code, detail}`` body with ``code``, and
    each of ``fragments`` in its message."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == ERROR_KEYS and body["code"] == code, body
    for fragment in fragments:
        assert fragment in body["error"], (fragment, body["error"])
    return dict(body)
