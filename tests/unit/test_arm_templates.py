"""cloud/arm, checked offline with cloud/validate/arm_checks.py (standard library + jsonschema, no tool venv).

* ``main.json`` is exactly what ``cloud/arm/build.py`` generates;
* every template and parameter file under cloud/arm is valid JSON and passes its schema; ``parameters/dev.json``
  fits the template (declared names, allowed values, nothing per-user or secret in the file);
* every check of ``arm_checks.ALL_CHECKS`` passes on ``main.json``: names (no checkov-blind functions, valid
  storage names), role assignments (managed identities, narrow scope), a DNS zone group for every private
  endpoint, symmetric peerings, no public IP on a host and no password, every resource type of the system, the
  parameters/outputs of the deploy command;
* facts of the issue the checks do not cover: lake storage settings, Function identity and VNet integration,
  the APIM policy from ``cloud/apim/policy.xml``, AKS attached to AML as Kubernetes compute.

Each check is also run on a copy of the template broken in one place, to see it fail.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.cloud_validators import ARM, arm_checks, build
from tickcast.settings import PROJECT_ROOT

Template = dict[str, Any]


@pytest.fixture(scope="module")
def template() -> Template:
    data: Template = json.loads((ARM / "main.json").read_text())
    return data


def resources_of(template: Template, type_: str) -> list[dict[str, Any]]:
    return [r for r in template["resources"] if r["type"] == type_]


def one(template: Template, type_: str, name_part: str = "") -> dict[str, Any]:
    found = [r for r in resources_of(template, type_) if name_part in r["name"]]
    assert len(found) == 1, f"{type_} {name_part!r}: {[r['name'] for r in found]}"
    return found[0]


# --- generated, valid JSON, schema --------------------------------------------------------------------------


def test_main_json_is_what_build_py_generates() -> None:
    assert (ARM / "main.json").read_text() == build.render(), "run: .venv/bin/python cloud/arm/build.py"
    done = subprocess.run([sys.executable, str(ARM / "build.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_build_check_fails_when_main_json_was_edited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edited = tmp_path / "main.json"
    edited.write_text(build.render().replace('"TLS1_2"', '"TLS1_0"', 1))
    monkeypatch.setattr(build, "MAIN", edited)
    assert build.main(["--check"]) == 1


def test_every_json_file_under_cloud_arm_parses() -> None:
    files = sorted(ARM.rglob("*.json"))
    assert ARM / "main.json" in files and ARM / "parameters" / "dev.json" in files
    for path in files:
        assert isinstance(json.loads(path.read_text()), dict), path


def test_every_template_passes_the_schema() -> None:
    templates = [p for p in ARM.rglob("*.json") if "deploymentTemplate.json" in p.read_text()]
    assert templates
    for path in templates:
        assert arm_checks.check_template_schema(arm_checks.load(path)) == [], path


def test_every_parameter_file_fits_the_template(template: Template) -> None:
    files = sorted((ARM / "parameters").glob("*.json"))
    assert [p.stem for p in files] == ["dev"]
    for path in files:
        assert arm_checks.check_parameters_file(template, arm_checks.load(path)) == [], path


@pytest.mark.parametrize("name", sorted(arm_checks.ALL_CHECKS))
def test_each_check_passes_on_main_json(template: Template, name: str) -> None:
    assert arm_checks.ALL_CHECKS[name](template) == []


def test_the_walk_sees_every_resource(template: Template) -> None:
    assert len(list(arm_checks.iter_resources(template))) == len(template["resources"]) == 102


# --- facts of the issue -------------------------------------------------------------------------------------


def test_the_lake_refuses_public_access_and_old_tls(template: Template) -> None:
    for account in resources_of(template, "Microsoft.Storage/storageAccounts"):
        props = account["properties"]
        assert props["allowBlobPublicAccess"] is False
        assert props["minimumTlsVersion"] == "TLS1_2"
        assert props["publicNetworkAccess"] == "Disabled"
        assert props["allowSharedKeyAccess"] is False  # Entra ID only: no key or SAS can be used
    endpoints = [r["name"] for r in resources_of(template, "Microsoft.Network/privateEndpoints")]
    assert any("pe-lake-blob" in name for name in endpoints)


def test_no_name_uses_a_function_checkov_cannot_see_through(template: Template) -> None:
    text = json.dumps([r["name"] for r in template["resources"]] + list(template["variables"].values()))
    for function in arm_checks.CHECKOV_BLIND_FUNCTIONS:
        assert function.lower() not in text.lower()
    assert "uniqueString(resourceGroup().id)" in text


def test_aks_is_the_aml_kubernetes_compute(template: Template) -> None:
    compute = one(template, "Microsoft.MachineLearningServices/workspaces/computes", "amlComputeName")
    assert compute["properties"]["computeType"] == "Kubernetes"
    assert "Microsoft.ContainerService/managedClusters" in compute["properties"]["resourceId"]
    extension = one(template, "Microsoft.KubernetesConfiguration/extensions")
    assert extension["properties"]["extensionType"] == "Microsoft.AzureML.Kubernetes"
    endpoint = one(template, "Microsoft.MachineLearningServices/workspaces/onlineEndpoints")
    assert endpoint["kind"] == "K8s"
    workspace = one(template, "Microsoft.MachineLearningServices/workspaces")
    for part in ("keyVault", "applicationInsights", "containerRegistry", "storageAccount"):
        assert workspace["properties"][part].startswith("[resourceId(")


def test_the_function_app_is_linux_python_with_its_identity_and_vnet(template: Template) -> None:
    site = one(template, "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    assert site["identity"] == {"type": "SystemAssigned"}
    assert "snet-func" in site["properties"]["virtualNetworkSubnetId"]
    assert site["properties"]["functionAppConfig"]["runtime"]["name"] == "python"
    settings = {s["name"] for s in site["properties"]["siteConfig"]["appSettings"]}
    assert not {s for s in settings if "ConnectionString" in s or s == "AzureWebJobsStorage"}


def test_apim_serves_the_api_with_product_keys_and_the_deployed_policy(template: Template) -> None:
    api = one(template, "Microsoft.ApiManagement/service/apis")
    assert api["properties"]["subscriptionRequired"] is True
    assert api["properties"]["subscriptionKeyParameterNames"]["header"] == "Ocp-Apim-Subscription-Key"
    policy = one(template, "Microsoft.ApiManagement/service/apis/policies")
    assert policy["properties"] == {"format": "rawxml", "value": "[parameters('apimPolicyXml')]"}
    assert "apimPolicyXml" not in json.loads((ARM / "parameters" / "dev.json").read_text())["parameters"]
    assert one(template, "Microsoft.ApiManagement/service/products")["properties"]["subscriptionRequired"] is True
    assert resources_of(template, "Microsoft.ApiManagement/service/subscriptions")


def test_every_role_assignment_is_listed_with_its_scope(template: Template) -> None:
    assignments = resources_of(template, "Microsoft.Authorization/roleAssignments")
    assert len(assignments) == 13
    for assignment in assignments:
        scope = assignment["scope"]
        assert "resourceGroup().id" not in scope and "subscription()" not in scope
        assert arm_checks.principal_source(template, assignment["properties"]["principalId"]) is not None


# --- each check, broken once --------------------------------------------------------------------------------

Breakage = Callable[[Template], None]


def find(t: Template, type_: str, name_part: str = "") -> dict[str, Any]:
    return next(r for r in t["resources"] if r["type"] == type_ and name_part in r["name"])


def _schema(t: Template) -> None:
    find(t, "Microsoft.KeyVault/vaults")["propertis"] = {}


def _linked_template(t: Template) -> None:
    t["resources"].append(
        {
            "type": "Microsoft.Resources/deployments",
            "apiVersion": "2022-09-01",
            "name": "linked",
            "properties": {"mode": "Incremental", "templateLink": {"uri": "https://example.invalid/t.json"}},
        }
    )


def _blind_name(t: Template) -> None:
    find(t, "Microsoft.KeyVault/vaults")["name"] = "[toLower(variables('keyVaultName'))]"


def _blind_variable(t: Template) -> None:
    t["variables"]["acrName"] = "[toLower(concat('tc', parameters('env'), 'acr'))]"


def _long_storage_name(t: Template) -> None:
    t["variables"]["lakeAccountName"] = "[concat('tickcastlakestore', parameters('env'), uniqueString('x'))]"


def _user_principal(t: Template) -> None:
    find(t, "Microsoft.Authorization/roleAssignments")["properties"]["principalId"] = "[parameters('adminUsername')]"


def _workspace_identity(t: Template) -> None:
    """An assignment to the AML workspace's own system identity, which AML already made."""
    assignment = copy.deepcopy(find(t, "Microsoft.Authorization/roleAssignments"))
    assignment["properties"]["principalId"] = (
        "[reference(resourceId('Microsoft.MachineLearningServices/workspaces', variables('amlWorkspaceName')), "
        "'2025-12-01', 'Full').identity.principalId]"
    )
    t["resources"].append(assignment)


def _group_scope(t: Template) -> None:
    assignment = find(t, "Microsoft.Authorization/roleAssignments")
    assignment["scope"] = "[resourceGroup().id]"


def _unscoped(t: Template) -> None:
    del find(t, "Microsoft.Authorization/roleAssignments")["scope"]


def _no_zone_group(t: Template) -> None:
    group = find(t, "Microsoft.Network/privateEndpoints/privateDnsZoneGroups", "pe-kv")
    t["resources"].remove(group)


def _one_way_peering(t: Template) -> None:
    t["resources"].remove(find(t, "Microsoft.Network/virtualNetworks/virtualNetworkPeerings", "compute-to-data"))


def _public_ip_on_a_host(t: Template) -> None:
    nic = find(t, "Microsoft.Network/networkInterfaces", "brokerNicName")
    nic["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"] = {"id": "[resourceId('x', 'y')]"}


def _password(t: Template) -> None:
    vm = find(t, "Microsoft.Compute/virtualMachines", "mlflowVmName")
    vm["properties"]["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] = False
    vm["properties"]["osProfile"]["adminPassword"] = "[parameters('adminPassword')]"
    t["parameters"]["adminPassword"] = {"type": "securestring", "metadata": {"description": "x"}}


def _unused_variable(t: Template) -> None:
    t["variables"]["suffix"] = "[uniqueString(resourceGroup().id)]"


def _no_aks(t: Template) -> None:
    t["resources"] = [r for r in t["resources"] if r["type"] != "Microsoft.ContainerService/managedClusters"]


def _no_output(t: Template) -> None:
    del t["outputs"]["lakeAccountUrl"]


def _policy_default(t: Template) -> None:
    t["parameters"]["apimPolicyXml"]["defaultValue"] = "<policies/>"


BREAKAGES: list[tuple[str, Breakage, str]] = [
    ("schema", _schema, "propertis"),
    ("schema", _linked_template, "templateLink"),
    ("names", _blind_name, "toLower("),
    ("names", _blind_variable, "toLower("),
    ("names", _long_storage_name, "max 24"),
    ("role_assignments", _user_principal, "is not a managed identity"),
    ("role_assignments", _group_scope, "resource group or subscription"),
    ("role_assignments", _workspace_identity, "RoleAssignmentExists"),
    ("role_assignments", _unscoped, "resource group or subscription"),
    ("private_endpoints", _no_zone_group, "no privateDnsZoneGroups"),
    ("peerings", _one_way_peering, "has no reverse peering"),
    ("no_public_ips_or_passwords", _public_ip_on_a_host, "has a public IP address"),
    ("no_public_ips_or_passwords", _password, "adminPassword"),
    ("references", _unused_variable, "variable 'suffix' is declared but never used"),
    ("required_types", _no_aks, "Microsoft.ContainerService/managedClusters"),
    ("interface", _no_output, "lakeAccountUrl"),
    ("interface", _policy_default, "must have no default"),
]


@pytest.mark.parametrize(
    ("check", "breakage", "expected"), BREAKAGES, ids=[f"{c}-{b.__name__[1:]}" for c, b, _ in BREAKAGES]
)
def test_each_check_fails_on_a_broken_copy(template: Template, check: str, breakage: Breakage, expected: str) -> None:
    broken = copy.deepcopy(template)
    breakage(broken)
    problems = arm_checks.ALL_CHECKS[check](broken)
    assert any(expected in p for p in problems), problems


def test_every_check_is_broken_at_least_once() -> None:
    assert {check for check, _, _ in BREAKAGES} == set(arm_checks.ALL_CHECKS)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"apimPolicyXml": {"value": "<policies/>"}}, "filled by the deploy command"),
        ({"env": {"value": "staging"}}, "is not one of"),
        ({"colour": {"value": "blue"}}, "not declared"),
        ({"env": {"valu": "dev"}}, "is not valid under any of the given schemas"),
    ],
)
def test_the_parameter_file_check_fails_on_a_broken_copy(
    template: Template, change: dict[str, Any], expected: str
) -> None:
    parameters = json.loads((ARM / "parameters" / "dev.json").read_text())
    parameters["parameters"].update(change)
    problems = arm_checks.check_parameters_file(template, parameters)
    assert any(expected in p for p in problems), problems


def test_a_missing_required_parameter_is_caught(template: Template) -> None:
    parameters = json.loads((ARM / "parameters" / "dev.json").read_text())
    del parameters["parameters"]["env"]
    assert any("'env'" in p for p in arm_checks.check_parameters_file(template, parameters))


# --- what a real deployment needs to serve (issue: the overlay deploys and serves end to end) ---------------------


def test_the_function_admits_only_its_apim_instances_gateway_address(template: Template) -> None:
    site = one(template, "Microsoft.Web/sites")
    restrictions = site["properties"]["siteConfig"]["ipSecurityRestrictions"]
    assert site["properties"]["siteConfig"]["ipSecurityRestrictionsDefaultAction"] == "Deny"
    assert [r.get("tag") for r in restrictions] == [None]  # no service tag: ApiManagement is APIM's control plane
    (rule,) = restrictions
    assert rule["action"] == "Allow"
    assert "Microsoft.ApiManagement/service" in rule["ipAddress"] and ".publicIPAddresses[0]" in rule["ipAddress"]
    assert any("Microsoft.ApiManagement/service'" in d for d in site["dependsOn"])


def test_the_function_subnet_has_egress_for_the_aml_token_api(template: Template) -> None:
    vnet = one(template, "Microsoft.Network/virtualNetworks", "vnetComputeName")
    subnets = {s["name"]: s["properties"] for s in vnet["properties"]["subnets"]}
    assert "natGateways" in subnets["snet-func"]["natGateway"]["id"]
    assert subnets["snet-func"]["defaultOutboundAccess"] is False


def test_the_kubernetes_compute_uses_a_namespace_every_cluster_has(template: Template) -> None:
    compute = one(template, "Microsoft.MachineLearningServices/workspaces/computes", "amlComputeName")
    assert compute["properties"]["properties"]["namespace"] == "default"


def test_the_endpoint_takes_aml_tokens_and_the_function_may_get_them(template: Template) -> None:
    endpoint = one(template, "Microsoft.MachineLearningServices/workspaces/onlineEndpoints")
    assert endpoint["properties"]["authMode"] == "[parameters('amlEndpointAuthMode')]"
    assert template["parameters"]["amlEndpointAuthMode"]["defaultValue"] == "AMLToken"
    assert "AADToken" not in template["parameters"]["amlEndpointAuthMode"]["allowedValues"]
    role = one(template, "Microsoft.Authorization/roleDefinitions")
    assert (
        "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/token/action"
        in role["properties"]["permissions"][0]["actions"]
    )


def test_the_airflow_identity_may_upload_to_the_workspace_storage(template: Template) -> None:
    assignments = resources_of(template, "Microsoft.Authorization/roleAssignments")
    airflow_on_ml_storage = [
        a
        for a in assignments
        if "idAirflowName" in a["properties"]["principalId"]
        and "mlStorageName" in a["scope"]
        and "roleStorageBlobDataContributor" in a["properties"]["roleDefinitionId"]
    ]
    assert len(airflow_on_ml_storage) == 1


def test_the_airflow_host_runs_airflow_like_the_local_stack_and_the_producer() -> None:
    import tomllib

    local = tomllib.loads((PROJECT_ROOT / "local" / "stack.toml").read_text())["services"]["airflow"]["env"]
    cloud = build.AIRFLOW_CLOUD_ENV
    # what only the laptop needs: every user an admin without a login (the host's API is reachable in the VNet)
    local_only = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"}
    assert set(local) - local_only <= set(cloud), set(local) - local_only - set(cloud)
    assert (
        cloud["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/tickcast/dags" and (PROJECT_ROOT / "dags" / "ingest.py").is_file()
    )
    assert cloud["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert cloud["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert cloud["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"  # nothing on the host unpauses them
    init = build.CLOUD_INIT["airflow"]
    for key, value in cloud.items():
        assert f"{key}={value}" in init
    assert "EnvironmentFile=/etc/tickcast/airflow.env" in init
    assert "ExecStart=/opt/tickcast/.venv/bin/tickcast produce" in init  # the producer feeds Kafka
    assert "systemctl enable tickcast-airflow tickcast-producer" in init
    # its metadata database is PostgreSQL on the host, as in the local stack (not SQLite): over the Unix socket,
    # peer authentication as the service's user, no password anywhere
    conn = cloud["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert conn.startswith("postgresql+psycopg2://") and "host=/var/run/postgresql" in conn
    assert "@" not in conn and "password" not in conn.lower() and "sqlite" not in init
    assert "  - postgresql\n" in init.split("write_files:")[0], "the package comes with the host"
    assert "Requires=postgresql.service" in init and "User=" not in init  # root: peer auth maps it to role root
    assert f'CREATE ROLE {build.AIRFLOW_DB_ROLE} LOGIN"' in init
    assert f"createdb --owner {build.AIRFLOW_DB_ROLE} airflow" in init
    assert init.index("systemctl enable --now postgresql") < init.index("CREATE ROLE")
