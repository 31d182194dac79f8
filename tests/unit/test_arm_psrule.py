"""PSRule for Azure on cloud/arm/main.json, replicated offline (cloud/validate/psrule_checks.py + cloud/ps-rule.yaml).

* ``cloud/ps-rule.yaml`` pins the module version and the quarterly baseline, and every exclusion has its reason;
  every suppression still names a resource of the template (none is stale);
* every replicated rule that the options keep reports nothing on ``main.json`` expanded with the dev parameters
  (``parameters/dev.json`` plus the per-user values the deploy command adds);
* each replicated rule, broken once on a copy of the template, reports the defect; an excluded rule reports
  nothing, a suppressed target is skipped.

The pipeline's Validate stage still runs the real ``Assert-PSRule`` with the same options file.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.support.cloud_validators import ARM, PIPELINE, psrule_checks
from tickcast.settings import PROJECT_ROOT

Template = dict[str, Any]
OPTIONS = PROJECT_ROOT / "cloud" / "ps-rule.yaml"


@pytest.fixture(scope="module")
def template() -> Template:
    data: Template = json.loads((ARM / "main.json").read_text())
    return data


@pytest.fixture(scope="module")
def parameters() -> dict[str, Any]:
    values: dict[str, Any] = psrule_checks.parameter_values(
        json.loads((ARM / "parameters" / "dev.json").read_text()),
        apimPolicyXml=(PROJECT_ROOT / "cloud" / "apim" / "policy.xml").read_text(),
        sshPublicKey="ssh-rsa AAAAB3NzaC1yc2E test",
        apimPublisherEmail="ops@example.com",
    )
    return values


@pytest.fixture(scope="module")
def options() -> Any:
    return psrule_checks.load_options(OPTIONS)


def test_the_options_pin_the_rules_and_give_every_exclusion_a_reason(options: Any) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", options.module_version), "pin one PSRule.Rules.Azure version"
    assert re.fullmatch(r"Azure\.GA_\d{4}_\d{2}", options.baseline), "pin a quarterly GA baseline"
    assert options.excluded
    for rule, reason in options.excluded.items():
        assert re.fullmatch(r"Azure\.\w+\.\w+", rule), rule
        assert len(reason) >= 30, f"{rule}: say why it is excluded (a comment line above it)"


def test_the_pipeline_runs_psrule_with_these_options(options: Any) -> None:
    pipeline = yaml.safe_load(PIPELINE.read_text())
    validate = next(s for s in pipeline["stages"] if s["stage"] == "Validate")
    script = "\n".join(
        step.get("inputs", {}).get("script", "") for job in validate["jobs"] for step in job.get("steps", [])
    )
    assert "Assert-PSRule" in script
    assert "ps-rule.yaml" in script and "-Baseline '@tickcast'" in script
    assert f"-RequiredVersion {options.module_version}" in script


def test_no_suppression_is_stale(template: Template, parameters: dict[str, Any], options: Any) -> None:
    assert options.suppressed
    assert psrule_checks.suppressed_targets(template, parameters, options) == []


def test_every_kept_rule_passes_on_main_json(template: Template, parameters: dict[str, Any], options: Any) -> None:
    report = psrule_checks.evaluate(template, parameters, options)
    assert len(report) >= 60
    assert {rule: problems for rule, problems in report.items() if problems} == {}
    assert not set(report) & set(options.excluded)


# --- each rule, broken once ----------------------------------------------------------------------------------------


def first(t: Template, type_: str, name_part: str = "") -> dict[str, Any]:
    return next(r for r in t["resources"] if r["type"] == type_ and name_part in r["name"])


def setter(type_: str, path: str, value: Any, name_part: str = "") -> Callable[[Template], None]:
    def apply(t: Template) -> None:
        node = first(t, type_, name_part)
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return apply


def remover(type_: str, name_part: str = "") -> Callable[[Template], None]:
    def apply(t: Template) -> None:
        t["resources"] = [r for r in t["resources"] if not (r["type"] == type_ and name_part in r["name"])]

    return apply


def pool(field: str, value: Any) -> Callable[[Template], None]:
    def apply(t: Template) -> None:
        first(t, AKS)["properties"]["agentPoolProfiles"][0][field] = value

    return apply


def rule_edit(nsg: str, rules: list[dict[str, Any]]) -> Callable[[Template], None]:
    def apply(t: Template) -> None:
        first(t, NSG, nsg)["properties"]["securityRules"] = rules

    return apply


def policy(xml: str) -> Callable[[Template], None]:
    return setter("Microsoft.ApiManagement/service/apis/policies", "properties.value", xml)


ST, KV, ACR = "Microsoft.Storage/storageAccounts", "Microsoft.KeyVault/vaults", "Microsoft.ContainerRegistry/registries"
AKS, APIM, SITE = "Microsoft.ContainerService/managedClusters", "Microsoft.ApiManagement/service", "Microsoft.Web/sites"
VM, NSG, VNET = (
    "Microsoft.Compute/virtualMachines",
    "Microsoft.Network/networkSecurityGroups",
    "Microsoft.Network/virtualNetworks",
)
ML = "Microsoft.MachineLearningServices/workspaces"
TLS10 = "Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls10"
ALLOW_ANY_IN: dict[str, Any] = {
    "name": "any",
    "properties": {
        "priority": 100,
        "direction": "Inbound",
        "access": "Allow",
        "protocol": "*",
        "sourceAddressPrefix": "*",
        "sourcePortRange": "*",
        "destinationAddressPrefix": "*",
        "destinationPortRange": "*",
    },
}
DENY_ANY_IN = copy.deepcopy(ALLOW_ANY_IN)
DENY_ANY_IN["properties"]["access"] = "Deny"

BREAKAGES: list[tuple[str, Callable[[Template], None]]] = [
    ("Azure.Storage.SecureTransfer", setter(ST, "properties.supportsHttpsTrafficOnly", False)),
    ("Azure.Storage.MinTLS", setter(ST, "properties.minimumTlsVersion", "TLS1_0")),
    ("Azure.Storage.BlobPublicAccess", setter(ST, "properties.allowBlobPublicAccess", True)),
    ("Azure.Storage.Firewall", setter(ST, "properties.networkAcls.defaultAction", "Allow")),
    ("Azure.Storage.LocalAuth", setter(ST, "properties.allowSharedKeyAccess", True)),
    ("Azure.Storage.UseReplication", setter(ST, "sku.name", "Standard_LRS")),
    ("Azure.Storage.SoftDelete", remover(f"{ST}/blobServices", "mlStorageName")),
    (
        "Azure.Storage.ContainerSoftDelete",
        setter(f"{ST}/blobServices", "properties.containerDeleteRetentionPolicy", {}),
    ),
    ("Azure.Storage.BlobAccessType", setter(f"{ST}/blobServices/containers", "properties.publicAccess", "Blob")),
    ("Azure.KeyVault.SoftDelete", setter(KV, "properties.enableSoftDelete", False)),
    ("Azure.KeyVault.PurgeProtect", setter(KV, "properties.enablePurgeProtection", False)),
    ("Azure.KeyVault.RBAC", setter(KV, "properties.enableRbacAuthorization", False)),
    ("Azure.KeyVault.Firewall", setter(KV, "properties.networkAcls.defaultAction", "Allow")),
    ("Azure.KeyVault.Logs", remover("Microsoft.Insights/diagnosticSettings", "kv")),
    ("Azure.ACR.AdminUser", setter(ACR, "properties.adminUserEnabled", True)),
    ("Azure.ACR.MinSku", setter(ACR, "sku.name", "Basic")),
    ("Azure.ACR.AnonymousAccess", setter(ACR, "properties.anonymousPullEnabled", True)),
    ("Azure.ACR.Firewall", setter(ACR, "properties.publicNetworkAccess", "Enabled")),
    ("Azure.ACR.ExportPolicy", setter(ACR, "properties.policies", {})),
    ("Azure.AKS.Version", setter(AKS, "properties.autoUpgradeProfile.upgradeChannel", "none")),
    ("Azure.AKS.PoolVersion", pool("orchestratorVersion", "1.30.1")),
    ("Azure.AKS.PoolScaleSet", pool("type", "AvailabilitySet")),
    ("Azure.AKS.NodeMinPods", pool("maxPods", 30)),
    ("Azure.AKS.AutoScaling", pool("enableAutoScaling", False)),
    ("Azure.AKS.AvailabilityZone", pool("availabilityZones", [])),
    ("Azure.AKS.AuditLogs", remover("Microsoft.Insights/diagnosticSettings", "aks")),
    ("Azure.AKS.PlatformLogs", setter("Microsoft.Insights/diagnosticSettings", "properties.metrics", [], "aks")),
    (
        "Azure.AKS.AuditAdmin",
        setter(
            "Microsoft.Insights/diagnosticSettings",
            "properties.logs",
            [{"category": "kube-audit", "enabled": True}],
            "aks",
        ),
    ),
    ("Azure.AKS.MaintenanceWindow", remover(f"{AKS}/maintenanceConfigurations", "NodeOS")),
    ("Azure.AKS.ManagedIdentity", setter(AKS, "identity.type", "None")),
    ("Azure.AKS.StandardLB", setter(AKS, "properties.networkProfile.loadBalancerSku", "basic")),
    ("Azure.AKS.NetworkPolicy", setter(AKS, "properties.networkProfile.networkPolicy", "none")),
    ("Azure.AKS.AzurePolicyAddOn", setter(AKS, "properties.addonProfiles.azurepolicy.enabled", False)),
    ("Azure.AKS.ManagedAAD", setter(AKS, "properties.aadProfile.managed", False)),
    ("Azure.AKS.AzureRBAC", setter(AKS, "properties.aadProfile.enableAzureRBAC", False)),
    ("Azure.AKS.UseRBAC", setter(AKS, "properties.enableRBAC", False)),
    ("Azure.AKS.ContainerInsights", setter(AKS, "properties.addonProfiles.omsagent.enabled", False)),
    ("Azure.AKS.NodeAutoUpgrade", setter(AKS, "properties.autoUpgradeProfile.nodeOSUpgradeChannel", "None")),
    ("Azure.AKS.HttpAppRouting", setter(AKS, "properties.addonProfiles.httpApplicationRouting", {"enabled": True})),
    ("Azure.AKS.AutoUpgrade", setter(AKS, "properties.autoUpgradeProfile.upgradeChannel", "none")),
    ("Azure.AKS.EphemeralOSDisk", pool("osDiskType", "Managed")),
    ("Azure.APIM.HTTPEndpoint", setter(f"{APIM}/apis", "properties.protocols", ["http", "https"])),
    ("Azure.APIM.APIDescriptors", setter(f"{APIM}/apis", "properties.description", "")),
    ("Azure.APIM.HTTPBackend", setter(f"{APIM}/apis", "properties.serviceUrl", "http://backend.example/api")),
    ("Azure.APIM.ProductSubscription", setter(f"{APIM}/products", "properties.subscriptionRequired", False)),
    ("Azure.APIM.ProductApproval", setter(f"{APIM}/products", "properties.approvalRequired", False)),
    ("Azure.APIM.ProductDescriptors", setter(f"{APIM}/products", "properties.description", "")),
    ("Azure.APIM.SampleProducts", setter(f"{APIM}/products", "name", "[format('{0}/starter', variables('apimName'))]")),
    ("Azure.APIM.MinAPIVersion", setter(APIM, "properties.apiVersionConstraint", {})),
    ("Azure.APIM.Protocols", lambda t: first(t, APIM)["properties"]["customProperties"].update({TLS10: "True"})),
    ("Azure.APIM.Ciphers", setter(APIM, "properties.customProperties", {})),
    ("Azure.APIM.ManagedIdentity", setter(APIM, "identity.type", "None")),
    (
        "Azure.APIM.PolicyBase",
        policy(
            "<policies><inbound/><backend><base/></backend><outbound><base/></outbound><on-error><base/></on-error></policies>"
        ),
    ),
    (
        "Azure.APIM.CORSPolicy",
        policy(
            "<policies><inbound><base/><cors><allowed-origins><origin>*</origin></allowed-origins></cors></inbound>"
            "<backend><base/></backend><outbound><base/></outbound><on-error><base/></on-error></policies>"
        ),
    ),
    ("Azure.AppService.MinTLS", setter(SITE, "properties.siteConfig.minTlsVersion", "1.0")),
    ("Azure.AppService.RemoteDebug", setter(SITE, "properties.siteConfig.remoteDebuggingEnabled", True)),
    ("Azure.AppService.HTTP2", setter(SITE, "properties.siteConfig.http20Enabled", False)),
    ("Azure.AppService.ARRAffinity", setter(SITE, "properties.clientAffinityEnabled", True)),
    ("Azure.AppService.UseHTTPS", setter(SITE, "properties.httpsOnly", False)),
    ("Azure.AppService.ManagedIdentity", setter(SITE, "identity", {"type": "None"})),
    ("Azure.AppService.MinPlan", setter("Microsoft.Web/serverfarms", "sku", {"name": "B1", "tier": "Basic"})),
    ("Azure.AppInsights.Workspace", setter("Microsoft.Insights/components", "properties.WorkspaceResourceId", "")),
    ("Azure.AppInsights.LocalAuth", setter("Microsoft.Insights/components", "properties.DisableLocalAuth", False)),
    ("Azure.ML.ComputeVnet", setter(f"{ML}/computes", "properties.properties.subnet", {}, "amlImageBuildComputeName")),
    ("Azure.ML.DisableLocalAuth", setter(f"{ML}/computes", "properties.disableLocalAuth", False, "amlImageBuild")),
    ("Azure.ML.PublicAccess", setter(ML, "properties.publicNetworkAccess", "Enabled")),
    ("Azure.VM.UseManagedDisks", setter(VM, "properties.storageProfile.osDisk.vhd", {"uri": "https://x/y.vhd"})),
    ("Azure.VM.DiskCaching", setter(VM, "properties.storageProfile.osDisk.caching", "None")),
    (
        "Azure.VM.AcceleratedNetworking",
        setter("Microsoft.Network/networkInterfaces", "properties.enableAcceleratedNetworking", False),
    ),
    ("Azure.VM.PublicKey", setter(VM, "properties.osProfile.linuxConfiguration.disablePasswordAuthentication", False)),
    ("Azure.VM.Agent", setter(VM, "properties.osProfile.linuxConfiguration.provisionVMAgent", False)),
    (
        "Azure.VM.Standalone",
        setter(VM, "properties.storageProfile.osDisk.managedDisk.storageAccountType", "StandardSSD_LRS"),
    ),
    ("Azure.VM.BasicSku", setter(VM, "properties.hardwareProfile.vmSize", "Basic_A1")),
    ("Azure.NSG.AnyInboundSource", rule_edit("nsg-aks", [ALLOW_ANY_IN])),
    ("Azure.NSG.DenyAllInbound", rule_edit("nsg-aks", [DENY_ANY_IN])),
    ("Azure.NSG.LateralTraversal", rule_edit("nsg-aks", [])),
    (
        "Azure.VNET.UseNSGs",
        setter(
            VNET,
            "properties.subnets",
            [{"name": "open", "properties": {"addressPrefix": "10.10.9.0/24", "defaultOutboundAccess": False}}],
        ),
    ),
    (
        "Azure.VNET.PrivateSubnet",
        setter(
            VNET,
            "properties.subnets",
            [{"name": "out", "properties": {"addressPrefix": "10.10.9.0/24", "networkSecurityGroup": {"id": "x"}}}],
        ),
    ),
    ("Azure.VNET.SingleDNS", setter(VNET, "properties.dhcpOptions", {"dnsServers": ["10.10.0.4"]})),
    ("Azure.PublicIP.StandardSKU", setter("Microsoft.Network/publicIPAddresses", "sku.name", "Basic")),
    ("Azure.PublicIP.AvailabilityZone", setter("Microsoft.Network/publicIPAddresses", "zones", ["1"])),
    ("Azure.Resource.UseTags", setter(KV, "tags", {})),
]


@pytest.mark.parametrize(("rule", "breakage"), BREAKAGES, ids=[r for r, _ in BREAKAGES])
def test_each_rule_fails_on_a_broken_copy(
    template: Template, parameters: dict[str, Any], options: Any, rule: str, breakage: Callable[[Template], None]
) -> None:
    broken = copy.deepcopy(template)
    breakage(broken)
    report = psrule_checks.evaluate(broken, parameters, options)
    assert report[rule], f"{rule} did not notice"


def test_every_replicated_rule_is_broken_at_least_once(options: Any) -> None:
    assert {rule for rule, _ in BREAKAGES} == set(psrule_checks.RULES) - set(options.excluded)


def test_every_exclusion_is_still_needed(template: Template, parameters: dict[str, Any], options: Any) -> None:
    """Each excluded rule is replicated and really fails the template: drop the exclusion once it would pass."""
    assert psrule_checks.stale_exclusions(template, parameters, options) == []


def test_a_stale_exclusion_is_reported(template: Template, parameters: dict[str, Any], options: Any) -> None:
    fixed = copy.deepcopy(template)
    first(fixed, AKS)["sku"]["tier"] = "Standard"
    stale = psrule_checks.stale_exclusions(fixed, parameters, options)
    assert stale == ["Azure.AKS.UptimeSLA: passes without its exclusion"]
    unknown = psrule_checks.Options(options.module_version, options.baseline, {"Azure.X.Unknown": "a reason"}, {})
    assert psrule_checks.stale_exclusions(template, parameters, unknown) == [
        "Azure.X.Unknown: not replicated in psrule_checks.RULES"
    ]


def test_a_suppressed_target_is_skipped_and_only_that_one(
    template: Template, parameters: dict[str, Any], options: Any
) -> None:
    assert psrule_checks.evaluate(template, parameters, options)["Azure.ML.ComputeVnet"] == []
    unsuppressed = psrule_checks.Options(options.module_version, options.baseline, options.excluded, {})
    flagged = psrule_checks.evaluate(template, parameters, unsuppressed)["Azure.ML.ComputeVnet"]
    assert len(flagged) == 1 and "tickcast-dev-mlw/tickcast-aks: no subnet" in flagged[0]
