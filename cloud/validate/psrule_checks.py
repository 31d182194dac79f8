"""PSRule for Azure's rules that apply to ``cloud/arm/main.json``, re-expressed in Python so they run offline.

PSRule (``Assert-PSRule``) is PowerShell and installs itself from the PowerShell Gallery, so only the pipeline's
Validate stage runs it, with the options of ``cloud/ps-rule.yaml`` (pinned module and baseline, exclusions,
suppressions). This module reads the same options file and evaluates, on the template expanded with a parameter
file, the rules of the pinned baseline that concern the resource types of this template and are not excluded:
:data:`RULES` maps each rule name to its resource types and check, written from the rule's source in
PSRule.Rules.Azure (``src/PSRule.Rules.Azure/rules/*.Rule.{yaml,ps1}``).

What "expanded" means here (:func:`expand`): resource names and property values that are a single
``parameters(...)``/``variables(...)``/``format()``/``concat()`` expression are evaluated from the parameter
values; ``uniqueString()`` becomes a fixed 13-character stand-in; anything else (``reference()``, ...) stays an
expression, which the rules treat as "has a value". Sub-resources are attached to their parent by name
(``parent/child``) or by ``scope`` (diagnostic settings, extensions). Naming rules are left to the real tool.

Only the standard library; :func:`load_options` needs PyYAML.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VALIDATE = Path(__file__).resolve().parent
OPTIONS_FILE = VALIDATE.parent / "ps-rule.yaml"
UNIQUE = "uniq0000000000"[:13]  # uniqueString() is 13 lowercase alphanumerics
STORAGE_SUFFIX = "core.windows.net"

# --- options --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What ``cloud/ps-rule.yaml`` pins and excludes, with the comment above each exclusion."""

    module_version: str
    baseline: str
    excluded: Mapping[str, str]  # rule -> the reason written above it
    suppressed: Mapping[str, Sequence[str]]  # rule -> target names


def load_options(path: Path = OPTIONS_FILE) -> Options:
    import yaml  # the project venv has PyYAML

    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    reasons: dict[str, str] = {}
    comment: list[str] = []
    in_exclude = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == "exclude:":
            in_exclude = True
            continue
        if in_exclude and stripped.startswith("#"):
            comment.append(stripped.lstrip("# ").strip())
        elif in_exclude and stripped.startswith("- "):
            reasons[stripped[2:].strip()] = " ".join(comment)
            comment = []
        elif in_exclude and stripped and not line.startswith("    "):
            in_exclude = False
    group = (data.get("baseline") or {}).get("group") or {}
    return Options(
        module_version=str((data.get("requires") or {}).get("PSRule.Rules.Azure", "")),
        baseline=str(next(iter(group.values()), "")).split("\\")[-1],
        excluded={rule: reasons.get(rule, "") for rule in (data.get("rule") or {}).get("exclude") or []},
        suppressed={rule: list(names or []) for rule, names in (data.get("suppression") or {}).items()},
    )


# --- expansion ------------------------------------------------------------------------------------------------------


def _split_args(text: str) -> list[str]:
    args: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for ch in text:
        if ch == "'" and depth >= 0:
            quoted = not quoted
        if not quoted and ch in "([":
            depth += 1
        elif not quoted and ch in ")]":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if current:
        args.append("".join(current).strip())
    return args


class Evaluator:
    """Evaluates the part of ARM's expression language that names and simple properties use."""

    def __init__(self, template: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
        self.variables: Mapping[str, Any] = template.get("variables") or {}
        declared: Mapping[str, Any] = template.get("parameters") or {}
        self.parameters: dict[str, Any] = {}
        for name, spec in declared.items():
            if name in parameters:
                self.parameters[name] = parameters[name]
            elif "defaultValue" in spec:
                self.parameters[name] = spec["defaultValue"]

    def value(self, value: Any) -> Any:
        """A JSON value with every evaluable expression replaced by its value (recursively)."""
        if isinstance(value, str) and value.startswith("[") and value.endswith("]") and not value.startswith("[["):
            return self.expr(value[1:-1].strip(), value)
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value

    def expr(self, text: str, original: Any) -> Any:
        if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
            return text[1:-1].replace("''", "'")
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        match = re.fullmatch(r"(\w+)\((.*)\)((?:\.\w+)*)", text, re.DOTALL)
        if not match:
            return original
        name, inner, members = match.group(1).lower(), match.group(2), match.group(3)
        args = [self.expr(a, None) for a in _split_args(inner)] if inner.strip() else []
        result: Any
        if name == "parameters" and args and isinstance(args[0], str):
            result = self.value(self.parameters.get(args[0], original))
        elif name == "variables" and args and isinstance(args[0], str):
            result = self.value(self.variables.get(args[0], original))
        elif name == "format" and args and all(isinstance(a, str | int) for a in args):
            result = re.sub(r"\{(\d+)\}", lambda m: str(args[1 + int(m.group(1))]), str(args[0]))
        elif name == "concat" and all(isinstance(a, str | int) for a in args):
            result = "".join(str(a) for a in args)
        elif name == "uniquestring":
            result = UNIQUE
        elif name == "resourceid" and args and all(isinstance(a, str) for a in args):
            result = f"/providers/{args[0]}/{'/'.join(str(a) for a in args[1:])}"
        elif name == "take" and len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], int):
            result = args[0][: args[1]]
        elif name == "environment" and members == ".suffixes.storage":
            return STORAGE_SUFFIX
        else:
            return original
        return original if members else result


@dataclass
class Target:
    """One resource as PSRule sees it after expansion; ``children`` are its sub-resources."""

    type: str
    name: str
    body: Mapping[str, Any]
    scope: str | None = None
    children: list[Target] = field(default_factory=list)

    def sub(self, *types: str) -> list[Target]:
        wanted = {t.lower() for t in types}
        return [c for c in self.children if c.type.lower() in wanted]


def expand(template: Mapping[str, Any], parameters: Mapping[str, Any]) -> list[Target]:
    """Every resource of the template, evaluated with ``parameters`` (name -> value) and linked to its children."""
    ev = Evaluator(template, parameters)
    targets: list[Target] = []
    for resource in template.get("resources", []):
        body = ev.value({k: v for k, v in resource.items() if k not in ("dependsOn", "metadata")})
        scope = body.get("scope") if isinstance(body.get("scope"), str) else None
        targets.append(Target(str(resource["type"]), str(body.get("name")), body, scope))
    by_key = {(t.type.lower(), t.name): t for t in targets}
    for target in targets:
        if target.scope and "/" in target.scope:  # extension resource: scope is 'Provider/type/name'
            parts = target.scope.split("/")
            parent = by_key.get(("/".join(parts[:-1]).lower(), parts[-1]))
        elif target.type.count("/") > 1:
            parent_type = target.type.rsplit("/", 1)[0].lower()
            parent = by_key.get((parent_type, target.name.rsplit("/", 1)[0]))
        else:
            parent = None
        if parent is not None:
            parent.children.append(target)
    # grandchildren count as sub-resources too (containers of a storage account)
    for target in targets:
        for child in list(target.children):
            target.children.extend(child.children)
    return targets


# --- field access (PSRule compares names case-insensitively) -------------------------------------------------------

_MISSING = object()


def get(obj: Any, path: str, default: Any = None) -> Any:
    current = obj
    for part in path.split("."):
        if isinstance(current, Mapping):
            key = next((k for k in current if str(k).lower() == part.lower()), _MISSING)
            if key is _MISSING:
                return default
            current = current[key]
        else:
            return default
    return current


def is_expr(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("[")


def has_value(value: Any) -> bool:
    return value not in (None, "", [], {})


def equals(value: Any, expected: Any) -> bool:
    if isinstance(expected, str) and isinstance(value, str):
        return value.lower() == expected.lower()
    return bool(value == expected)


# --- rules ----------------------------------------------------------------------------------------------------------

Check = Callable[[Target, "Context"], Iterable[str]]


@dataclass(frozen=True)
class Context:
    targets: Sequence[Target]


@dataclass(frozen=True)
class Rule:
    types: tuple[str, ...]
    check: Check


RULES: dict[str, Rule] = {}


def rule(name: str, *types: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        RULES[name] = Rule(tuple(types), check)
        return check

    return register


def need(condition: bool, message: str) -> list[str]:
    return [] if condition else [message]


STORAGE = "Microsoft.Storage/storageAccounts"


@rule("Azure.Storage.SecureTransfer", STORAGE)
def _storage_https(t: Target, _: Context) -> list[str]:
    return need(get(t.body, "properties.supportsHttpsTrafficOnly") is True, "supportsHttpsTrafficOnly is not true")


@rule("Azure.Storage.MinTLS", STORAGE)
def _storage_tls(t: Target, _: Context) -> list[str]:
    return need(equals(get(t.body, "properties.minimumTlsVersion"), "TLS1_2"), "minimumTlsVersion is not TLS1_2")


@rule("Azure.Storage.BlobPublicAccess", STORAGE)
def _storage_public_blobs(t: Target, _: Context) -> list[str]:
    return need(get(t.body, "properties.allowBlobPublicAccess") is False, "allowBlobPublicAccess is not false")


@rule("Azure.Storage.Firewall", STORAGE)
def _storage_firewall(t: Target, _: Context) -> list[str]:
    return need(equals(get(t.body, "properties.networkAcls.defaultAction"), "Deny"), "networkAcls.defaultAction")


@rule("Azure.Storage.LocalAuth", STORAGE)
def _storage_keys(t: Target, _: Context) -> list[str]:
    return need(get(t.body, "properties.allowSharedKeyAccess") is False, "allowSharedKeyAccess is not false")


@rule("Azure.Storage.UseReplication", STORAGE)
def _storage_replication(t: Target, _: Context) -> list[str]:
    sku = str(get(t.body, "sku.name", ""))
    if not sku.startswith("Standard_"):
        return []
    return need(sku in ("Standard_GRS", "Standard_RAGRS", "Standard_GZRS", "Standard_RAGZRS"), f"sku {sku}")


def _blob_services(t: Target) -> list[Target]:
    return t.sub("Microsoft.Storage/storageAccounts/blobServices")


@rule("Azure.Storage.SoftDelete", STORAGE)
def _storage_soft_delete(t: Target, _: Context) -> list[str]:
    services = _blob_services(t)
    if not services:
        return ["no blobServices sub-resource"]
    return [
        f"{s.name}: deleteRetentionPolicy not enabled"
        for s in services
        if get(s.body, "properties.deleteRetentionPolicy.enabled") is not True
    ]


@rule("Azure.Storage.ContainerSoftDelete", STORAGE)
def _storage_container_soft_delete(t: Target, _: Context) -> list[str]:
    services = _blob_services(t)
    if not services:
        return ["no blobServices sub-resource"]
    return [
        f"{s.name}: containerDeleteRetentionPolicy not enabled for a day or more"
        for s in services
        if get(s.body, "properties.containerDeleteRetentionPolicy.enabled") is not True
        or int(get(s.body, "properties.containerDeleteRetentionPolicy.days", 0) or 0) < 1
    ]


@rule("Azure.Storage.BlobAccessType", STORAGE)
def _storage_containers(t: Target, _: Context) -> list[str]:
    containers = t.sub("Microsoft.Storage/storageAccounts/blobServices/containers")
    return [
        f"{c.name}: publicAccess {get(c.body, 'properties.publicAccess')}"
        for c in containers
        if get(c.body, "properties.publicAccess", "None") != "None"
    ]


VAULT = "Microsoft.KeyVault/vaults"


@rule("Azure.KeyVault.SoftDelete", VAULT)
def _kv_soft_delete(t: Target, _: Context) -> list[str]:
    return need(get(t.body, "properties.enableSoftDelete") is True, "enableSoftDelete is not true")


@rule("Azure.KeyVault.PurgeProtect", VAULT)
def _kv_purge(t: Target, _: Context) -> list[str]:
    return need(get(t.body, "properties.enablePurgeProtection") is True, "enablePurgeProtection is not true")


@rule("Azure.KeyVault.RBAC", VAULT)
def _kv_rbac(t: Target, _: Context) -> list[str]:
    return need(get(t.body, "properties.enableRbacAuthorization") is True, "enableRbacAuthorization is not true")


@rule("Azure.KeyVault.Firewall", VAULT)
def _kv_firewall(t: Target, _: Context) -> list[str]:
    return need(equals(get(t.body, "properties.networkAcls.defaultAction"), "Deny"), "networkAcls.defaultAction")


def _diagnostic_logs(t: Target) -> list[Mapping[str, Any]]:
    return [
        log
        for d in t.sub("Microsoft.Insights/diagnosticSettings")
        for log in (get(d.body, "properties.logs") or [])
        if log.get("enabled") is True
    ]


@rule("Azure.KeyVault.Logs", VAULT)
def _kv_logs(t: Target, _: Context) -> list[str]:
    audit = [
        log
        for log in _diagnostic_logs(t)
        if log.get("category") == "AuditEvent" or log.get("categoryGroup") in ("audit", "allLogs")
    ]
    return need(bool(audit), "no diagnostic setting sends AuditEvent (or the audit/allLogs group)")


ACR = "Microsoft.ContainerRegistry/registries"


@rule("Azure.ACR.AdminUser", ACR)
def _acr_admin(t: Target, _: Context) -> list[str]:
    return need(get(t.body, "properties.adminUserEnabled", False) is False, "adminUserEnabled")


@rule("Azure.ACR.MinSku", ACR)
def _acr_sku(t: Target, _: Context) -> list[str]:
    return need(get(t.body, "sku.name") in ("Premium", "Standard"), "sku below Standard")


@rule("Azure.ACR.AnonymousAccess", ACR)
def _acr_anonymous(t: Target, _: Context) -> list[str]:
    return need(get(t.body, "properties.anonymousPullEnabled", False) is False, "anonymousPullEnabled")


@rule("Azure.ACR.Firewall", ACR)
def _acr_firewall(t: Target, _: Context) -> list[str]:
    closed = equals(get(t.body, "properties.publicNetworkAccess"), "Disabled") or equals(
        get(t.body, "properties.networkRuleSet.defaultAction"), "Deny"
    )
    return need(closed, "public network access")


@rule("Azure.ACR.ExportPolicy", ACR)
def _acr_export(t: Target, _: Context) -> list[str]:
    return need(equals(get(t.body, "properties.policies.exportPolicy.status"), "disabled"), "exportPolicy enabled")


AKS = "Microsoft.ContainerService/managedClusters"


def _pools(t: Target) -> list[Mapping[str, Any]]:
    return list(get(t.body, "properties.agentPoolProfiles") or [])


@rule("Azure.AKS.Version", AKS)
def _aks_version(t: Target, _: Context) -> list[str]:
    channel = get(t.body, "properties.autoUpgradeProfile.upgradeChannel")
    return need(channel in ("rapid", "stable") or has_value(get(t.body, "properties.kubernetesVersion")), "version")


@rule("Azure.AKS.PoolVersion", AKS)
def _aks_pool_version(t: Target, _: Context) -> list[str]:
    version = get(t.body, "properties.kubernetesVersion")
    return [f"pool {p.get('name')}" for p in _pools(t) if p.get("orchestratorVersion", version) != version]


@rule("Azure.AKS.PoolScaleSet", AKS)
def _aks_scale_sets(t: Target, _: Context) -> list[str]:
    return [f"pool {p.get('name')}" for p in _pools(t) if p.get("type") != "VirtualMachineScaleSets"]


@rule("Azure.AKS.NodeMinPods", AKS)
def _aks_min_pods(t: Target, _: Context) -> list[str]:
    return [f"pool {p.get('name')}: maxPods" for p in _pools(t) if int(p.get("maxPods", 0) or 0) < 50]


@rule("Azure.AKS.AutoScaling", AKS)
def _aks_autoscaling(t: Target, _: Context) -> list[str]:
    return [f"pool {p.get('name')}" for p in _pools(t) if p.get("enableAutoScaling") is not True]


@rule("Azure.AKS.AvailabilityZone", AKS)
def _aks_zones(t: Target, _: Context) -> list[str]:
    return [
        f"pool {p.get('name')}: no availabilityZones" for p in _pools(t) if not has_value(p.get("availabilityZones"))
    ]


@rule("Azure.AKS.AuditLogs", AKS)
def _aks_audit(t: Target, _: Context) -> list[str]:
    categories = {log.get("category") for log in _diagnostic_logs(t)}
    return need(bool(categories & {"kube-audit", "kube-audit-admin"}) and "guard" in categories, "audit logs")


PLATFORM_LOGS = ("cluster-autoscaler", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


@rule("Azure.AKS.PlatformLogs", AKS)
def _aks_platform(t: Target, _: Context) -> list[str]:
    categories = {log.get("category") for log in _diagnostic_logs(t)}
    metrics = {
        m.get("category")
        for d in t.sub("Microsoft.Insights/diagnosticSettings")
        for m in (get(d.body, "properties.metrics") or [])
        if m.get("enabled") is True
    }
    missing = [c for c in PLATFORM_LOGS if c not in categories] + ([] if "AllMetrics" in metrics else ["AllMetrics"])
    return need(not missing, f"diagnostic settings lack {missing}")


@rule("Azure.AKS.AuditAdmin", AKS)
def _aks_audit_admin(t: Target, _: Context) -> list[str]:
    return need("kube-audit" not in {log.get("category") for log in _diagnostic_logs(t)}, "kube-audit")


@rule("Azure.AKS.MaintenanceWindow", AKS)
def _aks_maintenance(t: Target, _: Context) -> list[str]:
    names = [c.name for c in t.sub("Microsoft.ContainerService/managedClusters/maintenanceConfigurations")]
    ok = any(n.endswith("aksManagedAutoUpgradeSchedule") for n in names) and any(
        n.endswith("aksManagedNodeOSUpgradeSchedule") for n in names
    )
    return need(ok, "no aksManagedAutoUpgradeSchedule + aksManagedNodeOSUpgradeSchedule")


def _aks_field(name: str, path: str, expected: Any, message: str) -> None:
    def check(t: Target, _: Context) -> list[str]:
        value = get(t.body, path)
        good = value in expected if isinstance(expected, tuple) else equals(value, expected)
        return need(good, message)

    rule(name, AKS)(check)


_aks_field("Azure.AKS.ManagedIdentity", "identity.type", ("SystemAssigned", "UserAssigned"), "no managed identity")
_aks_field("Azure.AKS.StandardLB", "properties.networkProfile.loadBalancerSku", "standard", "load balancer SKU")
_aks_field("Azure.AKS.NetworkPolicy", "properties.networkProfile.networkPolicy", ("azure", "calico"), "policy")
_aks_field("Azure.AKS.AzurePolicyAddOn", "properties.addonProfiles.azurePolicy.enabled", True, "Azure Policy")
_aks_field("Azure.AKS.ManagedAAD", "properties.aadProfile.managed", True, "managed Entra ID")
_aks_field("Azure.AKS.AzureRBAC", "properties.aadProfile.enableAzureRbac", True, "Azure RBAC")
_aks_field("Azure.AKS.UseRBAC", "properties.enableRBAC", True, "RBAC")
_aks_field("Azure.AKS.ContainerInsights", "properties.addonProfiles.omsAgent.enabled", True, "Container insights")
_aks_field(
    "Azure.AKS.NodeAutoUpgrade",
    "properties.autoUpgradeProfile.nodeOSUpgradeChannel",
    ("NodeImage", "SecurityPatch"),
    "node OS upgrades",
)


@rule("Azure.AKS.HttpAppRouting", AKS)
def _aks_http_routing(t: Target, _: Context) -> list[str]:
    return need(get(t.body, "properties.addonProfiles.httpApplicationRouting.enabled") is not True, "enabled")


@rule("Azure.AKS.AutoUpgrade", AKS)
def _aks_auto_upgrade(t: Target, _: Context) -> list[str]:
    channel = get(t.body, "properties.autoUpgradeProfile.upgradeChannel")
    return need(has_value(channel) and channel != "none", "no upgrade channel")


@rule("Azure.AKS.EphemeralOSDisk", AKS)
def _aks_ephemeral(t: Target, _: Context) -> list[str]:
    return [f"pool {p.get('name')}" for p in _pools(t) if p.get("osDiskType", "Ephemeral") != "Ephemeral"]


APIM = "Microsoft.ApiManagement/service"


def _apis(t: Target) -> list[Target]:
    return t.sub("Microsoft.ApiManagement/service/apis")


def _products(t: Target) -> list[Target]:
    return t.sub("Microsoft.ApiManagement/service/products")


@rule("Azure.APIM.HTTPEndpoint", APIM)
def _apim_https(t: Target, _: Context) -> list[str]:
    return [a.name for a in _apis(t) if "http" in (get(a.body, "properties.protocols") or [])]


@rule("Azure.APIM.APIDescriptors", APIM)
def _apim_api_descriptors(t: Target, _: Context) -> list[str]:
    return [
        f"{a.name}: {f}" for a in _apis(t) for f in ("displayName", "description") if not get(a.body, f"properties.{f}")
    ]


@rule("Azure.APIM.HTTPBackend", APIM)
def _apim_backend(t: Target, _: Context) -> list[str]:
    return [a.name for a in _apis(t) if str(get(a.body, "properties.serviceUrl", "")).startswith("http://")]


@rule("Azure.APIM.ProductSubscription", APIM)
def _apim_product_subscription(t: Target, _: Context) -> list[str]:
    return [p.name for p in _products(t) if get(p.body, "properties.subscriptionRequired") is not True]


@rule("Azure.APIM.ProductApproval", APIM)
def _apim_product_approval(t: Target, _: Context) -> list[str]:
    return [p.name for p in _products(t) if get(p.body, "properties.approvalRequired") is not True]


@rule("Azure.APIM.ProductDescriptors", APIM)
def _apim_product_descriptors(t: Target, _: Context) -> list[str]:
    return [
        f"{p.name}: {f}"
        for p in _products(t)
        for f in ("displayName", "description")
        if not get(p.body, f"properties.{f}")
    ]


@rule("Azure.APIM.SampleProducts", APIM)
def _apim_samples(t: Target, _: Context) -> list[str]:
    return [p.name for p in _products(t) if p.name.rsplit("/", 1)[-1] in ("unlimited", "starter")]


@rule("Azure.APIM.MinAPIVersion", APIM)
def _apim_min_api(t: Target, _: Context) -> list[str]:
    minimum = str(get(t.body, "properties.apiVersionConstraint.minApiVersion", ""))
    problems = need(bool(minimum), "no apiVersionConstraint.minApiVersion")
    if minimum and minimum.removesuffix("-preview") < "2021-08-01":
        problems.append(f"minApiVersion {minimum} is older than 2021-08-01")
    return problems + need(str(t.body.get("apiVersion", "")) >= "2021-08-01", "apiVersion older than 2021-08-01")


_TLS = "Microsoft.WindowsAzure.ApiManagement.Gateway.Security"


@rule("Azure.APIM.Protocols", APIM)
def _apim_protocols(t: Target, _: Context) -> list[str]:
    props = get(t.body, "properties.customProperties") or {}
    keys = [f"{_TLS}.{side}.{p}" for side in ("Protocols", "Backend.Protocols") for p in ("Tls10", "Tls11", "Ssl30")]
    return [k for k in keys if str(props.get(k, "True")).lower() != "false"]


@rule("Azure.APIM.Ciphers", APIM)
def _apim_ciphers(t: Target, _: Context) -> list[str]:
    props = get(t.body, "properties.customProperties") or {}
    return need(str(props.get(f"{_TLS}.Ciphers.TripleDes168", "True")).lower() == "false", "3DES enabled")


@rule("Azure.APIM.ManagedIdentity", APIM)
def _apim_identity(t: Target, _: Context) -> list[str]:
    return need("assigned" in str(get(t.body, "identity.type", "")).lower(), "no managed identity")


def _policies(t: Target) -> list[ET.Element]:
    docs = []
    for p in t.sub("Microsoft.ApiManagement/service/apis/policies"):
        value = get(p.body, "properties.value")
        if get(p.body, "properties.format") in ("rawxml", "xml") and isinstance(value, str) and not is_expr(value):
            docs.append(ET.fromstring(value))  # noqa: S314 - the repository's own policy file
    return docs


@rule("Azure.APIM.PolicyBase", APIM)
def _apim_policy_base(t: Target, _: Context) -> list[str]:
    return [
        f"<{section}> has no <base />"
        for doc in _policies(t)
        for section in ("inbound", "backend", "outbound", "on-error")
        if doc.find(section) is None or doc.find(section).find("base") is None  # type: ignore[union-attr]
    ]


@rule("Azure.APIM.CORSPolicy", APIM)
def _apim_cors(t: Target, _: Context) -> list[str]:
    return [
        f"<cors> allows '*' in <{el.tag}>"
        for doc in _policies(t)
        for el in doc.iter()
        if (el.text or "").strip() == "*"
    ]


SITE = "Microsoft.Web/sites"


def _site(name: str, path: str, good: Callable[[Any], bool], message: str) -> None:
    rule(name, SITE)(lambda t, _: need(good(get(t.body, path)), message))


_site("Azure.AppService.MinTLS", "properties.siteConfig.minTlsVersion", lambda v: v == "1.2", "minTlsVersion")
_site("Azure.AppService.RemoteDebug", "properties.siteConfig.remoteDebuggingEnabled", lambda v: v is not True, "on")
_site("Azure.AppService.HTTP2", "properties.siteConfig.http20Enabled", lambda v: v is True, "HTTP/2 off")
_site("Azure.AppService.ARRAffinity", "properties.clientAffinityEnabled", lambda v: v is False, "ARR affinity")
_site("Azure.AppService.UseHTTPS", "properties.httpsOnly", lambda v: v is True, "httpsOnly")
_site("Azure.AppService.ManagedIdentity", "identity.type", lambda v: "assigned" in str(v).lower(), "no identity")


@rule("Azure.AppService.MinPlan", "Microsoft.Web/serverfarms")
def _plan(t: Target, _: Context) -> list[str]:
    tier, sku = str(get(t.body, "sku.tier", "")), str(get(t.body, "sku.name", ""))
    if sku.startswith(("Y1", "EP")) or tier.startswith(("Dynamic", "ElasticPremium")):
        return []
    return need(tier not in ("Free", "Basic", "Shared") and sku not in ("F1", "D1", "B1", "B2", "B3"), "plan")


INSIGHTS = "Microsoft.Insights/components"


@rule("Azure.AppInsights.Workspace", INSIGHTS)
def _appi_workspace(t: Target, _: Context) -> list[str]:
    return need(has_value(get(t.body, "properties.WorkspaceResourceId")), "no workspace")


@rule("Azure.AppInsights.LocalAuth", INSIGHTS)
def _appi_local_auth(t: Target, _: Context) -> list[str]:
    return need(get(t.body, "properties.DisableLocalAuth") is True, "local authentication enabled")


COMPUTE = "Microsoft.MachineLearningServices/workspaces/computes"


@rule("Azure.ML.ComputeVnet", COMPUTE)
def _ml_compute_vnet(t: Target, _: Context) -> list[str]:
    return need(has_value(get(t.body, "properties.properties.subnet.id")), "no subnet")


@rule("Azure.ML.DisableLocalAuth", COMPUTE)
def _ml_local_auth(t: Target, _: Context) -> list[str]:
    return need(get(t.body, "properties.disableLocalAuth") is True, "local auth")


@rule("Azure.ML.PublicAccess", "Microsoft.MachineLearningServices/workspaces")
def _ml_public(t: Target, _: Context) -> list[str]:
    behind = get(t.body, "properties.allowPublicAccessWhenBehindVnet", False)
    return need(behind is False and equals(get(t.body, "properties.publicNetworkAccess"), "Disabled"), "public")


VM = "Microsoft.Compute/virtualMachines"


@rule("Azure.VM.UseManagedDisks", VM)
def _vm_managed(t: Target, _: Context) -> list[str]:
    disks = [
        get(t.body, "properties.storageProfile.osDisk") or {},
        *get(t.body, "properties.storageProfile.dataDisks", []),
    ]
    return [f"disk {d.get('name')}" for d in disks if get(d, "vhd.uri")]


@rule("Azure.VM.DiskCaching", VM)
def _vm_caching(t: Target, _: Context) -> list[str]:
    problems = need(get(t.body, "properties.storageProfile.osDisk.caching") == "ReadWrite", "OS disk caching")
    for disk in get(t.body, "properties.storageProfile.dataDisks") or []:
        want = "ReadOnly" if get(disk, "managedDisk.storageAccountType") == "Premium_LRS" else "None"
        problems += need(disk.get("caching") == want, f"data disk {disk.get('lun')}: caching is not {want}")
    return problems


@rule("Azure.VM.AcceleratedNetworking", VM)
def _vm_accelerated(t: Target, ctx: Context) -> list[str]:
    nics = [n for n in ctx.targets if n.type == "Microsoft.Network/networkInterfaces"]
    ids = json.dumps(get(t.body, "properties.networkProfile") or {})
    mine = [n for n in nics if n.name in ids]
    return [n.name for n in mine if get(n.body, "properties.enableAcceleratedNetworking") is not True]


@rule("Azure.VM.PublicKey", VM)
def _vm_public_key(t: Target, _: Context) -> list[str]:
    linux = get(t.body, "properties.osProfile.linuxConfiguration")
    return [] if linux is None else need(get(linux, "disablePasswordAuthentication") is True, "passwords")


@rule("Azure.VM.Agent", VM)
def _vm_agent(t: Target, _: Context) -> list[str]:
    return need(get(t.body, "properties.osProfile.linuxConfiguration.provisionVMAgent", True) is True, "no agent")


@rule("Azure.VM.Standalone", VM)
def _vm_standalone(t: Target, _: Context) -> list[str]:
    if has_value(get(t.body, "properties.availabilitySet.id")) or has_value(t.body.get("zones")):
        return []
    premium = ("Premium_LRS", "Premium_ZRS", "UltraSSD_LRS")
    disks = [
        get(t.body, "properties.storageProfile.osDisk.managedDisk.storageAccountType"),
        *[get(d, "managedDisk.storageAccountType") for d in get(t.body, "properties.storageProfile.dataDisks") or []],
    ]
    return need(disks[0] == "Premium_LRS" and all(d in premium for d in disks[1:]), "a single VM on standard disks")


@rule("Azure.VM.BasicSku", VM)
def _vm_basic(t: Target, _: Context) -> list[str]:
    return need(not re.match(r"Basic_A[0-4]", str(get(t.body, "properties.hardwareProfile.vmSize", ""))), "Basic")


NSG = "Microsoft.Network/networkSecurityGroups"


def _rules(t: Target, direction: str) -> list[Mapping[str, Any]]:
    rules = [r for r in get(t.body, "properties.securityRules") or [] if get(r, "properties.direction") == direction]
    return sorted(rules, key=lambda r: int(get(r, "properties.priority", 0)))


@rule("Azure.NSG.AnyInboundSource", NSG)
def _nsg_any(t: Target, _: Context) -> list[str]:
    return [
        str(r.get("name"))
        for r in _rules(t, "Inbound")
        if get(r, "properties.access") == "Allow" and get(r, "properties.sourceAddressPrefix") == "*"
    ]


@rule("Azure.NSG.DenyAllInbound", NSG)
def _nsg_deny_all(t: Target, _: Context) -> list[str]:
    inbound = _rules(t, "Inbound")
    first = inbound[0] if inbound else None
    blocked = (
        first is not None
        and get(first, "properties.access") == "Deny"
        and get(first, "properties.sourceAddressPrefix") == "*"
    )
    return need(not blocked, "the first inbound rule denies everything")


def _outbound_verdict(t: Target, port: int) -> str:
    for r in _rules(t, "Outbound"):
        dest = str(get(r, "properties.destinationAddressPrefix", ""))
        ports = str(get(r, "properties.destinationPortRange", ""))
        if dest not in ("*", "VirtualNetwork"):
            continue
        if (
            ports == "*"
            or ports == str(port)
            or ("-" in ports and int(ports.split("-")[0]) <= port <= int(ports.split("-")[1]))
        ):
            return str(get(r, "properties.access"))
    return "Default"


@rule("Azure.NSG.LateralTraversal", NSG)
def _nsg_lateral(t: Target, _: Context) -> list[str]:
    open_rdp = _outbound_verdict(t, 3389) in ("Allow", "Default")
    open_ssh = _outbound_verdict(t, 22) in ("Allow", "Default")
    return need(not (open_rdp and open_ssh), "neither RDP nor SSH is denied outbound to the VNet")


VNET = "Microsoft.Network/virtualNetworks"


@rule("Azure.VNET.UseNSGs", VNET)
def _vnet_nsgs(t: Target, _: Context) -> list[str]:
    return [
        str(s.get("name"))
        for s in get(t.body, "properties.subnets") or []
        if not has_value(get(s, "properties.networkSecurityGroup.id"))
        and s.get("name") not in ("GatewaySubnet", "AzureFirewallSubnet", "AzureFirewallManagementSubnet")
    ]


@rule("Azure.VNET.PrivateSubnet", VNET)
def _vnet_private(t: Target, _: Context) -> list[str]:
    return [
        str(s.get("name"))
        for s in get(t.body, "properties.subnets") or []
        if not get(s, "properties.delegations") and get(s, "properties.defaultOutboundAccess") is not False
    ]


@rule("Azure.VNET.SingleDNS", VNET)
def _vnet_dns(t: Target, _: Context) -> list[str]:
    servers = get(t.body, "properties.dhcpOptions.dnsServers") or []
    return need(not servers or len(servers) >= 2, "one DNS server")


PIP = "Microsoft.Network/publicIPAddresses"


@rule("Azure.PublicIP.StandardSKU", PIP)
def _pip_sku(t: Target, _: Context) -> list[str]:
    return need(get(t.body, "sku.name") == "Standard", "not Standard")


@rule("Azure.PublicIP.AvailabilityZone", PIP)
def _pip_zones(t: Target, _: Context) -> list[str]:
    return need(sorted(t.body.get("zones") or []) == ["1", "2", "3"], "not zone-redundant")


UNTAGGED = (
    "Microsoft.Authorization/roleAssignments",
    "Microsoft.Authorization/roleDefinitions",
    "Microsoft.KubernetesConfiguration/extensions",
    "Microsoft.Insights/diagnosticSettings",
)


def _tagged(t: Target, _: Context) -> list[str]:
    if t.type in UNTAGGED or t.type.count("/") > 1:
        return []
    return need(bool(t.body.get("tags")), "no tags")


RULES["Azure.Resource.UseTags"] = Rule(("*",), _tagged)


# --- rules the options exclude: replicated so that a test can tell when an exclusion is no longer needed ------------


@rule("Azure.AKS.MinNodeCount", AKS)
def _aks_min_nodes(t: Target, _: Context) -> list[str]:
    count = sum(int(p.get("minCount") or p.get("count") or 0) for p in _pools(t) if p.get("mode") != "User")
    return need(count >= 3, f"{count} system node(s)")


_aks_field("Azure.AKS.UptimeSLA", "sku.tier", "Standard", "no uptime SLA (Free tier)")
_aks_field("Azure.AKS.LocalAccounts", "properties.disableLocalAccounts", True, "local accounts enabled")
_aks_field("Azure.AKS.DefenderProfile", "properties.securityProfile.defender.securityMonitoring.enabled", True, "off")
_aks_field("Azure.AKS.SecretStore", "properties.addonProfiles.azureKeyvaultSecretsProvider.enabled", True, "off")


@rule("Azure.AKS.AuthorizedIPs", AKS)
def _aks_authorized_ips(t: Target, _: Context) -> list[str]:
    return need(has_value(get(t.body, "properties.apiServerAccessProfile.authorizedIPRanges")), "no IP ranges")


@rule("Azure.APIM.DefenderCloud", APIM)
def _apim_defender(t: Target, ctx: Context) -> list[str]:
    onboarded = {c.name.rsplit("/", 1)[-1] for c in ctx.targets if c.type == "Microsoft.Security/apiCollections"}
    return [a.name for a in _apis(t) if a.name.rsplit("/", 1)[-1] not in onboarded]


@rule("Azure.AppService.PlanInstanceCount", "Microsoft.Web/serverfarms")
def _plan_instances(t: Target, _: Context) -> list[str]:
    tier, sku = str(get(t.body, "sku.tier", "")), str(get(t.body, "sku.name", ""))
    if sku == "Y1" or tier == "Dynamic" or sku.startswith("EP") or tier == "ElasticPremium":
        return []
    return need(int(get(t.body, "sku.capacity", 0) or 0) >= 2, "fewer than 2 instances")


@rule("Azure.ML.UserManagedIdentity", "Microsoft.MachineLearningServices/workspaces")
def _ml_uai(t: Target, _: Context) -> list[str]:
    ok = get(t.body, "identity.type") == "UserAssigned" and has_value(
        get(t.body, "properties.primaryUserAssignedIdentity")
    )
    return need(ok, "system-assigned identity")


@rule("Azure.VM.AMA", VM)
def _vm_ama(t: Target, ctx: Context) -> list[str]:
    extensions = [
        e
        for e in ctx.targets
        if e.type == "Microsoft.Compute/virtualMachines/extensions" and e.name.startswith(t.name + "/")
    ]
    ama = [
        e
        for e in extensions
        if get(e.body, "properties.type") in ("AzureMonitorLinuxAgent", "AzureMonitorWindowsAgent")
    ]
    return need(bool(ama), "no Azure Monitor Agent extension")


@rule("Azure.VM.MaintenanceConfig", VM)
def _vm_maintenance(t: Target, _: Context) -> list[str]:
    return need(bool(t.sub("Microsoft.Maintenance/configurationAssignments")), "no maintenance configuration")


@rule("Azure.Log.Replication", "Microsoft.OperationalInsights/workspaces")
def _log_replication(t: Target, _: Context) -> list[str]:
    ok = get(t.body, "properties.replication.enabled") is True and has_value(
        get(t.body, "properties.replication.location")
    )
    return need(ok, "workspace replication off")


# --- evaluation -----------------------------------------------------------------------------------------------------


def evaluate(
    template: Mapping[str, Any], parameters: Mapping[str, Any], options: Options | None = None
) -> dict[str, list[str]]:
    """Rule -> problems ("<target>: <what>") for every rule of :data:`RULES` that ``options`` does not exclude;
    targets named in the rule's suppression list are skipped."""
    opts = options or load_options()
    targets = expand(template, parameters)
    ctx = Context(targets)
    report: dict[str, list[str]] = {}
    for name, spec in RULES.items():
        if name in opts.excluded:
            continue
        report[name] = _run(name, spec, targets, ctx, set(opts.suppressed.get(name, ())))
    return report


def stale_exclusions(template: Mapping[str, Any], parameters: Mapping[str, Any], options: Options) -> list[str]:
    """Excluded rules that would pass anyway (the exclusion can go), or that this module does not replicate."""
    targets = expand(template, parameters)
    ctx = Context(targets)
    stale = []
    for name in options.excluded:
        spec = RULES.get(name)
        if spec is None:
            stale.append(f"{name}: not replicated in psrule_checks.RULES")
        elif not _run(name, spec, targets, ctx, set(options.suppressed.get(name, ()))):
            stale.append(f"{name}: passes without its exclusion")
    return stale


def _run(name: str, spec: Rule, targets: Sequence[Target], ctx: Context, suppressed: set[str]) -> list[str]:
    problems: list[str] = []
    for target in targets:
        if spec.types != ("*",) and target.type not in spec.types:
            continue
        if target.name in suppressed:
            continue
        problems += [f"{target.type} {target.name}: {p}" for p in spec.check(target, ctx)]
    return problems


def parameter_values(*files: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """``{name: value}`` from deploymentParameters documents (later ones win) plus ``extra``."""
    values: dict[str, Any] = {}
    for document in files:
        for name, entry in (document.get("parameters") or {}).items():
            if isinstance(entry, Mapping) and "value" in entry:
                values[name] = entry["value"]
    values.update(extra)
    return values


def suppressed_targets(template: Mapping[str, Any], parameters: Mapping[str, Any], options: Options) -> list[str]:
    """Suppression entries that name no target of the template (stale)."""
    names = {t.name for t in expand(template, parameters)}
    return [f"{rule}: {name}" for rule, listed in options.suppressed.items() for name in listed if name not in names]
