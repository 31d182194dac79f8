"""`tickcast deploy-cloud` / `destroy-cloud` without Azure.

Everything but Azure Resource Manager itself runs for real: the parameter assembly from the template, the
parameter file and the settings; the outputs -> TICKCAST_* dotenv mapping (read back by the settings and by a
shell); the what-if rendering of real azure-mgmt-resource-deployments models; the login check with a credential
that raises; and the deploy / what-if / destroy flow and the CLI against :class:`FakeArmControlPlane`, a stand-in
for the Azure control plane, the one part that cannot run here. The template is ``fixtures/arm_minimal.json``
(the parameter and output contract of ``cloud/arm/main.json``); when ``cloud/arm/main.json`` exists, the
assembly is also checked against it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import CredentialUnavailableError
from azure.mgmt.resource.deployments.models import (
    DeploymentExtended,
    DeploymentOperation,
    WhatIfOperationResult,
)
from typer.testing import CliRunner

from tickcast import cloud_deploy
from tickcast.cloud_deploy import (
    MANAGEMENT_SCOPE,
    CloudDeployer,
    CloudDeployError,
    NotLoggedInError,
    OperationStatus,
    assemble_parameters,
    check_login,
    dotenv_text,
    outputs_to_env,
    render_what_if,
    write_outputs,
)
from tickcast.settings import ARM_OUTPUT_SETTINGS, PROJECT_ROOT, Settings, env_name, load_settings

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATE = FIXTURES / "arm_minimal.json"
SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBq0nZ3pPiJ7d6p1nH7Y1y0Gm2ZyfQ1ZQY7m3l5bqk0H tickcast@test"
POLICY = PROJECT_ROOT / "cloud" / "apim" / "policy.xml"
OUTPUTS: dict[str, Any] = {
    "lakeAccountUrl": "https://tcfixturedevlake.blob.core.windows.net",
    "lakeContainer": "lake",
    "kafkaBootstrapServers": "10.0.1.4:9092",
    "mlflowTrackingUri": "https://mlflow.tickcast-dev.example",
    "airflowUrl": "https://airflow.tickcast-dev.example",
    "amlWorkspaceName": "tickcast-dev-mlw",
    "amlEndpointName": "tickcast-dev",
    "amlScoringUri": "https://tickcast-dev.westeurope.inference.ml.azure.com/score",
    "amlComputeName": "tickcast-aks",
    "functionAppName": "tickcast-dev-func",
    "functionAppUrl": "https://tickcast-dev-func.azurewebsites.net",
    "apimGatewayUrl": "https://tickcast-dev-apim.azure-api.net",
    "apimServiceName": "tickcast-dev-apim",
    "subscriptionId": SUBSCRIPTION,
    "resourceGroupName": "tickcast-dev",
    "location": "westeurope",
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer .env, TICKCAST_* or Azure identity variables leak in; `az` is never called."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith(("TICKCAST_", "AZURE_", "IDENTITY_", "MSI_", "IMDS_")):
            monkeypatch.delenv(name)
    monkeypatch.setattr(cloud_deploy.deployer, "_az_subscription", lambda: None)


@pytest.fixture
def ssh_key(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519.pub"
    path.write_text(SSH_KEY + "\n", encoding="utf-8")
    return path


def deploy_settings(tmp_path: Path, ssh_key: Path | None = None, **cloud: Any) -> Settings:
    group: dict[str, Any] = {
        "template": TEMPLATE,
        "parameters_dir": FIXTURES / "parameters",
        "output_dir": tmp_path / "out",
        "subscription_id": SUBSCRIPTION,
        "apim_publisher_email": "ops@example.com",
        "apim_publisher_name": "tickcast ops",
    }
    if ssh_key is not None:
        group["ssh_public_key_path"] = ssh_key
    group.update(cloud)
    return load_settings(_env_file=None, cloud_deploy={k: v for k, v in group.items() if v is not None})


def template() -> dict[str, Any]:
    return dict(json.loads(TEMPLATE.read_text(encoding="utf-8")))


def dev_parameters() -> dict[str, Any]:
    return dict(json.loads((FIXTURES / "parameters" / "dev.json").read_text(encoding="utf-8")))


# --- parameters ---------------------------------------------------------------------------------------------


def test_parameters_inject_the_policy_the_key_and_the_publisher(tmp_path: Path, ssh_key: Path) -> None:
    params = assemble_parameters(deploy_settings(tmp_path, ssh_key), template(), dev_parameters())
    assert params["apimPolicyXml"] == {"value": POLICY.read_text(encoding="utf-8")}
    assert "<rate-limit-by-key" in params["apimPolicyXml"]["value"]  # the policy the local gateway enforces
    assert params["sshPublicKey"] == {"value": SSH_KEY}
    assert params["apimPublisherEmail"] == {"value": "ops@example.com"}
    assert params["apimPublisherName"] == {"value": "tickcast ops"}
    assert params["env"] == {"value": "dev"}
    assert params["namePrefix"] == {"value": "tcfixture"}  # from the parameter file
    assert params["location"] == {"value": "westeurope"}  # the settings' default region
    assert set(params) <= set(template()["parameters"])


def test_settings_override_the_parameter_file(tmp_path: Path, ssh_key: Path) -> None:
    settings = deploy_settings(tmp_path, ssh_key, name_prefix="mine", location="swedencentral")
    params = assemble_parameters(settings, template(), dev_parameters())
    assert params["namePrefix"] == {"value": "mine"} and params["location"] == {"value": "swedencentral"}


@pytest.mark.parametrize(
    ("missing", "variable", "option"),
    [
        ("apim_publisher_email", "TICKCAST_CLOUD_DEPLOY__APIM_PUBLISHER_EMAIL", "--apim-publisher-email"),
        ("apim_publisher_name", "TICKCAST_CLOUD_DEPLOY__APIM_PUBLISHER_NAME", "--apim-publisher-name"),
    ],
)
def test_a_missing_per_user_value_names_its_variable_and_option(
    tmp_path: Path, ssh_key: Path, missing: str, variable: str, option: str
) -> None:
    settings = deploy_settings(tmp_path, ssh_key, **{missing: None})
    with pytest.raises(CloudDeployError) as err:
        assemble_parameters(settings, template(), dev_parameters())
    assert variable in str(err.value) and option in str(err.value)


def test_a_missing_ssh_key_names_its_variable_and_option(tmp_path: Path) -> None:
    settings = deploy_settings(tmp_path, ssh_public_key_path=tmp_path / "nope.pub")
    with pytest.raises(CloudDeployError) as err:
        assemble_parameters(settings, template(), dev_parameters())
    msg = str(err.value)
    assert "TICKCAST_CLOUD_DEPLOY__SSH_PUBLIC_KEY_PATH" in msg and "--ssh-public-key" in msg and "nope.pub" in msg


def test_a_private_key_is_refused(tmp_path: Path) -> None:
    private = tmp_path / "id_rsa"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(CloudDeployError, match="PRIVATE key"):
        assemble_parameters(deploy_settings(tmp_path, private), template(), dev_parameters())


def test_only_declared_parameters_are_sent(tmp_path: Path) -> None:
    """A template without sshPublicKey needs no key file at all (the parameter is optional in the contract)."""
    tpl = template()
    del tpl["parameters"]["sshPublicKey"]
    params = assemble_parameters(
        deploy_settings(tmp_path, ssh_public_key_path=tmp_path / "absent.pub"), tpl, dev_parameters()
    )
    assert "sshPublicKey" not in params


def test_parameter_file_problems_are_caught_before_azure(tmp_path: Path, ssh_key: Path) -> None:
    settings = deploy_settings(tmp_path, ssh_key)
    extra = dev_parameters()
    extra["parameters"]["typo"] = {"value": 1}
    with pytest.raises(CloudDeployError, match="sets typo, which the template does not declare"):
        assemble_parameters(settings, template(), extra)
    tpl = template()
    tpl["parameters"]["vmSize"] = {"type": "string"}
    with pytest.raises(CloudDeployError, match="needs parameters that nothing supplies: vmSize"):
        assemble_parameters(settings, tpl, dev_parameters())


def test_a_missing_policy_file_is_named(tmp_path: Path, ssh_key: Path) -> None:
    settings = deploy_settings(tmp_path, ssh_key)
    settings = settings.model_copy(
        update={"gateway": settings.gateway.model_copy(update={"policy_file": tmp_path / "policy.xml"})}
    )
    with pytest.raises(CloudDeployError, match="TICKCAST_GATEWAY__POLICY_FILE"):
        assemble_parameters(settings, template(), dev_parameters())


REAL_TEMPLATE = PROJECT_ROOT / "cloud" / "arm" / "main.json"
REAL_DEV = PROJECT_ROOT / "cloud" / "arm" / "parameters" / "dev.json"


def test_the_real_arm_template_keeps_the_deploy_contract(tmp_path: Path, ssh_key: Path) -> None:
    """cloud/arm/main.json + parameters/dev.json assemble, take the policy, and give every mapped output."""
    tpl = json.loads(REAL_TEMPLATE.read_text(encoding="utf-8"))
    settings = deploy_settings(tmp_path, ssh_key, template=REAL_TEMPLATE, parameters_dir=REAL_DEV.parent)
    params = assemble_parameters(settings, tpl, json.loads(REAL_DEV.read_text(encoding="utf-8")))
    assert params["apimPolicyXml"]["value"] == POLICY.read_text(encoding="utf-8")
    for name in ("apimPublisherEmail", "sshPublicKey"):  # a person's address and key: never in the repository
        assert name not in json.loads(REAL_DEV.read_text(encoding="utf-8"))["parameters"], f"{name} is per-user"
    assert set(ARM_OUTPUT_SETTINGS) <= set(tpl.get("outputs", {})), "every mapped output exists"
    assert {"functionAppName", "apimServiceName", "location"} <= set(tpl.get("outputs", {}))


# --- outputs -> settings ------------------------------------------------------------------------------------


def arm_outputs(values: dict[str, Any] = OUTPUTS) -> dict[str, Any]:
    return {name: {"type": "String", "value": value} for name, value in values.items()}


def test_outputs_map_to_the_settings_variables() -> None:
    env, missing = outputs_to_env(arm_outputs())
    assert missing == []
    assert env == {
        "TICKCAST_PROFILE": "cloud",
        "TICKCAST_STORAGE__ACCOUNT_URL": OUTPUTS["lakeAccountUrl"],
        "TICKCAST_STORAGE__LAKE_CONTAINER": "lake",
        "TICKCAST_KAFKA__BOOTSTRAP_SERVERS": "10.0.1.4:9092",
        "TICKCAST_MLFLOW__TRACKING_URI": OUTPUTS["mlflowTrackingUri"],
        "TICKCAST_AIRFLOW__URL": OUTPUTS["airflowUrl"],
        "TICKCAST_SERVING__ENDPOINT_URL": OUTPUTS["amlScoringUri"],
        "TICKCAST_AML__SUBSCRIPTION_ID": SUBSCRIPTION,
        "TICKCAST_AML__RESOURCE_GROUP": "tickcast-dev",
        "TICKCAST_AML__WORKSPACE": "tickcast-dev-mlw",
        "TICKCAST_AML__ENDPOINT_NAME": "tickcast-dev",
        "TICKCAST_AML__COMPUTE": "tickcast-aks",
        "TICKCAST_GATEWAY__URL": OUTPUTS["apimGatewayUrl"],
    }


def test_missing_outputs_are_reported_not_invented() -> None:
    partial = {k: v for k, v in OUTPUTS.items() if k not in {"kafkaBootstrapServers", "airflowUrl"}}
    env, missing = outputs_to_env(arm_outputs(partial))
    assert missing == ["kafkaBootstrapServers", "airflowUrl"]
    assert "TICKCAST_KAFKA__BOOTSTRAP_SERVERS" not in env


def test_the_dotenv_file_configures_profile_cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file, json_file, missing = write_outputs(arm_outputs(), "dev", tmp_path / "cloud")
    assert (env_file, json_file, missing) == (tmp_path / "cloud" / "dev.env", tmp_path / "cloud" / "dev.json", [])
    assert json.loads(json_file.read_text()) == OUTPUTS
    # read by the settings, as a .env file
    s = load_settings(_env_file=env_file)
    assert s.profile == "cloud" and s.blob_account_url == OUTPUTS["lakeAccountUrl"]
    assert s.kafka_bootstrap == "10.0.1.4:9092" and s.gateway_url == OUTPUTS["apimGatewayUrl"]
    assert s.aml.workspace == "tickcast-dev-mlw" and s.aml.endpoint_name == "tickcast-dev"
    s.require("storage.account_url", "serving.endpoint_url", purpose="the Function app")
    # and by a shell, the same way (set -a; . file)
    shown = subprocess.run(
        ["bash", "-c", f"set -a; . {env_file}; env"], capture_output=True, text=True, check=True, env={}
    ).stdout
    exported = dict(line.split("=", 1) for line in shown.splitlines() if line.startswith("TICKCAST_"))
    assert exported == outputs_to_env(arm_outputs())[0]


def test_dotenv_quotes_what_a_shell_would_split() -> None:
    text = dotenv_text({"A": "plain", "B": "two words", "C": '["x"]'}, ["header"])
    assert text == "# header\nA=plain\nB='two words'\nC='[\"x\"]'\n"
    with pytest.raises(CloudDeployError, match="quote"):
        dotenv_text({"D": "it's"})


# --- what-if rendering --------------------------------------------------------------------------------------

SCOPE = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/tickcast-dev"
P = f"{SCOPE}/providers"

WHAT_IF = {
    "status": "Succeeded",
    "properties": {
        "changes": [
            {"resourceId": f"{P}/Microsoft.KeyVault/vaults/tickcast-dev-kv", "changeType": "NoChange"},
            {
                "resourceId": f"{P}/Microsoft.Web/sites/tickcast-dev-func",
                "changeType": "Modify",
                "delta": [
                    {
                        "path": "properties.siteConfig.minTlsVersion",
                        "propertyChangeType": "Modify",
                        "before": "1.0",
                        "after": "1.2",
                    },
                    {"path": "tags.owner", "propertyChangeType": "Create", "after": "ml"},
                    {"path": "properties.clientCertEnabled", "propertyChangeType": "Delete", "before": True},
                    {
                        "path": "properties.siteConfig.ipSecurityRestrictions",
                        "propertyChangeType": "Array",
                        "children": [
                            {"path": "0", "propertyChangeType": "Create", "after": {"tag": "ServiceTag"}},
                        ],
                    },
                ],
            },
            {"resourceId": f"{P}/Microsoft.Storage/storageAccounts/tcdevlake", "changeType": "Create"},
            {"resourceId": f"{P}/Microsoft.Network/publicIPAddresses/old-ip", "changeType": "Delete"},
            {
                "resourceId": f"{P}/Microsoft.ContainerService/managedClusters/aks",
                "changeType": "Unsupported",
                "unsupportedReason": "reference() in a condition",
            },
        ]
    },
}


def test_what_if_renders_one_line_per_resource_and_the_deltas_of_a_modify() -> None:
    text = render_what_if(WhatIfOperationResult(WHAT_IF), SCOPE)
    lines = text.splitlines()
    assert f"Scope: {SCOPE}" in lines
    body = lines[lines.index(f"Scope: {SCOPE}") + 1 :]
    assert body[:12] == [
        "  + Microsoft.Storage/storageAccounts/tcdevlake",
        "  - Microsoft.Network/publicIPAddresses/old-ip",
        "  ~ Microsoft.Web/sites/tickcast-dev-func",
        "      - properties.clientCertEnabled: true",
        "      ~ properties.siteConfig.ipSecurityRestrictions: [",
        '          + 0: {"tag": "ServiceTag"}',
        "        ]",
        '      ~ properties.siteConfig.minTlsVersion: "1.0" => "1.2"',
        '      + tags.owner: "ml"',
        "  x Microsoft.ContainerService/managedClusters/aks (reference() in a condition)",
        "  = Microsoft.KeyVault/vaults/tickcast-dev-kv",
        "",
    ]
    assert lines[-1] == "Resource changes: 1 to create, 1 to delete, 1 to modify, 1 unsupported, 1 no change."


def test_a_failed_what_if_raises_its_error() -> None:
    failed = WhatIfOperationResult({"status": "Failed", "error": {"code": "InvalidTemplate", "message": "bad"}})
    with pytest.raises(CloudDeployError, match="what-if failed: InvalidTemplate: bad"):
        render_what_if(failed)


# --- login --------------------------------------------------------------------------------------------------


class RaisingCredential:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.scopes.append(scopes)
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        CredentialUnavailableError(message="DefaultAzureCredential failed to retrieve a token"),
        ClientAuthenticationError(message="AADSTS700016: application not found"),
    ],
)
def test_not_logged_in_says_how_to_log_in(error: Exception) -> None:
    cred = RaisingCredential(error)
    with pytest.raises(NotLoggedInError) as err:
        check_login(cred)  # type: ignore[arg-type]
    msg = str(err.value)
    assert msg.startswith("not logged in to Azure: run `az login`")
    assert "AZURE_CLIENT_ID" in msg and "managed identity" in msg and str(error.message)[:20] in msg
    assert cred.scopes == [(MANAGEMENT_SCOPE,)]


# --- the flow against a stand-in for the Azure control plane ------------------------------------------------


class FakePoller:
    """An LRO poller: not done for ``polls`` waits, then ``result``/``error``."""

    def __init__(self, plane: FakeArmControlPlane, result: Any = None, error: Exception | None = None, polls: int = 0):
        self.plane, self._result, self._error, self._polls = plane, result, error, polls

    def done(self) -> bool:
        return self._polls <= 0

    def wait(self, timeout: float | None = None) -> None:
        self._polls -= 1
        self.plane.tick += 1
        lose = self.plane.lose_login_after
        if lose is not None and self.plane.tick > lose:
            raise ClientAuthenticationError(
                message="AzureCliCredential.get_token failed: AADSTS700024: Client assertion is not within its "
                "valid time range."
            )

    def result(self, timeout: float | None = None) -> Any:
        if self._error is not None:
            raise self._error
        return self._result


class FakeArmControlPlane:
    """Stand-in for the Azure control plane (Azure Resource Manager), the only thing `deploy-cloud` needs that
    cannot run here: resource groups, deployments with their operations, what-if. Records every call; returns
    the real SDK models built from REST-shaped JSON."""

    def __init__(
        self, *, group_exists: bool = False, fail: bool = False, outputs: dict[str, Any] | None = None
    ) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.groups: dict[str, Any] = {"tickcast-dev": "westeurope"} if group_exists else {}
        self.fail = fail
        self.outputs = arm_outputs(outputs if outputs is not None else OUTPUTS)
        self.deployed: dict[str, DeploymentExtended] = {}
        self.tick = 0
        self.lose_login_after: int | None = None  # the credential stops working after this many waits
        self.running_gets = 0  # deployments.get answers Running this many times first
        self.resource_groups = self.deployments = self.deployment_operations = self
        # the group's resources that outlive it when it is deleted (soft delete), as ARM lists them
        group_id = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/tickcast-dev"
        ml, kv = "Microsoft.MachineLearningServices/workspaces", "Microsoft.KeyVault/vaults"
        self.workspaces = [{"id": f"{group_id}/providers/{ml}/tickcast-dev-mlw", "name": "tickcast-dev-mlw"}]
        self.apims = [{"name": "tickcast-dev-apim-x", "location": "West Europe"}]
        self.vaults = [
            {
                "id": f"{group_id}/providers/{kv}/kv-dev-x",
                "name": "kv-dev-x",
                "location": "westeurope",
                "properties": {"enablePurgeProtection": True, "softDeleteRetentionInDays": 90},
            }
        ]
        self.deleted_vaults: list[dict[str, Any]] = []
        self.roles = [
            {
                "id": f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/r1",
                "properties": {
                    "roleName": "tickcast-dev endpoint invoker (tickcast-dev)",
                    "assignableScopes": [group_id],
                },
            },
            {
                "id": f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/r2",
                "properties": {
                    "roleName": "someone else's role",
                    "assignableScopes": [f"/subscriptions/{SUBSCRIPTION}"],
                },
            },
        ]

    # generic REST (ARM)
    def request(self, method: str, path: str, api_version: str, params: Any = None) -> tuple[int, Any]:
        self.calls.append((f"{method} {path.split('/providers/', 1)[-1]}", dict(params or {})))
        group = "tickcast-dev" in self.groups
        if method == "GET" and path.endswith("/Microsoft.MachineLearningServices/workspaces"):
            return 200, {"value": self.workspaces if group else []}
        if method == "GET" and path.endswith("/Microsoft.ApiManagement/service"):
            return 200, {"value": self.apims if group else []}
        if method == "GET" and path.endswith("/Microsoft.KeyVault/vaults"):
            return 200, {"value": self.vaults if group else []}
        if method == "GET" and path.endswith("/Microsoft.KeyVault/deletedVaults"):
            return 200, {"value": self.deleted_vaults}
        if method == "GET" and "/deletedVaults/" in path:
            name = path.rsplit("/", 1)[-1]
            found = [v for v in self.deleted_vaults if v["name"] == name]
            return (200, found[0]) if found else (404, None)
        if method == "GET" and path.endswith("/roleDefinitions"):
            return 200, {"value": self.roles}
        if method == "DELETE" and "/deletedservices/" in path:
            return 202, None
        if method == "DELETE" and "/roleDefinitions/" in path:
            self.roles = [r for r in self.roles if r["id"] != path]
            return 200, None
        if method == "POST" and path.endswith("/purge"):
            return 202, None
        return 404, {"error": {"code": "NotFound", "message": path}}

    def delete_by_id(self, resource_id: str, api_version: str, params: Any = None) -> None:
        self.calls.append(("delete_by_id", (resource_id.rsplit("/", 1)[-1], dict(params or {}))))
        self.workspaces = [w for w in self.workspaces if w["id"] != resource_id]

    # resource_groups
    def check_existence(self, name: str) -> bool:
        self.calls.append(("resource_groups.check_existence", name))
        return name in self.groups

    def create_or_update(self, name: str, group: Any) -> Any:
        self.calls.append(("resource_groups.create_or_update", (name, group.location, dict(group.tags or {}))))
        self.groups[name] = group.location
        return group

    def begin_delete(self, name: str) -> FakePoller:
        self.calls.append(("resource_groups.begin_delete", name))
        self.groups.pop(name)
        for vault in self.vaults:  # Key Vault soft delete: the vault outlives its group
            vault_id = vault["id"]
            self.deleted_vaults.append(
                {
                    "name": vault["name"],
                    "properties": {"vaultId": vault_id, "scheduledPurgeDate": "2027-03-06T12:00:00Z"},
                }
            )
        return FakePoller(self)

    # deployments
    def begin_what_if(self, group: str, name: str, body: Any) -> FakePoller:
        self.calls.append(("deployments.begin_what_if", (group, name, body)))
        return FakePoller(self, WhatIfOperationResult(WHAT_IF))

    def begin_create_or_update(self, group: str, name: str, body: Any) -> FakePoller:
        self.calls.append(("deployments.begin_create_or_update", (group, name, body)))
        self.tick = 0
        if self.fail:
            return FakePoller(
                self, error=HttpResponseError(message="DeploymentFailed: At least one resource failed"), polls=2
            )
        result = DeploymentExtended(
            {"name": name, "properties": {"provisioningState": "Succeeded", "outputs": self.outputs}}
        )
        self.deployed[name] = result
        return FakePoller(self, result, polls=2)

    def get(self, group: str, name: str) -> DeploymentExtended:
        self.calls.append(("deployments.get", (group, name)))
        if name not in self.deployed:
            raise ResourceNotFoundError(message=f"Deployment '{name}' could not be found.")
        if self.running_gets > 0:  # the deployment is still going on in Azure
            self.running_gets -= 1
            return DeploymentExtended({"name": name, "properties": {"provisioningState": "Running"}})
        return self.deployed[name]

    # deployment_operations
    def list(self, group: str, name: str) -> Iterator[DeploymentOperation]:
        last = ("Succeeded", "Failed" if self.fail else "Succeeded")
        states = [("Running", "Running"), ("Succeeded", "Running"), last]
        storage, func = states[min(self.tick, 2)]
        for i, (rtype, rname, state) in enumerate(
            [
                ("Microsoft.Storage/storageAccounts", "tcfixturedevlake", storage),
                ("Microsoft.Web/sites", "tickcast-dev-func", func),
            ]
        ):
            props: dict[str, Any] = {
                "provisioningState": state,
                "duration": "PT12S",
                "targetResource": {"resourceType": rtype, "resourceName": rname},
            }
            if state == "Failed":
                props["statusMessage"] = {"error": {"code": "Conflict", "message": "site name taken"}}
            yield DeploymentOperation({"operationId": str(i), "properties": props})
        yield DeploymentOperation(
            {"operationId": "9", "properties": {"provisioningOperation": "EvaluateDeploymentOutput"}}
        )

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class FakeCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return type("Token", (), {"token": "t", "expires_on": 2**31})()


def deployer(
    tmp_path: Path, ssh_key: Path, plane: FakeArmControlPlane, progress: list[OperationStatus] | None = None
) -> CloudDeployer:
    return CloudDeployer(
        deploy_settings(tmp_path, ssh_key),
        control_plane=plane,
        credential=FakeCredential(),  # type: ignore[arg-type]
        progress=(progress.append if progress is not None else None),
        poll_s=0,
    )


def test_deploy_creates_the_group_deploys_incrementally_and_writes_the_outputs(tmp_path: Path, ssh_key: Path) -> None:
    plane = FakeArmControlPlane()
    seen: list[OperationStatus] = []
    d = deployer(tmp_path, ssh_key, plane, seen)
    d.login()
    plan = d.plan()
    assert (plan.subscription_id, plan.resource_group, plan.deployment_name) == (
        SUBSCRIPTION,
        "tickcast-dev",
        "tickcast-dev",
    )
    result = d.deploy(plan)

    assert plane.names() == [
        "resource_groups.check_existence",
        "resource_groups.create_or_update",
        "GET Microsoft.KeyVault/deletedVaults",  # none of this group's: a new vault (no keyVaultCreateMode)
        "deployments.begin_create_or_update",
    ]
    assert plane.calls[1][1] == ("tickcast-dev", "westeurope", {"app": "tickcast", "env": "dev"})
    group, name, body = plane.calls[3][1]
    assert (group, name) == ("tickcast-dev", "tickcast-dev")
    sent = body.as_dict()["properties"]
    assert sent["mode"] == "Incremental"
    assert sent["template"] == template()
    assert sent["parameters"]["apimPolicyXml"] == {"value": POLICY.read_text(encoding="utf-8")}
    assert sent["parameters"]["sshPublicKey"] == {"value": SSH_KEY}

    # progress: each resource reported when its state changed, in order
    assert [(s.resource, s.state) for s in seen] == [
        ("Microsoft.Storage/storageAccounts/tcfixturedevlake", "Running"),
        ("Microsoft.Web/sites/tickcast-dev-func", "Running"),
        ("Microsoft.Storage/storageAccounts/tcfixturedevlake", "Succeeded"),
        ("Microsoft.Web/sites/tickcast-dev-func", "Succeeded"),
    ]
    assert result.created_resource_group and result.outputs == OUTPUTS and result.missing_outputs == []
    assert result.env_file == tmp_path / "out" / "dev.env"
    assert load_settings(_env_file=result.env_file).aml.workspace == "tickcast-dev-mlw"

    # a second deploy: the group exists, nothing else is created
    plane.calls.clear()
    assert not d.deploy(plan).created_resource_group
    assert "resource_groups.create_or_update" not in plane.names()


def test_a_failed_deployment_names_the_failed_resources(tmp_path: Path, ssh_key: Path) -> None:
    plane = FakeArmControlPlane(group_exists=True, fail=True)
    d = deployer(tmp_path, ssh_key, plane)
    with pytest.raises(CloudDeployError) as err:
        d.deploy(d.plan())
    msg = str(err.value)
    assert "ended Failed: DeploymentFailed" in msg
    assert "Microsoft.Web/sites/tickcast-dev-func: Conflict: site name taken" in msg
    assert not (tmp_path / "out" / "dev.env").exists()


def test_what_if_changes_nothing(tmp_path: Path, ssh_key: Path) -> None:
    plane = FakeArmControlPlane(group_exists=True)
    d = deployer(tmp_path, ssh_key, plane)
    text = d.what_if(d.plan())
    assert plane.names() == ["resource_groups.check_existence", "deployments.begin_what_if"]
    body = plane.calls[1][1][2].as_dict()["properties"]
    assert body["mode"] == "Incremental" and "apimPolicyXml" in body["parameters"]
    assert "  ~ Microsoft.Web/sites/tickcast-dev-func" in text and "Resource changes: 1 to create" in text


def test_what_if_without_the_group_creates_nothing(tmp_path: Path, ssh_key: Path) -> None:
    plane = FakeArmControlPlane()
    d = deployer(tmp_path, ssh_key, plane)
    text = d.what_if(d.plan())
    assert plane.names() == ["resource_groups.check_existence"]
    assert "Resource group tickcast-dev does not exist" in text
    assert "  + Microsoft.Storage/storageAccounts [variables('lakeAccount')]" in text


def test_outputs_only_reads_the_last_deployment(tmp_path: Path, ssh_key: Path) -> None:
    plane = FakeArmControlPlane(group_exists=True)
    d = deployer(tmp_path, ssh_key, plane)
    with pytest.raises(CloudDeployError, match="run `tickcast deploy-cloud --env dev` first"):
        d.fetch_outputs()
    d.deploy(d.plan())
    (tmp_path / "out" / "dev.env").unlink()
    outputs, env_file, _, missing = d.fetch_outputs()
    assert outputs == OUTPUTS and env_file.is_file() and missing == []


def test_destroy_deletes_the_group_once(tmp_path: Path, ssh_key: Path) -> None:
    plane = FakeArmControlPlane(group_exists=True)
    d = deployer(tmp_path, ssh_key, plane)
    assert d.destroy() is not None
    assert d.destroy() is None
    assert plane.names().count("resource_groups.begin_delete") == 1


def test_destroy_purges_what_blocks_a_redeploy_and_says_what_remains_until_when(tmp_path: Path, ssh_key: Path) -> None:
    plane = FakeArmControlPlane(group_exists=True)
    report = deployer(tmp_path, ssh_key, plane).destroy()
    assert report is not None
    names = plane.names()
    # the workspace is purged BEFORE the group goes (deleting the group would only soft-delete it for 14 days)
    purge = names.index("delete_by_id")
    assert plane.calls[purge][1] == ("tickcast-dev-mlw", {"forceToPurge": "true"})
    assert purge < names.index("resource_groups.begin_delete")
    after = names[names.index("resource_groups.begin_delete") :]
    assert "DELETE Microsoft.ApiManagement/locations/westeurope/deletedservices/tickcast-dev-apim-x" in after
    assert "DELETE Microsoft.Authorization/roleDefinitions/r1" in after  # the group's invoker role
    assert "DELETE Microsoft.Authorization/roleDefinitions/r2" not in names  # not ours
    assert not any(n.endswith("/purge") for n in names)  # purge protection: the vault cannot be purged
    assert report.purged == [
        "AML workspace tickcast-dev-mlw (deleted with forceToPurge)",
        "API Management tickcast-dev-apim-x (soft-deleted copy purged)",
        "custom role 'tickcast-dev endpoint invoker (tickcast-dev)'",
    ]
    vault = next(line for line in report.remaining if line.startswith("Key Vault"))
    assert "kv-dev-x stays soft-deleted until 2027-03-06" in vault and "deploy-cloud` to resource group" in vault


def test_a_vault_without_purge_protection_is_purged(tmp_path: Path, ssh_key: Path) -> None:
    plane = FakeArmControlPlane(group_exists=True)
    plane.vaults[0]["properties"]["enablePurgeProtection"] = False
    report = deployer(tmp_path, ssh_key, plane).destroy()
    assert report is not None and "Key Vault kv-dev-x (soft-deleted copy purged)" in report.purged
    assert "POST Microsoft.KeyVault/locations/westeurope/deletedVaults/kv-dev-x/purge" in plane.names()


def test_the_next_deploy_recovers_the_groups_soft_deleted_vault(tmp_path: Path, ssh_key: Path) -> None:
    plane = FakeArmControlPlane(group_exists=True)
    d = deployer(tmp_path, ssh_key, plane)
    d.destroy()
    fresh = deployer(tmp_path, ssh_key, plane)
    fresh.deploy(fresh.plan())
    (_, (_, _, body)) = next(c for c in plane.calls if c[0] == "deployments.begin_create_or_update")
    assert body.properties.parameters["keyVaultCreateMode"].value == "recover"
    plane.deleted_vaults.clear()
    plane.calls.clear()
    again = deployer(tmp_path, ssh_key, plane)
    again.deploy(again.plan())
    (_, (_, _, body)) = next(c for c in plane.calls if c[0] == "deployments.begin_create_or_update")
    assert "keyVaultCreateMode" not in body.properties.parameters  # the template's default: a new vault


def test_a_login_lost_while_waiting_is_one_line_and_resume_waits_again(tmp_path: Path, ssh_key: Path) -> None:
    plane = FakeArmControlPlane()
    plane.lose_login_after = 1
    d = deployer(tmp_path, ssh_key, plane)
    with pytest.raises(cloud_deploy.LoginLostError) as info:
        d.deploy(d.plan())
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert "lost the Azure login while waiting for deployment tickcast-dev" in message
    assert "your Azure login has expired (AADSTS700024)" in message
    assert "`tickcast deploy-cloud --resume --env dev`" in message
    assert not (tmp_path / "out" / "dev.env").exists()

    plane.lose_login_after = None
    plane.running_gets = 2  # still running for two more polls
    result = deployer(tmp_path, ssh_key, plane).resume()
    assert result.outputs == OUTPUTS and (tmp_path / "out" / "dev.env").is_file()
    assert plane.names().count("deployments.get") == 3


def test_resume_without_a_deployment_says_so(tmp_path: Path, ssh_key: Path) -> None:
    with pytest.raises(CloudDeployError, match="nothing to resume"):
        deployer(tmp_path, ssh_key, FakeArmControlPlane()).resume()


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "AADSTS700082: The refresh token has expired due to inactivity.",
            "your Azure login has expired (AADSTS700082)",
        ),
        (
            "AADSTS700024: Client assertion is not within its valid time range.",
            "your Azure login has expired (AADSTS7000",
        ),
        ("Please run 'az login' to setup account.", "not logged in to Azure: run `az login`"),
    ],
)
def test_an_expired_login_is_told_from_a_missing_one(message: str, expected: str) -> None:
    line = cloud_deploy.login_problem(ClientAuthenticationError(message=message))
    assert line.startswith(expected) and "\n" not in line and message[:30] in line


def test_in_azure_pipelines_the_control_plane_credential_renews_its_federated_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from azure.identity import AzurePipelinesCredential

    from tickcast.azure import PIPELINES_VARIABLES, control_plane_credential

    settings = load_settings(_env_file=None)
    assert not isinstance(control_plane_credential(settings), AzurePipelinesCredential)
    for name in PIPELINES_VARIABLES:
        monkeypatch.setenv(name, "00000000-0000-4000-8000-0000000000aa")
    assert isinstance(control_plane_credential(settings), AzurePipelinesCredential)
    monkeypatch.setenv("SYSTEM_ACCESSTOKEN", "")  # not mapped into the task: the CLI login as before
    assert not isinstance(control_plane_credential(settings), AzurePipelinesCredential)


def test_no_subscription_names_the_variable(tmp_path: Path, ssh_key: Path) -> None:
    d = CloudDeployer(deploy_settings(tmp_path, ssh_key, subscription_id=None), subscription_lookup=lambda: None)
    with pytest.raises(CloudDeployError, match="TICKCAST_CLOUD_DEPLOY__SUBSCRIPTION_ID or pass --subscription"):
        d.plan()


# --- the CLI ------------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, ssh_key: Path, monkeypatch: pytest.MonkeyPatch) -> FakeArmControlPlane:
    plane = FakeArmControlPlane()
    for key, value in {
        ("cloud_deploy", "template"): TEMPLATE,
        ("cloud_deploy", "parameters_dir"): FIXTURES / "parameters",
        ("cloud_deploy", "output_dir"): tmp_path / "out",
        ("cloud_deploy", "subscription_id"): SUBSCRIPTION,
        ("cloud_deploy", "ssh_public_key_path"): ssh_key,
        ("cloud_deploy", "apim_publisher_email"): "ops@example.com",
    }.items():
        monkeypatch.setenv(env_name(*key), str(value))
    monkeypatch.setattr(cloud_deploy.deployer, "AzureControlPlane", lambda credential, subscription: plane)
    monkeypatch.setattr("tickcast.azure.credential", lambda settings=None: FakeCredential())
    return plane


def test_cli_deploy_what_if_and_destroy(cli_env: FakeArmControlPlane, tmp_path: Path) -> None:
    from tickcast.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["deploy-cloud"])
    assert missing.exit_code == 1
    assert "TICKCAST_CLOUD_DEPLOY__APIM_PUBLISHER_NAME or pass --apim-publisher-name" in missing.output
    assert cli_env.calls == []  # stopped before Azure

    plan = runner.invoke(app, ["deploy-cloud", "--what-if", "--apim-publisher-name", "ops"])
    assert plan.exit_code == 0, plan.output
    assert "Resource group tickcast-dev does not exist" in plan.output and "nothing was changed" in plan.output
    assert "resource_groups.create_or_update" not in cli_env.names()

    done = runner.invoke(app, ["deploy-cloud", "--apim-publisher-name", "ops"])
    assert done.exit_code == 0, done.output
    assert "apimGatewayUrl" in done.output and str(tmp_path / "out" / "dev.env") in done.output.replace("\n", "")

    wrong = runner.invoke(app, ["destroy-cloud"], input="tickcast-prod\n")
    assert wrong.exit_code == 1 and "nothing was deleted" in wrong.output
    assert "resource_groups.begin_delete" not in cli_env.names()
    gone = runner.invoke(app, ["destroy-cloud"], input="tickcast-dev\n")
    assert gone.exit_code == 0 and "deleted resource group tickcast-dev" in gone.output, gone.output
    assert "purged: AML workspace tickcast-dev-mlw" in gone.output
    assert "remains: Key Vault kv-dev-x stays soft-deleted until 2027-03-06" in gone.output
    again = runner.invoke(app, ["destroy-cloud", "--yes"])
    assert again.exit_code == 0 and "does not exist" in again.output


def test_cli_not_logged_in_is_one_clear_line(cli_env: FakeArmControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    from tickcast.cli import app

    monkeypatch.setattr(
        "tickcast.azure.credential", lambda settings=None: RaisingCredential(CredentialUnavailableError(message="x"))
    )
    result = CliRunner().invoke(app, ["destroy-cloud", "--yes"])
    assert result.exit_code == 1 and "not logged in to Azure: run `az login`" in result.output
    assert cli_env.calls == []


def test_the_cli_does_not_import_the_azure_management_sdk() -> None:
    code = "import sys, tickcast.cli; print(sorted(m for m in sys.modules if m.startswith('azure.mgmt')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_assembled_parameter_file_points_at_the_template(tmp_path: Path, ssh_key: Path) -> None:
    """What the pipeline hands to PSRule for Azure: a complete deploymentParameters file, offline."""
    d = CloudDeployer(deploy_settings(tmp_path, ssh_key, subscription_id=None), subscription_lookup=lambda: None)
    out = d.write_parameters(tmp_path / "validate" / "dev.parameters.json")
    body = json.loads(out.read_text())
    assert body["$schema"].endswith("deploymentParameters.json#")
    assert (out.parent / body["metadata"]["template"]).resolve() == TEMPLATE.resolve()
    assert body["parameters"]["apimPolicyXml"]["value"] == POLICY.read_text(encoding="utf-8")
    required = {n for n, spec in template()["parameters"].items() if "defaultValue" not in spec}
    assert required <= set(body["parameters"])
