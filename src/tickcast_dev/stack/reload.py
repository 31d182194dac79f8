"""``tickcast up --reload``: restart a service when a file it lists under ``watch`` in stack.toml changes.

The watcher polls (stdlib only, no inotify limits to hit): every :data:`POLL_S` it stats the watched
files (``__pycache__``, dotfiles and editor backups left out) and compares size and modification time.
A change waits until the files are quiet for :data:`SETTLE_S` (an editor or ``git checkout`` writing
several files restarts once), then the services that watch a changed file are stopped and started
again through the supervisor, which waits for their health checks as ``up`` does. A restart that
fails (say, a syntax error in the edited file) is reported with the service's log tail; the watcher
keeps going and the next save tries again. Services without ``watch`` (Airflow re-parses ``dags/``
itself; the data services hold state) are never restarted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path

from tickcast_dev.stack.supervisor import StackError, Supervisor

POLL_S = 0.5
SETTLE_S = 0.3
MAX_SETTLE_S = 5.0

Fingerprint = dict[Path, tuple[int, int]]


def _ignored(path: Path) -> bool:
    name = path.name
    return "__pycache__" in path.parts or name.startswith((".", "#")) or name.endswith(("~", ".swp", ".pyc"))


def fingerprint(paths: Iterable[Path]) -> Fingerprint:
    """Size and mtime of every watched file under ``paths`` (a missing path is simply absent)."""
    out: Fingerprint = {}
    for root in paths:
        files = [root] if root.is_file() else (p for p in root.rglob("*") if p.is_file())
        for f in files:
            if _ignored(f):
                continue
            try:
                st = f.stat()
            except OSError:  # removed between the listing and the stat
                continue
            out[f] = (st.st_size, st.st_mtime_ns)
    return out


def changed(before: Fingerprint, after: Fingerprint) -> set[Path]:
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


class Reloader:
    """Watches the ``watch`` paths of the selected services and restarts the ones whose files changed."""

    def __init__(self, sup: Supervisor, services: Iterable[str] | None = None) -> None:
        self.sup = sup
        selected = set(services) if services else set(sup.specs)
        self.watched = {
            name: spec.watched_paths() for name, spec in sup.specs.items() if name in selected and spec.watch
        }
        self._last = {name: fingerprint(paths) for name, paths in self.watched.items()}

    def _settle(self) -> dict[str, Fingerprint]:
        """The fingerprints once nothing has changed for SETTLE_S (or MAX_SETTLE_S passed)."""
        deadline = time.monotonic() + MAX_SETTLE_S
        now = {name: fingerprint(paths) for name, paths in self.watched.items()}
        while time.monotonic() < deadline:
            time.sleep(SETTLE_S)
            again = {name: fingerprint(paths) for name, paths in self.watched.items()}
            if again == now:
                break
            now = again
        return now

    def poll(self) -> list[str]:
        """One look at the files; restarts what changed. Returns the services it restarted successfully."""
        now = {name: fingerprint(paths) for name, paths in self.watched.items()}
        if now == self._last:
            return []
        now = self._settle()
        due = {name: changed(self._last[name], now[name]) for name in self.watched}
        due = {name: files for name, files in due.items() if files}
        self._last = now
        if not due:
            return []
        names = [n for n in self.sup.specs if n in due]  # stack.toml order: dependencies first
        for name in names:
            shown = ", ".join(sorted(_short(p) for p in due[name])[:3]) + (" ..." if len(due[name]) > 3 else "")
            self.sup.report(f"{name}: {shown} changed; restarting")
        started = time.monotonic()
        try:
            statuses = self.sup.restart(names)
        except StackError as err:
            self.sup.report(f"restart failed: {err}\n  (fix the file: the next change restarts it again)")
            return []
        healthy = [s.name for s in statuses if s.name in names and s.healthy]
        self.sup.report(f"{', '.join(healthy)}: serving the new code after {time.monotonic() - started:.1f}s")
        return healthy

    def run(self, stop: threading.Event | None = None, poll_s: float = POLL_S) -> None:
        """Poll until ``stop`` is set (or Ctrl-C, which propagates to the caller)."""
        stop = stop or threading.Event()
        watched = sorted({_short(p) for paths in self.watched.values() for p in paths})
        self.sup.report(f"watching {len(watched)} path(s) for {', '.join(self.watched)}; Ctrl-C stops watching")
        while not stop.wait(poll_s):
            self.poll()


def _short(path: Path) -> str:
    from tickcast_dev.stack.definition import REPO_ROOT

    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
