"""The arm-validate tool venv (cloud/validate/tool_venv.py): cached by the requirements' hash, honest about failures.

* the key changes with requirements.txt; a venv whose stamp matches is reused, not rebuilt;
* an install that fails while the package index does not answer raises IndexUnreachableError with the exact
  reason (the checkov and SDK tests skip with it); any other failed install is an error, never a skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cloud_validators import tool_venv

pytestmark = pytest.mark.cloud_tools


def test_the_key_follows_the_requirements(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("checkov==3.3.30\n")
    first = tool_venv.requirements_key(requirements)
    requirements.write_text("checkov==3.3.31\n")
    assert tool_venv.requirements_key(requirements) != first
    assert tool_venv.requirements_key(tool_venv.REQUIREMENTS) == tool_venv.requirements_key(tool_venv.REQUIREMENTS)


def test_a_current_venv_is_reused_and_a_changed_one_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# nothing to install\n")
    venv = tmp_path / "venvs" / "arm-validate"
    python = tool_venv.ensure_tool_venv(venv, requirements)
    assert python.exists() and tool_venv.is_current(venv, requirements)

    def no_build(*_: object) -> None:
        raise AssertionError("rebuilt a current venv")

    monkeypatch.setattr(tool_venv, "build", no_build)
    assert tool_venv.ensure_tool_venv(venv, requirements) == python
    requirements.write_text("# changed\n")
    assert not tool_venv.is_current(venv, requirements)
    with pytest.raises(AssertionError, match="rebuilt"):
        tool_venv.ensure_tool_venv(venv, requirements)


def test_an_unreachable_index_is_named_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_DEFAULT_INDEX", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("UV_NO_CACHE", "1")
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six==1.17.0\n")
    venv = tmp_path / "arm-validate"
    with pytest.raises(tool_venv.IndexUnreachableError) as caught:
        tool_venv.ensure_tool_venv(venv, requirements)
    assert str(caught.value).startswith("package index http://127.0.0.1:9/simple unreachable (")
    assert str(caught.value).endswith("): cannot build the checkov/azure-mgmt tool venv")
    assert not tool_venv.is_current(venv, requirements)


def test_a_failed_install_with_a_reachable_index_is_an_error(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("tickcast-no-such-distribution==0.0.1\n")
    try:
        tool_venv.ensure_tool_venv(tmp_path / "arm-validate", requirements)
    except tool_venv.IndexUnreachableError as err:
        pytest.skip(str(err))
    except tool_venv.ToolVenvError as err:
        assert "tickcast-no-such-distribution" in str(err)
    else:
        raise AssertionError("installing a distribution that does not exist succeeded")
