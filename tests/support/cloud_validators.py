"""The offline validators under ``cloud/validate`` (and ``cloud/arm/build.py``), loaded once for the tests.

They are standalone scripts (the pipeline runs them with a plain ``python``), not a package, so the tests load
them by path; ``sys.modules`` keeps one copy per name.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tickcast.settings import PROJECT_ROOT

ARM = PROJECT_ROOT / "cloud" / "arm"
VALIDATE = PROJECT_ROOT / "cloud" / "validate"
PIPELINE = PROJECT_ROOT / "cloud" / "pipelines" / "azure-pipelines.yaml"


def load_module(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


arm_checks = load_module("arm_checks", VALIDATE / "arm_checks.py")
armttk_checks = load_module("armttk_checks", VALIDATE / "armttk_checks.py")
psrule_checks = load_module("psrule_checks", VALIDATE / "psrule_checks.py")
tool_venv = load_module("tool_venv", VALIDATE / "tool_venv.py")
build = load_module("tickcast_arm_build", ARM / "build.py")


@pytest.fixture(scope="module")
def tool_python() -> Path:
    """The python of the checkov + SDK venv (built once, cached); skips with the reason if the index is unreachable."""
    try:
        python: Path = tool_venv.ensure_tool_venv()
    except tool_venv.IndexUnreachableError as err:
        pytest.skip(str(err))
    return python
