"""docker-compose.local.yml: generated from local/stack.toml, committed, and kept in step with it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tickcast.settings import ENV_PREFIX, Settings, load_settings
from tickcast_dev.stack.compose import render_compose
from tickcast_dev.stack.definition import REPO_ROOT, load_stack, rendered_stack

COMPOSE_FILE = REPO_ROOT / "docker-compose.local.yml"


def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TICKCAST_* variables, and an empty working directory so no .env file is read."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def default_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """Settings from the defaults only, as the committed file is generated."""
    _isolate(monkeypatch, tmp_path)
    return load_settings()


@pytest.fixture
def committed() -> str:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE.name} is missing: run `tickcast stack compose`"
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture
def doc(committed: str) -> dict[str, Any]:
    parsed = yaml.safe_load(committed)
    assert isinstance(parsed, dict)
    return parsed


def test_committed_file_is_current(default_settings: Settings, committed: str) -> None:
    expected = render_compose(default_settings)
    assert committed == expected, (
        f"{COMPOSE_FILE.name} is out of date with local/stack.toml: run `tickcast stack compose` "
        "(with no TICKCAST_* variables set) and commit the result"
    )


def test_rendering_is_deterministic(default_settings: Settings) -> None:
    assert render_compose(default_settings) == render_compose(default_settings)


def test_header_says_generated(committed: str) -> None:
    head = committed.split("\n", 3)[:3]
    assert any("GENERATED" in line and "DO NOT EDIT" in line for line in head)
    assert any("local/stack.toml" in line and "tickcast stack compose" in line for line in head)


def test_every_service_is_present_and_healthchecked(doc: dict[str, Any], default_settings: Settings) -> None:
    specs = load_stack()
    services = doc["services"]
    assert doc["name"] == "tickcast"
    assert set(services) == set(specs)
    for name, spec in specs.items():
        svc = services[name]
        assert spec.container is not None, name
        assert svc["image"] == spec.container.image
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL" and test[1], name
        assert {"interval", "timeout", "retries", "start_period"} <= set(svc["healthcheck"]), name
        assert svc["restart"] == "unless-stopped"
        assert f"{name}-data:/data" in svc["volumes"]
        assert f"{name}-data" in doc["volumes"]
        depends = svc.get("depends_on", {})
        assert set(depends) == set(spec.after), name
        assert all(d == {"condition": "service_healthy"} for d in depends.values()), name


def test_ports_are_the_settings_ports_on_loopback(doc: dict[str, Any], default_settings: Settings) -> None:
    for name, spec in load_stack().items():
        port = spec.port(default_settings)
        assert doc["services"][name]["ports"] == [f"127.0.0.1:{port}:{port}"], name


def test_env_names_match_the_process_stack(doc: dict[str, Any], default_settings: Settings) -> None:
    """The same variables as the processes get, then only the container table's own (e.g. POSTGRES_*)."""
    for rendered in rendered_stack(default_settings):
        container_env = doc["services"][rendered.name].get("environment", {})
        assert rendered.spec.container is not None
        own = [k for k in rendered.spec.container.env if k not in rendered.env]
        assert list(container_env) == list(rendered.env) + own, rendered.name


def test_airflow_and_mlflow_keep_their_state_in_the_postgres_service(
    doc: dict[str, Any], default_settings: Settings
) -> None:
    services = doc["services"]
    port = default_settings.stack.postgres_port
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:")
    assert pg["environment"]["POSTGRES_USER"] == default_settings.stack.postgres_user
    init = " ".join(pg["command"])
    assert "CREATE DATABASE %s" in init and "airflow mlflow" in init and f"-p {port}" in init
    airflow_db = services["airflow"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert airflow_db.startswith("postgresql+psycopg2://") and airflow_db.endswith(f"@postgres:{port}/airflow")
    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert f"@postgres:{port}/mlflow" in mlflow_cmd and "psycopg2-binary" in mlflow_cmd
    assert "sqlite" not in yaml.safe_dump(doc)
    assert "postgres" in services["airflow"]["depends_on"] and "postgres" in services["mlflow"]["depends_on"]


def test_containers_reach_each_other_by_service_name(doc: dict[str, Any]) -> None:
    services = doc["services"]
    blob = services["mlflow"]["environment"]["AZURE_STORAGE_CONNECTION_STRING"]
    assert "BlobEndpoint=http://azurite:10000/" in blob
    assert services["airflow"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert services["airflow"]["environment"]["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/tickcast/dags"
    assert "./dags:/opt/tickcast/dags:ro" in services["airflow"]["volumes"]


def test_kafka_advertises_the_host_bootstrap_address(doc: dict[str, Any], default_settings: Settings) -> None:
    command = doc["services"]["kafka"]["command"]
    advertised = command[command.index("--advertise-kafka-addr") + 1]
    assert advertised == default_settings.kafka_bootstrap


def test_non_default_ports_follow_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _isolate(monkeypatch, tmp_path)
    settings = load_settings(stack={"kafka_port": 19092, "mlflow_port": 15000})
    doc = yaml.safe_load(render_compose(settings))
    assert doc["services"]["kafka"]["ports"] == ["127.0.0.1:19092:19092"]
    assert "127.0.0.1:19092" in doc["services"]["kafka"]["command"]
    assert doc["services"]["airflow"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:15000"


def test_process_stack_keeps_its_endpoints(default_settings: Settings) -> None:
    """The placeholders shared with the container flavour still render host endpoints for processes."""
    airflow = next(r for r in rendered_stack(default_settings) if r.name == "airflow")
    assert airflow.env["MLFLOW_TRACKING_URI"] == default_settings.mlflow_tracking_uri
    assert airflow.env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO_ROOT / "dags")


def test_no_host_only_values_leak(committed: str) -> None:
    for needle in ("/work", ".venv", ".tickcast", str(REPO_ROOT), "{", "}"):
        assert needle not in committed, f"{needle!r} leaked into {COMPOSE_FILE.name}"
    assert not re.search(r"\bnode_modules\b|/bin/tansu", committed)


def _compose_cli_reason() -> str | None:
    """None when `docker compose` works here, else why the validation is skipped."""
    if shutil.which("docker") is None:
        return "docker CLI not installed"
    try:
        proc = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"`docker compose version` failed: {err}"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        detail = lines[0] if lines else f"exit {proc.returncode}"
        return f"docker compose CLI plugin not available: {detail}"
    return None


def test_docker_compose_config_validates() -> None:
    reason = _compose_cli_reason()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"docker compose config rejected {COMPOSE_FILE.name}:\n{proc.stderr}"
