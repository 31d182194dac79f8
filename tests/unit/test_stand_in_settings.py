"""The stand-ins' own settings (emulators/settings.py): the same TICKCAST_* variables as the product, the same
defaults where both read a value, errors that name the variable, and the harness passing the emulator group on."""

from __future__ import annotations

import importlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, SecretStr

from emulators.settings import (
    MarketSettings,
    StandInSettings,
    StandInSettingsError,
    get_stand_in_settings,
    load_stand_in_settings,
)
from emulators.yahoo.app import create_app as create_yahoo
from emulators.yahoo.clock import EmulatorClock
from tickcast.settings import Settings, load_settings
from tickcast_dev.oracle import emulator_oracle
from tickcast_dev.stack.supervisor import StackError, Supervisor


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TICKCAST_* variable and no .env from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("TICKCAST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return value.resolve()
    return value


def test_the_stand_ins_read_the_variables_the_stack_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKCAST_SYMBOLS", '["msft","SPY"]')
    monkeypatch.setenv("TICKCAST_EMULATOR__MODE", "tape")
    monkeypatch.setenv("TICKCAST_EMULATOR__PHI", '{"SPY": 0.25}')
    monkeypatch.setenv("TICKCAST_STACK__YAHOO_PORT", "18765")
    monkeypatch.setenv("TICKCAST_SERVING__ENDPOINT_KEY", "k-score")
    monkeypatch.setenv("TICKCAST_SERVING__REQUEST_TIMEOUT_MS", "900")
    monkeypatch.setenv("TICKCAST_MLFLOW__TRACKING_URI", "http://127.0.0.1:15000/")
    monkeypatch.setenv("TICKCAST_GATEWAY__SUBSCRIPTION_KEYS", '["k1","k2"]')
    monkeypatch.setenv("TICKCAST_AML__WORKSPACE", "mlw")
    monkeypatch.setenv("TICKCAST_PROFILE", "cloud")  # a product variable: the stand-ins ignore it
    s = load_stand_in_settings()
    assert s.symbols == ["msft", "SPY"]
    assert s.emulator.mode == "tape" and s.emulator.phi == {"SPY": 0.25}
    assert s.stack.yahoo_port == 18765
    assert s.serving.endpoint_key is not None and s.serving.endpoint_key.get_secret_value() == "k-score"
    assert s.serving.request_timeout_ms == 900
    assert s.mlflow_tracking_uri == "http://127.0.0.1:15000"
    assert [k.get_secret_value() for k in s.gateway.subscription_keys] == ["k1", "k2"]
    assert s.aml.workspace == "mlw"


def test_a_dotenv_file_in_the_working_directory_counts(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TICKCAST_EMULATOR__CLOCK_SPEED=60\n")
    assert load_stand_in_settings().emulator.clock_speed == 60


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TICKCAST_EMULATOR__MODE", "replay"),
        ("TICKCAST_EMULATOR__DEFAULT_PHI", "1.5"),
        ("TICKCAST_STACK__ENDPOINT_PORT", "0"),
        ("TICKCAST_SERVING__REQUEST_TIMEOUT_MS", "soon"),
    ],
)
def test_a_wrong_value_names_the_variable_to_set(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(StandInSettingsError) as err:
        load_stand_in_settings()
    assert f"{variable}={value!r}" in str(err.value)
    assert "Set it to the" in str(err.value)


def test_the_product_has_no_emulator_group() -> None:
    assert "emulator" not in Settings.model_fields
    assert not [k for k in load_settings(_env_file=None).to_env() if k.startswith("TICKCAST_EMULATOR__")]


def test_defaults_agree_with_the_product_wherever_both_read_a_variable() -> None:
    """A local client and its stand-in work together unconfigured: same keys, ports, model, policy, symbols."""
    stand_in, product = load_stand_in_settings(_env_file=None), load_settings(_env_file=None)
    compared = 0
    for name in StandInSettings.model_fields:
        mine, theirs = getattr(stand_in, name), getattr(product, name, None)
        if name == "emulator":
            continue
        if not isinstance(mine, BaseModel):
            assert _plain(mine) == _plain(theirs), name
            compared += 1
            continue
        assert isinstance(theirs, BaseModel), f"the product has no {name} group"
        for field in type(mine).model_fields:
            assert field in type(theirs).model_fields, f"{name}.{field} is not a product setting"
            assert _plain(getattr(mine, field)) == _plain(getattr(theirs, field)), f"{name}.{field}"
            compared += 1
    assert compared >= 15
    assert product.gateway_client_key() in [k.get_secret_value() for k in stand_in.gateway.subscription_keys]


def test_the_emulator_group_travels_to_a_child_process_as_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    market = {"mode": "tape", "phi": {"SPY": -0.2}, "clock_start": "now", "clock_speed": 0.0, "seed": 11}
    original = load_stand_in_settings(_env_file=None, emulator=market)
    for key, value in original.emulator_env().items():
        monkeypatch.setenv(key, value)
    assert load_stand_in_settings().emulator == original.emulator


def test_the_emulator_serves_the_market_its_settings_ask_for(tmp_path: Path) -> None:
    clock = EmulatorClock(datetime(2024, 6, 3, 15, 0, tzinfo=UTC), 0)
    tape = load_stand_in_settings(_env_file=None, emulator={"mode": "tape", "tape_dir": tmp_path})
    synthetic = load_stand_in_settings(_env_file=None, symbols=["SPY"])
    assert TestClient(create_yahoo(tape, clock=clock)).get("/health").json()["mode"] == "tape"
    with TestClient(create_yahoo(synthetic, clock=clock)) as client:
        assert client.get("/health").json()["mode"] == "synthetic"
        assert client.get("/v8/finance/chart/SPY", params={"interval": "1m", "range": "1d"}).status_code == 200
        assert client.get("/v8/finance/chart/IBM", params={"interval": "1m", "range": "1d"}).status_code == 404


def test_the_harness_hands_the_emulator_group_to_the_services(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('TICKCAST_EMULATOR__MODE=tape\nTICKCAST_EMULATOR__PHI={"SPY": 0.1}\n')
    supervisor = Supervisor(load_settings(_env_file=None, stack={"home": tmp_path / "home"}), specs={})
    env = supervisor.child_env()
    assert env["TICKCAST_EMULATOR__MODE"] == "tape"
    assert json.loads(env["TICKCAST_EMULATOR__PHI"]) == {"SPY": 0.1}
    (tmp_path / ".env").write_text("TICKCAST_EMULATOR__MODE=replay\n")
    with pytest.raises(StackError, match="TICKCAST_EMULATOR__MODE='replay'"):
        supervisor.child_env()


def test_up_tape_switches_only_the_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tickcast up --tape``: the services get mode tape, the other emulator variables still count."""
    monkeypatch.setenv("TICKCAST_EMULATOR__SEED", "3")
    monkeypatch.setenv("TICKCAST_EMULATOR__MODE", "synthetic")
    product = load_settings(_env_file=None, stack={"home": tmp_path / "home"})
    env = Supervisor(product, specs={}, emulator={"mode": "tape"}).child_env()
    assert env["TICKCAST_EMULATOR__MODE"] == "tape" and env["TICKCAST_EMULATOR__SEED"] == "3"
    assert Supervisor(product, specs={}).child_env()["TICKCAST_EMULATOR__MODE"] == "synthetic"


def test_the_oracle_exists_only_for_the_local_synthetic_market(monkeypatch: pytest.MonkeyPatch) -> None:
    local = load_settings(_env_file=None)
    assert emulator_oracle(local) is not None
    assert emulator_oracle(local, MarketSettings(mode="tape")) is None
    assert emulator_oracle(load_settings(_env_file=None, profile="cloud", storage={"account_url": "https://a"})) is None
    monkeypatch.setenv("TICKCAST_EMULATOR__MODE", "tape")  # what the services see after `tickcast up --tape`
    assert emulator_oracle(local) is None


@pytest.mark.parametrize("program", ["emulators.yahoo", "emulators.aml_endpoint", "emulators.apim"])
def test_a_stand_in_started_with_a_wrong_value_says_which_variable(
    monkeypatch: pytest.MonkeyPatch, program: str
) -> None:
    main = importlib.import_module(f"{program}.__main__").main
    monkeypatch.setenv("TICKCAST_SERVING__REQUEST_TIMEOUT_MS", "10")  # below AML's minimum of 100
    get_stand_in_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as stopped:
            main(["--port", "1"])
    finally:
        get_stand_in_settings.cache_clear()
    assert "TICKCAST_SERVING__REQUEST_TIMEOUT_MS=" in str(stopped.value.code)
