"""Blue/green through the real pieces: the stack's MLflow (registry + artifacts in Azurite), the lake (smoke bars),
and the AML endpoint stand-in as its own process — killed with SIGKILL and restarted mid-test.

The stand-in is started here (``python -m emulators.aml_endpoint`` on a free port with its own state folder)
rather than taken from the stack, so that killing it touches nothing else. It gets the stack's TICKCAST_*
environment, so it downloads deployed versions from the stack's MLflow like the real service does.

Models are tiny handmade ONNX graphs (tests/unit/test_score.py) registered the way
``Registry.log_training`` does it: one run with ``model/model.onnx`` + ``model/preprocessing.json``, a version
created from ``<run artifacts>/model`` with a ``symbols`` tag. Names are unique per run (model ``it-deploy-*``,
symbols ``DPLA``/``DPLB``), so nothing collides with other tests or a developer's models.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.support.models import make_bars, preprocessing_json, write_model
from tickcast.lake.store import COLUMNS, Lake
from tickcast.settings import PROJECT_ROOT, Settings
from tickcast_dev.stack.procs import free_ports


def free_port() -> int:
    return free_ports(1)[0]


pytestmark = pytest.mark.integration

SYMBOLS = ("DPLA", "DPLB")
START_TIMEOUT_S = 45.0


class StandInProcess:
    """``python -m emulators.aml_endpoint`` as a child process; ``kill()`` is SIGKILL, ``start()`` starts it again."""

    def __init__(self, settings: Settings, state_dir: Path, log_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = state_dir
        self.log_file = log_file
        self.env = {
            **os.environ,
            **settings.to_env(),
            "TICKCAST_STACK__ENDPOINT_PORT": str(self.port),
            "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "src")]),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "emulators.aml_endpoint", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--state-dir", str(self.state_dir), "--log-level", "warning"]
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the stand-in exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the stand-in did not answer GET / in {START_TIMEOUT_S}s: {self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self) -> str:
        return self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""


def register(settings: Settings, folder: Path) -> str:
    """One run with ``folder``'s files under ``model/`` and a version from it (Registry.log_training's layout)."""
    import mlflow

    from tickcast.registry.mlflow_registry import ARTIFACT_DIR, Registry

    reg = Registry(settings)
    mlflow.set_tracking_uri(reg.uri)
    mlflow.set_experiment(settings.mlflow.experiment)
    tags = {"symbols": ",".join(SYMBOLS), "purpose": "deploy integration test"}
    with mlflow.start_run(tags=tags) as run:
        mlflow.log_artifacts(str(folder), ARTIFACT_DIR)
    return reg.register(run.info.run_id, f"{run.info.artifact_uri}/{ARTIFACT_DIR}", tags)


@pytest.fixture(scope="module")
def cfg(stack: Settings) -> Settings:
    run = uuid.uuid4().hex[:6]
    return stack.model_copy(
        update={
            "symbols": list(SYMBOLS),
            "mlflow": stack.mlflow.model_copy(
                update={"model_name": f"it-deploy-{run}", "experiment": f"it-deploy-{run}"}
            ),
        }
    )


@pytest.fixture(scope="module")
def versions(cfg: Settings) -> dict[str, str]:
    """Three registered versions: good (gain 0.5), good (gain -0.5), corrupt model.onnx."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, gain in (("v1", 0.5), ("v2", -0.5), ("bad", 0.5)):
            folder = write_model(Path(tmp) / label, gain=gain) / "model"
            (folder / "preprocessing.json").write_text(preprocessing_json(symbols=SYMBOLS))
            if label == "bad":
                (folder / "model.onnx").write_bytes(b"these bytes are not an ONNX model")
            out[label] = register(cfg, folder)
    return out


@pytest.fixture(scope="module")
def lake_bars(cfg: Settings) -> list[dict[str, object]]:
    """One session of DPLA in the lake: what the deployer's smoke request will read."""
    bars = make_bars(seed=3)
    frame = pd.DataFrame(bars).assign(symbol=SYMBOLS[0], source="deploy-test", ingested_at=datetime.now(UTC))
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    Lake.from_settings(cfg).upsert_frame(frame[COLUMNS])
    return bars


@pytest.fixture
def standin(cfg: Settings, tmp_path: Path) -> Iterator[StandInProcess]:
    proc = StandInProcess(cfg, tmp_path / "endpoint", tmp_path / "endpoint.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


def test_deploy_restart_failed_deploy_and_rollback(
    cfg: Settings, versions: dict[str, str], lake_bars: list[dict[str, object]], standin: StandInProcess
) -> None:
    from tickcast.endpoint.client import EndpointClient
    from tickcast.registry.mlflow_registry import Registry
    from tickcast.release.local import LocalEndpointDeployer
    from tickcast.release.state import DeployError

    t0 = time.monotonic()
    settings = cfg.model_copy(update={"serving": cfg.serving.model_copy(update={"endpoint_url": standin.url})})
    registry = Registry(settings)
    v1, v2, bad = versions["v1"], versions["v2"], versions["bad"]

    def aliases() -> dict[str, str | None]:
        return {
            alias: (mv.version if (mv := registry.version(alias)) else None) for alias in ("production", "previous")
        }

    with EndpointClient(settings) as client:

        def serving() -> str:
            answer = client.score({"symbol": SYMBOLS[0], "bars": lake_bars})
            return str(answer.body["model_version"])

        deployer = LocalEndpointDeployer(settings, registry=registry, client=client)  # smoke bars: the lake
        first = deployer.deploy(v1)
        assert first.colour == "blue" and first.smoke is not None and first.smoke["symbol"] == SYMBOLS[0]
        assert first.smoke["bars"] == len(lake_bars)
        second = deployer.deploy(v2)
        assert second.colour == "green"
        assert deployer.current().as_dict() == {"blue": v1, "green": v2, "traffic": {"blue": 0, "green": 100}}
        assert aliases() == {"production": v2, "previous": v1}
        assert serving() == v2

        # kill -9 and restart: the same models with the same split, without asking MLflow
        standin.kill()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{standin.url}/", timeout=1)
        standin.start()
        assert {serving() for _ in range(5)} == {v2}
        assert deployer.current().as_dict() == {"blue": v1, "green": v2, "traffic": {"blue": 0, "green": 100}}

        # a version whose artifacts are corrupt: fails at create, v2 keeps serving, aliases unmoved
        with pytest.raises(DeployError) as info:
            deployer.deploy(bad)
        report = info.value.report
        assert report.failed_step == "create" and report.colour == "blue", report.summary()
        assert "INVALID_PROTOBUF" in (report.error or "") or "onnx" in (report.error or "").lower()
        assert report.traffic_after == {"blue": 0, "green": 100}
        assert {serving() for _ in range(5)} == {v2}
        assert aliases() == {"production": v2, "previous": v1}

        # rollback: the previous version serves again, the aliases swap
        back = deployer.rollback()
        assert back.ok and back.version == v1 and back.colour == "blue"
        assert {serving() for _ in range(5)} == {v1}
        assert aliases() == {"production": v1, "previous": v2}
    assert time.monotonic() - t0 < 60, f"took {time.monotonic() - t0:.1f}s"
