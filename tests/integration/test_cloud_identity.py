"""The cloud authentication path, for real and offline.

Profile ``cloud`` settings go through ``tickcast.azure.blob_service`` unchanged: account URL +
``DefaultAzureCredential`` -> ``ManagedIdentityCredential`` (App Service flavour, pointed by
``IDENTITY_ENDPOINT``/``IDENTITY_HEADER`` at a fake token endpoint on loopback) -> Bearer token ->
Azurite started with ``--oauth basic`` over HTTPS (a throwaway trustme CA, trusted through
``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE`` for these tests only). Every other credential in the chain
is starved (no ``AZURE_*`` variables, empty ``PATH``, ``HOME`` in a temp dir) and the conftest
network guard refuses IMDS and Azure hosts, so nothing here can reach a real endpoint.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.pipeline import PipelineResponse
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobServiceClient

from tests.support.azurite_https import AzuriteHttps, TlsFiles, azurite_https, make_tls
from tests.support.fake_identity import API_VERSION, FakeIdentityEndpoint, decode_jwt_claims
from tickcast.azure import _credential, blob_service, container
from tickcast.settings import Settings, load_settings

pytestmark = pytest.mark.integration

STORAGE_RESOURCE = "https://storage.azure.com"
TOKEN_ACCEPTED = "Validation against token authentication successfully"
ENV_PREFIXES_TO_CLEAR = ("AZURE_", "IDENTITY_", "MSI_", "IMDS_", "TICKCAST_", "MSAL_")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


class Guard(Protocol):
    """What the ``network_guard`` fixture of tests/conftest.py offers."""

    blocked: list[str]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles) -> Iterator[AzuriteHttps]:
    with azurite_https(tmp_path_factory.mktemp("azurite"), tls) as az:
        yield az


@pytest.fixture
def cloud_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tls: TlsFiles) -> None:
    """An environment where only a managed identity could authenticate, and the test CA is trusted."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIXES_TO_CLEAR) or name in PROXY_VARS:
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca))
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    # Developer credentials (az, azd, pwsh, shared MSAL cache, VS Code) find nothing to use.
    home = tmp_path / "home"
    empty_bin = tmp_path / "empty-bin"
    home.mkdir()
    empty_bin.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.chdir(tmp_path)  # no stray .env
    # tickcast.azure shares one credential per identity in a process; each test gets a fresh one
    _credential.cache_clear()


@pytest.fixture
def identity(cloud_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIdentityEndpoint]:
    with FakeIdentityEndpoint() as idp:
        for name, value in idp.env().items():
            monkeypatch.setenv(name, value)
        yield idp


def cloud_settings(account_url: str) -> Settings:
    return load_settings(
        profile="cloud",
        storage={"account_url": account_url},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        mlflow={"tracking_uri": "http://127.0.0.1:1"},
    )


def recorder(seen: list[tuple[str, str | None, int]]) -> Callable[[PipelineResponse[Any, Any]], None]:
    """A ``raw_response_hook`` noting (method, Authorization header as sent, status) of each call."""

    def hook(response: PipelineResponse[Any, Any]) -> None:
        request = response.http_request
        seen.append((request.method, request.headers.get("Authorization"), response.http_response.status_code))

    return hook


def test_cloud_profile_round_trip_uses_managed_identity(
    azurite: AzuriteHttps, identity: FakeIdentityEndpoint, network_guard: Guard
) -> None:
    blocked_before = list(network_guard.blocked)
    settings = cloud_settings(azurite.account_url)
    assert settings.profile == "cloud"
    assert settings.blob_account_url == azurite.account_url

    client = blob_service(settings)
    assert isinstance(client.credential, DefaultAzureCredential)

    seen: list[tuple[str, str | None, int]] = []
    hook = recorder(seen)
    name = f"mi-{uuid.uuid4().hex[:12]}"
    payload = b"ts,symbol,close\n2024-01-02T14:30:00Z,SPY,472.65\n"

    client.create_container(name, raw_response_hook=hook)
    cc = client.get_container_client(name)
    cc.upload_blob("bars/SPY/2024-01-02.csv", payload, raw_response_hook=hook)
    listed = [b.name for b in cc.list_blobs(name_starts_with="bars/", raw_response_hook=hook)]
    downloaded = cc.download_blob("bars/SPY/2024-01-02.csv", raw_response_hook=hook).readall()
    # the factory other modules use: create=True is idempotent on an existing container
    assert container(name, settings, create=True).container_name == name

    assert listed == ["bars/SPY/2024-01-02.csv"]
    assert downloaded == payload

    # the managed-identity endpoint was really used, exactly as App Service expects; tickcast.azure
    # shares one credential (and so one token) between clients: one fetch served both clients' calls
    assert identity.request_count == 1
    for req in identity.requests:
        assert (req.status, req.api_version, req.resource) == (200, API_VERSION, STORAGE_RESOURCE)
        assert req.identity_header == identity.secret

    # every Blob call carried that token as a Bearer token (no SharedKey, no SAS)
    assert [status for _, _, status in seen] == [201, 201, 200, 206]  # create, upload, list, ranged get
    for method, auth, _ in seen:
        assert auth is not None, f"{method} went out without Authorization"
        scheme, _, token = auth.partition(" ")
        assert scheme == "Bearer"
        assert token == identity.issued[0]
        assert decode_jwt_claims(token)["aud"] == STORAGE_RESOURCE

    # Azurite accepted them through its OAuth authenticator, and nothing tried IMDS or a real host
    azurite.wait_for_log(TOKEN_ACCEPTED)
    assert network_guard.blocked == blocked_before


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"aud": "https://management.azure.com/"}, "Invalid token audience."),
        ({"iss": "https://issuer.example/"}, "Invalid token issuer."),
        ({"nbf": 4102444800}, "Lifetime validation failed."),  # not before 2100
    ],
    ids=["wrong-audience", "wrong-issuer", "not-yet-valid"],
)
def test_azurite_refuses_a_bad_token(
    azurite: AzuriteHttps,
    cloud_env: None,
    monkeypatch: pytest.MonkeyPatch,
    claims: dict[str, Any],
    detail: str,
) -> None:
    with FakeIdentityEndpoint(claims=claims) as idp:
        for var, value in idp.env().items():
            monkeypatch.setenv(var, value)
        client = blob_service(cloud_settings(azurite.account_url))
        # azure-storage maps Azurite's 403 AuthenticationFailed to ClientAuthenticationError
        with pytest.raises(ClientAuthenticationError) as info:
            client.create_container(f"bad-{uuid.uuid4().hex[:12]}")
    err = info.value
    assert err.status_code == 403
    assert getattr(err, "error_code", None) == "AuthenticationFailed"  # set by azure-storage
    assert detail in str(err)
    # the token came from the fake MI endpoint, carried the bad claim, and Azurite said no
    assert idp.request_count == 1
    issued = decode_jwt_claims(idp.issued[0])
    assert all(issued[k] == v for k, v in claims.items())


def test_azurite_refuses_anonymous_requests(azurite: AzuriteHttps, cloud_env: None) -> None:
    """Without a credential the same call fails, so the round trip above proves the token worked."""
    anonymous = BlobServiceClient(account_url=azurite.account_url)
    with pytest.raises(HttpResponseError) as info:
        anonymous.create_container(f"anon-{uuid.uuid4().hex[:12]}")
    assert info.value.status_code in (401, 403)


@pytest.mark.timeout(20)
def test_wrong_identity_header_fails_without_escaping_the_chain(
    azurite: AzuriteHttps, identity: FakeIdentityEndpoint, monkeypatch: pytest.MonkeyPatch, network_guard: Guard
) -> None:
    blocked_before = list(network_guard.blocked)
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")
    client = blob_service(cloud_settings(azurite.account_url))
    credential = client.credential
    assert isinstance(credential, TokenCredential)
    # retry_total=0: Blob's retry policy also retries a failed token fetch (3 times, 15 s backoff)
    with pytest.raises(ClientAuthenticationError, match="DefaultAzureCredential failed") as info:
        client.create_container(f"nohdr-{uuid.uuid4().hex[:12]}", retry_total=0)
    assert "wrong X-IDENTITY-HEADER" in str(info.value)  # the MI endpoint's answer surfaces
    assert [r.status for r in identity.requests] == [401]
    assert identity.issued == []
    assert network_guard.blocked == blocked_before


def test_fake_identity_endpoint_checks_the_secret(identity: FakeIdentityEndpoint) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"{identity.url}?api-version={API_VERSION}&resource={STORAGE_RESOURCE}"
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(url, timeout=5)
    assert info.value.code == 401
    request = urllib.request.Request(url, headers={"X-IDENTITY-HEADER": identity.secret})
    with opener.open(request, timeout=5) as resp:
        assert resp.status == 200
    assert [r.status for r in identity.requests] == [401, 200]
    claims = decode_jwt_claims(identity.issued[0])
    assert claims["aud"] == STORAGE_RESOURCE
    assert claims["iss"].startswith("https://sts.windows.net/")
    assert claims["nbf"] <= claims["iat"] + 1 and claims["exp"] > claims["nbf"]
    assert {"oid", "tid"} <= claims.keys()


def test_network_guard_blocks_imds_and_azure_hosts(network_guard: Guard) -> None:
    before = len(network_guard.blocked)
    with pytest.raises(ConnectionRefusedError, match="network guard"):
        socket.create_connection(("169.254.169.254", 80), timeout=1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        with pytest.raises(ConnectionRefusedError, match=r"169\.254\.169\.254"):
            s.connect(("169.254.169.254", 80))
        with pytest.raises(ConnectionRefusedError, match="network guard"):
            s.connect_ex(("169.254.169.254", 80))
    for host in (
        "login.microsoftonline.com",
        "acct.blob.core.windows.net",
        "management.azure.com",
        "x.vault.azure.net",
    ):
        with pytest.raises(ConnectionRefusedError, match="network guard"):
            socket.getaddrinfo(host, 443)
    assert len(network_guard.blocked) == before + 7
    # loopback is untouched
    assert socket.getaddrinfo("127.0.0.1", 80)


@pytest.mark.timeout(20)
def test_default_credential_without_identity_fails_fast_on_the_guard(cloud_env: None, network_guard: Guard) -> None:
    """No MI configured: DefaultAzureCredential's IMDS probe hits the guard instead of hanging."""
    before = len(network_guard.blocked)
    with pytest.raises(ClientAuthenticationError):
        DefaultAzureCredential().get_token(f"{STORAGE_RESOURCE}/.default")
    assert any("169.254.169.254" in b for b in network_guard.blocked[before:])
