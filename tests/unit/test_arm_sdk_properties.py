"""Property names of cloud/arm/main.json against the azure-mgmt-* SDK models (cloud/validate/sdk_property_check.py).

* every resource of ``main.json`` maps to an SDK model (or is listed, with a reason, as unmodelled) and every key
  of its body -- nested models, lists, maps and discriminated sub-types included -- is a REST name of that model;
* broken once each: a typo at the top of a body, deep in ``properties``, inside a list item, inside a map value,
  inside a discriminated sub-type (a Kubernetes compute's ``properties``), and an unmapped resource type -- each
  is reported, naming the resource and the path.

Runs in the arm-validate tool venv (see test_arm_checkov.py); skips only when the package index is unreachable.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.cloud_validators import ARM, VALIDATE

Template = dict[str, Any]


def find(t: Template, type_: str, name_part: str = "") -> dict[str, Any]:
    return next(r for r in t["resources"] if r["type"] == type_ and name_part in r["name"])


def _storage_top(t: Template) -> None:
    props = find(t, "Microsoft.Storage/storageAccounts")["properties"]
    props["supportHttpsTrafficOnly"] = props.pop("supportsHttpsTrafficOnly")


def _aks_nested(t: Template) -> None:
    find(t, "Microsoft.ContainerService/managedClusters")["properties"]["networkProfile"]["networkPlugn"] = "azure"


def _vm_list_item(t: Template) -> None:
    vm = find(t, "Microsoft.Compute/virtualMachines")
    vm["properties"]["storageProfile"]["dataDisks"][0]["diskSizeGb"] = 128


def _uai_map_value(t: Template) -> None:
    aks = find(t, "Microsoft.ContainerService/managedClusters")
    key = next(iter(aks["identity"]["userAssignedIdentities"]))
    aks["identity"]["userAssignedIdentities"][key] = {"clientid": "x"}


def _kubernetes_compute(t: Template) -> None:
    compute = find(t, "Microsoft.MachineLearningServices/workspaces/computes", "amlComputeName")
    compute["properties"]["properties"]["nameSpace"] = "tickcast"


def _site_config(t: Template) -> None:
    find(t, "Microsoft.Web/sites")["properties"]["siteConfig"]["minTLSVersion"] = "1.2"


def _unmapped_type(t: Template) -> None:
    t["resources"].append(
        {"type": "Microsoft.Sql/servers", "apiVersion": "2023-08-01", "name": "x", "location": "y", "properties": {}}
    )


BREAKAGES: list[tuple[Callable[[Template], None], str]] = [
    (_storage_top, "supportHttpsTrafficOnly: unknown property (did you mean 'supportsHttpsTrafficOnly'?)"),
    (_aks_nested, "properties.networkProfile.networkPlugn: unknown property"),
    (_vm_list_item, "dataDisks[0].diskSizeGb: unknown property (did you mean 'diskSizeGB'?)"),
    (_uai_map_value, ".clientid: unknown property (did you mean 'clientId'?)"),
    (_kubernetes_compute, "properties.properties.nameSpace: unknown property (did you mean 'namespace'?)"),
    (_site_config, "siteConfig.minTLSVersion: unknown property (did you mean 'minTlsVersion'?)"),
    (_unmapped_type, "Microsoft.Sql/servers x (resources[102]): no SDK model mapped"),  # appended after the 102
]


@pytest.fixture(scope="module")
def results(tool_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One process for the real template and every broken copy (the SDK models import in ~3 s)."""
    template = json.loads((ARM / "main.json").read_text())
    root = tmp_path_factory.mktemp("sdk")
    files = [ARM / "main.json"]
    for breakage, _ in BREAKAGES:
        broken = copy.deepcopy(template)
        breakage(broken)
        files.append(root / f"{breakage.__name__[1:]}.json")
        files[-1].write_text(json.dumps(broken))
    done = subprocess.run(
        [str(tool_python), str(VALIDATE / "sdk_property_check.py"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def problems_of(results: dict[str, Any], source: str) -> list[str]:
    return [p for p in results["problems"] if p.startswith(f"{source}: ")]


def test_every_property_of_main_json_is_in_its_sdk_model(results: dict[str, Any]) -> None:
    assert problems_of(results, "main.json") == []


def test_every_resource_type_is_checked_or_unmodelled_with_a_reason(results: dict[str, Any]) -> None:
    template = json.loads((ARM / "main.json").read_text())
    types = {r["type"] for r in template["resources"]}
    assert types <= set(results["checked"]) | set(results["unmodelled"])
    assert len(results["checked"]) >= len(types) - len(results["unmodelled"])
    assert all(len(reason) > 20 for reason in results["unmodelled"].values())


@pytest.mark.parametrize(("breakage", "expected"), BREAKAGES, ids=[b.__name__[1:] for b, _ in BREAKAGES])
def test_a_property_typo_is_caught(
    results: dict[str, Any], breakage: Callable[[Template], None], expected: str
) -> None:
    found = problems_of(results, f"{breakage.__name__[1:]}.json")
    assert len(found) == 1 and expected in found[0], found
