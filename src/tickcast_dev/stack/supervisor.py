"""The local stack supervisor: install, start, health-check, report and stop the services of stack.toml.

Layout under ``settings.stack.home`` (default ``.tickcast/`` in the checkout)::

    data/<service>/     the service's own data directory (its working directory too)
    logs/<service>.log  stdout+stderr of the service, appended across restarts
    run/<service>.json  PID file: pid, process start time, port, command

``up`` starts services in dependency order, several at once when their dependencies are healthy,
and polls each health check until a deadline. It is idempotent: a running service is adopted and
re-checked. ``down`` stops only processes recorded in PID files (verified by start time), each with
its whole process tree.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from emulators.settings import StandInSettingsError, load_stand_in_settings
from tickcast.errors import TickcastError
from tickcast.settings import Settings
from tickcast_dev.stack import health, hooks, install, procs
from tickcast_dev.stack.definition import (
    RenderedService,
    ServiceSpec,
    load_stack,
    rendered_stack,
    topological_order,
)

POLL_INTERVAL_S = 0.2
LOG_TAIL_LINES = 30

Reporter = Callable[[str], None]


class StackError(TickcastError):
    """The stack could not be brought to the requested state; the message says what to do."""


class PortTakenError(StackError):
    pass


class ServiceStartError(StackError):
    def __init__(self, service: str, reason: str, log_tail: str) -> None:
        self.service = service
        self.log_tail = log_tail
        super().__init__(f"{service} failed to start: {reason}\n--- last lines of its log ---\n{log_tail}")


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    summary: str
    url: str
    pid: int | None
    state: str  # running | stopped | stale
    healthy: bool
    uptime_s: float | None
    detail: str


def _proc_label(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()[:3])[-60:] or p.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return str(p.pid)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return "(no log file)"
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 64 * 1024))
        text = f.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Drives the process stack for one settings object (one home directory, one set of ports)."""

    def __init__(
        self,
        settings: Settings,
        report: Reporter | None = None,
        specs: dict[str, ServiceSpec] | None = None,
        *,
        emulator: Mapping[str, Any] | None = None,
    ) -> None:
        """``emulator`` overrides settings of the stand-ins' ``emulator`` group for the services this starts
        (``tickcast up --tape``: ``{"mode": "tape"}``); the rest still comes from ``TICKCAST_EMULATOR__*``."""
        self.settings = settings
        self.emulator = dict(emulator or {})
        self.specs = specs if specs is not None else load_stack()
        self.home = settings.stack.resolved_home()
        self.report: Reporter = report or (lambda _msg: None)
        self._services: dict[str, RenderedService] | None = None

    # --- layout --------------------------------------------------------------------------------

    @property
    def services(self) -> dict[str, RenderedService]:
        if self._services is None:
            self._services = {s.name: s for s in rendered_stack(self.settings, self.specs)}
        return self._services

    def log_path(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def pid_file(self, name: str) -> procs.PidFile:
        return procs.PidFile(self.home, name)

    def _select(self, only: Iterable[str] | None) -> list[str]:
        """The requested services plus everything they depend on, in start order."""
        specs = self.specs
        order = topological_order(specs)
        if not only:
            return order
        unknown = [n for n in only if n not in specs]
        if unknown:
            raise StackError(f"unknown service(s) {unknown}; known: {order}")
        wanted: set[str] = set()
        stack = list(only)
        while stack:
            name = stack.pop()
            if name not in wanted:
                wanted.add(name)
                stack.extend(specs[name].after)
        return [n for n in order if n in wanted]

    def child_env(self) -> dict[str, str]:
        """The environment every service starts with: this one, the product's settings and the stand-ins' own
        ``emulator`` group as ``TICKCAST_*`` variables (a ``.env`` here included: services run in their data
        directories), and this interpreter's bin first on PATH."""
        env = dict(os.environ)
        env.update(self.settings.to_env())
        try:
            env.update(load_stand_in_settings(emulator=self.emulator).emulator_env())
        except StandInSettingsError as err:
            raise StackError(str(err)) from None
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        return env

    def _env(self, svc: RenderedService) -> dict[str, str]:
        return {**self.child_env(), **svc.env}

    def live_record(self, name: str) -> procs.PidRecord | None:
        """The PID record of a running service; a stale PID file is reported and removed."""
        pf = self.pid_file(name)
        if not pf.exists():
            return None
        record = pf.read()
        if record is not None and procs.live_process(record) is not None:
            return record
        what = f"pid {record.pid} is not running" if record else "unreadable"
        self.report(f"{name}: stale PID file removed ({what})")
        pf.remove()
        return None

    # --- up ------------------------------------------------------------------------------------

    def up(self, only: Iterable[str] | None = None) -> list[ServiceStatus]:
        names = self._select(only)
        kinds = {k for n in names for k in self.services[n].spec.install}
        installed = install.ensure_installed(kinds, self.settings)
        for kind in installed:
            self.report(f"installed {kind} packages into {self.settings.stack.resolved_cache()}")

        running = {n for n in names if self.live_record(n) is not None}
        for n in sorted(running):
            self.report(f"{n}: already running, checking health")
        taken = []
        for n in names:
            svc = self.services[n]
            if n not in running and procs.port_in_use(self.settings.stack.host, svc.port):
                owner = procs.port_owner(svc.port) or "a process this user cannot see"
                var = "TICKCAST_STACK__" + svc.spec.port_key.upper()
                taken.append(f"port {svc.port} for {n} is taken by {owner}: stop it or set {var}")
        if taken:
            raise PortTakenError("\n".join(taken))

        pending = [n for n in names if n not in running]
        waiting: dict[str, float] = {n: time.monotonic() for n in running}  # name -> start of its deadline
        healthy: set[str] = set()
        last_detail: dict[str, str] = {}
        timeout = self.settings.stack.start_timeout_s
        while pending or waiting:
            for n in list(pending):
                if all(dep in healthy for dep in self.services[n].spec.after):
                    pending.remove(n)
                    self._spawn(self.services[n])
                    waiting[n] = time.monotonic()
            for n, started in list(waiting.items()):
                record = self.pid_file(n).read()
                if record is None or procs.live_process(record) is None:
                    self.pid_file(n).remove()
                    raise ServiceStartError(n, "the process exited", tail(self.log_path(n)))
                ok, detail = health.check(self.services[n].ready, timeout_s=1.0, since=record.create_time)
                last_detail[n] = detail
                if ok:
                    for hook in self.services[n].spec.on_ready:
                        hooks.HOOKS[hook](self.settings)
                    healthy.add(n)
                    del waiting[n]
                    self.report(f"{n}: healthy after {time.monotonic() - started:.1f}s ({self.services[n].url})")
                elif time.monotonic() - started > timeout:
                    log = tail(self.log_path(n))
                    self._stop([n])
                    raise ServiceStartError(
                        n,
                        f"not healthy within {timeout:.0f}s (last check: {detail}); raise "
                        "TICKCAST_STACK__START_TIMEOUT_S if the machine is slow",
                        log,
                    )
            if waiting:
                time.sleep(POLL_INTERVAL_S)
        return self.status(names)

    def _spawn(self, svc: RenderedService) -> None:
        for hook in svc.spec.before_start:
            hooks.HOOKS[hook](self.settings)
        svc.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path(svc.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            out.write(f"\n=== tickcast: starting {svc.name} at {time.ctime()}: {' '.join(svc.command)}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    list(svc.command),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=svc.data_dir,
                    env=self._env(svc),
                    start_new_session=True,
                )
            except OSError as err:
                raise ServiceStartError(svc.name, f"cannot execute {svc.command[0]}: {err}", "") from err
        create_time = psutil.Process(proc.pid).create_time()
        self.pid_file(svc.name).write(
            procs.PidRecord(
                service=svc.name,
                pid=proc.pid,
                create_time=create_time,
                port=svc.port,
                command=list(svc.command),
                started_at=time.time(),
            )
        )
        self.report(f"{svc.name}: started (pid {proc.pid}, log {log})")

    # --- down ----------------------------------------------------------------------------------

    def down(self, only: Iterable[str] | None = None) -> list[str]:
        """Stop running services (all by default); returns the names that were stopped."""
        names = list(reversed(self._select(only)))
        return self._stop(names)

    def restart(self, names: Iterable[str]) -> list[ServiceStatus]:
        """Stop exactly ``names`` (not the services they depend on, unlike ``down``) and bring them up again."""
        wanted = set(names)
        self._stop([n for n in reversed(self._select(wanted)) if n in wanted])
        return self.up(wanted)

    def _stop(self, names: list[str]) -> list[str]:
        """Stop ``names`` all at once, except ``stop_last`` services (a database): after the others are gone."""
        first = [n for n in names if not self.services[n].spec.stop_last]
        last = [n for n in names if self.services[n].spec.stop_last]
        return self._stop_together(first) + (self._stop_together(last) if last else [])

    def _stop_together(self, names: list[str]) -> list[str]:
        trees: list[procs.TreeStop] = []
        stopped = []
        for n in names:
            record = self.live_record(n)
            if record is None:
                continue
            proc = procs.live_process(record)
            if proc is not None:
                spec = self.services[n].spec
                grace = spec.stop_grace_s or self.settings.stack.stop_timeout_s
                leader = signal.Signals[spec.stop_signal] if spec.stop_signal else None
                trees.append(procs.TreeStop(procs.process_tree(proc), grace, leader))
                stopped.append(n)
        labels = {p.pid: _proc_label(p) for stop in trees for p in stop.tree}
        killed = procs.terminate_trees(trees)
        for n in stopped:
            self.pid_file(n).remove()
            self.report(f"{n}: stopped")
        if killed:
            names = sorted({labels.get(p.pid, str(p.pid)) for p in killed})
            self.report(
                f"{len(killed)} process(es) outlived their stop grace period and were killed: {', '.join(names)}"
            )
        return stopped

    # --- status --------------------------------------------------------------------------------

    def status(self, names: Iterable[str] | None = None) -> list[ServiceStatus]:
        """Every service's state; the health checks of running services run at once (each <= 1 s)."""
        selected = list(names or self._select(None))
        if len(selected) <= 1:
            return [self._status_of(n) for n in selected]
        with ThreadPoolExecutor(max_workers=len(selected), thread_name_prefix="health") as pool:
            return list(pool.map(self._status_of, selected))

    def _status_of(self, n: str) -> ServiceStatus:
        svc = self.services[n]
        pf = self.pid_file(n)
        record = pf.read()
        live = record is not None and procs.live_process(record) is not None
        if live and record is not None:
            ok, detail = health.check(svc.ready, timeout_s=1.0, since=record.create_time)
        else:
            ok, detail = False, "not running"
        state = "running" if live else ("stale" if pf.exists() else "stopped")
        return ServiceStatus(
            name=n,
            summary=svc.spec.summary,
            url=svc.url,
            pid=record.pid if live and record else None,
            state=state,
            healthy=ok,
            uptime_s=procs.uptime(record) if live and record else None,
            detail=detail,
        )

    # --- reset ---------------------------------------------------------------------------------

    def reset(self) -> list[Path]:
        """Stop everything and delete the stack's data, logs and PID files (installs are kept)."""
        self.down()
        removed = []
        for sub in ("data", "logs", "run"):
            path = self.home / sub
            if path.exists():
                shutil.rmtree(path)
                removed.append(path)
        return removed
