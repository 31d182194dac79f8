"""The stack's Node installer: a no-op when nothing changed, a reinstall when something did or broke.

Runs the real `npm ci` of local/node (Azurite) once into a temporary cache (~10 s, from the npm
registry or its local mirror), then checks what a second `tickcast up` does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tickcast.settings import Settings, load_settings
from tickcast_dev.stack.install import ensure_installed, installed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("install")
    s = load_settings(_env_file=None, stack={"home": root / "home", "cache": root / "cache"})
    assert ensure_installed({"npm"}, s) == ["npm"], "an empty cache must install"
    assert installed("npm", s)
    return s


def node_dir(settings: Settings) -> Path:
    return settings.stack.resolved_cache() / "node"


def test_second_install_is_a_no_op(settings: Settings) -> None:
    assert ensure_installed({"npm"}, settings) == []


def test_deleted_package_is_reinstalled(settings: Settings) -> None:
    shutil.rmtree(node_dir(settings) / "node_modules" / "azurite")
    assert ensure_installed({"npm"}, settings) == ["npm"]
    assert (node_dir(settings) / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js").is_file()
    assert ensure_installed({"npm"}, settings) == []


def test_stamp_from_another_lock_or_node_reinstalls(settings: Settings) -> None:
    (node_dir(settings) / ".installed").write_text("digest of another lock or Node build\n")
    assert ensure_installed({"npm"}, settings) == ["npm"]
    assert ensure_installed({"npm"}, settings) == []
