"""Blue/green deploy and rollback (tickcast.release) against the REAL endpoint stand-in, plus the cloud
deployer's azure-ai-ml objects (built offline) and its calls against a recorded fake of the AML control plane.

The stand-in (``emulators.aml_endpoint.app.create_app``) runs in a uvicorn server on a free loopback port in a
thread, so :class:`EndpointClient` talks real HTTP with real timeouts. Its ``model_loader`` hands out tiny
handmade ONNX models (``tests.support.models.write_model``) instead of MLflow downloads; the scoring script is
:data:`CHAOS_SCORE` — it delegates to the real ``src/tickcast/scoring/score.py`` and misbehaves only for
model folders that carry a ``mode.txt`` (``nan``: a NaN close; ``slow``: sleeps past the request timeout).

The registry is :class:`RecordingRegistry`, a double with the SAME alias semantics as
``tickcast.registry.mlflow_registry.Registry.promote/rollback/version`` that records every alias move (the real
MLflow registry is exercised by tests/integration/test_deploy_endpoint.py).
"""

from __future__ import annotations

import copy
import json
import math
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from emulators.aml_endpoint.app import create_app
from tests.support.models import SCORE_PY, make_bars, preprocessing_json, write_model
from tests.support.served import Served
from tests.support.stand_ins import stand_in_settings
from tickcast.endpoint.client import EndpointClient, EndpointError
from tickcast.release.aml import (
    CODE_DIR,
    REQUIREMENTS,
    AzureMLDeployer,
    build_deployment,
    build_endpoint,
    build_environment,
    conda_spec,
    traffic_update,
)
from tickcast.release.local import LocalEndpointDeployer
from tickcast.release.smoke_bars import LakeSmokeBars
from tickcast.release.state import DeployError, DeployReport
from tickcast.release.targets import deployer_for, version_to_serve
from tickcast.retrain import Deployer
from tickcast.settings import Settings, load_settings

with warnings.catch_warnings():  # azure-ai-ml 1.35 on marshmallow 3.2x: ~40 Marshmallow4Warnings at import
    warnings.simplefilter("ignore")
    from azure.ai.ml.entities import KubernetesOnlineDeployment, KubernetesOnlineEndpoint

pytestmark = pytest.mark.filterwarnings("ignore::marshmallow.warnings.Marshmallow4Warning")

KEY = "deploy-test-key"
TIMEOUT_MS = 1500
GAINS = {"1": 0.5, "2": -0.5, "3": 0.25}  # good models that answer differently
BARS = make_bars()
SMOKE = {"SPY": BARS}

CHAOS_SCORE = f'''
"""score.py, delegated; a model folder with mode.txt misbehaves (nan | slow)."""
import importlib.util, os, time, uuid
from pathlib import Path

_spec = importlib.util.spec_from_file_location("real_score_" + uuid.uuid4().hex[:8], {str(SCORE_PY)!r})
real = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(real)
MODE = ""


def init():
    global MODE
    real.init()
    found = list(Path(os.environ["AZUREML_MODEL_DIR"]).rglob("mode.txt"))
    MODE = found[0].read_text().strip() if found else ""


def run(raw):
    if MODE == "slow":
        time.sleep({TIMEOUT_MS / 1000 + 1.0})
    out = real.run(raw)
    if MODE == "nan" and isinstance(out, dict):
        out["predicted_close"] = float("nan")
    return out
'''


def model_loader(root: Path) -> Callable[[str], Path]:
    """version -> model folder: 1-3 good; 9 corrupt ONNX; 5 NaN close; 6 slow; 7 knows only XYZ; 8 overflows."""

    def load(version: str) -> Path:
        folder = root / version
        if version in GAINS:
            return write_model(folder, gain=GAINS[version]) / "model"
        write_model(folder, gain=1e30 if version == "8" else 0.5)
        model = folder / "model"
        if version == "9":
            (model / "model.onnx").write_bytes(b"not an onnx model")
        elif version == "5":
            (model / "mode.txt").write_text("nan")
        elif version == "6":
            (model / "mode.txt").write_text("slow")
        elif version == "7":
            (model / "preprocessing.json").write_text(preprocessing_json(symbols=("XYZ",)))
        elif version != "8":
            raise LookupError(f"RESOURCE_DOES_NOT_EXIST: model version {version} not found")
        return model

    return load


@dataclass
class RecordingRegistry:
    """Alias double: Registry's promote/rollback/version semantics, every move recorded in ``moves``."""

    aliases: dict[str, str] = field(default_factory=dict)
    moves: list[tuple[str, str]] = field(default_factory=list)
    fail_promote: bool = False

    def version(self, alias: str) -> Any:
        v = self.aliases.get(alias)
        return None if v is None else SimpleNamespace(version=v)

    def promote(self, version: str) -> str | None:
        if self.fail_promote:
            raise ConnectionError("MLflow went away")
        old = self.aliases.get("production")
        if old == version:
            return old
        if old is not None:
            self._set("previous", old)
        self._set("production", version)
        return old

    def rollback(self) -> tuple[str, str]:
        prod, prev = self.aliases.get("production"), self.aliases.get("previous")
        if prod is None or prev is None:
            raise LookupError("rollback needs both a 'production' and a 'previous' version")
        self._set("production", prev)
        self._set("previous", prod)
        return prod, prev

    def _set(self, alias: str, version: str) -> None:
        self.aliases[alias] = version
        self.moves.append((alias, version))


def settings(**serving: Any) -> Settings:
    return load_settings(
        _env_file=None,
        symbols=["SPY", "IBM"],
        serving={"endpoint_key": KEY, "request_timeout_ms": TIMEOUT_MS, **serving},
    )


class StandIn(Served):
    """The real stand-in app served by uvicorn on a free loopback port (in a daemon thread)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        script = tmp / "chaos_score.py"
        script.write_text(CHAOS_SCORE)
        self.app = create_app(
            stand_in_settings(settings()),
            state_dir=tmp / "state",
            model_loader=model_loader(tmp / "mlflow"),
            score_script=script,
            seed=1,
        )
        super().__init__(self.app, force_exit=True)  # do not wait for a sleeping score.py


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[StandIn]:
    with StandIn(tmp_path) as standin:
        yield standin


@pytest.fixture
def client(endpoint: StandIn) -> Iterator[EndpointClient]:
    with EndpointClient(settings(endpoint_url=endpoint.url)) as c:
        yield c


@pytest.fixture
def registry() -> RecordingRegistry:
    return RecordingRegistry()


@pytest.fixture
def deployer(client: EndpointClient, registry: RecordingRegistry, endpoint: StandIn) -> LocalEndpointDeployer:
    return LocalEndpointDeployer(settings(endpoint_url=endpoint.url), registry, client, smoke_bars=SMOKE)


def routed_version(client: EndpointClient) -> str:
    """The model version that answers a request routed by the traffic weights (no deployment header)."""
    return str(client.score({"symbol": "SPY", "bars": BARS}).body["model_version"])


def failed(deployer: LocalEndpointDeployer, version: str) -> DeployReport:
    with pytest.raises(DeployError) as info:
        deployer.deploy(version)
    assert info.value.report is deployer.last_report
    return info.value.report


# --- the local state machine ------------------------------------------------------------------------------


def test_first_deploy_goes_to_blue_with_all_traffic_and_moves_the_alias(
    deployer: LocalEndpointDeployer, client: EndpointClient, registry: RecordingRegistry
) -> None:
    assert deployer.current().as_dict() == {"traffic": {}}
    report = deployer.deploy("1")
    assert report.ok and report.colour == "blue" and report.live_before is None
    assert [s.step for s in report.steps] == ["inspect", "create", "smoke", "traffic", "alias"]
    assert all(s.ok for s in report.steps)
    answer = report.smoke and report.smoke["answer"]
    assert answer and answer["model_version"] == "1" and answer["symbol"] == "SPY"
    assert math.isfinite(answer["predicted_close"]) and answer["predicted_close"] > 0
    assert deployer.current().as_dict() == {"blue": "1", "traffic": {"blue": 100}}
    assert report.traffic_after == {"blue": 100}
    assert registry.aliases == {"production": "1"} and registry.moves == [("production", "1")]
    assert routed_version(client) == "1"


def test_second_deploy_goes_to_green_and_blue_stays_idle_with_the_old_version(
    deployer: LocalEndpointDeployer, client: EndpointClient, registry: RecordingRegistry
) -> None:
    deployer.deploy("1")
    report = deployer.deploy("2")
    assert report.ok and report.colour == "green" and report.live_before == "blue"
    assert report.live_version_before == "1"
    assert deployer.current().as_dict() == {"blue": "1", "green": "2", "traffic": {"blue": 0, "green": 100}}
    assert registry.aliases == {"production": "2", "previous": "1"}
    assert registry.moves == [("production", "1"), ("previous", "1"), ("production", "2")]
    assert {routed_version(client) for _ in range(5)} == {"2"}
    # a third deploy goes back to blue, replacing its model
    assert deployer.deploy("3").colour == "blue"
    assert deployer.current().as_dict() == {"blue": "3", "green": "2", "traffic": {"blue": 100, "green": 0}}
    assert registry.aliases == {"production": "3", "previous": "2"}


def test_the_deployer_is_the_retrain_dags_deployer(deployer: LocalEndpointDeployer) -> None:
    deploy: Deployer = deployer
    deploy("1")
    assert deployer.current().live == "blue"
    with pytest.raises(DeployError, match="at step 'create'"):
        deploy("9")


def test_a_broken_model_fails_at_create_and_blue_keeps_all_traffic(
    deployer: LocalEndpointDeployer, client: EndpointClient, registry: RecordingRegistry
) -> None:
    deployer.deploy("1")
    moves = list(registry.moves)
    report = failed(deployer, "9")
    assert report.failed_step == "create" and "INVALID_PROTOBUF" in (report.error or "")
    assert [(s.step, s.ok) for s in report.steps] == [("inspect", True), ("create", False)]
    assert report.traffic_after == {"blue": 100, "green": 0}
    assert registry.aliases == {"production": "1"} and registry.moves == moves
    assert {routed_version(client) for _ in range(5)} == {"1"}
    green = client.deployment("green")
    assert green is not None and green.provisioning_state == "Failed"  # left as is, 0 % traffic
    # the next good deploy overwrites the failed idle colour
    assert deployer.deploy("2").colour == "green"
    assert registry.aliases == {"production": "2", "previous": "1"}


def test_an_unknown_version_fails_at_create_with_mlflows_message(deployer: LocalEndpointDeployer) -> None:
    report = failed(deployer, "404")
    assert report.failed_step == "create" and "model version 404 not found" in (report.error or "")
    assert report.traffic_after == {"blue": 0}  # first deploy: nothing was serving, nothing serves


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # version 8, on purpose
@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("5", "predicted_close nan is not a finite number"),
        ("6", "HTTP 408"),
        ("7", "SPY: the model does not know it (knows ['XYZ']); XYZ: no bars in the lake"),
        ("8", "HTTP 424 (model answered 500)"),
    ],
    ids=["nan-close", "timeout", "unknown-symbol", "model-error"],
)
def test_a_failed_smoke_leaves_the_old_colour_serving_and_the_alias_unmoved(
    deployer: LocalEndpointDeployer, client: EndpointClient, registry: RecordingRegistry, version: str, reason: str
) -> None:
    deployer.deploy("1")
    report = failed(deployer, version)
    assert report.failed_step == "smoke" and reason in (report.error or ""), report.error
    assert [(s.step, s.ok) for s in report.steps] == [("inspect", True), ("create", True), ("smoke", False)]
    assert report.traffic_after == {"blue": 100, "green": 0}
    assert registry.aliases == {"production": "1"}
    assert routed_version(client) == "1"
    green = client.deployment("green")
    assert green is not None and green.model_version == version and green.traffic == 0  # idle left as is


def test_an_implausible_close_fails_the_smoke(
    client: EndpointClient, registry: RecordingRegistry, endpoint: StandIn
) -> None:
    strict = LocalEndpointDeployer(
        settings(endpoint_url=endpoint.url), registry, client, smoke_bars=SMOKE, smoke_max_move=1e-9
    )
    with pytest.raises(DeployError, match=r"at step 'smoke'.*away from the last close"):
        strict.deploy("1")
    assert registry.aliases == {}


def test_no_smoke_bars_fails_the_smoke(client: EndpointClient, registry: RecordingRegistry, endpoint: StandIn) -> None:
    empty = LocalEndpointDeployer(settings(endpoint_url=endpoint.url), registry, client, smoke_bars={})
    with pytest.raises(DeployError, match="no smoke request could be made: SPY: no bars in the lake"):
        empty.deploy("1")


class LostAnswerTransport(httpx.BaseTransport):
    """Forwards everything; the FIRST ``PUT /traffic`` that gives green 100 is applied, then its answer is lost."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.tripped = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        switch = request.method == "PUT" and request.url.path == "/traffic"
        if switch and not self.tripped and json.loads(request.content).get("green") == 100:
            self.tripped = True
            response.close()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def test_a_traffic_switch_whose_answer_is_lost_is_undone(registry: RecordingRegistry, endpoint: StandIn) -> None:
    transport = LostAnswerTransport()
    cfg = settings(endpoint_url=endpoint.url)
    with EndpointClient(cfg, transport=transport) as client:
        deployer = LocalEndpointDeployer(cfg, registry, client, smoke_bars=SMOKE)
        deployer.deploy("1")
        report = failed(deployer, "2")
        assert transport.tripped
        assert report.failed_step == "traffic" and "timed out" in (report.error or "")
        assert [(s.step, s.ok) for s in report.steps][-2:] == [("traffic", False), ("restore-traffic", True)]
        assert report.traffic_after == {"blue": 100, "green": 0}
        assert registry.aliases == {"production": "1"}
        assert routed_version(client) == "1"


def test_an_alias_failure_puts_the_traffic_back(
    deployer: LocalEndpointDeployer, client: EndpointClient, registry: RecordingRegistry
) -> None:
    deployer.deploy("1")
    registry.fail_promote = True
    report = failed(deployer, "2")
    assert report.failed_step == "alias" and "MLflow went away" in (report.error or "")
    assert report.steps[-1].step == "restore-traffic" and report.steps[-1].ok
    assert report.traffic_after == {"blue": 100, "green": 0}
    assert registry.aliases == {"production": "1"}
    assert routed_version(client) == "1"


def test_a_split_traffic_is_refused_before_anything_changes(
    deployer: LocalEndpointDeployer, client: EndpointClient, registry: RecordingRegistry
) -> None:
    deployer.deploy("1")
    deployer.deploy("2")
    client.set_traffic({"blue": 50, "green": 50})
    report = failed(deployer, "3")
    assert report.failed_step == "inspect" and "traffic is split" in (report.error or "")
    assert client.traffic() == {"blue": 50, "green": 50}
    assert deployer.current().as_dict() == {"blue": "1", "green": "2", "traffic": {"blue": 50, "green": 50}}


def test_an_unreachable_endpoint_fails_at_inspect(registry: RecordingRegistry) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    cfg = settings(endpoint_url=url)
    with EndpointClient(cfg) as client:
        deployer = LocalEndpointDeployer(cfg, registry, client, smoke_bars=SMOKE)
        t0 = time.monotonic()
        report = failed(deployer, "1")
    assert time.monotonic() - t0 < 10
    assert report.failed_step == "inspect" and "cannot reach the endpoint" in (report.error or "")
    assert report.traffic_after is None and registry.moves == []


# --- rollback ---------------------------------------------------------------------------------------------


def test_rollback_serves_the_previous_version_again_and_swaps_the_aliases(
    deployer: LocalEndpointDeployer, client: EndpointClient, registry: RecordingRegistry
) -> None:
    deployer.deploy("1")
    deployer.deploy("2")
    report = deployer.rollback()
    assert report.ok and report.action == "rollback" and report.version == "1" and report.colour == "blue"
    create = next(s for s in report.steps if s.step == "create")
    assert create.detail == "reused: blue already serves version 1"
    assert deployer.current().as_dict() == {"blue": "1", "green": "2", "traffic": {"blue": 100, "green": 0}}
    assert registry.aliases == {"production": "1", "previous": "2"}
    assert {routed_version(client) for _ in range(5)} == {"1"}
    # and back again
    assert deployer.rollback().colour == "green"
    assert registry.aliases == {"production": "2", "previous": "1"}
    assert routed_version(client) == "2"


def test_rollback_recreates_the_previous_version_when_the_idle_colour_lost_it(
    deployer: LocalEndpointDeployer, client: EndpointClient, registry: RecordingRegistry
) -> None:
    deployer.deploy("1")
    deployer.deploy("2")
    client.delete_deployment("blue")
    report = deployer.rollback()
    assert report.ok and report.colour == "blue"
    assert next(s for s in report.steps if s.step == "create").detail == "blue serves version 1 at 0% traffic"
    assert routed_version(client) == "1"


def test_a_rollback_that_fails_keeps_the_current_version(
    deployer: LocalEndpointDeployer, client: EndpointClient, registry: RecordingRegistry
) -> None:
    with pytest.raises(DeployError, match="no 'previous' version"):
        deployer.rollback()
    deployer.deploy("1")
    deployer.deploy("2")
    registry.aliases["previous"] = "9"  # the previous version's artifacts are broken now
    with pytest.raises(DeployError) as info:
        deployer.rollback()
    assert info.value.report.failed_step == "create"
    assert client.traffic() == {"blue": 0, "green": 100}
    assert registry.aliases == {"production": "2", "previous": "9"}
    assert routed_version(client) == "2"


# --- the endpoint client ----------------------------------------------------------------------------------


def test_the_client_reports_the_servers_reasons(client: EndpointClient, endpoint: StandIn) -> None:
    assert client.healthy()
    assert client.deployment("blue") is None
    with EndpointClient(settings(endpoint_url=endpoint.url, endpoint_admin_key="wrong")) as wrong:
        with pytest.raises(EndpointError) as info:
            wrong.deployments()
        assert info.value.status == 401 and info.value.code == "Unauthorized"
        assert "Authorization: Bearer" in info.value.message
    client.put_deployment("blue", "1")
    client.set_traffic({"blue": 100})
    with pytest.raises(EndpointError) as info:
        client.delete_deployment("blue")
    assert info.value.status == 409 and "100% of the traffic" in info.value.message
    with pytest.raises(EndpointError) as info:
        client.set_traffic({"blue": 60})
    assert info.value.status == 400 and "must sum to 100" in str(info.value)
    with pytest.raises(EndpointError) as info:
        client.score({"symbol": "SPY", "bars": BARS[:5]}, deployment="blue")
    err = info.value
    assert err.status == 424 and err.model_status == 400 and err.code == "not_enough_bars"
    assert isinstance(err.body, dict) and err.body["detail"]["given"] == 5
    answer = client.score({"symbol": "spy", "bars": BARS}, deployment="blue")
    assert answer.deployment == "blue" and answer.body["symbol"] == "SPY"
    assert 0 < answer.elapsed_s < 5, answer.elapsed_s  # measured (not a default 0), and on loopback well under 5 s


def test_the_client_sends_an_aml_token_never_an_entra_token_when_there_is_no_key() -> None:
    seen: list[str] = []
    arm: list[str] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        return httpx.Response(200, json={"blue": 100})

    def token_api(request: httpx.Request) -> httpx.Response:
        arm.append(request.headers.get("authorization", ""))
        expires = int(time.time()) + 3600
        return httpx.Response(200, json={"accessToken": f"aml-{len(arm)}", "expiryTimeUtc": expires})

    class Credential:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            assert scopes == ("https://management.azure.com/.default",)
            return SimpleNamespace(token="entra-for-arm", expires_on=time.time() + 3600)

    cfg = load_settings(
        _env_file=None,
        serving={"endpoint_key": "", "endpoint_admin_key": "", "endpoint_url": "https://x.example/score"},
        aml={"subscription_id": "s", "resource_group": "g", "workspace": "w", "endpoint_name": "tickcast"},
    )
    with EndpointClient(
        cfg,
        token_credential=Credential(),
        transport=httpx.MockTransport(endpoint),
        token_transport=httpx.MockTransport(token_api),
    ) as c:
        assert c.base_url == "https://x.example"
        assert c.traffic() == {"blue": 100}
        assert c.traffic() == {"blue": 100}
    assert seen == ["Bearer aml-1", "Bearer aml-1"]  # the AML token, reused; the Entra token went to ARM only
    assert arm == ["Bearer entra-for-arm"]


def test_the_sync_client_replaces_a_refused_aml_token_once() -> None:
    seen: list[str] = []
    issued: list[str] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        if seen[-1] == "Bearer aml-1":  # e.g. the endpoint was recreated: its old tokens mean nothing
            return httpx.Response(401, json={"message": "invalid token"})
        return httpx.Response(200, json={"blue": 100})

    def token_api(request: httpx.Request) -> httpx.Response:
        issued.append(f"aml-{len(issued) + 1}")
        return httpx.Response(200, json={"accessToken": issued[-1], "expiryTimeUtc": int(time.time()) + 3600})

    class Credential:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            return SimpleNamespace(token="entra-for-arm", expires_on=time.time() + 3600)

    cfg = load_settings(
        _env_file=None,
        profile="cloud",
        storage={"account_url": "https://lake.blob.core.windows.net"},
        kafka={"bootstrap_servers": "broker:9093"},
        mlflow={"tracking_uri": "https://mlflow.example"},
        serving={"endpoint_url": "https://x.example/score", "endpoint_key": None},
        aml={"subscription_id": "s", "resource_group": "g", "workspace": "w", "endpoint_name": "tickcast"},
    )
    with EndpointClient(
        cfg,
        token_credential=Credential(),
        transport=httpx.MockTransport(endpoint),
        token_transport=httpx.MockTransport(token_api),
    ) as c:
        assert c.traffic() == {"blue": 100}
        assert c.traffic() == {"blue": 100}
    assert seen == ["Bearer aml-1", "Bearer aml-2", "Bearer aml-2"]  # refused once, replaced, then reused


def test_management_calls_send_the_management_key_and_scoring_the_scoring_key() -> None:
    seen: dict[str, str] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] = request.headers.get("authorization", "")
        if request.url.path == "/score":
            return httpx.Response(200, json={"symbol": "SPY"}, headers={"azureml-model-deployment": "blue"})
        return httpx.Response(200, json={"blue": 100})

    keys = {"endpoint_key": "scoring-key", "endpoint_admin_key": "admin-key", "endpoint_url": "http://e/score"}
    with EndpointClient(load_settings(_env_file=None, serving=keys), transport=httpx.MockTransport(handler)) as c:
        c.set_traffic({"blue": 100})
        c.score({"symbol": "SPY", "bars": []})
    assert seen == {"/traffic": "Bearer admin-key", "/score": "Bearer scoring-key"}


# --- smoke bars from the lake -----------------------------------------------------------------------------


class FakeLake:
    """``days``/``read`` of tickcast.lake.store.Lake over in-memory frames."""

    def __init__(self, frames: dict[str, Any]) -> None:
        self.frames = frames
        self.reads: list[str] = []

    def days(self, symbol: str) -> list[Any]:
        import pandas as pd

        return sorted({ts.date() for ts in pd.to_datetime(self.frames[symbol]["ts"])}) if symbol in self.frames else []

    def read(self, symbol: str, start: Any, end: Any) -> Any:
        df = self.frames[symbol]
        self.reads.append(start.date().isoformat())
        return df[(df["ts"] >= start) & (df["ts"] < end)].reset_index(drop=True)


def lake_frame(symbol: str, bars: list[dict[str, Any]]) -> Any:
    import pandas as pd

    df = pd.DataFrame(bars)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    df["symbol"] = symbol
    return df


def test_lake_smoke_bars_take_the_newest_session_with_enough_bars() -> None:
    import pandas as pd

    full = lake_frame("SPY", BARS)  # 2024-06-03
    short = full.head(10).assign(ts=full["ts"].head(10) + pd.Timedelta(days=1))  # 2024-06-04: 10 bars
    lake = FakeLake({"SPY": pd.concat([full, short], ignore_index=True)})
    source = LakeSmokeBars(settings(), lake=lake)  # type: ignore[arg-type]
    rows = source("SPY")
    assert rows is not None and len(rows) == len(BARS)
    assert rows[0]["ts"] == "2024-06-03T13:30:00Z" and rows[-1]["close"] == BARS[-1]["close"]
    assert lake.reads == ["2024-06-04", "2024-06-03"]
    assert source("IBM") is None
    only_short = LakeSmokeBars(settings(), lake=FakeLake({"SPY": short}))  # type: ignore[arg-type]
    assert len(only_short("SPY") or []) == 10  # the best there is; the model then says not_enough_bars


# --- the cloud: azure-ai-ml objects built offline ---------------------------------------------------------


def test_the_endpoint_is_kubernetes_on_the_aks_compute_with_aml_token_auth() -> None:
    endpoint = build_endpoint("tickcast", "tickcast-aks", traffic={"blue": 100, "green": 0})
    assert isinstance(endpoint, KubernetesOnlineEndpoint)
    assert endpoint.compute == "tickcast-aks" and endpoint.auth_mode == "aml_token"
    assert endpoint.traffic == {"blue": 100, "green": 0}
    rest = endpoint._to_rest_online_endpoint("westeurope").as_dict()
    props = rest["properties"]
    assert props["authMode"] == "AMLToken" and props["compute"] == "tickcast-aks"  # Kubernetes: key or AMLToken
    assert props["traffic"] == {"blue": 100, "green": 0}
    assert rest["identity"]["type"] == "SystemAssigned"  # pulls the image and the model with its own identity
    with pytest.raises(ValueError, match="sum to 90"):
        build_endpoint("tickcast", "aks", traffic={"blue": 90})


def test_the_deployment_runs_score_py_from_src_with_the_serving_environment() -> None:
    env = build_environment()
    deployment = build_deployment(
        "tickcast",
        "green",
        "7",
        model_name="tickcast-lstm-attention",
        environment=env,
        instance_type="defaultinstancetype",
        instance_count=2,
        request_timeout_ms=4000,
    )
    assert isinstance(deployment, KubernetesOnlineDeployment)
    assert deployment.code_configuration is not None
    assert Path(str(deployment.code_configuration.code)) == CODE_DIR
    assert (CODE_DIR / str(deployment.code_configuration.scoring_script)).resolve() == SCORE_PY.resolve()
    rest = deployment._to_rest_object(location="westeurope").as_dict()
    props = rest["properties"]
    assert props["endpointComputeType"] == "Kubernetes" and props["instanceType"] == "defaultinstancetype"
    assert props["model"] == "azureml:tickcast-lstm-attention:7"
    assert props["codeConfiguration"]["scoringScript"] == "tickcast/scoring/score.py"
    assert props["requestSettings"]["requestTimeout"] == "PT4S"
    assert props["environmentVariables"] == {"TICKCAST_MODEL_VERSION": "7", "TICKCAST_INTERVAL_LEVEL": "0.8"}
    assert rest["sku"]["capacity"] == 2 and rest["tags"]["model_version"] == "7"
    as_dict = deployment._to_dict()
    assert as_dict["type"] == "kubernetes" and as_dict["name"] == "green" and as_dict["endpoint_name"] == "tickcast"
    pins = [ln.strip() for ln in REQUIREMENTS.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    conda = as_dict["environment"]["conda_file"]
    assert conda["dependencies"][:2] == ["python=3.11", "pip"] and conda["dependencies"][2] == {"pip": pins}
    assert "azureml-inference-server-http==1.5.1" in pins and not any("tensorflow" in p for p in pins)
    with pytest.raises(ValueError, match="colour"):
        build_deployment("tickcast", "red", "7", model_name="m", environment=env, instance_type="t")


def test_the_environment_version_follows_the_requirements_and_the_image(tmp_path: Path) -> None:
    assert build_environment().version == build_environment().version
    changed = tmp_path / "requirements.txt"
    changed.write_text(REQUIREMENTS.read_text() + "\nrequests==2.32.3  # new\n")
    assert conda_spec(changed)["dependencies"][2]["pip"][-1] == "requests==2.32.3"
    assert build_environment(changed).version != build_environment().version
    assert build_environment(image="other:1").version != build_environment().version
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="lists no packages"):
        conda_spec(tmp_path / "empty.txt")


def test_traffic_update_changes_only_the_traffic_of_a_copy() -> None:
    endpoint = build_endpoint("tickcast", "aks", traffic={"blue": 100}, tags={"owner": "ml"})
    updated = traffic_update(endpoint, {"blue": 0, "green": 100})
    assert endpoint.traffic == {"blue": 100} and updated.traffic == {"blue": 0, "green": 100}
    rest = updated._to_rest_online_endpoint("westeurope").as_dict()
    assert rest["properties"]["traffic"] == {"blue": 0, "green": 100} and rest["tags"] == {"owner": "ml"}
    assert rest["properties"]["compute"] == "aks" and rest["properties"]["authMode"] == "AMLToken"
    for bad in ({"blue": 50}, {"blue": 50.0, "green": 50.0}, {"blue": True}):
        with pytest.raises(ValueError):
            traffic_update(endpoint, bad)  # type: ignore[arg-type]


# --- the cloud deployer against a recorded fake of the AML control plane ----------------------------------


class _Poller:
    def __init__(self, result: Any = None, error: Exception | None = None) -> None:
        self._result, self._error = result, error

    def result(self, timeout: float | None = None) -> Any:
        if self._error is not None:
            raise self._error
        return self._result


class _ModelErrorResponse:
    """What azure-core's HttpResponseError reads from an AML 424 (score.py answered 500)."""

    status_code = 424
    reason = "Failed Dependency"
    headers: ClassVar[dict[str, str]] = {
        "ms-azureml-model-error-statuscode": "500",
        "ms-azureml-model-error-reason": "Internal Server Error",
    }

    def text(self, encoding: str | None = None) -> str:
        return json.dumps({"message": "An unexpected error occurred in scoring script. Check the logs for more info."})


class FakeAzureMLControlPlane:
    """A FAKE of ``azure.ai.ml.MLClient`` (the Azure control plane cannot run here): ``online_endpoints`` and
    ``online_deployments`` with the calls the deployer makes, in memory, every call recorded in ``calls``.

    Deployments of a version in ``failing_versions`` end their LRO with an error (as AML does); ``invoke`` of a
    deployment whose version is in ``model_errors`` raises the HttpResponseError of an AML 424; otherwise it
    answers like score.py (last close x 1.001, the deployment's ``TICKCAST_MODEL_VERSION``).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.endpoint: KubernetesOnlineEndpoint | None = None
        self.deployments: dict[str, KubernetesOnlineDeployment] = {}
        self.failing_versions: set[str] = set()
        self.model_errors: set[str] = set()
        self.online_endpoints = SimpleNamespace(
            get=self._get_endpoint, begin_create_or_update=self._put_endpoint, invoke=self._invoke
        )
        self.online_deployments = SimpleNamespace(
            list=self._list_deployments, begin_create_or_update=self._put_deployment
        )
        self.registered: dict[str, dict[str, bytes]] = {}  # "azureml:name:version" -> the uploaded files
        self.models = SimpleNamespace(get=self._get_model, create_or_update=self._put_model)

    def _get_model(self, *, name: str, version: str) -> Any:
        self.calls.append(("models.get", f"{name}:{version}"))
        if f"azureml:{name}:{version}" not in self.registered:
            raise ResourceNotFoundError(f"model {name}:{version} not found")
        return SimpleNamespace(name=name, version=version)

    def _put_model(self, model: Any) -> Any:
        files = {p.name: p.read_bytes() for p in Path(model.path).iterdir()}  # uploaded now: the folder goes away
        self.calls.append(("models.create_or_update", f"{model.name}:{model.version}"))
        self.registered[f"azureml:{model.name}:{model.version}"] = files
        return model

    def _get_endpoint(self, name: str) -> KubernetesOnlineEndpoint:
        self.calls.append(("endpoints.get", name))
        if self.endpoint is None or self.endpoint.name != name:
            raise ResourceNotFoundError(f"endpoint {name} not found")
        return copy.deepcopy(self.endpoint)

    def _put_endpoint(self, endpoint: KubernetesOnlineEndpoint) -> _Poller:
        self.calls.append(("endpoints.begin_create_or_update", copy.deepcopy(endpoint)))
        unknown = {n for n, w in (endpoint.traffic or {}).items() if w and n not in self.deployments}
        if unknown:
            return _Poller(error=HttpResponseError(message=f"traffic names unknown deployments {unknown}"))
        self.endpoint = copy.deepcopy(endpoint)
        return _Poller(copy.deepcopy(endpoint))

    def _version(self, deployment: KubernetesOnlineDeployment) -> str:
        return str((deployment.environment_variables or {})["TICKCAST_MODEL_VERSION"])

    def _put_deployment(self, deployment: KubernetesOnlineDeployment) -> _Poller:
        self.calls.append(("deployments.begin_create_or_update", deployment))
        if str(deployment.model) not in self.registered:  # AML refuses a deployment of an unknown model
            return _Poller(error=HttpResponseError(message=f"ResourceNotFound: model {deployment.model} not found"))
        if self._version(deployment) in self.failing_versions:
            return _Poller(error=HttpResponseError(message="DeploymentFailed: container crashed in init()"))
        self.deployments[str(deployment.name)] = deployment
        return _Poller(self._as_read(deployment))

    def _as_read(self, d: KubernetesOnlineDeployment) -> Any:
        return SimpleNamespace(name=d.name, tags=dict(d.tags or {}), model=d.model, provisioning_state="Succeeded")

    def _list_deployments(self, endpoint_name: str) -> list[Any]:
        self.calls.append(("deployments.list", endpoint_name))
        return [self._as_read(d) for d in self.deployments.values()]

    def _invoke(self, *, endpoint_name: str, request_file: str, deployment_name: str | None = None) -> str:
        body = json.loads(Path(request_file).read_text())
        self.calls.append(("endpoints.invoke", {"deployment_name": deployment_name, "symbol": body["symbol"]}))
        assert deployment_name is not None
        version = self._version(self.deployments[deployment_name])
        if version in self.model_errors:
            raise HttpResponseError(response=_ModelErrorResponse())  # type: ignore[arg-type]
        last = body["bars"][-1]
        return json.dumps(
            {
                "symbol": body["symbol"],
                "as_of": last["ts"],
                "horizon_minutes": 1,
                "predicted_close": last["close"] * 1.001,
                "model_version": version,
                "model_kind": "lstm-attention",
                "interval": {"level": 0.8, "lower": last["close"] * 0.999, "upper": last["close"] * 1.003},
            }
        )

    def names(self) -> list[str]:
        reads = ("endpoints.get", "deployments.list", "models.get")
        return [name for name, _ in self.calls if name not in reads]


def mlflow_model_files(version: str, dest: Path) -> Path:
    """What Registry.download gives for a version: its model/ folder, Keras model included."""
    folder = dest / "model"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(f"onnx v{version}".encode())
    (folder / "preprocessing.json").write_text(json.dumps({"version": version}))
    (folder / "model.keras").write_bytes(b"x" * 1000)
    return folder


@pytest.fixture
def cloud_settings() -> Settings:
    return load_settings(
        _env_file=None,
        profile="cloud",
        symbols=["SPY"],
        storage={"account_url": "https://tickcastlake.blob.core.windows.net"},
        mlflow={"tracking_uri": "azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/x"},
        serving={"endpoint_url": "https://tickcast-it.westeurope.inference.ml.azure.com"},
        aml={"endpoint_name": "tickcast-it"},
    )


def test_the_cloud_deployer_runs_the_same_steps_through_azure_ai_ml(
    cloud_settings: Settings, registry: RecordingRegistry
) -> None:
    fake = FakeAzureMLControlPlane()
    deployer = AzureMLDeployer(
        cloud_settings,
        fake,
        compute="aks-tickcast",
        registry=registry,
        smoke_bars=SMOKE,
        model_files=mlflow_model_files,
    )
    report = deployer.deploy("1")
    assert report.ok and report.colour == "blue" and report.target == "azureml"
    assert fake.names() == [
        "models.create_or_update",  # MLflow's version 1 registered in the workspace BEFORE a deployment names it
        "endpoints.begin_create_or_update",  # the endpoint did not exist: created with no traffic
        "deployments.begin_create_or_update",
        "endpoints.invoke",
        "endpoints.begin_create_or_update",  # traffic
    ]
    assert fake.registered["azureml:tickcast-lstm-attention:1"] == {
        "model.onnx": b"onnx v1",
        "preprocessing.json": b'{"version": "1"}',
    }  # the serving files only: no Keras model in a TensorFlow-free image
    created = fake.calls[[n for n, _ in fake.calls].index("endpoints.begin_create_or_update")][1]
    assert created.compute == "aks-tickcast" and created.auth_mode == "aml_token" and created.traffic == {}
    blue = fake.deployments["blue"]
    assert blue.model == "azureml:tickcast-lstm-attention:1" and blue.instance_type == "defaultinstancetype"
    assert blue.request_settings is not None and blue.request_settings.request_timeout_ms == 5000
    assert ("endpoints.invoke", {"deployment_name": "blue", "symbol": "SPY"}) in fake.calls
    assert fake.endpoint is not None and fake.endpoint.traffic == {"blue": 100}
    assert registry.aliases == {"production": "1"}

    assert deployer.deploy("2").colour == "green"
    assert fake.endpoint.traffic == {"blue": 0, "green": 100}
    assert deployer.current().as_dict() == {"blue": "1", "green": "2", "traffic": {"blue": 0, "green": 100}}
    assert registry.aliases == {"production": "2", "previous": "1"}

    calls = len(fake.calls)
    rollback = deployer.rollback()
    assert rollback.ok and rollback.colour == "blue"
    assert "deployments.begin_create_or_update" not in [n for n, _ in fake.calls[calls:]]  # blue reused
    assert "models.create_or_update" not in [n for n, _ in fake.calls[calls:]]
    assert fake.endpoint.traffic == {"blue": 100, "green": 0}
    assert registry.aliases == {"production": "1", "previous": "2"}


def test_a_deployment_of_an_unregistered_model_fails_and_registration_happens_once(
    cloud_settings: Settings, registry: RecordingRegistry
) -> None:
    """The fake control plane refuses what AML refuses; the deployer registers a version once, then reuses it."""
    fake = FakeAzureMLControlPlane()
    env = build_environment()
    unregistered = build_deployment("tickcast-it", "blue", "9", model_name="m", environment=env, instance_type="t")
    with pytest.raises(HttpResponseError, match="ResourceNotFound: model azureml:m:9"):
        fake.online_deployments.begin_create_or_update(unregistered).result()
    deployer = AzureMLDeployer(
        cloud_settings, fake, registry=registry, smoke_bars=SMOKE, model_files=mlflow_model_files
    )
    assert deployer._ensure_model("3").startswith("registered MLflow version 3")
    assert deployer._ensure_model("3") == "workspace model tickcast-lstm-attention:3 already registered"
    assert [n for n, _ in fake.calls].count("models.create_or_update") == 1

    def no_onnx(version: str, dest: Path) -> Path:
        (dest / "model").mkdir(parents=True)
        return dest / "model"

    broken = AzureMLDeployer(cloud_settings, fake, registry=registry, smoke_bars=SMOKE, model_files=no_onnx)
    with pytest.raises(DeployError) as info:
        broken.deploy("4")
    assert info.value.report.failed_step == "create" and "has no model.onnx, preprocessing.json" in str(info.value)
    assert "azureml:tickcast-lstm-attention:4" not in fake.registered


def test_cloud_failures_leave_the_live_colour_and_the_aliases(
    cloud_settings: Settings, registry: RecordingRegistry
) -> None:
    fake = FakeAzureMLControlPlane()
    deployer = AzureMLDeployer(
        cloud_settings, fake, registry=registry, smoke_bars=SMOKE, model_files=mlflow_model_files
    )
    deployer.deploy("1")
    fake.failing_versions.add("4")
    fake.model_errors.add("5")
    for version, step, reason in [("4", "create", "DeploymentFailed"), ("5", "smoke", "HTTP 424 (model answered 500)")]:
        before = len(fake.calls)
        with pytest.raises(DeployError) as info:
            deployer.deploy(version)
        report = info.value.report
        assert report.failed_step == step and reason in (report.error or ""), report.error
        assert "endpoints.begin_create_or_update" not in [n for n, _ in fake.calls[before:]]  # traffic untouched
        assert fake.endpoint is not None and fake.endpoint.traffic == {"blue": 100}
        assert registry.aliases == {"production": "1"}


def test_the_cloud_deployer_needs_the_workspace_coordinates(cloud_settings: Settings) -> None:
    deployer = AzureMLDeployer(cloud_settings, registry=RecordingRegistry(), smoke_bars=SMOKE)
    with pytest.raises(DeployError, match="needs subscription_id, resource_group, workspace"):
        deployer.deploy("1")


def test_deployer_for_picks_by_profile(cloud_settings: Settings) -> None:
    assert isinstance(deployer_for(settings()), LocalEndpointDeployer)
    assert isinstance(deployer_for(cloud_settings), AzureMLDeployer)


def test_deployer_for_builds_the_cloud_deployer_from_the_aml_settings(cloud_settings: Settings) -> None:
    aml = {
        "subscription_id": "00000000-0000-0000-0000-000000000001",
        "resource_group": "tickcast-dev",
        "workspace": "tickcast-dev-mlw",
        "endpoint_name": "tickcast-dev-ep",
        "compute": "aks-dev",
        "instance_type": "cpu-small",
        "instance_count": 2,
        "operation_timeout_s": 900,
    }
    deployer = deployer_for(cloud_settings.model_copy(update={"aml": cloud_settings.aml.model_copy(update=aml)}))
    assert isinstance(deployer, AzureMLDeployer)
    assert deployer.endpoint_name == "tickcast-dev-ep"
    target = deployer.aml
    assert (target.subscription_id, target.resource_group, target.workspace) == (
        "00000000-0000-0000-0000-000000000001",
        "tickcast-dev",
        "tickcast-dev-mlw",
    )
    assert (target.compute, target.instance_type, target.instance_count, target.operation_timeout_s) == (
        "aks-dev",
        "cpu-small",
        2,
        900,
    )
    # an explicit keyword still wins over the settings
    assert AzureMLDeployer(cloud_settings, compute="other").aml.compute == "other"


def test_the_missing_workspace_coordinates_name_their_variables(cloud_settings: Settings) -> None:
    deployer = AzureMLDeployer(cloud_settings, registry=RecordingRegistry(), smoke_bars=SMOKE)
    with pytest.raises(DeployError) as err:
        deployer.deploy("1")
    for var in ("TICKCAST_AML__SUBSCRIPTION_ID", "TICKCAST_AML__RESOURCE_GROUP", "TICKCAST_AML__WORKSPACE"):
        assert var in str(err.value)


# --- what should serve: production, else the newest baseline -----------------------------------------------------


class TaggedRegistry:
    """The registry calls ``version_to_serve`` makes: an alias lookup and the list of versions with their tags."""

    def __init__(self, production: str | None, versions: dict[str, dict[str, str]]) -> None:
        self.production = production
        self.tagged = versions

    def version(self, alias: str) -> Any:
        return SimpleNamespace(version=self.production) if alias == "production" and self.production else None

    def versions(self) -> list[Any]:
        return [SimpleNamespace(version=v, tags=tags) for v, tags in self.tagged.items()]


def test_what_should_serve_is_production_else_the_newest_baseline_else_nothing() -> None:
    baseline, lstm = {"model_kind": "baseline"}, {"model_kind": "lstm-attention"}
    versions = {"1": baseline, "2": lstm, "10": baseline}
    assert version_to_serve(TaggedRegistry("2", versions)) == ("2", "the production alias")
    fresh = TaggedRegistry(None, versions)
    chosen = version_to_serve(fresh)
    assert chosen is not None and chosen[0] == "10" and "newest baseline" in chosen[1]  # 10 > 1: numbers, not text
    assert version_to_serve(TaggedRegistry(None, {"3": {"model_kind": "lstm-attention"}})) is None


def test_deploy_without_a_version_on_an_empty_registry_is_no_model_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from tickcast import cli

    class Nothing:
        registry = TaggedRegistry(None, {})

        def deploy(self, version: str) -> Any:
            raise AssertionError("nothing to deploy")

    monkeypatch.setattr("tickcast.release.targets.deployer_for", lambda settings=None: Nothing())
    result = CliRunner().invoke(cli.app, ["deploy"])
    assert result.exit_code == cli.NO_MODEL_EXIT == 3
    assert "no model yet" in result.output and "nothing was deployed" in result.output
