"""Contract: score.py runs unmodified under Microsoft's ``azmlinfsrv`` and answers like the local stand-in.

A throw-away venv is built from ``cloud/aml/requirements.txt`` with uv into
``<stack.cache>/venvs/aml-serving`` (reused while a stamp of the requirements + Python version matches;
``src`` goes on PYTHONPATH, tickcast is not installed). ``azmlinfsrv --entry_script score.py`` then serves a
tiny handmade ONNX model from an AML-style ``AZUREML_MODEL_DIR`` (files nested in ``model/``), and every
answer is compared with the stand-in's (``emulators/aml_endpoint``, same score.py, in-process): same status
(through :func:`tickcast.scoring.contract.model_status`) and the same body bytes.

Needs a package registry the first time (or uv's cache); without one the module is skipped with the reason.
The stack fixture is not used: this test starts only azmlinfsrv.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulators.aml_endpoint.app import create_app
from tests.support.endpoint import ADMIN, AUTH, Endpoint, settings
from tests.support.models import NEEDED, SCORE_PY, make_bars, request_body, write_model
from tests.support.serving_venv import serving_venv
from tickcast.scoring.contract import PredictResponse, model_status
from tickcast.settings import PROJECT_ROOT
from tickcast_dev.stack.procs import free_ports


def free_port() -> int:
    return free_ports(1)[0]


pytestmark = pytest.mark.integration

START_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # AML's layout: .../azureml-models/<name>/<version>/model/{model.onnx, preprocessing.json}
    return write_model(tmp_path_factory.mktemp("azureml-models") / "tickcast-lstm-attention" / "7", version="7")


@pytest.fixture(scope="module")
def azmlinfsrv(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of azmlinfsrv serving score.py (started once for this module, stopped in a finally)."""
    venv = serving_venv()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKCAST_", "AZUREML_", "PYTHON"))}
    env |= {"AZUREML_MODEL_DIR": str(model_dir), "PYTHONPATH": str(PROJECT_ROOT / "src"), "WORKER_COUNT": "1"}
    log_path = tmp_path_factory.mktemp("azmlinfsrv") / "server.log"
    command = [str(venv / "bin" / "azmlinfsrv"), "--entry_script", str(SCORE_PY), "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=log_path.parent, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(url + "/", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            try:
                proc.wait(timeout=0.2)  # the poll interval; returns early only if the server died
            except subprocess.TimeoutExpired:
                pass
            else:
                pytest.fail(f"azmlinfsrv exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"azmlinfsrv not healthy after {START_TIMEOUT_S:.0f}s:\n{log_path.read_text()[-4000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def stand_in(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Endpoint:
    """The local stand-in serving the SAME model files through the same score.py (blue, 100 %)."""
    app = create_app(
        settings(),
        state_dir=tmp_path_factory.mktemp("endpoint"),
        model_loader=lambda version: model_dir / "model",
    )
    client = Endpoint(app)
    assert client.put("/deployments/blue", json={"model_version": "7"}, headers=ADMIN).status_code == 201
    assert client.put("/traffic", json={"blue": 100}, headers=ADMIN).status_code == 200
    return client


def both(azmlinfsrv: str, stand_in: Endpoint, body: str | bytes) -> tuple[httpx.Response, httpx.Response]:
    served = httpx.post(azmlinfsrv + "/score", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    emulated = stand_in.post("/score", content=body, headers=AUTH)
    assert model_status(emulated.status_code, emulated.headers) == served.status_code, (served.text, emulated.text)
    assert emulated.content == served.content
    return served, emulated


def test_liveness(azmlinfsrv: str) -> None:
    r = httpx.get(azmlinfsrv + "/", timeout=5)
    assert r.status_code == 200 and r.text == "Healthy"


def test_a_valid_request_is_a_200_with_the_response_shape(azmlinfsrv: str, stand_in: Endpoint) -> None:
    bars = make_bars()
    served, emulated = both(azmlinfsrv, stand_in, request_body(bars=bars))
    assert served.status_code == 200 and served.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = served.json()
    assert set(body) == set(PredictResponse.model_fields)
    assert body["symbol"] == "SPY" and body["as_of"] == bars[-1]["ts"] and body["horizon_minutes"] == 1
    assert isinstance(body["predicted_close"], float) and body["model_version"] == "7"
    assert abs(body["predicted_close"] / bars[-1]["close"] - 1) < 0.01
    assert emulated.headers["azureml-model-deployment"] == "blue"


def test_too_few_bars_is_a_400_that_says_how_many(azmlinfsrv: str, stand_in: Endpoint) -> None:
    served, _ = both(azmlinfsrv, stand_in, request_body(bars=make_bars(12)))
    assert served.status_code == 400 and served.json()["code"] == "not_enough_bars"
    assert served.json()["error"].startswith(f"bars: 12 given, the model needs {NEEDED} consecutive 1-minute bars")


@pytest.mark.parametrize("body", ["{not json", "", '{"symbol": "SPY"}', '{"symbol": "SPY", "bars": [{"ts": 1}]}'])
def test_malformed_requests_are_400(azmlinfsrv: str, stand_in: Endpoint, body: str) -> None:
    served, _ = both(azmlinfsrv, stand_in, body)
    assert served.status_code == 400 and served.json()["code"] == "invalid_request"


def test_unknown_symbol_is_a_422(azmlinfsrv: str, stand_in: Endpoint) -> None:
    served, _ = both(azmlinfsrv, stand_in, request_body(symbol="AIG"))
    assert served.status_code == 422 and served.json()["detail"]["known"] == ["SPY", "IBM"]


def test_a_body_that_is_not_utf8_is_azmlinfsrvs_own_400(azmlinfsrv: str, stand_in: Endpoint) -> None:
    served = httpx.post(azmlinfsrv + "/score", content=b"\xff\xfe", timeout=30)
    emulated = stand_in.post("/score", content=b"\xff\xfe", headers=AUTH)
    assert served.status_code == 400 == model_status(emulated.status_code, emulated.headers)
    assert served.json()["message"].startswith("Input cannot be decoded as UTF-8")
    assert emulated.json()["message"].startswith("Input cannot be decoded as UTF-8")
