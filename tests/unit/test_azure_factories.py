"""Azure client factories: profile local uses Azurite's connection string, profile cloud a token credential.

Building a client does no I/O, so these run offline; the conftest network guard would refuse any
attempt to reach the ``*.blob.core.windows.net`` URLs used here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import TokenCredential
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobServiceClient, ContainerClient

from tickcast import azure as factories
from tickcast.settings import AZURITE_ACCOUNT, AZURITE_KEY, Settings, SettingsError, load_settings

ACCOUNT_URL = "https://tickcastlake.blob.core.windows.net"
CLOUD_REQUIRED: dict[str, Any] = {
    "kafka": {"bootstrap_servers": "tickcast.servicebus.windows.net:9093"},
    "mlflow": {"tracking_uri": "azureml://eastus.api.azureml.ms/mlflow/v1.0/subscriptions/x"},
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer .env, TICKCAST_* or Azure identity variables leak in."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith(("TICKCAST_", "AZURE_", "IDENTITY_", "MSI_", "IMDS_")):
            monkeypatch.delenv(name)


def cloud(**overrides: Any) -> Settings:
    storage = {"account_url": ACCOUNT_URL, **overrides.pop("storage", {})}
    return load_settings(profile="cloud", storage=storage, **CLOUD_REQUIRED, **overrides)


def key_of(client: BlobServiceClient | ContainerClient) -> str | None:
    """The account key behind a client's credential, if it has one."""
    return getattr(client.credential, "account_key", None)


# --- profile local ------------------------------------------------------------------------------


def test_local_blob_service_uses_the_azurite_connection_string() -> None:
    settings = load_settings(profile="local", stack={"azurite_port": 12345})
    client = factories.blob_service(settings)
    assert isinstance(client, BlobServiceClient)
    assert client.account_name == AZURITE_ACCOUNT
    assert client.url.rstrip("/") == f"http://127.0.0.1:12345/{AZURITE_ACCOUNT}"
    assert client.credential.account_name == AZURITE_ACCOUNT
    assert key_of(client) == AZURITE_KEY
    assert not isinstance(client.credential, TokenCredential)


def test_local_connection_string_override_is_used() -> None:
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:23456/devstoreaccount1;"
    )
    client = factories.blob_service(load_settings(profile="local", storage={"connection_string": conn}))
    assert client.url.rstrip("/") == "http://127.0.0.1:23456/devstoreaccount1"


def test_local_container_factory_points_at_the_configured_port() -> None:
    cc = factories.container("lake", load_settings(profile="local", stack={"azurite_port": 12346}))
    assert cc.url == f"http://127.0.0.1:12346/{AZURITE_ACCOUNT}/lake"
    assert key_of(cc) == AZURITE_KEY


# --- profile cloud ------------------------------------------------------------------------------


def test_cloud_blob_service_uses_a_token_credential_and_no_key() -> None:
    client = factories.blob_service(cloud())
    assert client.url.rstrip("/") == ACCOUNT_URL
    assert client.account_name == "tickcastlake"
    assert client.scheme == "https"
    assert isinstance(client.credential, TokenCredential)
    assert isinstance(client.credential, DefaultAzureCredential)
    assert key_of(client) is None
    assert not hasattr(client.credential, "account_name")
    assert "sig=" not in client.url  # no SAS either


def test_cloud_container_factory_shares_the_token_path() -> None:
    cc = factories.lake_container(cloud())
    assert cc.url == f"{ACCOUNT_URL}/lake"
    assert isinstance(cc.credential, DefaultAzureCredential)
    assert key_of(cc) is None


@pytest.mark.parametrize(
    ("client_id", "expected"), [(None, {}), ("1111-cid", {"managed_identity_client_id": "1111-cid"})]
)
def test_cloud_credential_passes_the_user_assigned_identity(
    monkeypatch: pytest.MonkeyPatch, client_id: str | None, expected: dict[str, str]
) -> None:
    calls: list[dict[str, Any]] = []

    class Recording:
        def __init__(self, **kwargs: Any) -> None:
            calls.append(kwargs)

    monkeypatch.setattr("azure.identity.DefaultAzureCredential", Recording)
    factories._credential.cache_clear()
    cred = factories.credential(cloud(azure={"managed_identity_client_id": client_id}))
    assert isinstance(cred, Recording)
    assert calls == [expected]
    again = factories.credential(cloud(azure={"managed_identity_client_id": client_id}))
    assert again is cred and len(calls) == 1, "one credential per identity per process (shared token cache)"
    factories._credential.cache_clear()


def test_cloud_without_account_url_names_the_variable() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(profile="cloud")
    msg = str(err.value)
    assert "TICKCAST_STORAGE__ACCOUNT_URL" in msg
    assert "TICKCAST_PROFILE=cloud" in msg


def test_cloud_refuses_a_connection_string_override() -> None:
    with pytest.raises(SettingsError, match="TICKCAST_STORAGE__CONNECTION_STRING must not be set"):
        cloud(storage={"connection_string": f"AccountName=x;AccountKey={AZURITE_KEY}"})


def test_cloud_refuses_a_connection_string_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKCAST_STORAGE__CONNECTION_STRING", "UseDevelopmentStorage=true")
    with pytest.raises(SettingsError, match="TICKCAST_STORAGE__CONNECTION_STRING"):
        cloud()


def test_cloud_settings_never_hand_out_a_connection_string() -> None:
    with pytest.raises(SettingsError, match="refused in profile cloud"):
        cloud().blob_connection_string()


def test_cloud_refuses_plain_http_account_url() -> None:
    with pytest.raises(SettingsError, match="must be an https:// URL"):
        cloud(storage={"account_url": "http://tickcastlake.blob.core.windows.net"})
