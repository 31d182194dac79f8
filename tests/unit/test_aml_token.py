"""AML tokens: the stand-in enforces a Kubernetes endpoint's rules, the clients get and keep their tokens as in Azure.

* the endpoint stand-in in Kubernetes / ``aml_token`` mode refuses a Microsoft Entra ID token on ``/score`` (and
  counts it), refuses the key there, takes only the AML tokens it issued and while they are valid; its
  ARM-shaped token API checks the caller's ARM token (audience, issuer, lifetime) and the endpoint's coordinates;
* :class:`tickcast.endpoint.auth.AmlTokens` fetches one token, reuses it until its refresh time, keeps it
  through a failed refresh while it is valid, and fails clearly when it is not;
* the public API in profile cloud scores through the stand-in with AML tokens only: no Entra ID token reaches
  ``/score``, a refused token is replaced once.

Everything runs in process (``httpx.ASGITransport``); tests/integration/test_cloud_serving.py runs the same path
over real sockets with the loopback managed-identity endpoint.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from fastapi import FastAPI
from fastapi.testclient import TestClient

from emulators.aml_endpoint.app import create_app as create_stand_in
from emulators.settings import StandInSettings, load_stand_in_settings
from tests.support.fake_identity import unsigned_jwt
from tests.support.models import make_bars, request_body, write_model
from tickcast.api.app import create_app as create_api
from tickcast.endpoint.auth import AmlTokenError, AmlTokens, parse_token
from tickcast.settings import Settings, load_settings

KEY = "stand-in-key"
ADMIN_KEY = "stand-in-management-key"
AML = {
    "subscription_id": "0000-sub",
    "resource_group": "tickcast-dev",
    "workspace": "mlw",
    "endpoint_name": "tickcast-ep",
}
TOKEN_PATH = (
    "/subscriptions/0000-sub/resourceGroups/tickcast-dev/providers/Microsoft.MachineLearningServices"
    "/workspaces/mlw/onlineEndpoints/tickcast-ep/token?api-version=2025-12-01"
)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def entra_token(audience: str = "https://management.azure.com/", **claims: Any) -> str:
    now = int(time.time())
    body = {"aud": audience, "iss": "https://sts.windows.net/00000000-0000-4000-8000-00000000a2e1/"}
    body |= {"iat": now - 60, "nbf": now - 60, "exp": now + 3600, "oid": str(uuid.uuid4())} | claims
    return unsigned_jwt(body)


class ManagedIdentity:
    """TEST DOUBLE of the Function's managed-identity credential: Entra ID JWTs for the scope asked, recorded."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        audience = scopes[0].removesuffix(".default")
        return AccessToken(entra_token(audience), int(time.time()) + 3600)


def stand_in_settings() -> StandInSettings:
    return load_stand_in_settings(
        _env_file=None, serving={"endpoint_key": KEY, "endpoint_admin_key": ADMIN_KEY}, aml=AML
    )


def kubernetes_stand_in(tmp_path: Path, clock: Clock, *, auth_mode: str = "aml_token", lifetime: int = 3600) -> FastAPI:
    def loader(version: str) -> Path:
        return write_model(tmp_path / "mlflow" / version) / "model"

    app = create_stand_in(
        stand_in_settings(),
        state_dir=tmp_path / "endpoint",
        model_loader=loader,
        seed=1,
        kind="kubernetes",
        auth_mode=auth_mode,  # type: ignore[arg-type]
        token_lifetime_s=lifetime,
        clock=clock,
    )
    app.state.deployments.put("blue", "1")
    app.state.deployments.set_traffic({"blue": 100})
    return app


def call(app: FastAPI, method: str, url: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://endpoint") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(go())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the stand-in ---------------------------------------------------------------------------------------------


def test_a_kubernetes_endpoint_refuses_an_entra_token_and_says_why(tmp_path: Path) -> None:
    app = kubernetes_stand_in(tmp_path, Clock())
    r = call(app, "POST", "/score", content=request_body(), headers=bearer(entra_token("https://ml.azure.com")))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert (
        "Kubernetes online endpoint" in r.json()["message"] and "not a Microsoft Entra ID token" in r.json()["message"]
    )
    assert app.state.authority.entra_tokens_refused == 1
    key_mode = kubernetes_stand_in(tmp_path / "key", Clock(), auth_mode="key")
    r = call(key_mode, "POST", "/score", content=request_body(), headers=bearer(entra_token()))
    assert r.status_code == 401 and key_mode.state.authority.entra_tokens_refused == 1  # whatever the mode


def test_an_aml_token_endpoint_scores_with_its_tokens_only_while_they_are_valid(tmp_path: Path) -> None:
    clock = Clock()
    app = kubernetes_stand_in(tmp_path, clock, lifetime=600)
    r = call(app, "POST", TOKEN_PATH, headers=bearer(entra_token()))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"accessToken", "tokenType", "expiryTimeUtc", "refreshAfterTimeUtc"}
    assert body["tokenType"] == "Bearer" and body["expiryTimeUtc"] == int(clock.now) + 600
    assert body["refreshAfterTimeUtc"] == int(clock.now) + 300
    token = body["accessToken"]

    scored = call(app, "POST", "/score", content=request_body(), headers=bearer(token))
    assert scored.status_code == 200 and scored.json()["symbol"] == "SPY"
    assert call(app, "POST", "/score", content=request_body(), headers=bearer(KEY)).status_code == 401  # no keys
    assert call(app, "POST", "/score", content=request_body(), headers=bearer("made-up")).status_code == 401
    clock.now += 601
    expired = call(app, "POST", "/score", content=request_body(), headers=bearer(token))
    assert expired.status_code == 401 and "expired" in expired.json()["message"]
    # the stand-in's own management API takes its management key in every auth mode (decision 0063)
    assert call(app, "GET", "/traffic", headers=bearer(ADMIN_KEY)).json() == {"blue": 100}
    assert call(app, "GET", "/traffic", headers=bearer(KEY)).status_code == 401  # the scoring key manages nothing
    assert call(app, "GET", "/traffic", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize(
    ("headers", "path", "status", "code"),
    [
        ({}, TOKEN_PATH, 401, "AuthenticationFailed"),
        (bearer(entra_token("https://ml.azure.com")), TOKEN_PATH, 401, "InvalidAuthenticationTokenAudience"),
        (bearer(entra_token(iss="https://issuer.example/")), TOKEN_PATH, 401, "InvalidAuthenticationTokenTenant"),
        (bearer(entra_token(exp=int(time.time()) - 10)), TOKEN_PATH, 401, "ExpiredAuthenticationToken"),
        (bearer(entra_token()), TOKEN_PATH.replace("/mlw/", "/other/"), 404, "ResourceNotFound"),
    ],
    ids=["no-token", "wrong-audience", "not-entra", "expired", "other-workspace"],
)
def test_the_token_api_checks_the_callers_arm_token_and_the_endpoint(
    tmp_path: Path, headers: dict[str, str], path: str, status: int, code: str
) -> None:
    app = kubernetes_stand_in(tmp_path, Clock())
    r = call(app, "POST", path, headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert app.state.authority.tokens_issued == 0


def test_a_key_endpoint_issues_no_aml_token(tmp_path: Path) -> None:
    app = kubernetes_stand_in(tmp_path, Clock(), auth_mode="key")
    r = call(app, "POST", TOKEN_PATH, headers=bearer(entra_token()))
    assert r.status_code == 400 and "key authentication" in r.json()["error"]["message"]


# --- the token source -----------------------------------------------------------------------------------------


def client_settings(**aml: Any) -> Settings:
    return load_settings(
        _env_file=None,
        profile="cloud",
        symbols=["SPY"],
        storage={"account_url": "https://lake.blob.core.windows.net"},
        serving={"endpoint_url": "http://endpoint/score"},
        aml={**AML, "management_url": "http://127.0.0.1:1", **aml},
        evaluation={"log_predictions": False},  # no Blob lake here: its writer would retry until shutdown's 5 s bound
    )


class Switchable(httpx.AsyncBaseTransport):
    """Forwards to the stand-in until ``broken`` is set, then answers ARM's 503."""

    def __init__(self, app: FastAPI) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.broken = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.broken:
            return httpx.Response(503, json={"error": {"code": "ServiceUnavailable", "message": "try later"}})
        return await self.inner.handle_async_request(request)


def test_the_token_is_fetched_once_reused_until_its_refresh_time_and_kept_through_a_failed_refresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    app = kubernetes_stand_in(tmp_path, clock, lifetime=1200)
    arm = Switchable(app)
    identity = ManagedIdentity()
    source = AmlTokens(client_settings(), lambda: identity, async_transport=arm, clock=clock)

    async def run() -> list[str]:
        headers = [await source.aheader(), await source.aheader()]
        clock.now += 601  # past refreshAfterTimeUtc (half of 1200 s)
        headers.append(await source.aheader())
        clock.now += 601
        arm.broken = True
        headers.append(await source.aheader())  # the refresh fails; the token has ~10 minutes left: kept
        clock.now += 600
        with pytest.raises(AmlTokenError, match="the token API failed: HTTP 503 ServiceUnavailable"):
            await source.aheader()  # expired and no new one: a clear error
        await source.aclose()
        return headers

    first, again, refreshed, kept = asyncio.run(run())
    assert first == again != refreshed == kept
    assert source.fetches == 2 and app.state.authority.tokens_issued == 2
    assert identity.scopes[0] == ("https://management.azure.com/.default",)
    assert "the current one stays in use" in caplog.text


def test_a_refused_identity_names_the_missing_role() -> None:
    def forbidden(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error": {"code": "AuthorizationFailed", "message": "no access"}})

    source = AmlTokens(client_settings(), ManagedIdentity, async_transport=httpx.MockTransport(forbidden))
    with pytest.raises(AmlTokenError, match=r"onlineEndpoints/token/action.*AuthorizationFailed") as info:
        asyncio.run(source.aheader())
    assert info.value.status == 403


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"tokenType": "Bearer"}, "without an accessToken"),
        ({"accessToken": "t", "expiryTimeUtc": 5}, "expired or undated"),
        ({"accessToken": "t"}, "expired or undated"),
    ],
)
def test_a_malformed_token_answer_is_an_error(body: dict[str, Any], message: str) -> None:
    with pytest.raises(AmlTokenError, match=message):
        parse_token(body, now=100.0)


def test_without_a_refresh_time_the_token_is_renewed_five_minutes_before_it_expires() -> None:
    token = parse_token({"accessToken": "t", "expiryTimeUtc": 10_000}, now=1_000.0)
    assert token.refresh_after == 10_000 - 300 and token.header == "Bearer t"


# --- the public API in profile cloud ------------------------------------------------------------------------------


@pytest.fixture
def cloud_api(tmp_path: Path) -> Iterator[tuple[TestClient, FastAPI, ManagedIdentity, list[str]]]:
    stand_in = kubernetes_stand_in(tmp_path, Clock())
    seen: list[str] = []

    class Recording(httpx.AsyncBaseTransport):
        inner = httpx.ASGITransport(app=stand_in)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request.headers.get("authorization", ""))
            return await self.inner.handle_async_request(request)

    identity = ManagedIdentity()
    api = create_api(
        client_settings(),
        endpoint_transport=Recording(),
        token_transport=httpx.ASGITransport(app=stand_in),
        credential=identity,  # type: ignore[arg-type]
    )
    client = TestClient(api, base_url="http://function")
    client.__enter__()
    yield client, stand_in, identity, seen
    client.__exit__(None, None, None)


def test_the_cloud_api_scores_with_aml_tokens_and_never_sends_an_entra_token(
    cloud_api: tuple[TestClient, FastAPI, ManagedIdentity, list[str]],
) -> None:
    client, stand_in, identity, seen = cloud_api
    for _ in range(3):
        r = client.post("/api/predict", json={"symbol": "SPY", "bars": make_bars()})
        assert r.status_code == 200, r.text
    authority = stand_in.state.authority
    assert authority.tokens_issued == 1 and authority.entra_tokens_refused == 0
    assert len(set(seen)) == 1 and seen[0].startswith("Bearer ") and seen[0].count(".") != 2  # an AML token, no JWT
    assert identity.scopes == [("https://management.azure.com/.default",)]  # the identity's token: ARM only


def test_a_refused_token_is_replaced_once(cloud_api: tuple[TestClient, FastAPI, ManagedIdentity, list[str]]) -> None:
    client, stand_in, _, seen = cloud_api
    assert client.post("/api/predict", json={"symbol": "SPY", "bars": make_bars()}).status_code == 200
    stand_in.state.authority._tokens.clear()  # e.g. the endpoint was recreated: the old token means nothing now
    r = client.post("/api/predict", json={"symbol": "SPY", "bars": make_bars()})
    assert r.status_code == 200, r.text
    assert stand_in.state.authority.tokens_issued == 2 and len(seen) == 3 and seen[1] == seen[0] != seen[2]


def test_the_cloud_api_without_the_endpoints_coordinates_is_a_503_naming_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = create_api(client_settings(workspace=None), credential=ManagedIdentity())  # type: ignore[arg-type]
    with TestClient(api, base_url="http://function") as client:
        r = client.post("/api/predict", json={"symbol": "SPY", "bars": make_bars()})
    assert r.status_code == 503 and r.json()["code"] == "endpoint_unavailable" and "misconfigured" in r.json()["error"]
    assert "TICKCAST_AML__WORKSPACE" in caplog.text


def test_no_token_is_a_503_not_a_crash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            raise RuntimeError("ManagedIdentityCredential: no identity endpoint")

    api = create_api(client_settings(), credential=Broken())  # type: ignore[arg-type]
    with TestClient(api, base_url="http://function") as client:
        r = client.post("/api/predict", json={"symbol": "SPY", "bars": make_bars()})
    assert r.status_code == 503 and "could not authenticate to the model" in r.json()["error"]
    assert "no Entra ID token for https://management.azure.com/.default" in caplog.text
