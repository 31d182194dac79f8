"""arm-ttk's deployment-template tests, replicated offline (cloud/validate/armttk_checks.py), on cloud/arm/main.json.

* every replicated test reports nothing on ``main.json``, and so does "apiVersions Should Be Recent" with the
  newest stable API versions the Azure SDK models of the tool venv know (``sdk_property_check.py --api-versions``);
* each test, broken once on a copy, reports the defect arm-ttk reports: the empty ``securityRules``/``notActions``/
  ``allowedOrigins`` of the template before, ``core.windows.net`` in a zone name, a URL built with ``format()``, a
  literal ``vmSize``, an old apiVersion, and the rest.

The pipeline's Validate stage still runs the real arm-ttk.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.support.cloud_validators import ARM, VALIDATE, armttk_checks

Template = dict[str, Any]


@pytest.fixture(scope="module")
def text() -> str:
    return (ARM / "main.json").read_text()


@pytest.fixture(scope="module")
def template(text: str) -> Template:
    data: Template = json.loads(text)
    return data


def find(t: Template, type_: str, name_part: str = "") -> dict[str, Any]:
    return next(r for r in t["resources"] if r["type"] == type_ and name_part in r["name"])


def test_every_replicated_arm_ttk_test_passes_on_main_json(text: str) -> None:
    report = armttk_checks.run_all(text)
    assert report and {name: problems for name, problems in report.items() if problems} == {}


@pytest.fixture(scope="module")
def newest_api_versions(tool_python: Path) -> dict[str, str]:
    done = subprocess.run(
        [str(tool_python), str(VALIDATE / "sdk_property_check.py"), "--api-versions"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return {rtype: version for rtype, version in json.loads(done.stdout).items() if version}


def test_every_api_version_is_recent_or_the_newest_stable(
    text: str, template: Template, newest_api_versions: dict[str, str]
) -> None:
    assert "Microsoft.Storage/storageAccounts" in newest_api_versions
    assert armttk_checks.check_api_versions(text, template, newest_api_versions) == []


def test_an_old_api_version_is_reported_unless_it_is_the_newest() -> None:
    newest = {"Microsoft.Storage/storageAccounts": "2026-09-01", "Microsoft.Insights/components": "2020-02-02"}
    today = date(2026, 12, 6)
    old = armttk_checks.api_version_problem("Microsoft.Storage/storageAccounts", "2023-01-01", newest, today)
    assert old is not None and "2023-01-01 is 1435 days old" in old and "2026-09-01" in old
    assert armttk_checks.api_version_problem("Microsoft.Insights/components", "2020-02-02", newest, today) is None
    assert armttk_checks.api_version_problem("Microsoft.Storage/storageAccounts", "2025-06-01", newest, today) is None
    preview = armttk_checks.api_version_problem(
        "Microsoft.Storage/storageAccounts", "2025-06-01-preview", newest, today
    )
    assert preview is not None and "preview" in preview
    assert "not a fixed date" in str(armttk_checks.api_version_problem("X/y", "latest", newest, today))


# --- each test, broken once --------------------------------------------------------------------------------------

Breakage = Callable[[Template], None]


def _empty_security_rules(t: Template) -> None:
    find(t, "Microsoft.Network/networkSecurityGroups", "nsg-aks")["properties"]["securityRules"] = []


def _empty_not_actions(t: Template) -> None:
    find(t, "Microsoft.Authorization/roleDefinitions")["properties"]["permissions"][0]["notActions"] = []


def _empty_cors(t: Template) -> None:
    find(t, "Microsoft.Web/sites")["properties"]["siteConfig"]["cors"] = {"allowedOrigins": []}


def _hardcoded_zone(t: Template) -> None:
    t["variables"]["zone_blob"] = "privatelink.blob.core.windows.net"


def _formatted_url(t: Template) -> None:
    api = find(t, "Microsoft.ApiManagement/service/apis")
    api["properties"]["serviceUrl"] = "[format('https://{0}/api', variables('funcName'))]"


def _formatted_output_url(t: Template) -> None:
    t["outputs"]["functionAppUrl"]["value"] = "[format('https://{0}', variables('funcName'))]"


def _literal_vm_size(t: Template) -> None:
    compute = find(t, "Microsoft.MachineLearningServices/workspaces/computes", "amlImageBuildComputeName")
    compute["properties"]["properties"]["vmSize"] = "Standard_D2s_v3"


def _literal_location(t: Template) -> None:
    find(t, "Microsoft.KeyVault/vaults")["location"] = "westeurope"


def _resource_group_location(t: Template) -> None:
    find(t, "Microsoft.KeyVault/vaults")["location"] = "[resourceGroup().location]"


def _literal_admin(t: Template) -> None:
    find(t, "Microsoft.Compute/virtualMachines")["properties"]["osProfile"]["adminUsername"] = "azureuser"


def _plain_password(t: Template) -> None:
    t["parameters"]["adminPassword"] = {"type": "string", "metadata": {"description": "x"}}


def _min_without_max(t: Template) -> None:
    del t["parameters"]["aksNodeMaxCount"]["maxValue"]


def _secret_output(t: Template) -> None:
    t["outputs"]["lakeKey"] = {
        "type": "string",
        "value": "[listKeys(resourceId('Microsoft.Storage/storageAccounts', variables('lakeAccountName')), "
        "'2026-09-01').keys[0].value]",
    }


def _literal_id(t: Template) -> None:
    find(t, "Microsoft.Web/sites")["properties"]["serverFarmId"] = "/subscriptions/x/plans/y"


def _concat_resource_id(t: Template) -> None:
    find(t, "Microsoft.Web/sites")["properties"]["serverFarmId"] = (
        "[resourceId(concat('Microsoft.Web/', 'serverfarms'), variables('planName'))]"
    )


def _conditional_dependency(t: Template) -> None:
    find(t, "Microsoft.KeyVault/vaults").setdefault("dependsOn", []).append("[if(true(), 'a', 'b')]")


def _preview_image(t: Template) -> None:
    image = find(t, "Microsoft.Compute/virtualMachines")["properties"]["storageProfile"]["imageReference"]
    image["sku"] = "server-preview"


BREAKAGES: list[tuple[str, Breakage, str]] = [
    ("Template Should Not Contain Blanks", _empty_security_rules, "empty property 'securityRules'"),
    ("Template Should Not Contain Blanks", _empty_not_actions, "empty property 'notActions'"),
    ("Template Should Not Contain Blanks", _empty_cors, "empty property 'allowedOrigins'"),
    ("DeploymentTemplate Must Not Contain Hardcoded Uri", _hardcoded_zone, "core.windows.net"),
    ("URIs Should Be Properly Constructed", _formatted_url, "serviceUrl: format()"),
    ("URIs Should Be Properly Constructed", _formatted_output_url, "outputs.functionAppUrl: format()"),
    ("VM Size Should Be A Parameter", _literal_vm_size, "'Standard_D2s_v3' must be a parameter"),
    ("Location Should Not Be Hardcoded", _literal_location, "'westeurope' must be an expression"),
    ("Location Should Not Be Hardcoded", _resource_group_location, "not resourceGroup().location"),
    ("adminUsername Should Not Be A Literal", _literal_admin, "'azureuser' is a literal"),
    ("Password params / Secure String defaults / Min And Max Value", _plain_password, "should be secure"),
    ("Password params / Secure String defaults / Min And Max Value", _min_without_max, "without its counterpart"),
    ("Outputs Must Not Contain Secrets", _secret_output, "list*() function"),
    ("IDs Should Be Derived From ResourceIDs / ResourceIds should not contain", _literal_id, "must come from"),
    (
        "IDs Should Be Derived From ResourceIDs / ResourceIds should not contain",
        _concat_resource_id,
        "resourceId(concat(",
    ),
    ("DependsOn Best Practices / Dynamic Variable References / providers apiVersions", _conditional_dependency, "if()"),
    ("Virtual Machines Should Not Be Preview / ManagedIdentityExtension", _preview_image, "is a preview"),
]


@pytest.mark.parametrize(("check", "breakage", "expected"), BREAKAGES, ids=[b.__name__[1:] for _, b, _ in BREAKAGES])
def test_each_replicated_test_fails_on_a_broken_copy(
    template: Template, check: str, breakage: Breakage, expected: str
) -> None:
    broken = copy.deepcopy(template)
    breakage(broken)
    report = armttk_checks.run_all(json.dumps(broken, indent=2), broken)
    assert any(expected in p for p in report[check]), report[check]
    others = {name: problems for name, problems in report.items() if problems and name != check}
    assert not others, others  # one defect, one test


def test_every_replicated_test_is_broken_at_least_once() -> None:
    assert {check for check, _, _ in BREAKAGES} == set(armttk_checks.names()) - {"apiVersions Should Be Recent"}
