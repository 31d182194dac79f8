"""arm-ttk's deployment-template tests, re-expressed in Python so they run offline on every unit-test run.

arm-ttk (``Test-AzTemplate``) is PowerShell and downloads itself, so only the pipeline's Validate stage runs it.
These functions follow the test scripts of ``arm-ttk/testcases/deploymentTemplate/`` closely enough that a
template they pass is one arm-ttk passes on the same points; each says which test it mirrors and what it leaves
out. Every ``check_*`` takes the template text and/or the parsed template and returns a list of problems.

Not here: "apiVersions Should Be Recent" needs the list of each type's API versions, which lives in the Azure SDK
models: :func:`check_api_versions` takes that list as an argument (the unit test reads it in the tool venv with
``sdk_property_check.py --api-versions``).

Standard library only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from typing import Any

# --- shared helpers -----------------------------------------------------------------------------------------------


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any, Mapping[str, Any]]]:
    """Every (path, key, value, owning object) of a JSON document, depth first."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            yield here, str(key), value, node
            yield from _walk(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.strip().startswith("[") and not value.strip().startswith("[[")


def _section_span(text: str, name: str) -> tuple[int, int] | None:
    """The character span of the top-level ``"name": {...}`` section of a template's JSON text."""
    match = re.search(rf'"{re.escape(name)}"\s*:\s*\{{', text)
    if not match:
        return None
    depth, quoted, i = 0, False, match.end() - 1
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return match.start(), i + 1
        i += 1
    return match.start(), len(text)


def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


# --- Template Should Not Contain Blanks ---------------------------------------------------------------------------

# arm-ttk's $PropertiesThatCanBeEmpty
BLANK_ALLOWED = (
    "resources",
    "outputs",
    "variables",
    "parameters",
    "functions",
    "properties",
    "template",
    "defaultValue",
    "accessPolicies",
    "value",
    "promotionCode",
    "inputs",
    "notEquals",
    "clientId",
    "allowedCallerIpAddresses",
    "workerPools",
    "AzureMonitor",
    "requiredDataConnectors",
    "UserTokenPrepend",
)
_BLANK = re.compile(r'(?<=:)\s*(?:\{\s*\}|\[\s*\]|"\s*"|null)')
_PROPERTY_BEFORE = re.compile(r'"(?P<name>[^"]+)"\s*:\s*$')


def check_blanks(text: str, template: Mapping[str, Any]) -> list[str]:
    """Empty objects, arrays, strings and nulls as property values ("Template Should Not Contain Blanks").

    As arm-ttk: a blank is allowed for a property named in :data:`BLANK_ALLOWED`, for a property that an object
    holding one of those names also has, and for a property whose name is an expression (``"[resourceId(...)]": {}``
    of ``userAssignedIdentities``). arm-ttk's per-resource-type allowances (``Microsoft.Web/sites/config``
    properties, workbooks' serialized data) are not needed here: the template has neither.
    """
    allowed_regex = re.compile("(?:" + "|".join(BLANK_ALLOWED) + ")")
    excused: set[str] = set()
    for _, _, value, _owner in _walk(template):
        if isinstance(value, Mapping) and any(allowed_regex.search(str(k)) for k in value):
            excused.update(str(k) for k in value)
    problems = []
    for match in _BLANK.finditer(text):
        before = _PROPERTY_BEFORE.search(text[: match.start() + (len(match.group(0)) - len(match.group(0).lstrip()))])
        if not before:
            continue
        name = before.group("name")
        if name in BLANK_ALLOWED or name in excused or name.strip().startswith(("[", "/subscriptions/")):
            continue
        problems.append(f"line {_line(text, match.start())}: empty property {name!r} ({match.group(0).strip()})")
    return problems


# --- DeploymentTemplate Must Not Contain Hardcoded Uri ------------------------------------------------------------

DISALLOWED_HOSTS = (
    "management.core.windows.net",
    "gallery.azure.com",
    "management.azure.com",
    "database.windows.net",
    "core.windows.net",
    "login.microsoftonline.com",
    "graph.windows.net",
    "vault.azure.net",
    "datalake.azure.net",
    "azuredatalakestore.net",
    "azuredatalakeanalytics.net",
    "api.loganalytics.io",
    "asazure.windows.net",
    "batch.core.windows.net",
)
_HOSTS = re.compile("|".join(re.escape(h) for h in DISALLOWED_HOSTS), re.IGNORECASE)


def check_hardcoded_uris(text: str) -> list[str]:
    """Cloud-specific host names outside the parameters section ("Hardcoded Uri"); use ``environment()``.

    Allowed, as in arm-ttk: the ``https://schema.`` references and anything inside ``parameters``.
    """
    params = _section_span(text, "parameters")
    problems = []
    for match in _HOSTS.finditer(text):
        if params and params[0] <= match.start() < params[1]:
            continue
        if re.search(r"https://schema\.$", text[: match.start()], re.IGNORECASE):
            continue
        problems.append(f"line {_line(text, match.start())}: hardcoded reference to {match.group(0)}")
    return problems


# --- URIs Should Be Properly Constructed ---------------------------------------------------------------------------

_URI_KEY = re.compile(r"ur[il]$", re.IGNORECASE)
_BAD_IN_URI = re.compile(r"\b(format|concat)\s*\(", re.IGNORECASE)
_URI_FN = re.compile(r"\buri\s*\(", re.IGNORECASE)


def check_uri_construction(template: Mapping[str, Any]) -> list[str]:
    """A property named ``*uri``/``*url`` built with ``format()``/``concat()`` outside ``uri()``.

    arm-ttk looks at every such property of the template (variables and outputs included); an output object is
    judged by its text, as arm-ttk's string conversion of it does.
    """
    problems = []
    for path, key, value, _ in _walk(template):
        if not _URI_KEY.search(key):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        if "[" not in text:
            continue
        bad = _BAD_IN_URI.search(text)
        if not bad:
            continue
        uri = _URI_FN.search(text)
        if uri is None or bad.start() < uri.start():
            problems.append(f"{path}: {bad.group(1)}() builds a URI; use uri(base, relative)")
    return problems


# --- VM Size Should Be A Parameter ---------------------------------------------------------------------------------


def check_vm_sizes(template: Mapping[str, Any]) -> list[str]:
    """Every ``vmSize`` of a resource is a parameter (directly, or through a variable that is one)."""
    variables: Mapping[str, Any] = template.get("variables") or {}
    problems = []
    for path, key, value, _ in _walk({"resources": template.get("resources", [])}):
        if key != "vmSize":
            continue
        text = str(value)
        var = re.fullmatch(r"\[\s*variables\('([^']+)'\)\s*\]", text.strip())
        if var:
            text = str(variables.get(var.group(1), ""))
        if not re.search(r"^\s*\[.*parameters\s*\(\s*'", text):
            problems.append(f"{path}: vmSize {value!r} must be a parameter")
    return problems


# --- Location Should Not Be Hardcoded / Resources Should Have Location ------------------------------------------

_RG_LOCATION = re.compile(r"(?:resourceGroup|deployment)\(\)\.location", re.IGNORECASE)


def check_location(text: str, template: Mapping[str, Any]) -> list[str]:
    problems = []
    location = (template.get("parameters") or {}).get("location")
    if location is not None:
        if location.get("type") != "string":
            problems.append("parameter 'location' must be of type string")
        default = str(location.get("defaultValue", "")).strip()
        if default and default not in ("[resourceGroup().location]", "[deployment().location]", "global"):
            problems.append(f"parameter 'location' defaults to {default!r}: use [resourceGroup().location]")
    params = _section_span(text, "parameters")
    for match in _RG_LOCATION.finditer(text):
        if not (params and params[0] <= match.start() < params[1]):
            problems.append(f"line {_line(text, match.start())}: use parameters('location'), not {match.group(0)}")
    for index, resource in enumerate(template.get("resources", [])):
        loc = resource.get("location")
        if loc is not None and loc != "global" and not _is_expression(loc):
            problems.append(f"resources[{index}] {resource.get('name')}: location {loc!r} must be an expression")
    return problems


# --- adminUsername Should Not Be A Literal --------------------------------------------------------------------------


def check_admin_username(template: Mapping[str, Any]) -> list[str]:
    problems = []
    for section in ("resources", "variables"):
        for path, key, value, _ in _walk({section: template.get(section, {})}):
            literal = isinstance(value, str) and not re.search(r"\[[^\]]+\]", value.strip())
            if key in ("adminUsername", "administratorLogin") and literal:
                problems.append(f"{path}: {key} {value!r} is a literal")
    return problems


# --- parameters: secure types, defaults, min/max -------------------------------------------------------------------


def check_parameters(template: Mapping[str, Any]) -> list[str]:
    """Password params must be secure; secure strings have no literal default; minValue/maxValue are ints, in pairs."""
    problems = []
    for name, spec in (template.get("parameters") or {}).items():
        kind = str(spec.get("type", "")).lower()
        lowered = name.lower()
        secretish = any(w in lowered for w in ("password", "secret", "accountkey"))
        skipped = "secret" in lowered and any(w in lowered for w in ("permission", "version", "url", "uri", "name"))
        if secretish and not skipped and kind not in ("securestring", "secureobject", "bool"):
            problems.append(f"parameter {name!r} is of type {kind!r} but should be secure")
        default = spec.get("defaultValue")
        if kind == "securestring" and default and "newguid(" not in str(default).lower():
            problems.append(f"parameter {name!r} is a secure string with a default value")
        bounds = {b: spec[b] for b in ("minValue", "maxValue") if b in spec}
        for bound, value in bounds.items():
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"parameter {name!r}: {bound} is not an integer")
        if len(bounds) == 1:
            problems.append(f"parameter {name!r} has {next(iter(bounds))} without its counterpart")
    return problems


# --- Outputs Must Not Contain Secrets -------------------------------------------------------------------------------

_LIST_FN = re.compile(r"[\[(,]\s*list\w*\s*\(", re.IGNORECASE)


def check_outputs(template: Mapping[str, Any]) -> list[str]:
    problems = []
    secure = [
        name
        for name, spec in (template.get("parameters") or {}).items()
        if str(spec.get("type", "")).lower() in ("securestring", "secureobject")
    ]
    for name, output in (template.get("outputs") or {}).items():
        text = json.dumps(output)
        if _LIST_FN.search(text):
            problems.append(f"output {name!r} calls a list*() function (a secret)")
        if "password" in name.lower():
            problems.append(f"output {name!r}: its name suggests a secret")
        for param in secure:
            if re.search(rf"parameters\s*\(\s*'{re.escape(param)}'\s*\)", text, re.IGNORECASE):
                problems.append(f"output {name!r} returns the secure parameter {param!r}")
    return problems


# --- resource ids, dependsOn, dynamic variables, providers() --------------------------------------------------------

_ID_EXCEPTIONS = {
    "appid",
    "clientid",
    "datatypeid",
    "keyvaultsecretid",
    "keyvaultid",
    "keyid",
    "objectid",
    "subscriptionid",
    "tenantid",
    "groupid",
    "ruleid",
    "principalid",
    "roledefinitionid",
    "userassignedidentityresourceid",
}
_ALLOWED_ID = re.compile(
    r"^\s*\[\s*(extensionResourceId|resourceId|subscriptionResourceId|tenantResourceId|if|parameters|reference|"
    r"variables|subscription|guid)\s*\(",
    re.IGNORECASE,
)


def check_resource_ids(text: str, template: Mapping[str, Any]) -> list[str]:
    """IDs Should Be Derived From ResourceIDs; ResourceIds should not contain resourceGroup()/concat()/format()."""
    problems = []
    for path, key, value, _ in _walk({"resources": template.get("resources", [])}):
        if not key.lower().endswith("id") or key.lower() in _ID_EXCEPTIONS or ".metadata." in path:
            continue
        if isinstance(value, Mapping):
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{path}: blank id")
        elif not _ALLOWED_ID.search(value):
            problems.append(f"{path}: an id must come from resourceId() and its relatives, not {value!r}")
    for pattern in (
        r"resourceId\s*\(\s*(resourceGroup|subscription)\(",
        r"(?:tenant|extension|subscription)?resourceId\s*\(\s*(concat|format)\s*\(",
        r"reference\s*\(\s*(concat|format)\s*\(",
        r"\slist\w+\s*\(\s*(concat|format)\s*\(",
    ):
        for match in re.finditer(pattern, text, re.IGNORECASE):
            problems.append(f"line {_line(text, match.start())}: {match.group(0)} in a resource id")
    return problems


def check_expressions(text: str, template: Mapping[str, Any]) -> list[str]:
    """DependsOn Best Practices, Dynamic Variable References Should Not Use Concat, providers().apiVersions."""
    problems = []
    for path, key, value, _ in _walk({"resources": template.get("resources", [])}):
        if key != "dependsOn" or not isinstance(value, list):
            continue
        for dep in value:
            if re.match(r"^\s*\[\s*if\s*\(", str(dep)):
                problems.append(f"{path}: a dependency must not start with if()")
            if re.match(r"^\s*\[\s*concat\s*\(", str(dep)) and "copyindex(" not in str(dep).lower():
                problems.append(f"{path}: a dependency must not start with concat()")
    if re.search(r"variables\s*\(\s*concat\s*\(", text, re.IGNORECASE):
        problems.append("variables(concat(...)) dynamic reference; index the variable instead")
    if re.search(r"providers\(.*?\)\.apiVersions", text, re.IGNORECASE):
        problems.append("providers().apiVersions is not permitted, use a literal apiVersion")
    return problems


# --- Virtual machines ------------------------------------------------------------------------------------------------


def check_virtual_machines(template: Mapping[str, Any]) -> list[str]:
    """VM images: no preview image, version 'latest'; no ManagedIdentityExtension (VM Images Should Use Latest
    Version is disabled in arm-ttk itself; kept here because the template means to follow the image)."""
    problems = []
    for index, resource in enumerate(template.get("resources", [])):
        rtype = str(resource.get("type", ""))
        if rtype in ("Microsoft.Compute/virtualMachines", "Microsoft.Compute/virtualMachineScaleSets"):
            image = resource.get("properties", {}).get("storageProfile", {}).get("imageReference", {})
            for part in ("version", "sku", "offer"):
                if str(image.get(part, "")).lower().endswith("preview"):
                    problems.append(f"resources[{index}]: the image {part} {image.get(part)!r} is a preview")
            if image.get("version") not in (None, "latest"):
                problems.append(f"resources[{index}]: image version {image.get('version')!r} is not 'latest'")
        if "ManagedIdentityExtension" in json.dumps(resource):
            problems.append(f"resources[{index}]: the ManagedIdentityExtension is retired")
    return problems


# --- apiVersions Should Be Recent -----------------------------------------------------------------------------------

MAX_API_AGE_DAYS = 730
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def _api_date(version: str) -> date | None:
    match = _DATE.match(version)
    return date(int(match[1]), int(match[2]), int(match[3])) if match else None


def api_version_problem(
    rtype: str, version: str, newest: Mapping[str, str], today: date, max_age_days: int = MAX_API_AGE_DAYS
) -> str | None:
    """arm-ttk's rule for one (type, apiVersion): a fixed date; under two years old, or the newest stable version
    of its type; a preview only when no newer stable version exists."""
    when = _api_date(version)
    if when is None:
        return f"{rtype}: apiVersion {version!r} is not a fixed date"
    latest = newest.get(rtype)
    latest_date = _api_date(latest) if latest else None
    if version.endswith("-preview") and latest_date is not None and latest_date > when:
        return f"{rtype}: preview apiVersion {version} while {latest} is stable"
    age = (today - when).days
    # arm-ttk passes a type whose versions it does not know (it can only warn), and the newest stable version
    # (or one newer than the list) at any age
    if age > max_age_days and latest is not None and version < latest:
        return f"{rtype}: apiVersion {version} is {age} days old; the newest stable one is {latest}"
    return None


def resource_api_versions(text: str, template: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(where, full resource type, apiVersion) of every resource and every reference()/list*() with a version."""
    found = []
    for index, resource in enumerate(template.get("resources", [])):
        found.append((f"resources[{index}]", str(resource.get("type")), str(resource.get("apiVersion"))))
    for match in re.finditer(
        r"reference\(\s*resourceId\(\s*'([^']+)'[^)]*\)\s*,\s*'(\d{4}-\d{2}-\d{2}(?:-preview)?)'", text
    ):
        found.append((f"line {_line(text, match.start())} reference()", match.group(1), match.group(2)))
    return found


def check_api_versions(
    text: str, template: Mapping[str, Any], newest: Mapping[str, str], today: date | None = None
) -> list[str]:
    """apiVersions Should Be Recent (resources) and apiVersions Should Be Recent In Reference Functions."""
    day = today or date.today()
    problems = []
    for where, rtype, version in resource_api_versions(text, template):
        problem = api_version_problem(rtype, version, newest, day)
        if problem:
            problems.append(f"{where}: {problem}")
    return problems


# --- the set ---------------------------------------------------------------------------------------------------------

TEXT_CHECKS = {
    "Template Should Not Contain Blanks": check_blanks,
    "Location Should Not Be Hardcoded": check_location,
    "IDs Should Be Derived From ResourceIDs / ResourceIds should not contain": check_resource_ids,
    "DependsOn Best Practices / Dynamic Variable References / providers apiVersions": check_expressions,
}
TEXT_ONLY_CHECKS = {"DeploymentTemplate Must Not Contain Hardcoded Uri": check_hardcoded_uris}
OBJECT_CHECKS = {
    "URIs Should Be Properly Constructed": check_uri_construction,
    "VM Size Should Be A Parameter": check_vm_sizes,
    "adminUsername Should Not Be A Literal": check_admin_username,
    "Password params / Secure String defaults / Min And Max Value": check_parameters,
    "Outputs Must Not Contain Secrets": check_outputs,
    "Virtual Machines Should Not Be Preview / ManagedIdentityExtension": check_virtual_machines,
}


def run_all(text: str, template: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """Every check but the apiVersion one (which needs the SDK's version list): name -> problems."""
    parsed: Mapping[str, Any] = template if template is not None else json.loads(text)
    report: dict[str, list[str]] = {}
    for name, text_check in TEXT_CHECKS.items():
        report[name] = text_check(text, parsed)
    for name, text_only in TEXT_ONLY_CHECKS.items():
        report[name] = text_only(text)
    for name, object_check in OBJECT_CHECKS.items():
        report[name] = object_check(parsed)
    return report


def names() -> Sequence[str]:
    return [*TEXT_CHECKS, *TEXT_ONLY_CHECKS, *OBJECT_CHECKS, "apiVersions Should Be Recent"]
