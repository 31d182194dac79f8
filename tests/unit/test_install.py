"""The stack's Node installer: a no-op when nothing changed, a reinstall when something did or broke.

Runs the real `npm ci` of local/node (Azurite) into a temporary cache (~10 s, from the npm registry or its
local mirror) from two callers at once, then checks what a second `tickcast up` does.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tickcast.settings import Settings, load_settings
from tickcast_dev.stack.install import ensure_installed, installed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """An empty cache installed by two stacks starting at once (two homes, one checkout's cache): the parallel
    test workers do that, and `npm ci` run twice in one folder broke both installs."""
    root = tmp_path_factory.mktemp("install")
    first, second = (
        load_settings(_env_file=None, stack={"home": root / name, "cache": root / "cache"}) for name in ("a", "b")
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda s: ensure_installed({"npm"}, s), (first, second)))
    assert sorted(results) == [[], ["npm"]], "one of them installs, the other waits and finds it installed"
    assert installed("npm", first)
    return first


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
