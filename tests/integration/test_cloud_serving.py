"""The cloud profile's serving hop, end to end over real sockets: Function -> AML token -> Kubernetes endpoint.

What runs is what runs in Azure, with its Azure parts replaced by local twins that enforce Azure's rules:

* the **Function app** (``tickcast.api.app.create_app``, what ``cloud/function/function_app.py`` wraps) with the
  settings of profile cloud and nothing injected: the lake through ``tickcast.azure`` (account URL +
  ``DefaultAzureCredential``), the endpoint through :class:`tickcast.api.backend.EndpointClient` (aiohttp), the
  AML token through :class:`tickcast.endpoint.auth.AmlTokens`;
* the **managed identity**: the loopback App Service identity endpoint of the foundation tests
  (``tests/support/fake_identity.py``, pointed at by ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``);
* the **lake**: Azurite over HTTPS with OAuth (it checks the storage token's audience, issuer and lifetime);
* **Azure Resource Manager's token API and the Kubernetes online endpoint**: the endpoint stand-in in
  ``kind="kubernetes", auth_mode="aml_token"``, on a free port (uvicorn in a thread): it refuses Entra ID
  tokens on ``/score`` and accepts only the AML tokens its ARM-shaped token API issued.

The conftest network guard refuses IMDS and every Azure host, so nothing here can reach a real service.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from emulators.aml_endpoint.app import create_app as create_stand_in
from emulators.settings import load_stand_in_settings
from tests.support.azurite_https import AzuriteHttps, TlsFiles, azurite_https, make_tls
from tests.support.fake_identity import FakeIdentityEndpoint, decode_jwt_claims
from tests.support.models import make_bars, write_model
from tests.support.served import Served
from tickcast.api.app import create_app as create_api
from tickcast.azure import _credential, lake_container
from tickcast.lake.store import Lake
from tickcast.settings import Settings, load_settings

pytestmark = pytest.mark.integration

ENV_PREFIXES_TO_CLEAR = ("AZURE_", "IDENTITY_", "MSI_", "IMDS_", "TICKCAST_", "MSAL_")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
AML = {"subscription_id": "0000-sub", "resource_group": "tickcast-it", "workspace": "tickcast-it-mlw"}
ENDPOINT = "tickcast-it-endpoint"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles) -> Iterator[AzuriteHttps]:
    with azurite_https(tmp_path_factory.mktemp("azurite"), tls) as az:
        yield az


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tls: TlsFiles) -> Iterator[FakeIdentityEndpoint]:
    """Only a managed identity can authenticate (developer credentials starved), and the test CA is trusted."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIXES_TO_CLEAR) or name in PROXY_VARS:
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca))
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    for folder in ("home", "empty-bin"):
        (tmp_path / folder).mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.chdir(tmp_path)
    _credential.cache_clear()
    with FakeIdentityEndpoint() as idp:
        for name, value in idp.env().items():
            monkeypatch.setenv(name, value)
        yield idp
    _credential.cache_clear()


class ScoreRecorder:
    """ASGI wrapper that notes the Authorization header of every ``POST /score`` the endpoint receives."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.headers: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/score":
            auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            self.headers.append(auth.decode("latin-1"))
        await self.app(scope, receive, send)


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[tuple[Served, FastAPI, ScoreRecorder]]:
    settings = load_stand_in_settings(
        _env_file=None, serving={"endpoint_key": "management-key"}, aml={**AML, "endpoint_name": ENDPOINT}
    )

    def loader(version: str) -> Path:
        return write_model(tmp_path / "mlflow" / version) / "model"

    app = create_stand_in(
        settings,
        state_dir=tmp_path / "endpoint",
        model_loader=loader,
        seed=1,
        kind="kubernetes",
        auth_mode="aml_token",
    )
    app.state.deployments.put("blue", "1")
    app.state.deployments.set_traffic({"blue": 100})
    recorder = ScoreRecorder(app)
    with Served(recorder) as served:
        yield served, app, recorder


def cloud_settings(azurite: AzuriteHttps, endpoint_url: str) -> Settings:
    """What the Function's app settings (cloud/arm/main.json) make of profile cloud, pointed at the local twins."""
    return load_settings(
        _env_file=None,
        profile="cloud",
        symbols=["SPY"],
        storage={"account_url": azurite.account_url, "lake_container": f"lake{uuid.uuid4().hex[:8]}"},
        serving={"endpoint_url": f"{endpoint_url}/score"},
        aml={**AML, "endpoint_name": ENDPOINT, "management_url": endpoint_url},
    )


def fill_lake(settings: Settings) -> None:
    """Today's session of SPY in the lake, written through the cloud path (managed identity -> Azurite)."""
    bars = pd.DataFrame(make_bars())
    today = datetime.now(UTC).replace(hour=14, minute=0, second=0, microsecond=0)
    bars["ts"] = [today + pd.Timedelta(minutes=i) for i in range(len(bars))]
    bars["symbol"], bars["source"], bars["ingested_at"] = "SPY", "test", datetime.now(UTC)
    Lake(lake_container(settings, create=True)).upsert_frame(bars)


def test_the_function_serves_a_prediction_through_an_aml_token_and_no_entra_token_reaches_the_endpoint(
    azurite: AzuriteHttps, identity: FakeIdentityEndpoint, endpoint: tuple[Served, FastAPI, ScoreRecorder]
) -> None:
    served, stand_in, recorder = endpoint
    settings = cloud_settings(azurite, served.url)
    fill_lake(settings)

    with TestClient(create_api(settings), base_url="http://function") as function:
        latest = function.get("/api/predictions/SPY")
        posted = function.post("/api/predict", json={"symbol": "SPY", "bars": make_bars()})
        again = function.get("/api/predictions/SPY")

    for r in (latest, posted, again):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["symbol"] == "SPY" and body["model_version"] == "1" and body["predicted_close"] > 0

    authority = stand_in.state.authority
    assert authority.tokens_issued == 1  # one AML token for the three calls: cached until its refresh time
    assert authority.entra_tokens_refused == 0
    assert len(recorder.headers) == 3 and len(set(recorder.headers)) == 1
    aml_token = recorder.headers[0].removeprefix("Bearer ")
    assert aml_token and aml_token not in identity.issued  # the endpoint saw the AML token, not an identity token
    # the managed identity was asked twice: once for Blob, once for Azure Resource Manager (for the token API)
    resources = sorted(req.resource or "" for req in identity.requests)
    assert resources == ["https://management.azure.com", "https://storage.azure.com"]
    for token in identity.issued:
        assert decode_jwt_claims(token)["aud"] in ("https://management.azure.com", "https://storage.azure.com")


def test_an_entra_token_sent_straight_to_the_endpoint_is_refused(
    identity: FakeIdentityEndpoint, endpoint: tuple[Served, FastAPI, ScoreRecorder]
) -> None:
    """What the Function used to send (an Entra ID token for ml.azure.com) fails on a Kubernetes endpoint."""
    served, stand_in, _ = endpoint
    entra = _credential(None).get_token("https://ml.azure.com/.default").token
    r = httpx.post(f"{served.url}/score", content=b"{}", headers={"Authorization": f"Bearer {entra}"}, timeout=10)
    assert r.status_code == 401 and "not a Microsoft Entra ID token" in r.json()["message"]
    assert stand_in.state.authority.entra_tokens_refused == 1
