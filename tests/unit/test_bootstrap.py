"""local/bootstrap.sh: `uv sync` runs when the environment's inputs changed or it is broken, never otherwise.

Each test runs the real script with the real pinned uv (from this checkout's .tickcast/tools) on a
tiny copy of the project layout in a temporary directory: a ``tickcast`` package with no
dependencies, so a sync takes well under a second and works offline from uv's cache. A sync is
observed through the stamp, which the script rewrites after every sync and only then.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tickcast.settings import PROJECT_ROOT

BOOTSTRAP = PROJECT_ROOT / "local" / "bootstrap.sh"
TOOLS = PROJECT_ROOT / ".tickcast" / "tools"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (TOOLS / "bin" / "uv").is_file() or shutil.which("bash") is None,
        reason="needs bash and the pinned uv in .tickcast/tools (run ./just once to install it)",
    ),
]

PYPROJECT = """\
[project]
name = "tickcast"
version = "0.0.1"
requires-python = ">=3.11"
dependencies = []

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["src/tickcast"]
"""


class Checkout:
    """A throwaway project laid out like this one, sharing this checkout's uv/just tools."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stamp = root / ".tickcast" / "venv.stamp"
        (root / "local").mkdir(parents=True)
        shutil.copy2(BOOTSTRAP, root / "local" / "bootstrap.sh")
        (root / "src" / "tickcast").mkdir(parents=True)
        (root / "src" / "tickcast" / "__init__.py").write_text('"""tiny."""\n')
        (root / "pyproject.toml").write_text(PYPROJECT)
        (root / ".tickcast").mkdir()
        # A symlink: the script's `rm -rf` on a version change would only drop the link.
        (root / ".tickcast" / "tools").symlink_to(TOOLS)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
        self.env.update(UV_OFFLINE="1", PYTHON=sys.executable)
        subprocess.run([str(TOOLS / "bin" / "uv"), "lock", "-q"], cwd=root, env=self.env, check=True)

    def bootstrap(self, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.root / "local" / "bootstrap.sh")],
            cwd=self.root,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def synced(self, **env: str) -> bool:
        """Run the script; True when it synced (it rewrote the stamp)."""
        before = self.stamp.stat().st_mtime_ns if self.stamp.exists() else None
        if before is not None:
            # mtime granularity: make any rewrite visible
            os.utime(self.stamp, ns=(before - 10**9, before - 10**9))
            before -= 10**9
        proc = self.bootstrap(**env)
        assert proc.returncode == 0, proc.stderr
        return self.stamp.exists() and self.stamp.stat().st_mtime_ns != before

    def venv_imports(self) -> bool:
        python = self.root / ".venv" / "bin" / "python"
        return subprocess.run([str(python), "-c", "import tickcast"], check=False).returncode == 0


@pytest.fixture(scope="module")
def shared_checkout(tmp_path_factory: pytest.TempPathFactory) -> Checkout:
    co = Checkout(tmp_path_factory.mktemp("bootstrap") / "co")
    assert co.synced(), "the first run must create .venv"
    return co


@pytest.fixture
def checkout(shared_checkout: Checkout) -> Checkout:
    """The module's checkout, synced and healthy at the start of every test (one sync, not one each)."""
    assert shared_checkout.venv_imports()
    assert not shared_checkout.synced(), "the previous test left the checkout out of date"
    return shared_checkout


def test_second_run_does_not_sync(checkout: Checkout) -> None:
    assert not checkout.synced()


def test_changed_lock_or_pyproject_syncs(checkout: Checkout) -> None:
    (checkout.root / "pyproject.toml").write_text(PYPROJECT.replace('"0.0.1"', '"0.0.2"'))
    subprocess.run([str(TOOLS / "bin" / "uv"), "lock", "-q"], cwd=checkout.root, env=checkout.env, check=True)
    assert checkout.synced()
    assert not checkout.synced()
    with (checkout.root / "pyproject.toml").open("a") as f:
        f.write("# an edit that leaves the lock alone still re-checks the environment\n")
    assert checkout.synced()
    (checkout.root / "pyproject.toml").write_text(PYPROJECT)
    subprocess.run([str(TOOLS / "bin" / "uv"), "lock", "-q"], cwd=checkout.root, env=checkout.env, check=True)
    assert checkout.synced()


def test_missing_interpreter_is_repaired(checkout: Checkout) -> None:
    (checkout.root / ".venv" / "bin" / "python").unlink()
    assert checkout.synced()
    assert checkout.venv_imports()


def test_uninstalled_project_is_repaired(checkout: Checkout) -> None:
    for pth in (checkout.root / ".venv").glob("lib/python*/site-packages/*tickcast*.pth"):
        pth.unlink()
    assert not checkout.venv_imports()
    assert checkout.synced()
    assert checkout.venv_imports()


def test_forced_sync(checkout: Checkout) -> None:
    assert checkout.synced(TICKCAST_SYNC="1")


def test_different_python_syncs(checkout: Checkout) -> None:
    checkout.stamp.write_text(checkout.stamp.read_text().replace(sys.version.split()[0], "3.11.0", 1))
    assert checkout.synced()


def test_missing_python_is_a_clear_error(checkout: Checkout) -> None:
    proc = checkout.bootstrap(PYTHON="no-such-python3")
    assert proc.returncode == 1
    assert "no-such-python3 not found" in proc.stderr
    assert checkout.venv_imports(), "a refused run must leave the environment as it was"
