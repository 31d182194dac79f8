"""Offline structural checks of the ARM templates under ``cloud/arm``.

Pure Python (the standard library only, plus ``jsonschema`` for :func:`schema_problems`), so the unit tests can run
every check on the real template AND on mutated copies of it, proving each check can fail.

Every ``check_*`` function takes a parsed template (``dict``) and returns a list of problems (strings); an empty
list means the check passed. Resources are walked recursively: child resources declared inside a parent's
``resources`` array and resources of nested inline deployments (``Microsoft.Resources/deployments`` with a
``template``) are checked like top-level ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARM_DIR = Path(__file__).resolve().parents[1] / "arm"
MAIN_TEMPLATE = ARM_DIR / "main.json"
PARAMETERS_DIR = ARM_DIR / "parameters"

DEPLOYMENTS = "Microsoft.Resources/deployments"
ROLE_ASSIGNMENTS = "Microsoft.Authorization/roleAssignments"
PRIVATE_ENDPOINTS = "Microsoft.Network/privateEndpoints"
ZONE_GROUPS = "Microsoft.Network/privateEndpoints/privateDnsZoneGroups"
PEERINGS = "Microsoft.Network/virtualNetworks/virtualNetworkPeerings"
USER_ASSIGNED_IDENTITIES = "Microsoft.ManagedIdentity/userAssignedIdentities"
STORAGE_ACCOUNTS = "Microsoft.Storage/storageAccounts"

# checkov 3.3 drops every FAILED check of an ARM resource whose (rendered) name contains one of these
# (checkov/arm/utils.py: filter_failed_checks_with_unrendered_resources): never use them in names.
CHECKOV_BLIND_FUNCTIONS = ("toLower(", "trim(", "join(", "split(", "substring(")

# The resource types the tickcast system is made of (ARCHITECTURE + cloud/arm/README.md).
REQUIRED_TYPES: tuple[str, ...] = (
    "Microsoft.Storage/storageAccounts",
    "Microsoft.Storage/storageAccounts/blobServices",
    "Microsoft.Storage/storageAccounts/blobServices/containers",
    "Microsoft.Network/privateEndpoints",
    "Microsoft.Network/privateEndpoints/privateDnsZoneGroups",
    "Microsoft.Network/privateDnsZones",
    "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
    "Microsoft.Network/virtualNetworks",
    "Microsoft.Network/virtualNetworks/virtualNetworkPeerings",
    "Microsoft.Network/networkSecurityGroups",
    "Microsoft.KeyVault/vaults",
    "Microsoft.Insights/components",
    "Microsoft.OperationalInsights/workspaces",
    "Microsoft.ContainerRegistry/registries",
    "Microsoft.MachineLearningServices/workspaces",
    "Microsoft.MachineLearningServices/workspaces/computes",
    "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
    "Microsoft.ContainerService/managedClusters",
    "Microsoft.KubernetesConfiguration/extensions",
    # the broker, Airflow and MLflow hosts (docs/decisions/0011): Linux VMs with cloud-init
    "Microsoft.Compute/virtualMachines",
    "Microsoft.Network/networkInterfaces",
    "Microsoft.Web/serverfarms",
    "Microsoft.Web/sites",
    "Microsoft.ApiManagement/service",
    "Microsoft.ApiManagement/service/apis",
    "Microsoft.ApiManagement/service/apis/operations",
    "Microsoft.ApiManagement/service/apis/policies",
    "Microsoft.ApiManagement/service/products",
    "Microsoft.ApiManagement/service/products/apis",
    "Microsoft.ApiManagement/service/subscriptions",
    "Microsoft.Authorization/roleAssignments",
    "Microsoft.ManagedIdentity/userAssignedIdentities",
)

# Parameters that parameters/<env>.json leaves out on purpose: the deploy command passes them per user / per run.
FILLED_BY_DEPLOY_COMMAND: frozenset[str] = frozenset({"apimPolicyXml", "sshPublicKey", "apimPublisherEmail"})

# Role assignments allowed at resource-group or subscription scope, with the reason. Empty on purpose: every
# assignment in the template names the resource it applies to.
BROAD_SCOPE_ALLOWED: dict[str, str] = {}

TEMPLATE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["$schema", "contentVersion", "resources"],
    "properties": {
        "$schema": {"type": "string", "pattern": r"deploymentTemplate\.json#$"},
        "contentVersion": {"type": "string", "pattern": r"^\d+\.\d+\.\d+\.\d+$"},
        "metadata": {"type": "object"},
        "parameters": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {
                        "enum": ["string", "securestring", "int", "bool", "object", "secureObject", "array"],
                    },
                    "allowedValues": {"type": "array", "minItems": 1},
                    "metadata": {"type": "object", "required": ["description"]},
                },
            },
        },
        "variables": {"type": "object"},
        "functions": {"type": "array"},
        "resources": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/resource"}},
        "outputs": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["type", "value"],
                "properties": {"type": {"enum": ["string", "int", "bool", "object", "array"]}},
            },
        },
    },
    "additionalProperties": False,
    "$defs": {
        "resource": {
            "type": "object",
            "required": ["type", "apiVersion", "name"],
            "properties": {
                "type": {"type": "string", "pattern": r"^[A-Za-z]+\.[A-Za-z.]+(/[A-Za-z]+)+$"},
                "apiVersion": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}(-preview)?$"},
                "name": {"type": "string", "minLength": 1},
                "location": {"type": "string"},
                "dependsOn": {"type": "array", "items": {"type": "string"}},
                "resources": {"type": "array", "items": {"$ref": "#/$defs/resource"}},
                "properties": {"type": "object"},
                "tags": {"type": "object"},
                "identity": {"type": "object", "required": ["type"]},
                "sku": {"type": "object"},
                "kind": {"type": "string"},
                "scope": {"type": "string"},
                "metadata": {"type": "object"},
                "comments": {"type": "string"},
                "zones": {"oneOf": [{"type": "array"}, {"type": "string", "pattern": r"^\[.*\]$"}]},
            },
            "additionalProperties": False,
        }
    },
}

PARAMETERS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["$schema", "contentVersion", "parameters"],
    "properties": {
        "$schema": {"const": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#"},
        "contentVersion": {"type": "string", "pattern": r"^\d+\.\d+\.\d+\.\d+$"},
        "parameters": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "oneOf": [{"required": ["value"]}, {"required": ["reference"]}],
            },
        },
    },
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Resource:
    """One resource of a template, with its full name split into segments (parent segments first)."""

    type: str
    segments: tuple[str, ...]
    body: Mapping[str, Any]
    where: str  # a readable path, e.g. "resources[3]" or "resources[2].template.resources[0]"

    @property
    def label(self) -> str:
        return f"{self.type} {'/'.join(self.segments)} ({self.where})"


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


# --- ARM expression helpers ---------------------------------------------------------------------------------------


def split_args(text: str) -> list[str]:
    """Split ``a, f(b, c), 'd,e'`` at the top-level commas (quotes and parentheses respected)."""
    args: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            current.append(ch)
            if ch == "'":
                if i + 1 < len(text) and text[i + 1] == "'":  # '' is an escaped quote
                    current.append("'")
                    i += 1
                else:
                    quoted = False
        elif ch == "'":
            quoted = True
            current.append(ch)
        elif ch in "([":
            depth += 1
            current.append(ch)
        elif ch in ")]":
            depth -= 1
            current.append(ch)
        elif ch == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    if current or args:
        args.append("".join(current).strip())
    return args


def call_args(expression: str, function: str) -> list[str] | None:
    """The arguments of ``function(...)`` when ``expression`` is exactly that call, else None."""
    expression = expression.strip()
    prefix = function + "("
    if not (expression.startswith(prefix) and expression.endswith(")")):
        return None
    inner = expression[len(prefix) : -1]
    # the closing parenthesis must match the opening one
    depth = 0
    quoted = False
    for ch in inner:
        if ch == "'":
            quoted = not quoted
        elif not quoted:
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth < 0:
                return None
    return split_args(inner)


def literal(arg: str) -> str | None:
    """The value of a quoted ARM string literal, else None."""
    arg = arg.strip()
    if len(arg) >= 2 and arg[0] == "'" and arg[-1] == "'":
        return arg[1:-1].replace("''", "'")
    return None


def expression_of(value: str) -> str | None:
    """The expression inside ``[...]``, or None for a plain string."""
    if value.startswith("[") and value.endswith("]") and not value.startswith("[["):
        return value[1:-1].strip()
    return None


def render(expression: str) -> str:
    """An expression as far as it can be written out offline: literals, format() and concat() are applied,
    anything else (``variables('x')``, ``uniqueString(...)``) stays as its normalised text."""
    expression = normalise(expression)
    lit = literal(expression)
    if lit is not None:
        return lit
    fmt = call_args(expression, "format")
    if fmt and literal(fmt[0]) is not None:
        values = [render(a) for a in fmt[1:]]
        template = literal(fmt[0]) or ""
        return re.sub(
            r"\{(\d+)\}", lambda m: values[int(m.group(1))] if int(m.group(1)) < len(values) else m.group(0), template
        )
    parts = call_args(expression, "concat")
    if parts:
        return "".join(render(p) for p in parts)
    return expression


def name_segments(name: str) -> tuple[str, ...]:
    """Split a resource name into its ``/``-separated segments, rendered as far as possible (see :func:`render`).

    Handles plain names (``vnet/peer``), ``[format('{0}/{1}', a, b)]``, ``[concat(a, '/', b)]`` and single
    expressions (``[variables('x')]``), so that the same name written two ways compares equal.
    """
    expression = expression_of(name)
    if expression is None:
        return tuple(name.split("/"))
    return tuple(render(expression).split("/"))


def normalise(expression: str) -> str:
    """An expression text without whitespace outside quotes, for comparisons."""
    out: list[str] = []
    quoted = False
    for ch in expression.strip():
        if ch == "'":
            quoted = not quoted
        if quoted or not ch.isspace():
            out.append(ch)
    return "".join(out)


def resource_id_target(expression: str) -> tuple[str, tuple[str, ...]] | None:
    """For ``resourceId('T', a, b)`` (the expression text, without brackets) return (T, (a, b)) normalised."""
    args = call_args(normalise(expression), "resourceId")
    if not args:
        return None
    type_ = literal(args[0])
    if type_ is None:  # resourceId(subscriptionId, group, 'T', ...) is a cross-scope id: not handled here
        return None
    return type_, tuple(render(a) for a in args[1:])


# --- walking ------------------------------------------------------------------------------------------------------


def iter_resources(template: Mapping[str, Any], where: str = "resources") -> Iterator[Resource]:
    """Every resource of the template: nested child resources and inner deployments' templates included."""
    yield from _walk(template.get("resources", []), None, (), where)


def _walk(
    resources: Sequence[Any], parent_type: str | None, parent_segments: tuple[str, ...], where: str
) -> Iterator[Resource]:
    for index, body in enumerate(resources):
        if not isinstance(body, Mapping):
            continue
        here = f"{where}[{index}]"
        raw_type = str(body.get("type", ""))
        segments = name_segments(str(body.get("name", "")))
        type_ = f"{parent_type}/{raw_type}" if parent_type and "." not in raw_type.split("/")[0] else raw_type
        if len(segments) < type_.count("/"):  # a child named by its last segment only
            segments = parent_segments + segments
        resource = Resource(type_, segments, body, here)
        yield resource
        children = body.get("resources")
        if isinstance(children, list):
            yield from _walk(children, type_, segments, here + ".resources")
        if type_ == DEPLOYMENTS:
            inner = body.get("properties", {}).get("template")
            if isinstance(inner, Mapping):
                yield from _walk(inner.get("resources", []), None, (), here + ".properties.template.resources")


def resource_types(template: Mapping[str, Any]) -> set[str]:
    return {r.type for r in iter_resources(template)}


# --- check 1: JSON schema and parameters --------------------------------------------------------------------------


def schema_problems(document: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    import jsonschema  # in the project venv; imported here so the rest of the module is stdlib only

    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def check_template_schema(template: Mapping[str, Any]) -> list[str]:
    problems = schema_problems(template, TEMPLATE_SCHEMA)
    for resource in iter_resources(template):
        if resource.type == DEPLOYMENTS:
            props = resource.body.get("properties", {})
            if "templateLink" in props:
                problems.append(f"{resource.label}: linked template (templateLink); main.json must be self-contained")
            inner = props.get("template")
            if isinstance(inner, Mapping):
                problems += [
                    f"{resource.where}.properties.template: {p}" for p in schema_problems(inner, TEMPLATE_SCHEMA)
                ]
                if props.get("expressionEvaluationOptions", {}).get("scope") != "inner":
                    problems.append(
                        f"{resource.label}: inline template without expressionEvaluationOptions.scope=inner"
                    )
    return problems


def check_parameters_file(
    template: Mapping[str, Any],
    parameters: Mapping[str, Any],
    filled_by_deploy: frozenset[str] = FILLED_BY_DEPLOY_COMMAND,
) -> list[str]:
    problems = schema_problems(parameters, PARAMETERS_SCHEMA)
    declared: Mapping[str, Any] = template.get("parameters", {})
    given: Mapping[str, Any] = parameters.get("parameters", {})
    for name in given:
        if name not in declared:
            problems.append(f"parameter {name!r} is not declared by the template")
    for name, spec in declared.items():
        if "defaultValue" in spec:
            continue
        if name not in given and name not in filled_by_deploy:
            problems.append(f"required parameter {name!r} is neither in the file nor filled by the deploy command")
    for name, entry in given.items():
        spec = declared.get(name)
        if not spec or "value" not in entry:
            continue
        allowed = spec.get("allowedValues")
        if allowed is not None and entry["value"] not in allowed:
            problems.append(f"parameter {name!r}: {entry['value']!r} is not one of {allowed}")
        if spec.get("type", "").lower().startswith("secure"):
            problems.append(f"parameter {name!r} is secure: it must not have a value in a committed file")
    for name in filled_by_deploy:
        if name in given:
            problems.append(f"parameter {name!r} is filled by the deploy command and must not be in the file")
    return problems


# --- naming rules ---------------------------------------------------------------------------------------------------


def expand_variables(text: str, variables: Mapping[str, Any], depth: int = 0) -> str:
    """Replace ``variables('x')`` by the variable's own text (recursively) to see what a name is built from."""
    if depth > 10:
        return text

    def replace(match: re.Match[str]) -> str:
        value = variables.get(match.group(1))
        if not isinstance(value, str):
            return match.group(0)
        inner = expression_of(value)
        return expand_variables(inner if inner is not None else f"'{value}'", variables, depth + 1)

    return re.sub(r"variables\('([^']+)'\)", replace, text)


def check_names(template: Mapping[str, Any]) -> list[str]:
    """Names must not use functions that make checkov drop failed checks; storage account names must be valid."""
    problems: list[str] = []
    variables: Mapping[str, Any] = template.get("variables", {})
    for resource in iter_resources(template):
        expanded = expand_variables(str(resource.body.get("name", "")), variables)
        for function in CHECKOV_BLIND_FUNCTIONS:
            if function.lower() in expanded.lower():
                problems.append(f"{resource.label}: name uses {function}...) (checkov then hides failed checks)")
        if resource.type == STORAGE_ACCOUNTS:
            problems += storage_name_problems(resource, expanded, template)
    return problems


def storage_name_problems(resource: Resource, expanded: str, template: Mapping[str, Any]) -> list[str]:
    """A storage account name must be 3-24 lowercase letters and digits: prove it for the concat() formula."""
    expression = expression_of(expanded)
    if expression is None:
        ok = re.fullmatch(r"[a-z0-9]{3,24}", expanded) is not None
        return [] if ok else [f"{resource.label}: storage account name {expanded!r} is not 3-24 lowercase alnum"]
    args = call_args(normalise(expression), "concat")
    if args is None:
        return [f"{resource.label}: storage account name must be concat(literals, env, uniqueString(...))"]
    longest = 0
    for arg in args:
        lit = literal(arg)
        if lit is not None:
            if not re.fullmatch(r"[a-z0-9]*", lit):
                return [f"{resource.label}: storage account name part {lit!r} is not lowercase alnum"]
            longest += len(lit)
            continue
        if arg.startswith("uniqueString("):
            longest += 13  # uniqueString is 13 lowercase alphanumerics
            continue
        param = re.fullmatch(r"parameters\('([^']+)'\)", arg)
        allowed = template.get("parameters", {}).get(param.group(1), {}).get("allowedValues") if param else None
        if not allowed or not all(isinstance(v, str) and re.fullmatch(r"[a-z0-9]+", v) for v in allowed):
            return [f"{resource.label}: storage account name part {arg} is not bounded (allowedValues lowercase alnum)"]
        longest += max(len(v) for v in allowed)
    if not 3 <= longest <= 24:
        return [f"{resource.label}: storage account name can be {longest} characters long (max 24)"]
    return []


# --- check 3: role assignments --------------------------------------------------------------------------------------

_REFERENCE = re.compile(r"^reference\((resourceId\(.*?\))(?:,'[^']*')?(?:,'Full')?\)\.(.+)$")


def _resources_by_type(template: Mapping[str, Any], type_: str) -> list[Resource]:
    return [r for r in iter_resources(template) if r.type == type_]


def _find(template: Mapping[str, Any], type_: str, names: tuple[str, ...]) -> Resource | None:
    for resource in _resources_by_type(template, type_):
        if tuple(normalise(s) for s in resource.segments) == tuple(normalise(n) for n in names):
            return resource
    return None


def principal_source(template: Mapping[str, Any], principal_id: str) -> str | None:
    """Which managed identity an assignment's principalId comes from, or None if it is not a managed identity."""
    expression = expression_of(principal_id)
    if expression is None:
        return None
    match = _REFERENCE.match(normalise(expression))
    if not match:
        return None
    target = resource_id_target(match.group(1))
    if target is None:
        return None
    type_, names = target
    path = match.group(2)
    resource = _find(template, type_, names)
    if resource is None:
        return None
    if type_ == USER_ASSIGNED_IDENTITIES and path == "principalId":
        return f"user-assigned identity {'/'.join(names)}"
    if path == "identity.principalId" and "SystemAssigned" in str(resource.body.get("identity", {}).get("type", "")):
        return f"system-assigned identity of {type_} {'/'.join(names)}"
    if type_ == "Microsoft.ContainerService/managedClusters" and path == "identityProfile.kubeletidentity.objectId":
        return f"kubelet identity of {'/'.join(names)}"
    return None


# Azure ML assigns its workspace's system identity the roles it needs on the storage account, key vault and
# registry itself: the template must not (docs/decisions/0022).
SELF_ASSIGNING_PREFIX = "system-assigned identity of Microsoft.MachineLearningServices/workspaces "


def check_role_assignments(
    template: Mapping[str, Any], broad_scope_allowed: Mapping[str, str] = BROAD_SCOPE_ALLOWED
) -> list[str]:
    problems: list[str] = []
    assignments = _resources_by_type(template, ROLE_ASSIGNMENTS)
    if not assignments:
        return ["no role assignments at all"]
    for resource in assignments:
        props = resource.body.get("properties", {})
        principal = str(props.get("principalId", ""))
        source = principal_source(template, principal)
        if source is None:
            problems.append(f"{resource.label}: principalId {principal!r} is not a managed identity of this template")
        elif source.startswith(SELF_ASSIGNING_PREFIX):
            problems.append(
                f"{resource.label}: the AML workspace grants its own system identity its roles when it is created; "
                "assigning one again fails the deployment with RoleAssignmentExists"
            )
        if props.get("principalType") != "ServicePrincipal":
            problems.append(f"{resource.label}: principalType must be ServicePrincipal")
        if not str(props.get("roleDefinitionId", "")).strip():
            problems.append(f"{resource.label}: no roleDefinitionId")
        scope = resource.body.get("scope")
        key = "/".join(resource.segments)
        broad = scope is None or any(
            token in normalise(str(scope)) for token in ("resourceGroup().id", "subscription().id", "subscription()")
        )
        if broad and key not in broad_scope_allowed:
            problems.append(f"{resource.label}: scope is the resource group or subscription (give the resource)")
    return problems


# --- check 4: private endpoints and peerings ----------------------------------------------------------------------


def check_private_endpoints(template: Mapping[str, Any]) -> list[str]:
    groups = {tuple(normalise(s) for s in r.segments[:-1]) for r in _resources_by_type(template, ZONE_GROUPS)}
    problems = []
    for endpoint in _resources_by_type(template, PRIVATE_ENDPOINTS):
        if tuple(normalise(s) for s in endpoint.segments) not in groups:
            problems.append(f"{endpoint.label}: no privateDnsZoneGroups child (its DNS name would not resolve)")
    return problems


def _remote_vnet(peering: Resource) -> tuple[str, ...] | None:
    remote = str(peering.body.get("properties", {}).get("remoteVirtualNetwork", {}).get("id", ""))
    expression = expression_of(remote)
    target = resource_id_target(expression) if expression else None
    if target is None or target[0] != "Microsoft.Network/virtualNetworks":
        return None
    return tuple(normalise(n) for n in target[1])


def check_peerings(template: Mapping[str, Any]) -> list[str]:
    peerings = _resources_by_type(template, PEERINGS)
    links: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    problems = []
    for peering in peerings:
        remote = _remote_vnet(peering)
        if remote is None:
            problems.append(f"{peering.label}: remoteVirtualNetwork.id is not resourceId('Microsoft.Network/...')")
            continue
        links.add((tuple(normalise(s) for s in peering.segments[:-1]), remote))
    for local, remote in sorted(links):
        if (remote, local) not in links:
            problems.append(f"peering {'/'.join(local)} -> {'/'.join(remote)} has no reverse peering")
    return problems


# --- check 5: hosts without public addresses or passwords -----------------------------------------------------------

PUBLIC_IPS = "Microsoft.Network/publicIPAddresses"
NAT_GATEWAYS = "Microsoft.Network/natGateways"


def _contains(node: Any, needle: str) -> bool:
    return needle in json.dumps(node)


def check_no_public_ips_or_passwords(template: Mapping[str, Any]) -> list[str]:
    """No network interface has a public IP, a public IP serves only a NAT gateway, no VM takes a password."""
    problems: list[str] = []
    for nic in _resources_by_type(template, "Microsoft.Network/networkInterfaces"):
        for config in nic.body.get("properties", {}).get("ipConfigurations", []):
            if "publicIPAddress" in config.get("properties", {}):
                problems.append(f"{nic.label}: ipConfiguration {config.get('name')} has a public IP address")
    users = [
        r
        for r in iter_resources(template)
        if r.type not in (PUBLIC_IPS, NAT_GATEWAYS) and _contains(r.body, PUBLIC_IPS)
    ]
    problems += [f"{r.label}: uses a public IP address (only the NAT gateway may)" for r in users]
    for vm in _resources_by_type(template, "Microsoft.Compute/virtualMachines"):
        os_profile = vm.body.get("properties", {}).get("osProfile", {})
        if "adminPassword" in os_profile:
            problems.append(f"{vm.label}: osProfile.adminPassword (SSH keys only)")
        linux = os_profile.get("linuxConfiguration", {})
        if linux.get("disablePasswordAuthentication") is not True:
            problems.append(f"{vm.label}: linuxConfiguration.disablePasswordAuthentication is not true")
        if not linux.get("ssh", {}).get("publicKeys"):
            problems.append(f"{vm.label}: no SSH public key")
    for name in template.get("parameters", {}):
        if "password" in name.lower():
            problems.append(f"parameter {name!r}: the template takes no passwords")
    return problems


# --- every parameter and variable is used (arm-ttk fails the pipeline otherwise) ----------------------------------


def check_references(template: Mapping[str, Any]) -> list[str]:
    """Every declared parameter and variable is referenced somewhere else in the template."""
    problems: list[str] = []
    for kind in ("parameters", "variables"):
        for name in template.get(kind, {}):
            rest = {k: v for k, v in template.items() if k != kind}
            rest[kind] = {k: v for k, v in template.get(kind, {}).items() if k != name}
            if not re.search(rf"{kind}\('{re.escape(name)}'\)", json.dumps(rest)):
                problems.append(f"{kind[:-1]} {name!r} is declared but never used")
    return problems


# --- check 6: the system's resource types -------------------------------------------------------------------------


def check_required_types(template: Mapping[str, Any], required: Sequence[str] = REQUIRED_TYPES) -> list[str]:
    present = {t.lower() for t in resource_types(template)}
    return [f"no resource of type {t}" for t in required if t.lower() not in present]


# --- outputs --------------------------------------------------------------------------------------------------------

REQUIRED_OUTPUTS: tuple[str, ...] = (
    "lakeAccountUrl",
    "lakeContainer",
    "kafkaBootstrapServers",
    "mlflowTrackingUri",
    "airflowUrl",
    "amlWorkspaceName",
    "amlEndpointName",
    "amlScoringUri",
    "amlComputeName",
    "functionAppName",
    "functionAppUrl",
    "apimGatewayUrl",
    "apimServiceName",
    "subscriptionId",
    "resourceGroupName",
    "location",
)
REQUIRED_PARAMETERS: tuple[str, ...] = (
    "env",
    "location",
    "namePrefix",
    "apimPolicyXml",
    "sshPublicKey",
    "apimPublisherEmail",
    "apimPublisherName",
)


def check_interface(template: Mapping[str, Any]) -> list[str]:
    """The parameters and outputs the deploy command relies on."""
    problems = [f"missing output {o!r}" for o in REQUIRED_OUTPUTS if o not in template.get("outputs", {})]
    params: Mapping[str, Any] = template.get("parameters", {})
    problems += [f"missing parameter {p!r}" for p in REQUIRED_PARAMETERS if p not in params]
    env = params.get("env", {})
    if sorted(env.get("allowedValues", [])) != ["dev", "prod", "test"]:
        problems.append("parameter 'env' must have allowedValues dev/test/prod")
    for name in FILLED_BY_DEPLOY_COMMAND:
        if "defaultValue" in params.get(name, {}):
            problems.append(f"parameter {name!r} is filled by the deploy command: it must have no default")
    return problems


# --- check 2: checkov saw every resource ---------------------------------------------------------------------------

SKIP_MARK = "checkov:skip="


def checkov_type_of(resource_id: str, types: Sequence[str]) -> str | None:
    """The resource type of a checkov resource id (``<type>.<rendered name>``): the longest type it starts with."""
    matches = [t for t in types if resource_id.lower().startswith(t.lower() + ".")]
    return max(matches, key=len) if matches else None


def checkov_coverage_problems(template: Mapping[str, Any], report: Mapping[str, Any]) -> list[str]:
    """Guard against checkov's silent skips, given the JSON of ``cloud/validate/checkov_scan.py``.

    * every resource of the template is among the resources checkov scanned (counted per type, since checkov
      names a resource by its own rendering of the name);
    * every scanned resource of a type checkov has checks for has at least one result (passed, failed or
      skipped);
    * no resource's rendered name contains a function that makes checkov drop that resource's failures
      (:data:`CHECKOV_BLIND_FUNCTIONS`): such a resource shows up with its passed checks only.
    """
    types = sorted({r.type for r in iter_resources(template)})
    scanned: list[str] = list(report.get("resources", []))
    results = [c for kind in ("passed", "failed", "skipped") for c in report.get("results", {}).get(kind, [])]
    with_results = {str(c.get("resource", "")) for c in results}
    checked_types = {t.lower() for t in report.get("types_with_checks", [])}
    problems: list[str] = []
    expected: dict[str, int] = {}
    for resource in iter_resources(template):
        expected[resource.type] = expected.get(resource.type, 0) + 1
    found: dict[str, int] = {}
    for resource_id in scanned:
        type_ = checkov_type_of(resource_id, types)
        if type_ is None:
            problems.append(f"checkov scanned {resource_id}, which is no resource type of the template")
            continue
        found[type_] = found.get(type_, 0) + 1
        if type_.lower() in checked_types and resource_id not in with_results:
            problems.append(f"checkov has checks for {type_} but reported none for {resource_id}")
    for type_, count in sorted(expected.items()):
        if found.get(type_, 0) != count:
            problems.append(f"checkov scanned {found.get(type_, 0)} of the {count} resources of type {type_}")
    for resource_id in sorted(set(scanned) | with_results):
        blind = [f for f in CHECKOV_BLIND_FUNCTIONS if f.lower() in resource_id.lower()]
        if blind:
            problems.append(f"checkov hides failed checks of {resource_id} (its name uses {', '.join(blind)}...))")
    return sorted(set(problems))


@dataclass(frozen=True)
class Suppression:
    """One inline ``checkov:skip=ID:reason`` of a resource's metadata."""

    check_id: str
    resource: Resource
    reason: str


def inline_suppressions(template: Mapping[str, Any]) -> list[Suppression]:
    """Every ``checkov:skip=ID:reason`` in the resources' ``metadata.checkov`` lists."""
    found: list[Suppression] = []
    for resource in iter_resources(template):
        for entry in resource.body.get("metadata", {}).get("checkov", []):
            text = str(entry)
            if text.startswith(SKIP_MARK):
                check_id, _, reason = text[len(SKIP_MARK) :].partition(":")
                found.append(Suppression(check_id.strip(), resource, reason.strip()))
    return found


def suppression_problems(template: Mapping[str, Any], report: Mapping[str, Any], documented: str) -> list[str]:
    """Every suppression has a reason, is written down in ``documented`` (cloud/arm/README.md) and is used.

    A skip without a real reason, a check id the README does not name, a skip checkov reports without its
    comment, and an inline skip that suppressed nothing (stale: the check passes now, or no longer exists) are
    problems.
    """
    problems: list[str] = []
    inline = inline_suppressions(template)
    for one in inline:
        if len(one.reason) < 20:
            problems.append(f"{one.resource.label}: checkov:skip={one.check_id} has no real reason ({one.reason!r})")
        if f"`{one.check_id}`" not in documented:
            problems.append(f"{one.resource.label}: checkov:skip={one.check_id} is not in cloud/arm/README.md")
    skipped = report.get("results", {}).get("skipped", [])
    types = sorted({r.type for r in iter_resources(template)})
    used: dict[tuple[str, str | None], int] = {}
    for check in skipped:
        if not str(check.get("suppress_comment") or "").strip():
            problems.append(f"checkov skipped {check.get('check_id')} on {check.get('resource')} without a reason")
        key = (str(check.get("check_id")), checkov_type_of(str(check.get("resource", "")), types))
        used[key] = used.get(key, 0) + 1
    wanted: dict[tuple[str, str | None], int] = {}
    for one in inline:
        key = (one.check_id, one.resource.type)
        wanted[key] = wanted.get(key, 0) + 1
    for (check_id, type_), count in sorted(wanted.items(), key=str):
        if used.get((check_id, type_), 0) < count:
            problems.append(f"checkov:skip={check_id} on {type_} suppresses nothing (stale)")
    return problems


ALL_CHECKS = {
    "schema": check_template_schema,
    "names": check_names,
    "role_assignments": check_role_assignments,
    "private_endpoints": check_private_endpoints,
    "peerings": check_peerings,
    "no_public_ips_or_passwords": check_no_public_ips_or_passwords,
    "references": check_references,
    "required_types": check_required_types,
    "interface": check_interface,
}


def run_all(template: Mapping[str, Any]) -> dict[str, list[str]]:
    return {name: check(template) for name, check in ALL_CHECKS.items()}


if __name__ == "__main__":  # pragma: no cover - manual use: python cloud/validate/arm_checks.py
    report = run_all(load(MAIN_TEMPLATE))
    print(json.dumps(report, indent=2))
    raise SystemExit(1 if any(report.values()) else 0)
