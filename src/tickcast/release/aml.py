"""Blue/green on an Azure ML Kubernetes online endpoint (AKS attached to the workspace) through ``azure-ai-ml``
v2, authenticated by :func:`tickcast.azure.credential` (managed identity). The AML control plane cannot run
here: its tests use a recorded fake of ``MLClient``.

The create step first registers the MLflow version in the workspace (``<model name>:<version>``, the model files
only): a deployment can refer only to a workspace model, and MLflow on its own host is not the workspace's
registry (docs/decisions/0023). The endpoint takes AML tokens: Kubernetes endpoints accept only keys and AML
tokens, never Entra ID tokens (docs/decisions/0020)."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickcast.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from azure.ai.ml.entities import Environment, KubernetesOnlineDeployment, KubernetesOnlineEndpoint


from tickcast.release.bluegreen import BlueGreenDeployer
from tickcast.release.state import (
    COLOURS,
    SMOKE_MAX_MOVE,
    DeploymentState,
    EndpointState,
    MLClientLike,
    RegistryLike,
    ScoreFailure,
    SmokeBars,
    _Refused,
    validate_traffic,
)

log = logging.getLogger(__name__)


# --- cloud: Azure ML on AKS -------------------------------------------------------------------------------

DEFAULT_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
ENVIRONMENT_NAME = "tickcast-serving"
REQUIREMENTS = PROJECT_ROOT / "cloud" / "aml" / "requirements.txt"
CODE_DIR = PROJECT_ROOT / "src"
SCORING_SCRIPT = "tickcast/scoring/score.py"  # relative to CODE_DIR
MODEL_VERSION_TAG = "model_version"
VERSION_ENV = "TICKCAST_MODEL_VERSION"  # score.py reports it as model_version (see its docstring)
LEVEL_ENV = "TICKCAST_INTERVAL_LEVEL"  # score.py's interval level (the interval_level setting)


def conda_spec(requirements: Path = REQUIREMENTS, python: str = "3.11") -> dict[str, Any]:
    """The AML environment's conda file: python + pip + every requirement line of ``requirements``."""
    lines = [line.split("#", 1)[0].strip() for line in requirements.read_text(encoding="utf-8").splitlines()]
    pins = [line for line in lines if line]
    if not pins:
        raise ValueError(f"{requirements} lists no packages")
    return {
        "name": ENVIRONMENT_NAME,
        "channels": ["conda-forge"],
        "dependencies": [f"python={python}", "pip", {"pip": pins}],
    }


def build_environment(requirements: Path = REQUIREMENTS, image: str = DEFAULT_IMAGE) -> Environment:
    """The serving environment (image + conda/pip from ``requirements``), versioned by a hash of both.

    Same file and image -> same version, so AML reuses the built image; any change -> a new version
    (AML environment versions are immutable).
    """
    from azure.ai.ml.entities import Environment

    spec = conda_spec(requirements)
    digest = hashlib.sha256(json.dumps({"image": image, "conda": spec}, sort_keys=True).encode()).hexdigest()[:16]
    return Environment(
        name=ENVIRONMENT_NAME,
        version=digest,
        image=image,
        conda_file=spec,
        description=f"tickcast score.py under azmlinfsrv; pip from {requirements.name}",
    )


def model_reference(model_name: str, version: str) -> str:
    """The workspace model a deployment serves, ``azureml:<name>:<version>`` (registered by
    :meth:`AzureMLDeployer._ensure_model` from the MLflow version of the same number)."""
    return f"azureml:{model_name}:{version}"


MODEL_FILES = ("model.onnx", "preprocessing.json")  # what score.py loads (tickcast.model.predictor)


def model_payload(folder: Path, dest: Path) -> Path:
    """The files of an MLflow version's ``model/`` folder that serving needs, copied into ``dest`` (not the Keras
    model: the serving image has no TensorFlow, and it is most of the download)."""
    import shutil

    found = {name: next(iter(sorted(folder.rglob(name))), None) for name in MODEL_FILES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(f"the model folder {folder} has no {', '.join(missing)}")
    dest.mkdir(parents=True, exist_ok=True)
    for name, path in found.items():
        assert path is not None
        shutil.copy2(path, dest / name)
    return dest


def build_model(model_name: str, version: str, path: Path) -> Any:
    """The workspace model of MLflow version ``version``: a ``custom_model`` of the serving files."""
    from azure.ai.ml.entities import Model

    return Model(
        name=model_name,
        version=str(version),
        path=str(path),
        type="custom_model",
        description=f"{model_name} version {version}, mirrored from the MLflow registry (model.onnx + preprocessing)",
        tags={MODEL_VERSION_TAG: str(version), "app": "tickcast", "source": "mlflow"},
    )


def build_endpoint(
    name: str, compute: str, *, traffic: Mapping[str, int] | None = None, tags: Mapping[str, str] | None = None
) -> KubernetesOnlineEndpoint:
    """A Kubernetes online endpoint on the attached AKS ``compute``, called with AML tokens: Kubernetes endpoints
    accept only keys and AML tokens, never Entra ID tokens (docs/decisions/0020)."""
    from azure.ai.ml.entities import KubernetesOnlineEndpoint

    return KubernetesOnlineEndpoint(
        name=name,
        compute=compute,
        auth_mode="aml_token",
        traffic=validate_traffic(traffic or {}),
        description="tickcast next-minute close forecaster (blue/green)",
        tags=dict(tags or {"app": "tickcast"}),
    )


def build_deployment(
    endpoint_name: str,
    colour: str,
    version: str,
    *,
    model_name: str,
    environment: Environment,
    instance_type: str,
    instance_count: int = 1,
    request_timeout_ms: int = 5000,
    code_dir: Path = CODE_DIR,
    scoring_script: str = SCORING_SCRIPT,
    interval_level: float = 0.8,
) -> KubernetesOnlineDeployment:
    """``colour`` serving registered ``version`` with score.py from ``code_dir`` in ``environment``."""
    from azure.ai.ml.entities import CodeConfiguration, KubernetesOnlineDeployment, OnlineRequestSettings

    if colour not in COLOURS:
        raise ValueError(f"deployment colour must be one of {COLOURS}, not {colour!r}")
    if not (code_dir / scoring_script).is_file():
        raise FileNotFoundError(f"the scoring script {code_dir / scoring_script} does not exist")
    return KubernetesOnlineDeployment(
        name=colour,
        endpoint_name=endpoint_name,
        model=model_reference(model_name, version),
        environment=environment,
        code_configuration=CodeConfiguration(code=str(code_dir), scoring_script=scoring_script),
        request_settings=OnlineRequestSettings(request_timeout_ms=request_timeout_ms),
        instance_type=instance_type,
        instance_count=instance_count,
        environment_variables={VERSION_ENV: str(version), LEVEL_ENV: repr(float(interval_level))},
        tags={MODEL_VERSION_TAG: str(version), "app": "tickcast"},
        description=f"{model_name} version {version}",
    )


def traffic_update(endpoint: KubernetesOnlineEndpoint, weights: Mapping[str, int]) -> KubernetesOnlineEndpoint:
    """A copy of ``endpoint`` (as read from AML, so nothing else changes) with ``traffic = weights``."""
    updated = copy.deepcopy(endpoint)
    updated.traffic = validate_traffic(weights)
    return updated


@dataclass(frozen=True)
class AzureMLTarget:
    """Where the cloud deployer works; :class:`AzureMLDeployer` fills it from the ``TICKCAST_AML__*`` settings."""

    subscription_id: str | None = None
    resource_group: str | None = None
    workspace: str | None = None
    compute: str = "tickcast-aks"
    instance_type: str = "defaultinstancetype"
    instance_count: int = 1
    image: str = DEFAULT_IMAGE
    requirements: Path = REQUIREMENTS
    code_dir: Path = CODE_DIR
    scoring_script: str = SCORING_SCRIPT
    operation_timeout_s: float = 1800.0


def _model_version_of(model: Any) -> str | None:
    """``azureml:name:3`` or ``…/models/name/versions/3`` -> ``"3"``."""
    text = str(model or "")
    if "/versions/" in text:
        return text.rsplit("/versions/", 1)[1].strip("/") or None
    parts = text.split(":")
    return parts[-1] if len(parts) >= 3 and parts[-1] else None


class AzureMLDeployer(BlueGreenDeployer):
    """Blue/green on an Azure ML Kubernetes online endpoint with ``azure-ai-ml`` v2.

    ``ml_client`` defaults to ``MLClient(tickcast.azure.credential(settings), subscription_id,
    resource_group, workspace)`` (built on first use). Every keyword left ``None`` comes from ``settings.aml``
    (``TICKCAST_AML__SUBSCRIPTION_ID``, ``__RESOURCE_GROUP``, ``__WORKSPACE``, ``__COMPUTE``,
    ``__INSTANCE_TYPE``, ``__INSTANCE_COUNT``, ``__OPERATION_TIMEOUT_S``; the ARM outputs). The endpoint is
    ``settings.aml.endpoint_name``; it is created (``auth_mode="aml_token"``, on ``compute``) by the first
    deploy when the template has not. Before a deployment refers to ``azureml:<model>:<version>``, that version
    is registered in the workspace from MLflow (``model_files`` replaces the MLflow download). Smoke requests go
    through ``online_endpoints.invoke(deployment_name=colour)``, which gets the AML token itself.
    """

    target = "azureml"

    def __init__(
        self,
        settings: Settings | None = None,
        ml_client: MLClientLike | None = None,
        *,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        workspace: str | None = None,
        compute: str | None = None,
        instance_type: str | None = None,
        instance_count: int | None = None,
        image: str = DEFAULT_IMAGE,
        operation_timeout_s: float | None = None,
        registry: RegistryLike | None = None,
        smoke_bars: SmokeBars | None = None,
        smoke_max_move: float = SMOKE_MAX_MOVE,
        model_files: Callable[[str, Path], Path] | None = None,
    ) -> None:
        super().__init__(settings, registry=registry, smoke_bars=smoke_bars, smoke_max_move=smoke_max_move)
        self._model_files = model_files
        aml = self.settings.aml
        self.aml = AzureMLTarget(
            subscription_id=subscription_id or aml.subscription_id,
            resource_group=resource_group or aml.resource_group,
            workspace=workspace or aml.workspace,
            compute=compute or aml.compute,
            instance_type=instance_type or aml.instance_type,
            instance_count=instance_count if instance_count is not None else aml.instance_count,
            image=image,
            operation_timeout_s=operation_timeout_s if operation_timeout_s is not None else aml.operation_timeout_s,
        )
        self.endpoint_name = aml.endpoint_name
        self._ml_client = ml_client

    @property
    def ml_client(self) -> MLClientLike:
        if self._ml_client is None:
            from azure.ai.ml import MLClient

            from tickcast.azure import credential

            missing = [k for k in ("subscription_id", "resource_group", "workspace") if not getattr(self.aml, k)]
            if missing:
                variables = ", ".join(f"TICKCAST_AML__{k.upper()}" for k in missing)
                raise ValueError(
                    f"AzureMLDeployer needs {', '.join(missing)} (the AML workspace to deploy to): set {variables} "
                    "from the ARM outputs (`tickcast deploy-cloud` writes them to .tickcast/cloud/<env>.env)"
                )
            self._ml_client = MLClient(
                credential(self.settings),
                subscription_id=self.aml.subscription_id,
                resource_group_name=self.aml.resource_group,
                workspace_name=self.aml.workspace,
            )
        return self._ml_client

    def model_files(self, version: str, dest: Path) -> Path:
        """The MLflow version's ``model/`` folder on local disk (``model_files`` replaces the MLflow download)."""
        if self._model_files is not None:
            return self._model_files(version, dest)
        registry: Any = self.registry
        return Path(registry.download(version, dest=dest))

    def _wait(self, poller: Any) -> Any:
        return poller.result(timeout=self.aml.operation_timeout_s)

    def _endpoint(self) -> Any | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.ml_client.online_endpoints.get(self.endpoint_name)
        except ResourceNotFoundError:
            return None

    def _state(self) -> EndpointState:
        endpoint = self._endpoint()
        if endpoint is None:
            return EndpointState()
        deployments = {}
        for d in self.ml_client.online_deployments.list(self.endpoint_name):
            version = (d.tags or {}).get(MODEL_VERSION_TAG) or _model_version_of(d.model)
            deployments[d.name] = DeploymentState(d.name, version, str(d.provisioning_state or "Unknown"))
        traffic = {str(k): int(v) for k, v in dict(endpoint.traffic or {}).items()}
        return EndpointState(deployments, traffic)

    def _ensure_model(self, version: str) -> str:
        """Register MLflow version ``version`` in the workspace unless it already is; what was done."""
        from azure.core.exceptions import ResourceNotFoundError

        name = self.settings.mlflow.model_name
        try:
            self.ml_client.models.get(name=name, version=str(version))
            return f"workspace model {name}:{version} already registered"
        except ResourceNotFoundError:
            pass
        with tempfile.TemporaryDirectory(prefix="tickcast-model-") as tmp:
            download = self.model_files(str(version), Path(tmp) / "mlflow")
            payload = model_payload(download, Path(tmp) / "model")
            self.ml_client.models.create_or_update(build_model(name, str(version), payload))
        log.info("registered MLflow version %s as workspace model %s:%s", version, name, version)
        return f"registered MLflow version {version} as workspace model {name}:{version}"

    def _create(self, colour: str, version: str) -> DeploymentState:
        self._ensure_model(version)
        if self._endpoint() is None:
            log.info("creating endpoint %s on compute %s", self.endpoint_name, self.aml.compute)
            self._wait(
                self.ml_client.online_endpoints.begin_create_or_update(
                    build_endpoint(self.endpoint_name, self.aml.compute)
                )
            )
        deployment = build_deployment(
            self.endpoint_name,
            colour,
            version,
            model_name=self.settings.mlflow.model_name,
            environment=build_environment(self.aml.requirements, self.aml.image),
            instance_type=self.aml.instance_type,
            instance_count=self.aml.instance_count,
            request_timeout_ms=self.settings.serving.request_timeout_ms,
            code_dir=self.aml.code_dir,
            scoring_script=self.aml.scoring_script,
            interval_level=self.settings.interval_level,
        )
        done = self._wait(self.ml_client.online_deployments.begin_create_or_update(deployment))
        tags = getattr(done, "tags", None) or {}
        return DeploymentState(
            colour,
            tags.get(MODEL_VERSION_TAG) or _model_version_of(getattr(done, "model", None)),
            str(getattr(done, "provisioning_state", None) or "Unknown"),
        )

    def _score(self, colour: str, body: dict[str, Any]) -> dict[str, Any]:
        from azure.core.exceptions import AzureError

        from tickcast.scoring.contract import model_status

        with tempfile.TemporaryDirectory(prefix="tickcast-smoke-") as tmp:
            request_file = Path(tmp) / "request.json"
            request_file.write_text(json.dumps(body), encoding="utf-8")
            try:
                text = self.ml_client.online_endpoints.invoke(
                    endpoint_name=self.endpoint_name, request_file=str(request_file), deployment_name=colour
                )
            except AzureError as err:
                status = getattr(err, "status_code", None)
                response = getattr(err, "response", None)
                headers = dict(getattr(response, "headers", None) or {})
                code, detail, message = None, None, str(getattr(err, "message", None) or err)
                try:
                    answer = json.loads(response.text()) if response is not None else None
                except Exception:
                    answer = None
                if isinstance(answer, Mapping) and isinstance(answer.get("error"), str):  # score.py's ErrorBody
                    message, code, detail = answer["error"], answer.get("code"), answer.get("detail")
                elif isinstance(answer, Mapping) and answer.get("message"):  # AML's / azmlinfsrv's own errors
                    message = str(answer["message"])
                raise ScoreFailure(
                    message,
                    status=status,
                    model_status=model_status(status, headers) if status is not None else None,
                    code=code,
                    detail=detail,
                ) from err
            except Exception as err:
                # azure-ai-ml 1.35's validate_response() expects {"error": {...}} and raises AttributeError on
                # score.py's {"error": "<text>"} bodies: the request failed, the message is lost.
                raise ScoreFailure(f"invoke failed: {type(err).__name__}: {err}") from err
        try:
            answer = json.loads(text)
        except ValueError as err:
            raise ScoreFailure(f"the answer is not JSON: {str(text)[:200]!r}", status=200) from err
        if not isinstance(answer, dict):
            raise ScoreFailure(f"the answer is not a JSON object: {str(text)[:200]!r}", status=200)
        return answer

    def _set_traffic(self, weights: Mapping[str, int]) -> dict[str, int]:
        endpoint = self._endpoint()
        if endpoint is None:
            raise _Refused(f"endpoint {self.endpoint_name!r} does not exist")
        done = self._wait(self.ml_client.online_endpoints.begin_create_or_update(traffic_update(endpoint, weights)))
        return {str(k): int(v) for k, v in dict(getattr(done, "traffic", None) or {}).items()}
