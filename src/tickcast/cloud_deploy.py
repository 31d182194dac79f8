"""``tickcast deploy-cloud`` / ``destroy-cloud``: the ARM template of ``cloud/arm`` into one resource group.

:class:`CloudDeployer` is the whole flow; the CLI only prints. Steps of ``deploy-cloud``:

1. **parameters** (:func:`assemble_parameters`, offline): ``cloud/arm/parameters/<env>.json`` (a standard
   deploymentParameters file), plus what it must not hold: ``apimPolicyXml`` (the text of
   ``settings.gateway.policy_file``, the policy the local gateway enforces), ``sshPublicKey`` (the file at
   ``TICKCAST_CLOUD_DEPLOY__SSH_PUBLIC_KEY_PATH``), ``apimPublisherEmail`` / ``apimPublisherName``
   (``TICKCAST_CLOUD_DEPLOY__APIM_PUBLISHER_*``), ``env``, ``location`` and ``namePrefix``. Only parameters
   the template declares are passed; a required one that nothing supplies stops here, naming the variable
   and the option.
2. **login** (:func:`check_login`): a token for :data:`MANAGEMENT_SCOPE` from the shared
   :func:`tickcast.azure.credential` (``DefaultAzureCredential``: ``az login``, a service principal or
   workload identity in ``AZURE_*``, or a managed identity). Not logged in -> :class:`NotLoggedInError`
   saying how to log in; nothing has been called on Azure.
3. **resource group**: created in ``location`` when missing (idempotent; ``--what-if`` never creates it).
4. ``--what-if``: ``deployments.begin_what_if`` (incremental), rendered by :func:`render_what_if` as one line
   per resource (``+`` Create, ``~`` Modify with its property deltas, ``-`` Delete, ``=`` NoChange, ...).
   Changes nothing.
5. otherwise ``deployments.begin_create_or_update`` (incremental mode, deployment name ``tickcast-<env>``),
   reporting each resource operation as it finishes, then the outputs, written by :func:`write_outputs` to
   ``.tickcast/cloud/<env>.env`` (``TICKCAST_*`` variables, via :data:`tickcast.settings.ARM_OUTPUT_SETTINGS`)
   and ``<env>.json`` (every output, raw). ``--outputs-only`` re-reads the outputs of the last deployment
   (a CI stage on a fresh agent, a colleague's machine) without deploying.

A deployment outlives the login that started it: when the credential can no longer get a token while waiting
(an expired ``az login``, or the ~1 hour workload-identity token of an Azure Pipelines task, AADSTS700024), the
wait stops with one line saying so (:class:`LoginLostError`) and ``deploy-cloud --resume`` waits again, with a
fresh login, for the same deployment. In Azure Pipelines the control-plane credential is
:func:`tickcast.azure.control_plane_credential` (it renews the federated token itself).

``destroy-cloud`` deletes the resource group (the CLI asks to type its name first) and clears what would block a
redeploy of the same environment (:meth:`CloudDeployer.destroy`, :class:`DestroyReport`): it purges the AML
workspace before the group goes (a soft-deleted workspace keeps its name for 14 days), then purges the
soft-deleted API Management service and deletes the custom role; a Key Vault with purge protection cannot be
purged, so the report says until when it stays soft-deleted, and the next ``deploy-cloud`` to the same resource
group recovers it (``keyVaultCreateMode=recover``) instead of failing on its name.

The Azure control plane is reached through :class:`ArmControlPlane` (``resource_groups`` of azure-mgmt-resource's
``ResourceManagementClient``; ``deployments`` and ``deployment_operations`` of azure-mgmt-resource-deployments'
``DeploymentsMgmtClient``, where they moved in azure-mgmt-resource 25). Tests pass a stand-in for it. Nothing
here imports ``azure.mgmt`` at module import, so ``tickcast --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tickcast.errors import TickcastError
from tickcast.settings import ARM_OUTPUT_SETTINGS, CloudDeploySettings, Settings, env_name

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = [
    "MANAGEMENT_SCOPE",
    "PER_USER_PARAMETERS",
    "ArmControlPlane",
    "AzureControlPlane",
    "CloudDeployError",
    "CloudDeployer",
    "DeployPlan",
    "DestroyReport",
    "LoginLostError",
    "NotLoggedInError",
    "OperationStatus",
    "assemble_parameters",
    "check_login",
    "dotenv_text",
    "login_problem",
    "outputs_to_env",
    "render_what_if",
    "write_outputs",
]

MANAGEMENT_SCOPE = "https://management.azure.com/.default"
POLICY_PARAMETER = "apimPolicyXml"

# template parameter -> (setting of cloud_deploy, CLI option): values that differ per person, never in a file
PER_USER_PARAMETERS: dict[str, tuple[str, str]] = {
    "sshPublicKey": ("ssh_public_key_path", "--ssh-public-key"),
    "apimPublisherEmail": ("apim_publisher_email", "--apim-publisher-email"),
    "apimPublisherName": ("apim_publisher_name", "--apim-publisher-name"),
}

_LOGIN_HELP = (
    "not logged in to Azure: run `az login` (and `az account set --subscription <id>`), or set "
    "AZURE_CLIENT_ID / AZURE_TENANT_ID with AZURE_CLIENT_SECRET or AZURE_FEDERATED_TOKEN_FILE for a service "
    "principal or workload identity, or run where a managed identity is assigned "
    "(TICKCAST_AZURE__MANAGED_IDENTITY_CLIENT_ID for a user-assigned one)"
)


class CloudDeployError(TickcastError):
    """The deploy or destroy cannot go on; the message says why and what to do."""


class NotLoggedInError(CloudDeployError):
    """No Azure credential could get a token for Azure Resource Manager."""


class LoginLostError(CloudDeployError):
    """The login expired while waiting for a deployment that goes on in Azure (``--resume`` waits again)."""


# --- the control plane --------------------------------------------------------------------------------------


class ArmControlPlane(Protocol):
    """What the deployer calls on Azure Resource Manager (tests pass a stand-in)."""

    @property
    def resource_groups(self) -> Any: ...

    @property
    def deployments(self) -> Any: ...

    @property
    def deployment_operations(self) -> Any: ...

    def request(
        self, method: str, path: str, api_version: str, params: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        """One ARM REST call on ``path`` (from ``/subscriptions/...``): (HTTP status, decoded JSON body or None)."""
        ...

    def delete_by_id(self, resource_id: str, api_version: str, params: Mapping[str, str] | None = None) -> None:
        """DELETE a resource and wait for the operation to end (raises on failure)."""
        ...


class AzureControlPlane:
    """The real control plane: ``ResourceManagementClient`` + ``DeploymentsMgmtClient`` on one credential."""

    def __init__(self, credential: TokenCredential, subscription_id: str) -> None:
        from azure.mgmt.resource.deployments import DeploymentsMgmtClient
        from azure.mgmt.resource.resources import ResourceManagementClient

        self._resources = ResourceManagementClient(credential, subscription_id)
        self._deployments = DeploymentsMgmtClient(credential, subscription_id)

    @property
    def resource_groups(self) -> Any:
        return self._resources.resource_groups

    @property
    def deployments(self) -> Any:
        return self._deployments.deployments

    @property
    def deployment_operations(self) -> Any:
        return self._deployments.deployment_operations

    def request(
        self, method: str, path: str, api_version: str, params: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        from azure.core.rest import HttpRequest

        response = self._resources.send_request(
            HttpRequest(method, path, params={"api-version": api_version, **dict(params or {})})
        )
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        return response.status_code, body

    def delete_by_id(self, resource_id: str, api_version: str, params: Mapping[str, str] | None = None) -> None:
        poller = self._resources.resources.begin_delete_by_id(resource_id, api_version=api_version, params=params or {})
        poller.result()


# AADSTS codes of a login that worked once and has run out: a refresh token expired or revoked (700082, 50173,
# 70043) or a federated workload-identity assertion past its lifetime (700024, Azure Pipelines after ~1 hour).
EXPIRED_LOGIN_CODES = ("AADSTS700082", "AADSTS50173", "AADSTS70043", "AADSTS700024")


def login_problem(err: BaseException) -> str:
    """One line: whether the login is missing or has expired, what the credential said, how to log in."""
    text = " ".join(str(getattr(err, "message", None) or err).split())
    code = re.search(r"AADSTS\d+", text)
    said = f" (the credential said: {text[:300]})" if text else ""
    if (code and code.group(0) in EXPIRED_LOGIN_CODES) or "expired" in text.lower():
        which = f" ({code.group(0)})" if code else ""
        return (
            f"your Azure login has expired{which}: run `az login` again (in Azure Pipelines: map SYSTEM_ACCESSTOKEN)"
            + said
        )
    return _LOGIN_HELP + said


def check_login(credential: TokenCredential) -> None:
    """Get a token for Azure Resource Manager, or raise :class:`NotLoggedInError` saying how to log in."""
    from azure.core.exceptions import ClientAuthenticationError

    try:
        credential.get_token(MANAGEMENT_SCOPE)
    except ClientAuthenticationError as err:  # CredentialUnavailableError is one
        raise NotLoggedInError(login_problem(err)) from err


def _is_auth_error(err: BaseException) -> bool:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    if isinstance(err, ClientAuthenticationError):
        return True
    return isinstance(err, HttpResponseError) and getattr(err, "status_code", None) == 401


# --- parameters ---------------------------------------------------------------------------------------------


def load_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CloudDeployError(f"the {what} {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise CloudDeployError(f"the {what} {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise CloudDeployError(f"the {what} {path} is not a JSON object")
    return data


def _read_ssh_key(path: Path) -> str:
    resolved = path.expanduser()
    var = env_name("cloud_deploy", "ssh_public_key_path")
    if not resolved.is_file():
        raise CloudDeployError(
            f"template parameter sshPublicKey: no SSH public key at {resolved}; set {var} or pass --ssh-public-key "
            "(create one with `ssh-keygen -t rsa -b 4096`)"
        )
    text = resolved.read_text(encoding="utf-8").strip()
    if "PRIVATE KEY" in text:
        raise CloudDeployError(f"{resolved} is a PRIVATE key; point {var} / --ssh-public-key at the .pub file")
    if not re.match(r"^(ssh-(rsa|ed25519)|ecdsa-sha2-\S+|sk-\S+) \S+", text):
        raise CloudDeployError(f"{resolved} is not an OpenSSH public key (expected 'ssh-rsa AAAA...')")
    return text


def assemble_parameters(
    settings: Settings, template: Mapping[str, Any], parameters_file: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """The deployment's parameters (``{name: {"value": ...}}``): the file's, plus what the deploy supplies.

    Only parameters ``template`` declares are sent. Raises :class:`CloudDeployError` for a parameter the file
    has but the template does not declare, a per-user value nothing supplies, or any required parameter
    (no ``defaultValue``) left without a value.
    """
    cfg = settings.cloud_deploy
    declared: Mapping[str, Any] = template.get("parameters") or {}
    from_file: Mapping[str, Any] = parameters_file.get("parameters") or {}
    unknown = sorted(set(from_file) - set(declared))
    if unknown:
        raise CloudDeployError(
            f"cloud/arm/parameters/{cfg.env}.json sets {', '.join(unknown)}, which the template does not declare"
        )
    params: dict[str, dict[str, Any]] = {name: dict(entry) for name, entry in from_file.items()}

    supplied: dict[str, Any] = {"env": cfg.env}
    if "location" in cfg.model_fields_set or "location" not in params:
        supplied["location"] = cfg.location
    if cfg.name_prefix:
        supplied["namePrefix"] = cfg.name_prefix
    if POLICY_PARAMETER in declared:
        policy = settings.gateway.policy_file
        if not policy.is_file():
            raise CloudDeployError(
                f"template parameter {POLICY_PARAMETER}: the APIM policy {policy} does not exist "
                f"(set {env_name('gateway', 'policy_file')})"
            )
        supplied[POLICY_PARAMETER] = policy.read_text(encoding="utf-8")
    missing: list[str] = []
    for name, (setting, option) in PER_USER_PARAMETERS.items():
        if name not in declared:
            continue
        if name == "sshPublicKey":  # the key file: when configured, or when nothing else gives a value
            explicit = "ssh_public_key_path" in cfg.model_fields_set
            if explicit or (name not in params and "defaultValue" not in declared[name]):
                supplied[name] = _read_ssh_key(cfg.ssh_public_key_path)
            continue
        value = getattr(cfg, setting)
        if value:
            supplied[name] = value
        elif name not in params and "defaultValue" not in declared[name]:
            missing.append(
                f"template parameter {name}: set {env_name('cloud_deploy', setting)} or pass {option} "
                "(per-user values are never kept in the parameter files)"
            )
    if missing:
        raise CloudDeployError("\n".join(missing))
    for name, value in supplied.items():
        if name in declared:
            params[name] = {"value": value}
    required = [n for n, spec in declared.items() if "defaultValue" not in (spec or {}) and n not in params]
    if required:
        raise CloudDeployError(
            f"the template needs parameters that nothing supplies: {', '.join(sorted(required))} "
            f"(add them to cloud/arm/parameters/{cfg.env}.json)"
        )
    return params


# --- outputs -> settings ------------------------------------------------------------------------------------


def output_values(outputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """ARM's ``{"name": {"type": "String", "value": v}}`` (or plain ``{"name": v}``) -> ``{"name": v}``."""
    values: dict[str, Any] = {}
    for name, entry in (outputs or {}).items():
        values[name] = entry.get("value") if isinstance(entry, Mapping) and "value" in entry else entry
    return values


def outputs_to_env(outputs: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """``TICKCAST_*`` variables from the outputs (:data:`ARM_OUTPUT_SETTINGS`), and the mapped outputs missing."""
    values = output_values(outputs)
    env = {env_name("profile"): "cloud"}
    missing: list[str] = []
    for output, loc in ARM_OUTPUT_SETTINGS.items():
        value = values.get(output)
        if value is None or value == "":
            missing.append(output)
            continue
        env[env_name(*loc)] = value if isinstance(value, str) else json.dumps(value)
    return env, missing


_BARE = re.compile(r"^[A-Za-z0-9_./:@,+=%-]*$")


def dotenv_text(env: Mapping[str, str], header: Sequence[str] = ()) -> str:
    """A dotenv file that both python-dotenv (pydantic-settings) and ``set -a; . file`` read the same way."""
    lines = [f"# {line}" for line in header]
    for name, value in env.items():
        if "'" in value or "\n" in value:
            raise CloudDeployError(f"cannot write {name}: its value contains a quote or a newline: {value!r}")
        lines.append(f"{name}={value}" if _BARE.match(value) else f"{name}='{value}'")
    return "\n".join(lines) + "\n"


def write_outputs(outputs: Mapping[str, Any], env: str, directory: Path) -> tuple[Path, Path, list[str]]:
    """Write ``<env>.env`` (TICKCAST_* settings) and ``<env>.json`` (every output); also return missing outputs."""
    variables, missing = outputs_to_env(outputs)
    directory.mkdir(parents=True, exist_ok=True)
    header = [
        f"written by `tickcast deploy-cloud --env {env}` at {datetime.now(UTC).isoformat(timespec='seconds')}",
        "ARM outputs -> settings (tickcast.settings.ARM_OUTPUT_SETTINGS). Use: set -a; . THIS_FILE; set +a",
    ]
    env_path = directory / f"{env}.env"
    json_path = directory / f"{env}.json"
    env_path.write_text(dotenv_text(variables, header), encoding="utf-8")
    json_path.write_text(json.dumps(output_values(outputs), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return env_path, json_path, missing


# --- what-if ------------------------------------------------------------------------------------------------

_CHANGE_SYMBOLS = {
    "Create": "+",
    "Delete": "-",
    "Modify": "~",
    "Deploy": "!",
    "Unsupported": "x",
    "NoChange": "=",
    "Ignore": "*",
}
_PROPERTY_SYMBOLS = {"Create": "+", "Delete": "-", "Modify": "~", "Array": "~", "NoEffect": "x"}
_SUMMARY_WORDS = {
    "Create": "to create",
    "Modify": "to modify",
    "Delete": "to delete",
    "Deploy": "to deploy",
    "Unsupported": "unsupported",
    "NoChange": "no change",
    "Ignore": "to ignore",
}
_VALUE_CHARS = 100


def _text(value: Any) -> str:
    """An enum member or a string -> its plain value (``ChangeType.CREATE`` -> ``"Create"``)."""
    return str(getattr(value, "value", value))


def _fmt(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


def _delta_lines(changes: Iterable[Any], indent: int) -> list[str]:
    lines: list[str] = []
    pad = " " * indent
    for change in sorted(changes, key=lambda c: str(getattr(c, "path", ""))):
        kind = _text(getattr(change, "property_change_type", ""))
        sym = _PROPERTY_SYMBOLS.get(kind, "?")
        path = getattr(change, "path", "")
        before, after = getattr(change, "before", None), getattr(change, "after", None)
        children = list(getattr(change, "children", None) or [])
        if kind == "Create":
            lines.append(f"{pad}{sym} {path}: {_fmt(after)}")
        elif kind == "Delete":
            lines.append(f"{pad}{sym} {path}: {_fmt(before)}")
        elif kind == "NoEffect":
            lines.append(f"{pad}{sym} {path}: {_fmt(after)} (no effect)")
        elif children:
            lines.append(f"{pad}{sym} {path}: [")
            lines.extend(_delta_lines(children, indent + 4))
            lines.append(f"{pad}  ]")
        else:
            lines.append(f"{pad}{sym} {path}: {_fmt(before)} => {_fmt(after)}")
    return lines


def _resource_lines(change: Any, scope: str) -> list[str]:
    kind = _text(getattr(change, "change_type", ""))
    rid = str(getattr(change, "resource_id", None) or getattr(change, "symbolic_name", None) or "?")
    shown = rid[len(scope) :].lstrip("/") if scope and rid.lower().startswith(scope.lower()) else rid
    shown = shown.removeprefix("providers/")
    line = f"  {_CHANGE_SYMBOLS.get(kind, '?')} {shown}"
    if kind == "Unsupported" and getattr(change, "unsupported_reason", None):
        line += f" ({change.unsupported_reason})"
    lines = [line]
    if kind == "Modify":
        lines.extend(_delta_lines(getattr(change, "delta", None) or [], 6))
    return lines


def render_what_if(result: Any, scope: str = "") -> str:
    """A readable plan from a ``WhatIfOperationResult``: one line per resource, property deltas for Modify."""
    error = getattr(result, "error", None)
    if error is not None:
        raise CloudDeployError(f"what-if failed: {getattr(error, 'code', '')}: {getattr(error, 'message', error)}")
    order = list(_CHANGE_SYMBOLS)
    changes = sorted(
        getattr(result, "changes", None) or [],
        key=lambda c: (
            order.index(_text(c.change_type)) if _text(c.change_type) in order else len(order),
            str(c.resource_id or ""),
        ),
    )
    legend = "  ".join(f"{sym} {kind}" for kind, sym in _CHANGE_SYMBOLS.items())
    lines = ["Resource and property changes are indicated with these symbols:", f"  {legend}", ""]
    if scope:
        lines.append(f"Scope: {scope}")
    for change in changes:
        lines.extend(_resource_lines(change, scope))
    potential = list(getattr(result, "potential_changes", None) or [])
    if potential:
        lines += ["", "Potential changes (what-if could not evaluate them fully):"]
        for change in potential:
            lines.extend(_resource_lines(change, scope))
    for diag in getattr(result, "diagnostics", None) or []:
        lines.append(f"{_text(getattr(diag, 'level', 'Info'))}: {getattr(diag, 'code', '')} {diag.message}".strip())
    counts: dict[str, int] = {}
    for change in changes:
        kind = _text(change.change_type)
        counts[kind] = counts.get(kind, 0) + 1
    summary = ", ".join(f"{counts[k]} {_SUMMARY_WORDS[k]}" for k in order if counts.get(k))
    lines += ["", f"Resource changes: {summary or 'none'}."]
    return "\n".join(lines)


# --- the deployer -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeployPlan:
    """What one deploy sends: where, the template, and the assembled parameters."""

    subscription_id: str
    resource_group: str
    location: str
    env: str
    deployment_name: str
    template: dict[str, Any]
    parameters: dict[str, dict[str, Any]]

    @property
    def scope(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"


@dataclass(frozen=True)
class OperationStatus:
    """One resource operation of a running deployment."""

    resource: str  # "Microsoft.Storage/storageAccounts/tickcastdevlake"
    state: str  # Running / Succeeded / Failed / ...
    duration: str | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.state.lower() in {"succeeded", "failed", "canceled"}


# ARM API versions of the REST calls deploy/destroy make beside the SDK clients (those of cloud/arm/build.py).
API_VERSIONS = {
    "keyvault": "2026-05-15",
    "apim": "2024-05-01",
    "ml": "2025-12-01",
    "authorization": "2022-04-01",
}


@dataclass
class DestroyReport:
    """What ``destroy-cloud`` removed beyond the resource group, and what outlives it (with until when)."""

    resource_group: str
    purged: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)


@dataclass
class DeployResult:
    plan: DeployPlan
    outputs: dict[str, Any]
    env_file: Path
    outputs_file: Path
    missing_outputs: list[str]
    created_resource_group: bool
    seconds: float
    operations: list[OperationStatus] = field(default_factory=list)


def _az_subscription() -> str | None:
    """The Azure CLI's current subscription, when ``az`` is installed and logged in."""
    az = shutil.which("az")
    if not az:
        return None
    try:
        done = subprocess.run(
            [az, "account", "show", "--query", "id", "-o", "tsv"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else None


def _operation_status(op: Any) -> OperationStatus | None:
    props = getattr(op, "properties", None)
    target = getattr(props, "target_resource", None) if props is not None else None
    if target is None:
        return None
    resource = "/".join(
        p for p in (getattr(target, "resource_type", None), getattr(target, "resource_name", None)) if p
    )
    error = None
    message = getattr(props, "status_message", None)
    err = getattr(message, "error", None) if message is not None else None
    if err is not None:
        error = f"{getattr(err, 'code', '')}: {getattr(err, 'message', '')}".strip(": ")
    return OperationStatus(
        resource or str(getattr(target, "id", "?")),
        _text(getattr(props, "provisioning_state", None) or "Unknown"),
        getattr(props, "duration", None),
        error,
    )


class CloudDeployer:
    """Deploys, plans (what-if), reads back and destroys the cloud overlay of one environment.

    ``control_plane`` and ``credential`` default to :class:`AzureControlPlane` on
    :func:`tickcast.azure.credential` (built on first use, after :meth:`login`). ``progress`` receives each
    resource operation of a running deployment when its state changes; ``poll_s`` is the polling interval.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        control_plane: ArmControlPlane | None = None,
        credential: TokenCredential | None = None,
        progress: Callable[[OperationStatus], None] | None = None,
        poll_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        subscription_lookup: Callable[[], str | None] = _az_subscription,
    ) -> None:
        self.settings = settings
        self.cfg: CloudDeploySettings = settings.cloud_deploy
        self._control_plane = control_plane
        self._credential = credential
        self.progress = progress or (lambda _status: None)
        self.poll_s = poll_s
        self.clock = clock
        self._subscription_lookup = subscription_lookup
        self._subscription: str | None = None

    # -- where ------------------------------------------------------------------------------------------------

    @property
    def env(self) -> str:
        return self.cfg.env

    @property
    def resource_group(self) -> str:
        return self.cfg.resolved_resource_group()

    @property
    def deployment_name(self) -> str:
        return f"tickcast-{self.cfg.env}"

    @property
    def subscription_id(self) -> str:
        if self._subscription is None:
            found = self.cfg.subscription_id or self._subscription_lookup()
            if not found:
                raise CloudDeployError(
                    f"no Azure subscription: set {env_name('cloud_deploy', 'subscription_id')} or pass --subscription "
                    "(your current one: `az account show --query id -o tsv`)"
                )
            self._subscription = found
        return self._subscription

    @property
    def credential(self) -> TokenCredential:
        if self._credential is None:
            from tickcast.azure import control_plane_credential

            self._credential = control_plane_credential(self.settings)
        return self._credential

    @property
    def control_plane(self) -> ArmControlPlane:
        if self._control_plane is None:
            self._control_plane = AzureControlPlane(self.credential, self.subscription_id)
        return self._control_plane

    # -- steps ------------------------------------------------------------------------------------------------

    def parameters(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The template and the assembled parameters (offline; raises :class:`CloudDeployError`)."""
        template = load_json(self.cfg.template, "ARM template")
        params_path = self.cfg.parameters_dir / f"{self.cfg.env}.json"
        return template, assemble_parameters(self.settings, template, load_json(params_path, "parameter file"))

    def write_parameters(self, path: Path) -> Path:
        """The assembled parameters as a deploymentParameters file whose ``metadata.template`` points at the
        template (what PSRule for Azure and ``az deployment group validate`` read); offline."""
        _, parameters = self.parameters()
        path.parent.mkdir(parents=True, exist_ok=True)
        template_ref = Path(os.path.relpath(self.cfg.template.resolve(), path.parent.resolve())).as_posix()
        body = {
            "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
            "contentVersion": "1.0.0.0",
            "metadata": {"template": template_ref},
            "parameters": parameters,
        }
        path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        return path

    def plan(self) -> DeployPlan:
        """Template + parameters for the environment and where they go (offline but for the subscription lookup)."""
        template, parameters = self.parameters()
        location = parameters.get("location", {}).get("value") or self.cfg.location
        return DeployPlan(
            subscription_id=self.subscription_id,
            resource_group=self.resource_group,
            location=str(location),
            env=self.cfg.env,
            deployment_name=self.deployment_name,
            template=template,
            parameters=parameters,
        )

    def login(self) -> None:
        check_login(self.credential)

    def resource_group_exists(self) -> bool:
        return bool(self.control_plane.resource_groups.check_existence(self.resource_group))

    def ensure_resource_group(self, location: str) -> bool:
        """Create the resource group when missing; True when it was created."""
        if self.resource_group_exists():
            return False
        from azure.mgmt.resource.resources.models import ResourceGroup

        self.control_plane.resource_groups.create_or_update(
            self.resource_group, ResourceGroup(location=location, tags={"app": "tickcast", "env": self.cfg.env})
        )
        return True

    @staticmethod
    def _properties(plan: DeployPlan, what_if: bool) -> Any:
        from azure.mgmt.resource.deployments.models import (
            DeploymentMode,
            DeploymentParameter,
            DeploymentProperties,
            DeploymentWhatIfProperties,
        )

        params = {name: DeploymentParameter(entry) for name, entry in plan.parameters.items()}
        cls = DeploymentWhatIfProperties if what_if else DeploymentProperties
        return cls(mode=DeploymentMode.INCREMENTAL, template=plan.template, parameters=params)

    def what_if(self, plan: DeployPlan) -> str:
        """The rendered plan; changes nothing (a missing resource group is reported, not created)."""
        if not self.resource_group_exists():
            resources = plan.template.get("resources") or []
            items = resources.values() if isinstance(resources, Mapping) else resources
            lines = [
                f"Resource group {plan.resource_group} does not exist in subscription {plan.subscription_id}: "
                f"`deploy-cloud` would create it in {plan.location}, then every resource of the template:",
            ]
            lines += [f"  + {r.get('type', '?')} {r.get('name', '')}" for r in items if isinstance(r, Mapping)]
            lines.append(f"\nResource changes: {len(lines) - 1} to create (names are still template expressions).")
            return "\n".join(lines)
        from azure.mgmt.resource.deployments.models import DeploymentWhatIf

        poller = self.control_plane.deployments.begin_what_if(
            plan.resource_group, plan.deployment_name, DeploymentWhatIf(properties=self._properties(plan, True))
        )
        return render_what_if(poller.result(timeout=self.cfg.timeout_s), plan.scope)

    def _operations(self, plan: DeployPlan) -> list[OperationStatus]:
        ops = self.control_plane.deployment_operations.list(plan.resource_group, plan.deployment_name)
        return [s for s in (_operation_status(op) for op in ops) if s is not None]

    def _report(self, plan: DeployPlan, seen: dict[str, str]) -> list[OperationStatus]:
        try:
            current = self._operations(plan)
        except Exception:  # progress is best effort: the deployment's own result decides
            return []
        for status in current:
            if seen.get(status.resource) != status.state:
                seen[status.resource] = status.state
                self.progress(status)
        return current

    def deploy(self, plan: DeployPlan) -> DeployResult:
        """Create the resource group if needed, deploy (incremental), write the outputs; raise on failure."""
        from azure.mgmt.resource.deployments.models import Deployment

        t0 = self.clock()
        created = self.ensure_resource_group(plan.location)
        recovering = self.recoverable_vault()
        if recovering and "keyVaultCreateMode" in (plan.template.get("parameters") or {}):
            self.progress(OperationStatus(f"Microsoft.KeyVault/vaults/{recovering}", "Recovering"))
            plan.parameters["keyVaultCreateMode"] = {"value": "recover"}
        poller = self.control_plane.deployments.begin_create_or_update(
            plan.resource_group,
            plan.deployment_name,
            Deployment(properties=self._properties(plan, False), tags={"app": "tickcast", "env": plan.env}),
        )
        seen: dict[str, str] = {}
        operations: list[OperationStatus] = []
        failure: str | None = None
        result: Any = None
        try:
            while not poller.done():
                if self.clock() - t0 > self.cfg.timeout_s:
                    raise CloudDeployError(
                        f"deployment {plan.deployment_name} still runs after {self.cfg.timeout_s:.0f}s; it goes on in "
                        f"Azure: wait for it with `tickcast deploy-cloud --resume --env {plan.env}`"
                    )
                operations = self._report(plan, seen) or operations
                poller.wait(self.poll_s)
            result = poller.result()
        except CloudDeployError:
            raise
        except Exception as err:
            if _is_auth_error(err):
                raise self._login_lost(plan, err) from err
            from azure.core.exceptions import HttpResponseError

            if not isinstance(err, HttpResponseError):
                raise
            failure = str(getattr(err, "message", None) or err).strip()
        operations = self._report(plan, seen) or operations
        return self._finish(plan, result, failure, operations, created, t0)

    def resume(self) -> DeployResult:
        """Wait, with this login, for the environment's last deployment to end; then write its outputs like
        :meth:`deploy` (the way back after :class:`LoginLostError`, or after the CLI was interrupted)."""
        from azure.core.exceptions import ResourceNotFoundError

        plan = self.plan()
        t0 = self.clock()
        seen: dict[str, str] = {}
        operations: list[OperationStatus] = []
        while True:
            try:
                deployment = self.control_plane.deployments.get(plan.resource_group, plan.deployment_name)
            except ResourceNotFoundError:
                raise CloudDeployError(
                    f"no deployment {plan.deployment_name} in resource group {plan.resource_group}: nothing to resume; "
                    f"run `tickcast deploy-cloud --env {plan.env}`"
                ) from None
            except Exception as err:
                if _is_auth_error(err):
                    raise self._login_lost(plan, err) from err
                raise
            state = _text(getattr(deployment.properties, "provisioning_state", None) or "Unknown")
            operations = self._report(plan, seen) or operations
            if state.lower() in ("succeeded", "failed", "canceled"):
                break
            if self.clock() - t0 > self.cfg.timeout_s:
                raise CloudDeployError(
                    f"deployment {plan.deployment_name} is still {state} after {self.cfg.timeout_s:.0f}s; "
                    "run `tickcast deploy-cloud --resume` again"
                )
            time.sleep(self.poll_s)
        failure = None
        if state.lower() != "succeeded":
            error = getattr(deployment.properties, "error", None)
            failure = f"{getattr(error, 'code', '')}: {getattr(error, 'message', '')}".strip(": ") or None
            deployment = None
        return self._finish(plan, deployment, failure, operations, False, t0)

    def _login_lost(self, plan: DeployPlan, err: BaseException) -> LoginLostError:
        return LoginLostError(
            f"lost the Azure login while waiting for deployment {plan.deployment_name}: {login_problem(err)}; "
            f"the deployment goes on in Azure: log in again, then `tickcast deploy-cloud --resume --env {plan.env}` "
            "waits for it and writes the outputs"
        )

    def _finish(
        self,
        plan: DeployPlan,
        result: Any,
        failure: str | None,
        operations: list[OperationStatus],
        created: bool,
        t0: float,
    ) -> DeployResult:
        state = _text(getattr(getattr(result, "properties", None), "provisioning_state", None) or "Failed")
        if failure is not None or state.lower() != "succeeded":
            failed = [f"  {s.resource}: {s.error or s.state}" for s in operations if s.state.lower() == "failed"]
            raise CloudDeployError(
                f"deployment {plan.deployment_name} to {plan.resource_group} ended {state}"
                + (f": {failure}" if failure else "")
                + ("\nfailed resources:\n" + "\n".join(failed) if failed else "")
            )
        outputs = output_values(getattr(result.properties, "outputs", None))
        env_file, outputs_file, missing = write_outputs(outputs, plan.env, self.cfg.output_dir)
        return DeployResult(
            plan, outputs, env_file, outputs_file, missing, created, self.clock() - t0, list(operations)
        )

    # -- what outlives a resource group (soft delete) -----------------------------------------------------------

    def _list(self, path: str, api_version: str, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        status, body = self.control_plane.request("GET", path, api_version, params)
        if status == 404:
            return []
        if status in (401, 403):  # rights on the resource group only: nothing to learn at subscription scope
            log.warning("GET %s answered HTTP %d: skipped", path, status)
            return []
        if status != 200:
            raise CloudDeployError(f"GET {path} answered HTTP {status}: {str(body)[:300]}")
        return list((body or {}).get("value") or [])

    def _in_group(self, resource_id: str) -> bool:
        return f"/resourcegroups/{self.resource_group.lower()}/" in resource_id.lower()

    def recoverable_vault(self) -> str | None:
        """The name of a soft-deleted Key Vault of this resource group (its next deploy must recover it)."""
        path = f"/subscriptions/{self.subscription_id}/providers/Microsoft.KeyVault/deletedVaults"
        for vault in self._list(path, API_VERSIONS["keyvault"]):
            if self._in_group(str((vault.get("properties") or {}).get("vaultId", ""))):
                return str(vault.get("name"))
        return None

    def fetch_outputs(self) -> tuple[dict[str, Any], Path, Path, list[str]]:
        """The outputs of the last deployment of this environment, written like :meth:`deploy` writes them."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            deployment = self.control_plane.deployments.get(self.resource_group, self.deployment_name)
        except ResourceNotFoundError:
            raise CloudDeployError(
                f"no deployment {self.deployment_name} in resource group {self.resource_group} "
                f"(subscription {self.subscription_id}): run `tickcast deploy-cloud --env {self.env}` first"
            ) from None
        props = getattr(deployment, "properties", None)
        state = _text(getattr(props, "provisioning_state", None) or "Unknown")
        if state.lower() != "succeeded":
            raise CloudDeployError(f"the last deployment {self.deployment_name} is {state}, not Succeeded")
        outputs = output_values(getattr(props, "outputs", None))
        env_file, outputs_file, missing = write_outputs(outputs, self.env, self.cfg.output_dir)
        return outputs, env_file, outputs_file, missing

    def destroy(self) -> DestroyReport | None:
        """Delete the resource group and clear what would block deploying the same environment again.

        None when the group does not exist. Before the deletion: every AML workspace of the group is deleted
        with ``forceToPurge`` (a soft-deleted workspace would keep its name for 14 days). After it: the group's
        soft-deleted API Management services are purged (48 hours otherwise), custom roles assignable only to the
        group are deleted, Key Vaults without purge protection are purged; a vault with purge protection stays
        soft-deleted until its scheduled purge date, which the report says (the next deploy recovers it).
        """
        if not self.resource_group_exists():
            return None
        sub, group = self.subscription_id, self.resource_group
        report = DestroyReport(group)
        base = f"/subscriptions/{sub}/resourceGroups/{group}/providers"
        apims = self._list(f"{base}/Microsoft.ApiManagement/service", API_VERSIONS["apim"])
        vaults = self._list(f"{base}/Microsoft.KeyVault/vaults", API_VERSIONS["keyvault"])
        for workspace in self._list(f"{base}/Microsoft.MachineLearningServices/workspaces", API_VERSIONS["ml"]):
            self.control_plane.delete_by_id(str(workspace["id"]), API_VERSIONS["ml"], {"forceToPurge": "true"})
            report.purged.append(f"AML workspace {workspace['name']} (deleted with forceToPurge)")
        poller = self.control_plane.resource_groups.begin_delete(group)
        poller.result(timeout=self.cfg.timeout_s)
        for apim in apims:
            name, location = str(apim["name"]), str(apim.get("location", "")).replace(" ", "").lower()
            path = f"/subscriptions/{sub}/providers/Microsoft.ApiManagement/locations/{location}/deletedservices/{name}"
            status, body = self.control_plane.request("DELETE", path, API_VERSIONS["apim"])
            if status in (200, 202, 204, 404):
                report.purged.append(f"API Management {name} (soft-deleted copy purged)")
            else:
                report.remaining.append(
                    f"API Management {name} stays soft-deleted for 48 hours (purge failed: HTTP {status} "
                    f"{str(body)[:200]}); free the name with `az apim deletedservice purge --service-name {name} "
                    f"--location {location}`"
                )
        for vault in vaults:
            self._vault_after_delete(vault, report)
        roles = self._list(
            f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions",
            API_VERSIONS["authorization"],
            {"$filter": "type eq 'CustomRole'"},
        )
        group_id = f"/subscriptions/{sub}/resourceGroups/{group}".lower()
        for role in roles:
            scopes = [str(x).lower() for x in (role.get("properties") or {}).get("assignableScopes") or []]
            if scopes == [group_id]:
                role_name = (role.get("properties") or {}).get("roleName", role.get("name"))
                status, _ = self.control_plane.request("DELETE", str(role["id"]), API_VERSIONS["authorization"])
                if status in (200, 204, 404):
                    report.purged.append(f"custom role {role_name!r}")
                else:
                    report.remaining.append(f"custom role {role_name!r} (delete answered HTTP {status})")
        report.remaining.append(
            "Log Analytics workspace(s) of the group stay soft-deleted for 14 days; deploying the same environment "
            "recovers them"
        )
        return report

    def _vault_after_delete(self, vault: Mapping[str, Any], report: DestroyReport) -> None:
        props = vault.get("properties") or {}
        name, location = str(vault["name"]), str(vault.get("location", "")).replace(" ", "").lower()
        provider = f"/subscriptions/{self.subscription_id}/providers/Microsoft.KeyVault"
        deleted = f"{provider}/locations/{location}/deletedVaults/{name}"
        if props.get("enablePurgeProtection"):
            status, body = self.control_plane.request("GET", deleted, API_VERSIONS["keyvault"])
            until = str(((body or {}).get("properties") or {}).get("scheduledPurgeDate") or "")[:10]
            days = props.get("softDeleteRetentionInDays", 90)
            when = f"until {until}" if until else f"for {days} days"
            report.remaining.append(
                f"Key Vault {name} stays soft-deleted {when} (purge protection: nobody can purge it); the next "
                f"`tickcast deploy-cloud` to resource group {self.resource_group} recovers it"
            )
            return
        status, body = self.control_plane.request("POST", f"{deleted}/purge", API_VERSIONS["keyvault"])
        if status in (200, 202, 204):
            report.purged.append(f"Key Vault {name} (soft-deleted copy purged)")
        else:
            report.remaining.append(f"Key Vault {name} stays soft-deleted (purge answered HTTP {status})")
