"""checkov on cloud/arm and on the pipeline, in the arm-validate tool venv (cloud/validate/tool_venv.py).

* checkov's ARM scan of ``cloud/arm`` has no failed check and no parsing error;
* it scanned EVERY resource of ``main.json`` and reported a result for every resource of a type it has checks
  for (``arm_checks.checkov_coverage_problems``) -- checkov 3.3 silently drops failed checks of resources whose
  names use toLower/trim/join/split/substring, so "0 failed" alone proves nothing;
* every suppression is an inline ``checkov:skip`` with a reason, listed in cloud/arm/README.md, and used;
* the checkov commands of the pipeline's Validate stage run here as written and pass.

Broken once each: a failing property (checkov reports it), the same property on a resource named with
toLower() (checkov hides it, the coverage check catches it), a resource missing from the report, a suppression
without reason / undocumented / stale, a pipeline container on ``:latest``.

The tool venv is built on first use (about 15 s from the package index, then cached until
cloud/validate/requirements.txt changes); without a reachable index these tests skip, saying so.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cloud_validators import ARM, PIPELINE, VALIDATE, arm_checks
from tickcast.settings import PROJECT_ROOT

Template = dict[str, Any]
LAKE = "[variables('lakeAccountName')]"


def scan(python: Path, *directories: Path) -> dict[str, Any]:
    done = subprocess.run(
        [str(python), str(VALIDATE / "checkov_scan.py"), *map(str, directories)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports: dict[str, Any] = json.loads(done.stdout)
    return reports


@pytest.fixture(scope="module")
def template() -> Template:
    data: Template = json.loads((ARM / "main.json").read_text())
    return data


def broken_dir(root: Path, name: str, template: Template) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "main.json").write_text(json.dumps(template, indent=2))
    return folder


def lake(template: Template) -> dict[str, Any]:
    return next(r for r in template["resources"] if r["name"] == LAKE)


@pytest.fixture(scope="module")
def reports(tool_python: Path, template: Template, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One checkov process for the real folder and every broken copy (checkov's import costs ~3 s)."""
    root = tmp_path_factory.mktemp("checkov")
    finding = copy.deepcopy(template)
    lake(finding)["properties"]["minimumTlsVersion"] = "TLS1_0"
    hidden = copy.deepcopy(finding)
    lake(hidden)["name"] = "[toLower(variables('lakeAccountName'))]"
    folders = {
        "real": ARM,
        "finding": broken_dir(root, "finding", finding),
        "hidden": broken_dir(root, "hidden", hidden),
    }
    by_folder = scan(tool_python, *folders.values())
    return {name: by_folder[str(folder)] for name, folder in folders.items()}


def test_checkov_finds_nothing_on_cloud_arm(reports: dict[str, Any]) -> None:
    report = reports["real"]
    assert report["results"]["failed"] == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 50


def test_checkov_scanned_every_resource(reports: dict[str, Any], template: Template) -> None:
    report = reports["real"]
    assert report["summary"]["resource_count"] == len(template["resources"])
    assert len(set(report["resources"])) == len(template["resources"])
    assert arm_checks.checkov_coverage_problems(template, report) == []


def test_every_suppression_has_a_documented_reason(reports: dict[str, Any], template: Template) -> None:
    documented = (ARM / "README.md").read_text()
    assert arm_checks.suppression_problems(template, reports["real"], documented) == []
    skipped = reports["real"]["results"]["skipped"]
    assert len(skipped) == len(arm_checks.inline_suppressions(template))
    assert all(len(str(c["suppress_comment"])) >= 20 for c in skipped)


def test_a_finding_fails_the_scan(reports: dict[str, Any]) -> None:
    failed = reports["finding"]["results"]["failed"]
    assert [c["check_id"] for c in failed] == ["CKV_AZURE_44"], failed  # storage minimum TLS 1.2


def test_checkov_hides_a_finding_behind_tolower_and_the_coverage_check_catches_it(
    reports: dict[str, Any], template: Template
) -> None:
    report = reports["hidden"]
    assert report["results"]["failed"] == []  # checkov's silent miss: the same finding, not reported
    hidden = copy.deepcopy(template)
    lake(hidden)["name"] = "[toLower(variables('lakeAccountName'))]"
    problems = arm_checks.checkov_coverage_problems(hidden, report)
    assert any("toLower(" in p and "hides failed checks" in p for p in problems), problems


def test_the_coverage_check_fails_when_a_resource_is_missing(reports: dict[str, Any], template: Template) -> None:
    report = copy.deepcopy(reports["real"])
    vault = next(r for r in report["resources"] if r.startswith("Microsoft.KeyVault/vaults."))
    report["resources"].remove(vault)
    for kind in ("passed", "skipped"):
        report["results"][kind] = [c for c in report["results"][kind] if c["resource"] != vault]
    problems = arm_checks.checkov_coverage_problems(template, report)
    assert "checkov scanned 0 of the 1 resources of type Microsoft.KeyVault/vaults" in problems

    unchecked = copy.deepcopy(reports["real"])
    for kind in ("passed", "skipped"):
        unchecked["results"][kind] = [c for c in unchecked["results"][kind] if c["resource"] != vault]
    assert any(
        "reported none for Microsoft.KeyVault/vaults" in p
        for p in arm_checks.checkov_coverage_problems(template, unchecked)
    )


def test_the_suppression_check_fails_on_broken_copies(reports: dict[str, Any], template: Template) -> None:
    documented = (ARM / "README.md").read_text()
    report = reports["real"]

    no_reason = copy.deepcopy(template)
    lake(no_reason)["metadata"]["checkov"] = ["checkov:skip=CKV_AZURE_43:"]
    assert any("no real reason" in p for p in arm_checks.suppression_problems(no_reason, report, documented))

    assert any(
        "is not in cloud/arm/README.md" in p
        for p in arm_checks.suppression_problems(template, report, documented.replace("`CKV_AZURE_166`", ""))
    )

    stale = copy.deepcopy(template)
    lake(stale)["metadata"]["checkov"].append("checkov:skip=CKV_AZURE_44:TLS is set to 1.2 on this account already")
    problems = arm_checks.suppression_problems(stale, report, documented + " `CKV_AZURE_44` ")
    assert any("CKV_AZURE_44" in p and "stale" in p for p in problems), problems

    silent = copy.deepcopy(report)
    silent["results"]["skipped"][0]["suppress_comment"] = ""
    assert any("without a reason" in p for p in arm_checks.suppression_problems(template, silent, documented))


# --- the pipeline's own checkov commands ----------------------------------------------------------------------


def pipeline_checkov_commands() -> tuple[list[list[str]], dict[str, str]]:
    pipeline = yaml.safe_load(PIPELINE.read_text())
    for stage in pipeline["stages"]:
        for job in stage["jobs"]:
            for step in job.get("steps", []):
                script = str(step.get("script", ""))
                if '"$checkov"' in script:
                    joined = re.sub(r"\\\n\s*", " ", script)
                    lines = [line.strip() for line in joined.splitlines() if line.strip().startswith('"$checkov"')]
                    return [shlex.split(line)[1:] for line in lines], dict(step.get("env") or {})
    raise AssertionError("no checkov step in the pipeline")


def run_checkov(tool_python: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    checkov = tool_python.with_name("checkov")
    return subprocess.run(
        [str(checkov), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
    )


def test_the_pipeline_checkov_commands_run_here_and_pass(tool_python: Path) -> None:
    commands, env = pipeline_checkov_commands()
    assert [c[c.index("--framework") + 1] for c in commands] == ["arm", "azure_pipelines"]
    assert env == {"CKV_PARSE_ERROR_FAIL": "true"}
    for args in commands:
        done = run_checkov(tool_python, args, env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "Failed checks: 0" in done.stdout


def test_the_pipeline_checkov_command_fails_on_a_broken_pipeline(tool_python: Path, tmp_path: Path) -> None:
    commands, env = pipeline_checkov_commands()
    args = next(c for c in commands if "azure_pipelines" in c)
    pipeline = yaml.safe_load(PIPELINE.read_text())
    pipeline["stages"][0]["jobs"][0]["container"] = "ubuntu:latest"
    broken = tmp_path / "azure-pipelines.yaml"
    broken.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    args = [str(broken) if a == "cloud/pipelines/azure-pipelines.yaml" else a for a in args]
    done = run_checkov(tool_python, args, env)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "CKV_AZUREPIPELINES_1" in done.stdout
