"""Check the property names of ARM resources against the Azure SDK models (run in the arm-validate tool venv).

    <tool venv>/bin/python cloud/validate/sdk_property_check.py cloud/arm/main.json [more templates...]

For each resource, the SDK model of its type (``MODELS``) is loaded and every key of the resource body is looked
up among the model's REST names, recursively into nested models, lists of models and maps of models
(discriminated sub-types included, e.g. a compute's ``computeType``). Keys whose value is an ARM expression are
checked by name but not entered. Prints a JSON report ``{"problems": [...], "checked": {...}, "unmodelled": {...}}``
and exits 1 when there are problems.

Two generations of generated models are understood: msrest models (``_attribute_map`` with flattened keys such as
``properties.supportsHttpsTrafficOnly``) and the newer TypeSpec models (``rest_field`` attributes with their REST
name). The script imports only the SDK packages of cloud/validate/requirements.txt.
"""

from __future__ import annotations

import difflib
import importlib
import json
import re
import sys
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import arm_checks  # same folder; standard library only

ML = "azure.ai.ml._restclient.arm_ml_service.models"

# ARM resource type -> (module, model class)
MODELS: dict[str, tuple[str, str]] = {
    "Microsoft.Storage/storageAccounts": ("azure.mgmt.storage.models", "StorageAccountCreateParameters"),
    "Microsoft.Storage/storageAccounts/blobServices": ("azure.mgmt.storage.models", "BlobServiceProperties"),
    "Microsoft.Storage/storageAccounts/blobServices/containers": ("azure.mgmt.storage.models", "BlobContainer"),
    "Microsoft.Network/privateEndpoints": ("azure.mgmt.network.models", "PrivateEndpoint"),
    "Microsoft.Network/privateEndpoints/privateDnsZoneGroups": ("azure.mgmt.network.models", "PrivateDnsZoneGroup"),
    "Microsoft.Network/virtualNetworks": ("azure.mgmt.network.models", "VirtualNetwork"),
    "Microsoft.Network/virtualNetworks/virtualNetworkPeerings": ("azure.mgmt.network.models", "VirtualNetworkPeering"),
    "Microsoft.Network/networkSecurityGroups": ("azure.mgmt.network.models", "NetworkSecurityGroup"),
    "Microsoft.Network/networkInterfaces": ("azure.mgmt.network.models", "NetworkInterface"),
    "Microsoft.Network/publicIPAddresses": ("azure.mgmt.network.models", "PublicIPAddress"),
    "Microsoft.Network/natGateways": ("azure.mgmt.network.models", "NatGateway"),
    "Microsoft.Network/privateDnsZones": ("azure.mgmt.privatedns.models", "PrivateZone"),
    "Microsoft.Network/privateDnsZones/virtualNetworkLinks": ("azure.mgmt.privatedns.models", "VirtualNetworkLink"),
    "Microsoft.KeyVault/vaults": ("azure.mgmt.keyvault.models", "VaultCreateOrUpdateParameters"),
    "Microsoft.Insights/components": ("azure.mgmt.applicationinsights.models", "ApplicationInsightsComponent"),
    "Microsoft.OperationalInsights/workspaces": ("azure.mgmt.loganalytics.models", "Workspace"),
    "Microsoft.ContainerRegistry/registries": ("azure.mgmt.containerregistry.models", "Registry"),
    "Microsoft.MachineLearningServices/workspaces": (ML, "Workspace"),
    "Microsoft.MachineLearningServices/workspaces/computes": (ML, "ComputeResource"),
    "Microsoft.MachineLearningServices/workspaces/onlineEndpoints": (ML, "OnlineEndpoint"),
    "Microsoft.ContainerService/managedClusters": ("azure.mgmt.containerservice.models", "ManagedCluster"),
    "Microsoft.ContainerService/managedClusters/maintenanceConfigurations": (
        "azure.mgmt.containerservice.models",
        "MaintenanceConfiguration",
    ),
    "Microsoft.KubernetesConfiguration/extensions": ("azure.mgmt.kubernetesconfiguration.models", "Extension"),
    "Microsoft.Compute/virtualMachines": ("azure.mgmt.compute.models", "VirtualMachine"),
    "Microsoft.ManagedIdentity/userAssignedIdentities": ("azure.mgmt.msi.models", "Identity"),
    "Microsoft.Web/serverfarms": ("azure.mgmt.web.models", "AppServicePlan"),
    "Microsoft.Web/sites": ("azure.mgmt.web.models", "Site"),
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": (
        "azure.mgmt.web.models",
        "CsmPublishingCredentialsPoliciesEntity",
    ),
    "Microsoft.ApiManagement/service": ("azure.mgmt.apimanagement.models", "ApiManagementServiceResource"),
    "Microsoft.ApiManagement/service/apis": ("azure.mgmt.apimanagement.models", "ApiCreateOrUpdateParameter"),
    "Microsoft.ApiManagement/service/apis/operations": ("azure.mgmt.apimanagement.models", "OperationContract"),
    "Microsoft.ApiManagement/service/apis/policies": ("azure.mgmt.apimanagement.models", "PolicyContract"),
    "Microsoft.ApiManagement/service/products": ("azure.mgmt.apimanagement.models", "ProductContract"),
    "Microsoft.ApiManagement/service/subscriptions": (
        "azure.mgmt.apimanagement.models",
        "SubscriptionCreateParameters",
    ),
    "Microsoft.Authorization/roleAssignments": ("azure.mgmt.authorization.models", "RoleAssignmentCreateParameters"),
    "Microsoft.Authorization/roleDefinitions": ("azure.mgmt.authorization.models", "RoleDefinition"),
}

# Resource types deliberately not checked against a model, with the reason.
UNMODELLED: dict[str, str] = {
    "Microsoft.ApiManagement/service/products/apis": "a link resource without a body (no properties to check)",
    "Microsoft.Resources/deployments": "nested deployments are walked: their inner resources are checked",
    "Microsoft.Insights/diagnosticSettings": "azure-mgmt-monitor 7 no longer ships the diagnostic-settings models; "
    "the two settings use only workspaceId, logs[].category/categoryGroup/enabled and metrics[].category/enabled",
}

# Keys of a resource that belong to the template language, not to the resource's REST body.
TEMPLATE_KEYS = {"type", "apiVersion", "name", "dependsOn", "metadata", "comments", "scope", "copy", "condition",
                 "resources"}  # fmt: skip


class Field:
    """What a REST key holds: a model, a list or map of something, a nested group of keys, or a plain value."""

    def __init__(self, kind: str, model: type | None = None, item: Field | None = None, tree: Node | None = None):
        self.kind = kind  # "model" | "list" | "map" | "tree" | "value"
        self.model = model
        self.item = item
        self.tree = tree


Node = dict[str, Field]
VALUE = Field("value")


def msrest_fields(cls: type) -> Node:
    module = sys.modules[cls.__module__]
    root: Node = {}
    for entry in getattr(cls, "_attribute_map", {}).values():
        key = entry["key"].replace("\\.", "\x00")
        parts = [p.replace("\x00", ".") for p in key.split(".")]
        node = root
        for part in parts[:-1]:
            field = node.setdefault(part, Field("tree", tree={}))
            if field.tree is None:  # a key that is both a value and a group: accept both
                field.tree = {}
            node = field.tree
        node[parts[-1]] = msrest_type(entry["type"], module)
    return root


def msrest_type(type_name: str, module: Any) -> Field:
    if type_name.startswith("[") and type_name.endswith("]"):
        return Field("list", item=msrest_type(type_name[1:-1], module))
    if type_name.startswith("{") and type_name.endswith("}"):
        return Field("map", item=msrest_type(type_name[1:-1], module))
    model = getattr(module, type_name, None)
    if isinstance(model, type) and hasattr(model, "_attribute_map"):
        return Field("model", model=model)
    return VALUE


def typespec_fields(cls: type) -> Node:
    node: Node = {}
    for klass in reversed(cls.__mro__):
        annotations = vars(klass).get("__annotations__", {})
        for attr, value in vars(klass).items():
            if attr.startswith("_") or not hasattr(value, "_rest_name_input"):
                continue
            rest = value._rest_name_input or attr
            node[rest] = typespec_type(resolve(annotations.get(attr), klass))
    return node


def resolve(annotation: Any, klass: type) -> Any:
    """Evaluate one (string or forward-reference) annotation of a TypeSpec model; None if it cannot be."""
    if annotation is None:
        return None
    module = sys.modules[klass.__module__]
    namespace = dict(vars(module))
    package = klass.__module__.rsplit(".", 1)[0]  # ...models._models -> ...models
    namespace.setdefault("_models", importlib.import_module(package))
    holder = type("Holder", (), {"__annotations__": {"x": annotation}, "__module__": klass.__module__})
    try:
        return typing.get_type_hints(holder, globalns=namespace)["x"]
    except Exception:
        return None


def typespec_type(annotation: Any) -> Field:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Union:
        models = [a for a in args if typespec_type(a).kind != "value"]
        return typespec_type(models[0]) if len(models) == 1 else VALUE
    if origin in (list, typing.List, typing.Sequence) and args:  # noqa: UP006
        return Field("list", item=typespec_type(args[0]))
    if origin in (dict, typing.Dict, typing.Mapping) and len(args) == 2:  # noqa: UP006
        return Field("map", item=typespec_type(args[1]))
    if isinstance(annotation, type) and is_model(annotation):
        return Field("model", model=annotation)
    return VALUE


def is_model(cls: type) -> bool:
    return hasattr(cls, "_attribute_map") or any(
        hasattr(v, "_rest_name_input") for k in cls.__mro__ for v in vars(k).values()
    )


def fields_of(cls: type) -> Node:
    return msrest_fields(cls) if hasattr(cls, "_attribute_map") else typespec_fields(cls)


def subtype(cls: type, body: Mapping[str, Any]) -> type:
    """The discriminated sub-model ``body`` describes (e.g. Kubernetes for computeType 'Kubernetes')."""
    subtype_map = getattr(cls, "_subtype_map", None)
    if subtype_map:  # msrest
        module = sys.modules[cls.__module__]
        for attr, mapping in subtype_map.items():
            rest = cls._attribute_map[attr]["key"]  # type: ignore[attr-defined]
            chosen = mapping.get(str(body.get(rest)))
            if chosen and isinstance(getattr(module, chosen, None), type):
                return subtype(getattr(module, chosen), body)
    mapping = getattr(cls, "__mapping__", None)
    if isinstance(mapping, dict) and mapping:  # TypeSpec
        for klass in cls.__mro__:
            for attr, value in vars(klass).items():
                if getattr(value, "_is_discriminator", False):
                    chosen = mapping.get(str(body.get(value._rest_name_input or attr)))
                    if isinstance(chosen, type) and chosen is not cls:
                        return subtype(chosen, body)
    return cls


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("[") and not value.startswith("[[")


def check_body(body: Mapping[str, Any], node: Node, path: str, problems: list[str]) -> None:
    for key, value in body.items():
        field = node.get(key)
        if field is None:
            near = sorted(k for k in node if k.lower() == key.lower()) or difflib.get_close_matches(key, list(node), 1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            problems.append(f"{path}.{key}: unknown property{hint}")
            continue
        check_value(value, field, f"{path}.{key}", problems)


def check_value(value: Any, field: Field, path: str, problems: list[str]) -> None:
    if is_expression(value) or value is None:
        return
    if field.kind == "tree" and isinstance(value, Mapping):
        check_body(value, field.tree or {}, path, problems)
    elif field.kind == "model" and isinstance(value, Mapping) and field.model is not None:
        model = subtype(field.model, value)
        check_body(value, fields_of(model), path, problems)
    elif field.kind == "list" and isinstance(value, list) and field.item is not None:
        for index, item in enumerate(value):
            check_value(item, field.item, f"{path}[{index}]", problems)
    elif field.kind == "map" and isinstance(value, Mapping) and field.item is not None:
        for key, item in value.items():
            check_value(item, field.item, f"{path}[{key!r}]", problems)


def check_template(template: Mapping[str, Any], source: str) -> tuple[list[str], dict[str, str], dict[str, str]]:
    problems: list[str] = []
    checked: dict[str, str] = {}
    unmodelled: dict[str, str] = {}
    for resource in arm_checks.iter_resources(template):
        if resource.type in UNMODELLED:
            unmodelled[resource.type] = UNMODELLED[resource.type]
            continue
        spec = MODELS.get(resource.type)
        if spec is None:
            problems.append(f"{source}: {resource.label}: no SDK model mapped and no reason in UNMODELLED")
            continue
        model = getattr(importlib.import_module(spec[0]), spec[1])
        checked[resource.type] = f"{spec[0]}.{spec[1]}"
        body = {k: v for k, v in resource.body.items() if k not in TEMPLATE_KEYS}
        check_body(body, fields_of(subtype(model, body)), f"{source}: {resource.label}", problems)
    return problems, checked, unmodelled


# --- newest stable API version per resource type (arm-ttk's "apiVersions Should Be Recent" needs the list) ---------

_VERSION_DIR = re.compile(r"^v(\d{4})_(\d{2})_(\d{2})$")
_DEFAULT_API = re.compile(r'api_version[^=\n]*=\s*kwargs\.pop\(\s*"api_version"\s*,\s*"([^"]+)"')
# Types whose SDK package exposes no API version of its own (the generic Microsoft.Insights diagnostic settings
# have no GA version at all; azure-ai-ml's vendored ARM models carry theirs in the operations).
API_VERSION_UNKNOWN = {"Microsoft.Insights/diagnosticSettings"}


def newest_stable(package: str, model: str) -> str | None:
    """The newest non-preview API version of ``package`` that has ``model``: a multi-API package's newest
    ``vYYYY_MM_DD`` folder holding the model, else the single API version the package's configuration pins."""
    module = importlib.import_module(package)
    root = Path(module.__path__[0])
    versions = []
    for child in root.iterdir():
        match = _VERSION_DIR.match(child.name)
        if match and (child / "models").exists():
            try:
                models = importlib.import_module(f"{package}.{child.name}.models")
            except ImportError:
                continue
            if hasattr(models, model):
                versions.append("-".join(match.groups()))
    if versions:
        return max(versions)
    for config in sorted(root.rglob("_configuration.py")):
        found = _DEFAULT_API.search(config.read_text(encoding="utf-8"))
        if found and "preview" not in found.group(1):
            return found.group(1)
    return None


def api_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for rtype, (module, model) in sorted(MODELS.items()):
        package = module.removesuffix(".models")
        out[rtype] = newest_stable(package, model)
    for rtype in API_VERSION_UNKNOWN:
        out[rtype] = None
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--api-versions"]:
        print(json.dumps(api_versions(), indent=2, sort_keys=True))
        return 0
    problems: list[str] = []
    checked: dict[str, str] = {}
    unmodelled: dict[str, str] = {}
    for name in argv or [str(arm_checks.MAIN_TEMPLATE)]:
        found, seen, skipped = check_template(arm_checks.load(Path(name)), Path(name).name)
        problems += found
        checked.update(seen)
        unmodelled.update(skipped)
    print(json.dumps({"problems": problems, "checked": checked, "unmodelled": unmodelled}, indent=2, sort_keys=True))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
