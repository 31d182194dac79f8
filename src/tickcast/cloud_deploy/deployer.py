"""The whole deploy / destroy flow (:class:`CloudDeployer`); the CLI only prints."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickcast.settings import CloudDeploySettings, Settings, env_name

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

from tickcast.cloud_deploy.control_plane import ArmControlPlane, AzureControlPlane
from tickcast.cloud_deploy.login import CloudDeployError, LoginLostError, _is_auth_error, check_login, login_problem
from tickcast.cloud_deploy.outputs import output_values, write_outputs
from tickcast.cloud_deploy.parameters import assemble_parameters, load_json
from tickcast.cloud_deploy.what_if import enum_text, render_what_if

log = logging.getLogger(__name__)


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
        enum_text(getattr(props, "provisioning_state", None) or "Unknown"),
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
            state = enum_text(getattr(deployment.properties, "provisioning_state", None) or "Unknown")
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
        state = enum_text(getattr(getattr(result, "properties", None), "provisioning_state", None) or "Failed")
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
        state = enum_text(getattr(props, "provisioning_state", None) or "Unknown")
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
