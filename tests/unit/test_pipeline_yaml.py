"""cloud/pipelines/azure-pipelines.yaml, checked offline.

* the vendored Azure Pipelines schema of check-jsonschema accepts it (0.3 s, no network);
* the stages run Lint -> Test -> Validate -> DeployInfra -> DeployCode -> Smoke, each after the previous;
* no check can pass on a finding: no ``continueOnError: true``, no ``|| true``, every inline bash script runs
  with ``set -euo pipefail``, checkov fails on parsing errors (``CKV_PARSE_ERROR_FAIL=true``);
* Azure is reached only through AzureCLI@2 on ``$(serviceConnection)``; the infrastructure deploy runs in a
  deployment job on an environment (where the approval lives); the Smoke stage calls ``just smoke`` with the
  gateway URL and a key read from APIM at run time -- no key in the repository.

The same checks run against deliberately broken copies, so each of them is shown to fail when it should.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tickcast.settings import PROJECT_ROOT

PIPELINE = PROJECT_ROOT / "cloud" / "pipelines" / "azure-pipelines.yaml"
STAGES = ["Lint", "Test", "Validate", "DeployInfra", "DeployCode", "Smoke"]
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHECK_JSONSCHEMA),
            "--builtin-schema",
            "vendor.azure-pipelines",
            "--data-transform",
            "azure-pipelines",
            "--regex-variant",
            "nonunicode",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def walk(node: Any, path: str = "$") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) of every mapping entry and list item, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield f"{path}[{i}]", i, value
            yield from walk(value, f"{path}[{i}]")


def steps(pipeline: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(stage name, step) of every step, deployment jobs included."""
    for stage in pipeline["stages"]:
        for job in stage["jobs"]:
            found = job.get("steps") or job.get("strategy", {}).get("runOnce", {}).get("deploy", {}).get("steps", [])
            for step in found:
                yield stage["stage"], step


def script_of(step: dict[str, Any]) -> str:
    inputs = step.get("inputs") or {}
    return str(step.get("script") or step.get("bash") or inputs.get("inlineScript") or inputs.get("script") or "")


def problems(pipeline: dict[str, Any]) -> list[str]:
    """Everything that breaks the pipeline's rules (empty = fine)."""
    found: list[str] = []
    for path, key, value in walk(pipeline):
        if key == "continueOnError" and str(value).lower() == "true":
            found.append(f"{path}: continueOnError lets a failed step pass")
        if isinstance(value, str) and re.search(r"\|\|\s*(true|:|exit 0)\b", value):
            found.append(f"{path}: '|| true' masks a failure")
    names = [stage.get("stage") for stage in pipeline.get("stages", [])]
    if names != STAGES:
        found.append(f"stages are {names}, not {STAGES}")
    for previous, stage in zip(pipeline.get("stages", []), pipeline.get("stages", [])[1:], strict=False):
        if stage.get("dependsOn") != previous.get("stage"):
            found.append(f"stage {stage.get('stage')} does not depend on {previous.get('stage')}")
    for stage, step in steps(pipeline):
        task = str(step.get("task", ""))
        text = script_of(step)
        if task.startswith("AzureCLI@"):
            inputs = step.get("inputs", {})
            if task != "AzureCLI@2" or inputs.get("azureSubscription") != "$(serviceConnection)":
                found.append(f"{stage}: {step.get('displayName')}: AzureCLI@2 on $(serviceConnection) only")
        multiline_bash = "\n" in text.strip() and (task.startswith("AzureCLI@") or "script" in step)
        if multiline_bash and not text.startswith("set -euo pipefail"):
            found.append(f"{stage}: {step.get('displayName')}: a multi-line bash script needs set -euo pipefail")
        if '"$checkov"' in text and str((step.get("env") or {}).get("CKV_PARSE_ERROR_FAIL")).lower() != "true":
            found.append(f"{stage}: checkov without CKV_PARSE_ERROR_FAIL=true (a parse error would pass)")
        if re.search(r"(?i)(subscription-key|apimKey|key)\s*[:=]\s*['\"]?[0-9a-f]{32}", text):
            found.append(f"{stage}: a literal key in the pipeline")
    by_stage = {stage["stage"]: stage for stage in pipeline.get("stages", [])}
    smoke = [script_of(s) for name, s in steps(pipeline) if name == "Smoke"]
    if not any("just smoke --url $(apimGatewayUrl) --key $(apimKey)" in s for s in smoke):
        found.append("the Smoke stage does not run `just smoke --url $(apimGatewayUrl) --key $(apimKey)`")
    if not any("issecret=true]" in s and "listSecrets" in s for s in smoke):
        found.append("the Smoke stage does not read the APIM key at run time as a secret variable")
    infra = by_stage.get("DeployInfra", {}).get("jobs", [{}])
    if not all(job.get("deployment") and job.get("environment") for job in infra):
        found.append("DeployInfra must be a deployment job on an environment (its approval)")
    return found


@pytest.fixture(scope="module")
def pipeline() -> dict[str, Any]:
    data = yaml.safe_load(PIPELINE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.mark.cloud_tools
def test_the_azure_pipelines_schema_accepts_it() -> None:
    result = schema_check(PIPELINE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_the_pipeline_keeps_its_rules(pipeline: dict[str, Any]) -> None:
    assert problems(pipeline) == []


def test_the_validate_stage_runs_every_check(pipeline: dict[str, Any]) -> None:
    text = "\n".join(script_of(s) for name, s in steps(pipeline) if name == "Validate")
    for needle in (
        './just test-unit -k "arm or cloud"',
        "check-jsonschema --builtin-schema vendor.azure-pipelines",
        "--framework arm",
        "Test-AzTemplate",
        "Assert-PSRule -Option ps-rule.yaml -Module PSRule.Rules.Azure -Baseline",
        "./just deploy-cloud --what-if",
    ):
        assert needle in text, needle


def test_the_deploy_stages_use_the_project_commands(pipeline: dict[str, Any]) -> None:
    infra = "\n".join(script_of(s) for name, s in steps(pipeline) if name == "DeployInfra")
    code = "\n".join(script_of(s) for name, s in steps(pipeline) if name == "DeployCode")
    assert "./just deploy-cloud\n" in infra
    assert "cloud/function/package.py" in code and "config-zip" in code
    assert "git archive" in code and "local/bootstrap.sh" in code and "systemctl restart tickcast-airflow" in code
    assert "tickcast deploy'" in code  # the blue/green path of src/tickcast/release/, what should serve
    assert 'if [ "$rc" -eq 3 ]' in code  # no model registered yet is a warning, not a failure
    assert "tickcast-producer" in code  # the producer feeds Kafka on the Airflow host
    smoke_step = next(script_of(s) for name, s in steps(pipeline) if name == "Smoke" and "just smoke" in script_of(s))
    assert 'if [ "$rc" -eq 3 ]' in smoke_step and "result=SucceededWithIssues" in smoke_step
    deploy_infra = next(s for name, s in steps(pipeline) if name == "DeployInfra" and "deploy-cloud" in script_of(s))
    assert deploy_infra["env"]["SYSTEM_ACCESSTOKEN"] == "$(System.AccessToken)"  # the login outlives an hour
    assert "DownloadSecureFile@1" in str(pipeline)  # the SSH key comes from a secure file, not the repository
    for name in ("DeployInfra", "DeployCode", "Smoke"):
        stage = next(s for s in pipeline["stages"] if s["stage"] == name)
        assert "refs/heads/main" in stage["condition"], f"{name} must not run for pull requests"


# --- the same checks against broken copies ------------------------------------------------------------------


def _steps_list(pipeline: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    job = next(s for s in pipeline["stages"] if s["stage"] == stage)["jobs"][0]
    result: list[dict[str, Any]] = job["steps"]
    return result


def _soft_lint(p: dict[str, Any]) -> None:
    _steps_list(p, "Lint")[-1]["continueOnError"] = True


def _masked_test(p: dict[str, Any]) -> None:
    _steps_list(p, "Test")[1]["script"] = "./just test || true"


def _swapped(p: dict[str, Any]) -> None:
    p["stages"][3], p["stages"][4] = p["stages"][4], p["stages"][3]


def _no_smoke(p: dict[str, Any]) -> None:
    _steps_list(p, "Smoke")[-1]["script"] = "curl -f $(apimGatewayUrl)/api/health"


def _wrong_connection(p: dict[str, Any]) -> None:
    _steps_list(p, "Smoke")[1]["inputs"]["azureSubscription"] = "my-secret-connection"


def _checkov_soft_on_parse_errors(p: dict[str, Any]) -> None:
    step = next(s for s in _steps_list(p, "Validate") if '"$checkov"' in script_of(s))
    del step["env"]


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (_checkov_soft_on_parse_errors, "CKV_PARSE_ERROR_FAIL"),
        (_soft_lint, "continueOnError"),
        (_masked_test, "'|| true' masks a failure"),
        (_swapped, "stages are"),
        (_no_smoke, "does not run `just smoke"),
        (_wrong_connection, "$(serviceConnection) only"),
    ],
)
def test_each_rule_fails_on_a_broken_copy(pipeline: dict[str, Any], breakage: Any, expected: str) -> None:
    broken = copy.deepcopy(pipeline)
    breakage(broken)
    assert any(expected in p for p in problems(broken)), problems(broken)


@pytest.mark.cloud_tools
def test_the_schema_check_fails_on_a_broken_copy(tmp_path: Path) -> None:
    text = PIPELINE.read_text(encoding="utf-8")
    broken = tmp_path / "azure-pipelines.yaml"
    broken.write_text(text.replace("    dependsOn: Lint\n", "    dependsOn: Lint\n    continueOnFailure: true\n", 1))
    result = schema_check(broken)
    assert result.returncode != 0, result.stdout
    assert "continueOnFailure" in result.stdout + result.stderr
