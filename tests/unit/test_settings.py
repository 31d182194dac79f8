"""Settings: one source of truth, clear errors that name the variable, profiles, .env support."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tickcast.settings import SettingsError, env_name, load_settings


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no developer .env leaks in
    for name in list(os.environ):
        if name.startswith("TICKCAST_"):
            monkeypatch.delenv(name)


def test_defaults_derive_local_endpoints_from_the_stack() -> None:
    s = load_settings()
    assert s.profile == "local"
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert s.blob_account_url == "http://127.0.0.1:10000/devstoreaccount1"
    assert "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;" in s.blob_connection_string()


def test_env_prefix_and_nested_delimiter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKCAST_STACK__KAFKA_PORT", "19092")
    monkeypatch.setenv("TICKCAST_SYMBOLS", '["MSFT"]')
    s = load_settings()
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.symbols == ["MSFT"]


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TICKCAST_STACK__MLFLOW_PORT=5055\n")
    assert load_settings().mlflow_tracking_uri == "http://127.0.0.1:5055"


def test_wrong_value_names_the_variable_and_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKCAST_STACK__KAFKA_PORT", "ninety")
    with pytest.raises(SettingsError) as err:
        load_settings()
    msg = str(err.value)
    assert "TICKCAST_STACK__KAFKA_PORT='ninety'" in msg
    assert "valid integer" in msg
    assert "TCP port of the Kafka-protocol broker" in msg


def test_out_of_range_port_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKCAST_STACK__AIRFLOW_PORT", "70000")
    with pytest.raises(SettingsError, match="TICKCAST_STACK__AIRFLOW_PORT"):
        load_settings()


def test_unknown_profile_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKCAST_PROFILE", "prod")
    with pytest.raises(SettingsError, match=r"TICKCAST_PROFILE='prod'.*'local' or 'cloud'"):
        load_settings()


def test_cloud_profile_requires_its_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKCAST_PROFILE", "cloud")
    with pytest.raises(SettingsError) as err:
        load_settings()
    msg = str(err.value)
    for var in ("TICKCAST_STORAGE__ACCOUNT_URL", "TICKCAST_KAFKA__BOOTSTRAP_SERVERS", "TICKCAST_MLFLOW__TRACKING_URI"):
        assert var in msg


def test_cloud_profile_refuses_connection_strings() -> None:
    with pytest.raises(SettingsError, match="TICKCAST_STORAGE__CONNECTION_STRING must not be set"):
        load_settings(
            profile="cloud",
            storage={"account_url": "https://acct.blob.core.windows.net", "connection_string": "AccountKey=x"},
            kafka={"bootstrap_servers": "k:9092"},
            mlflow={"tracking_uri": "https://mlflow"},
        )


def test_cloud_settings_never_hand_out_a_connection_string() -> None:
    s = load_settings(
        profile="cloud",
        storage={"account_url": "https://acct.blob.core.windows.net/"},
        kafka={"bootstrap_servers": "k:9092"},
        mlflow={"tracking_uri": "https://mlflow"},
    )
    assert s.blob_account_url == "https://acct.blob.core.windows.net"
    with pytest.raises(SettingsError):
        s.blob_connection_string()


def test_to_env_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    original = load_settings(stack={"kafka_port": 19999}, symbols=["A", "B"])
    for key, value in original.to_env().items():
        monkeypatch.setenv(key, value)
    assert load_settings() == original


def test_env_name() -> None:
    assert env_name("stack", "kafka_port") == "TICKCAST_STACK__KAFKA_PORT"
