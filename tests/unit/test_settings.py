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


def test_cloud_profile_requires_the_lake_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKCAST_PROFILE", "cloud")
    with pytest.raises(SettingsError) as err:
        load_settings()
    msg = str(err.value)
    assert "TICKCAST_STORAGE__ACCOUNT_URL is required when TICKCAST_PROFILE=cloud" in msg
    assert "ARM output lakeAccountUrl" in msg
    # Kafka and MLflow are asked for by the components that use them, not by every process of profile cloud
    assert "KAFKA" not in msg and "MLFLOW" not in msg


CLOUD_LAKE = {"account_url": "https://acct.blob.core.windows.net"}


def test_the_function_app_needs_no_kafka_or_mlflow() -> None:
    s = load_settings(
        profile="cloud", storage=CLOUD_LAKE, serving={"endpoint_url": "https://ep.westeurope.inference.ml.azure.com"}
    )
    s.require("storage.account_url", "serving.endpoint_url", purpose="the Function app")  # does not raise
    assert s.endpoint_url == "https://ep.westeurope.inference.ml.azure.com"


@pytest.mark.parametrize(
    ("attr", "var", "output"),
    [
        ("kafka_bootstrap", "TICKCAST_KAFKA__BOOTSTRAP_SERVERS", "kafkaBootstrapServers"),
        ("mlflow_tracking_uri", "TICKCAST_MLFLOW__TRACKING_URI", "mlflowTrackingUri"),
        ("gateway_url", "TICKCAST_GATEWAY__URL", "apimGatewayUrl"),
        ("airflow_url", "TICKCAST_AIRFLOW__URL", "airflowUrl"),
    ],
)
def test_cloud_endpoints_never_fall_back_to_the_local_stack(attr: str, var: str, output: str) -> None:
    s = load_settings(profile="cloud", storage=CLOUD_LAKE)
    with pytest.raises(SettingsError) as err:
        getattr(s, attr)
    msg = str(err.value)
    assert var in msg and f"ARM output {output}" in msg and "127.0.0.1" not in msg


def test_require_lists_every_missing_value_with_its_variable_and_arm_output() -> None:
    s = load_settings(profile="cloud", storage=CLOUD_LAKE)
    with pytest.raises(SettingsError) as err:
        s.require("storage.account_url", "kafka.bootstrap_servers", "aml.workspace", purpose="the retrain job")
    msg = str(err.value)
    assert "for the retrain job (TICKCAST_PROFILE=cloud)" in msg
    assert "TICKCAST_KAFKA__BOOTSTRAP_SERVERS is not set: set it from the ARM output kafkaBootstrapServers" in msg
    assert "TICKCAST_AML__WORKSPACE is not set: set it from the ARM output amlWorkspaceName" in msg
    assert "STORAGE" not in msg


def test_require_in_profile_local_accepts_what_the_stack_provides() -> None:
    s = load_settings()
    s.require("storage.account_url", "kafka.bootstrap_servers", "mlflow.tracking_uri", "serving.endpoint_url")
    with pytest.raises(SettingsError, match="TICKCAST_AML__SUBSCRIPTION_ID is not set"):
        s.require("aml.subscription_id")
    with pytest.raises(ValueError, match="unknown setting"):
        s.require("kafka.nope")


@pytest.mark.parametrize(
    ("group", "value", "var"),
    [
        ("serving", {"endpoint_key": "k"}, "TICKCAST_SERVING__ENDPOINT_KEY"),
        ("gateway", {"subscription_keys": ["k"]}, "TICKCAST_GATEWAY__SUBSCRIPTION_KEYS"),
    ],
)
def test_cloud_profile_refuses_keys(group: str, value: dict[str, object], var: str) -> None:
    with pytest.raises(SettingsError, match=f"{var} must not be set when TICKCAST_PROFILE=cloud"):
        load_settings(profile="cloud", storage=CLOUD_LAKE, **{group: value})


def test_cloud_to_env_round_trips_without_local_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    original = load_settings(profile="cloud", storage=CLOUD_LAKE, aml={"workspace": "ws"})
    env = original.to_env()
    assert "TICKCAST_SERVING__ENDPOINT_KEY" not in env and "TICKCAST_GATEWAY__SUBSCRIPTION_KEYS" not in env
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    again = load_settings()
    assert again.aml.workspace == "ws" and again.blob_account_url == original.blob_account_url


def test_every_arm_output_maps_to_a_real_setting() -> None:
    from tickcast.settings import ARM_OUTPUT_SETTINGS

    s = load_settings()
    for output, loc in ARM_OUTPUT_SETTINGS.items():
        group = getattr(s, loc[0])
        assert loc[1] in type(group).model_fields, output


def test_cloud_profile_refuses_connection_strings() -> None:
    with pytest.raises(SettingsError, match="TICKCAST_STORAGE__CONNECTION_STRING must not be set"):
        load_settings(
            profile="cloud",
            storage={"account_url": "https://acct.blob.core.windows.net", "connection_string": "AccountKey=x"},
        )


def test_cloud_settings_never_hand_out_a_connection_string() -> None:
    s = load_settings(
        profile="cloud",
        storage={"account_url": "https://acct.blob.core.windows.net/"},
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
