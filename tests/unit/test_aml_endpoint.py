"""The AML online endpoint stand-in, in-process: keys, blue/green deployments, traffic, errors, restarts."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulators.aml_endpoint.app import create_app
from emulators.settings import load_stand_in_settings
from tests.support.endpoint import ADMIN, AUTH, KEY, Endpoint, settings
from tests.support.models import make_bars, request_body, write_model
from tickcast.scoring.contract import PredictResponse, model_status

GAINS = {"1": 0.5, "2": -0.5}  # two models that answer differently


@pytest.fixture
def registry(tmp_path: Path) -> Callable[[str], Path]:
    """A stand-in for MLflow: version -> its ``model/`` folder; "9" is a broken model, others are unknown."""

    def load(version: str) -> Path:
        folder = tmp_path / "mlflow" / version
        if version in GAINS:
            return write_model(folder, gain=GAINS[version]) / "model"
        if version == "9":
            write_model(folder)
            (folder / "model" / "model.onnx").write_bytes(b"not an onnx model")
            return folder / "model"
        raise LookupError(f"RESOURCE_DOES_NOT_EXIST: model version {version} not found")

    return load


@pytest.fixture
def make_client(tmp_path: Path, registry: Callable[[str], Path]) -> Callable[..., Endpoint]:
    def make(**kwargs: Any) -> Endpoint:
        kwargs.setdefault("model_loader", registry)
        kwargs.setdefault("seed", 1)
        cfg = kwargs.pop("settings", None) or settings()
        return Endpoint(create_app(cfg, state_dir=tmp_path / "state", **kwargs))

    return make


@pytest.fixture
def client(make_client: Callable[..., Endpoint]) -> Endpoint:
    return make_client()


def deploy(client: Endpoint, name: str, version: str, expect: int = 201) -> dict[str, Any]:
    r = client.put(f"/deployments/{name}", json={"model_version": version}, headers=ADMIN)
    assert r.status_code == expect, r.text
    return dict(r.json())


def set_traffic(client: Endpoint, split: dict[str, Any], expect: int = 200) -> dict[str, Any]:
    r = client.put("/traffic", json=split, headers=ADMIN)
    assert r.status_code == expect, r.text
    return dict(r.json())


def score(client: Endpoint, body: str | bytes | None = None, deployment: str | None = None) -> httpx.Response:
    headers = dict(AUTH) | ({"azureml-model-deployment": deployment} if deployment else {})
    return client.post("/score", content=request_body() if body is None else body, headers=headers)


def test_liveness_needs_no_key_everything_else_does(client: Endpoint) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.text == "Healthy"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = client.post("/score", content=request_body(), headers=headers)
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["message"]
        assert r.headers["www-authenticate"] == "Bearer"
    r = client.get("/deployments")
    assert r.status_code == 401 and r.json()["error"]["code"] == "Unauthorized"
    assert client.put("/traffic", json={}).status_code == 401


def test_management_takes_its_own_key_and_the_scoring_key_opens_none_of_it(client: Endpoint) -> None:
    """A caller holding the scoring key (the Function app) cannot move traffic or replace deployments."""
    calls = (("GET", "/deployments"), ("PUT", "/deployments/blue"), ("GET", "/traffic"), ("PUT", "/traffic"))
    for method, path in calls:
        r = client.request(method, path, json={"model_version": "1"} if method == "PUT" else None, headers=AUTH)
        assert r.status_code == 401, (method, path)
        assert "TICKCAST_SERVING__ENDPOINT_ADMIN_KEY" in r.json()["error"]["message"]
    assert client.get("/traffic", headers=ADMIN).json() == {}
    deploy(client, "blue", "1")
    set_traffic(client, {"blue": 100})
    assert score(client).status_code == 200
    r = client.post("/score", content=request_body(), headers=ADMIN)
    assert r.status_code == 401, "the management key must not score"


def test_the_stand_in_refuses_one_key_for_both_planes(tmp_path: Path) -> None:
    cfg = load_stand_in_settings(_env_file=None, serving={"endpoint_key": KEY, "endpoint_admin_key": KEY})
    with pytest.raises(ValueError, match="must differ"):
        create_app(cfg, state_dir=tmp_path, model_loader=lambda v: tmp_path)
    cfg = load_stand_in_settings(_env_file=None, serving={"endpoint_key": KEY, "endpoint_admin_key": None})
    with pytest.raises(ValueError, match="TICKCAST_SERVING__ENDPOINT_ADMIN_KEY"):
        create_app(cfg, state_dir=tmp_path, model_loader=lambda v: tmp_path)


def test_blue_at_100_percent_scores_and_says_who_answered(client: Endpoint) -> None:
    created = deploy(client, "blue", "1")
    assert created == created | {"name": "blue", "model_version": "1", "provisioning_state": "Succeeded"}
    r = score(client)
    assert r.status_code == 404 and r.json()["message"].startswith("No valid deployments to route to")
    assert set_traffic(client, {"blue": 100}) == {"blue": 100}
    r = score(client)
    assert r.status_code == 200 and r.headers["azureml-model-deployment"] == "blue"
    body = r.json()
    assert set(body) == set(PredictResponse.model_fields)
    assert body["symbol"] == "SPY" and body["model_version"] == "1" and isinstance(body["predicted_close"], float)
    listed = client.get("/deployments", headers=ADMIN).json()["value"]
    assert [(d["name"], d["traffic"]) for d in listed] == [("blue", 100)]
    assert client.get("/traffic", headers=ADMIN).json() == {"blue": 100}


def test_green_at_zero_percent_is_reached_only_through_the_header(client: Endpoint) -> None:
    deploy(client, "blue", "1")
    deploy(client, "green", "2")
    set_traffic(client, {"blue": 100, "green": 0})
    routed = {score(client).headers["azureml-model-deployment"] for _ in range(10)}
    assert routed == {"blue"}
    blue, green = score(client).json(), score(client, deployment="green")
    assert green.status_code == 200 and green.headers["azureml-model-deployment"] == "green"
    assert green.json()["model_version"] == "2" and green.json()["predicted_close"] != blue["predicted_close"]
    r = score(client, deployment="purple")
    assert r.status_code == 404 and "'purple' not found" in r.json()["message"]


def test_a_split_routes_by_weight(client: Endpoint) -> None:
    deploy(client, "blue", "1")
    deploy(client, "green", "2")
    set_traffic(client, {"blue": 50, "green": 50})
    hits = Counter(score(client).headers["azureml-model-deployment"] for _ in range(40))
    assert set(hits) == {"blue", "green"} and min(hits.values()) >= 8


def test_traffic_must_be_whole_percentages_summing_to_100_over_known_deployments(client: Endpoint) -> None:
    deploy(client, "blue", "1")
    deploy(client, "green", "2")
    cases = [
        ({"blue": 60}, "sum to 60; they must sum to 100"),
        ({"blue": 70, "green": 40}, "sum to 110"),
        ({"blue": 100, "purple": 0}, "unknown deployment(s) ['purple']"),
        ({"blue": 50.5, "green": 49.5}, "whole percentages"),
        ({"blue": -10, "green": 110}, "whole percentages"),
    ]
    for split, message in cases:
        r = client.put("/traffic", json=split, headers=ADMIN)
        assert r.status_code == 400 and message in r.json()["error"]["message"], (split, r.text)
    assert client.put("/traffic", content=b"{", headers=ADMIN).status_code == 400
    assert set_traffic(client, {"green": 100}) == {"blue": 0, "green": 100}  # unnamed -> 0
    assert set_traffic(client, {}) == {"blue": 0, "green": 0}  # all 0: stop routing
    assert score(client).status_code == 404


def test_a_broken_model_ends_failed_gets_no_traffic_and_blue_keeps_serving(client: Endpoint) -> None:
    deploy(client, "blue", "1")
    set_traffic(client, {"blue": 100})
    failed = deploy(client, "green", "9", expect=422)
    assert failed["provisioning_state"] == "Failed" and "INVALID_PROTOBUF" in failed["error"]
    missing = deploy(client, "grey", "404", expect=422)
    assert "model version 404 not found" in missing["error"]
    r = client.put("/traffic", json={"blue": 50, "green": 50}, headers=ADMIN)
    assert r.status_code == 400 and "only go to deployments in state Succeeded; green is Failed" in r.text
    assert client.get("/traffic", headers=ADMIN).json() == {"blue": 100, "green": 0, "grey": 0}
    assert score(client).headers["azureml-model-deployment"] == "blue"
    r = score(client, deployment="green")
    assert r.status_code == 404 and "'green' is Failed" in r.json()["message"]
    assert client.get("/deployments/green", headers=ADMIN).json()["provisioning_state"] == "Failed"
    # a fixed model turns it Succeeded
    assert deploy(client, "green", "2", expect=200)["provisioning_state"] == "Succeeded"


def test_a_failed_update_keeps_the_previous_model_serving(client: Endpoint) -> None:
    deploy(client, "blue", "1")
    set_traffic(client, {"blue": 100})
    answer = deploy(client, "blue", "9", expect=422)
    assert answer["provisioning_state"] == "Failed" and "still serving model version 1" in answer["error"]
    record = client.get("/deployments/blue", headers=ADMIN).json()
    assert record["provisioning_state"] == "Succeeded" and record["model_version"] == "1"
    assert record["last_failed_model_version"] == "9"
    assert score(client).json()["model_version"] == "1"
    assert deploy(client, "blue", "2", expect=200)["model_version"] == "2"
    assert score(client).json()["model_version"] == "2"


def test_delete_is_refused_while_the_deployment_has_traffic(client: Endpoint, tmp_path: Path) -> None:
    deploy(client, "blue", "1")
    deploy(client, "green", "2")
    set_traffic(client, {"blue": 100})
    r = client.delete("/deployments/blue", headers=ADMIN)
    assert r.status_code == 409 and "100% of the traffic" in r.json()["error"]["message"]
    set_traffic(client, {"green": 100})
    assert client.delete("/deployments/blue", headers=ADMIN).status_code == 204
    assert client.get("/deployments/blue", headers=ADMIN).status_code == 404
    assert client.delete("/deployments/blue", headers=ADMIN).status_code == 404
    assert not (tmp_path / "state" / "deployments" / "blue").exists()
    assert client.get("/traffic", headers=ADMIN).json() == {"green": 100}


def test_a_restart_serves_the_same_models_without_mlflow(make_client: Callable[..., Endpoint], tmp_path: Path) -> None:
    first = make_client()
    deploy(first, "blue", "1")
    deploy(first, "green", "2")
    set_traffic(first, {"blue": 100})
    before = score(first).json()
    # no shutdown (as after kill -9); the new process has no registry
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["traffic"] == {"blue": 100, "green": 0}

    def no_registry(version: str) -> Path:
        raise AssertionError("a restart must not download anything")

    second = make_client(model_loader=no_registry)
    assert score(second).json() == before
    assert score(second, deployment="green").json()["model_version"] == "2"
    assert [d["provisioning_state"] for d in second.get("/deployments", headers=ADMIN).json()["value"]] == [
        "Succeeded",
        "Succeeded",
    ]


def test_a_deployment_whose_copy_no_longer_loads_becomes_failed_at_restart(
    make_client: Callable[..., Endpoint], tmp_path: Path
) -> None:
    first = make_client()
    deploy(first, "blue", "1")
    deploy(first, "green", "2")
    set_traffic(first, {"blue": 50, "green": 50})
    (tmp_path / "state" / "deployments" / "green" / "model" / "model.onnx").write_bytes(b"corrupt")
    second = make_client()
    green = second.get("/deployments/green", headers=ADMIN).json()
    assert green["provisioning_state"] == "Failed" and "after a restart" in green["error"]
    assert {score(second).headers["azureml-model-deployment"] for _ in range(10)} == {"blue"}


SLOW_SCORE = """
import time

def init():
    pass

def run(raw_data):
    if raw_data == "boom":
        raise RuntimeError("kaput")
    time.sleep(1.0)
    return {"slept": True}
"""


def test_a_slow_score_is_a_408_and_a_crash_is_azmlinfsrvs_500(
    make_client: Callable[..., Endpoint], tmp_path: Path
) -> None:
    script = tmp_path / "slow_score.py"
    script.write_text(SLOW_SCORE)
    client = make_client(settings=settings(timeout_ms=100), score_script=script)
    deploy(client, "blue", "1")
    set_traffic(client, {"blue": 100})
    r = score(client)
    assert r.status_code == 408 and "request_timeout_ms=100" in r.json()["message"]
    assert r.headers["azureml-model-deployment"] == "blue"
    r = score(client, body="boom")
    assert r.status_code == 424 and r.headers["ms-azureml-model-error-statuscode"] == "500"
    assert r.json() == {"message": "An unexpected error occurred in scoring script. Check the logs for more info."}


def test_score_py_refusals_come_back_as_amls_424_with_the_status_and_the_body(client: Endpoint) -> None:
    deploy(client, "blue", "1")
    set_traffic(client, {"blue": 100})
    r = score(client, body=request_body(bars=make_bars(12)))
    assert r.status_code == 424 and r.headers["azureml-model-deployment"] == "blue"
    assert r.headers["ms-azureml-model-error-statuscode"] == "400"
    assert r.headers["ms-azureml-model-error-reason"] == "Bad Request"
    assert model_status(r.status_code, r.headers) == 400
    assert r.json()["code"] == "not_enough_bars" and r.json()["error"].startswith("bars: 12 given, the model needs")
    r = score(client, body=request_body(symbol="AIG"))
    assert model_status(r.status_code, r.headers) == 422 and r.json()["code"] == "unknown_symbol"
    r = score(client, body=b"\xff\xfe")
    assert model_status(r.status_code, r.headers) == 400 and "cannot be decoded as UTF-8" in r.json()["message"]


def test_passthrough_mode_returns_score_pys_own_status(make_client: Callable[..., Endpoint]) -> None:
    client = make_client(model_errors="passthrough")
    deploy(client, "blue", "1")
    set_traffic(client, {"blue": 100})
    r = score(client, body="{not json")
    assert r.status_code == 400 and r.headers["azureml-model-deployment"] == "blue"
    assert r.json()["code"] == "invalid_request" and "not valid JSON" in r.json()["error"]
    assert "ms-azureml-model-error-statuscode" not in r.headers


def test_management_requests_are_validated(client: Endpoint) -> None:
    r = client.put("/deployments/-bad", json={"model_version": "1"}, headers=ADMIN)
    assert r.status_code == 400 and "deployment name '-bad' is invalid" in r.json()["error"]["message"]
    r = client.put("/deployments/blue", json={"model_version": "latest"}, headers=ADMIN)
    assert r.status_code == 400 and "MLflow model version number" in r.json()["error"]["message"]
    r = client.put("/deployments/blue", json={"version": "1"}, headers=ADMIN)
    assert r.status_code == 400 and '{"model_version": "3"}' in r.json()["error"]["message"]
    assert client.put("/deployments/blue", json={"model_version": 1}, headers=ADMIN).status_code == 201
    assert client.get("/deployments/nope", headers=ADMIN).status_code == 404


def test_the_stand_in_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    cfg = load_stand_in_settings(_env_file=None, serving={"endpoint_key": None})
    with pytest.raises(ValueError, match="TICKCAST_SERVING__ENDPOINT_KEY"):
        create_app(cfg, state_dir=tmp_path, model_loader=lambda v: tmp_path)
