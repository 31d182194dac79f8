"""Process bookkeeping for the stack: PID files, liveness, port owners and process-tree shutdown.

A PID file (``<home>/run/<service>.json``) records the PID *and* the process's creation time, so a
recycled PID is never mistaken for our service (a "stale" PID file). Stopping a service signals its
whole tree: the process group it was started in plus every descendant found before signalling,
so nothing it spawned is left behind, and nothing that we did not start is touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class PidRecord:
    service: str
    pid: int
    create_time: float
    port: int
    command: list[str]
    started_at: float


class PidFile:
    """The PID file of one service under ``<home>/run``."""

    def __init__(self, home: Path, service: str) -> None:
        self.path = home / "run" / f"{service}.json"
        self.service = service

    def read(self) -> PidRecord | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return PidRecord(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            return None  # unreadable -> treated like a stale file by the caller

    def write(self, record: PidRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)), encoding="utf-8")
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def exists(self) -> bool:
        return self.path.exists()


def live_process(record: PidRecord) -> psutil.Process | None:
    """The process a PID record describes, or None if it has exited or the PID was reused."""
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > 1.0:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts connections on host:port (or the port cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is not "taken"
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def port_owner(port: int) -> str | None:
    """'pid N (name)' of the process listening on ``port``, when the OS lets us see it."""
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, PermissionError):
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            try:
                proc = psutil.Process(c.pid)
                return f"pid {c.pid} ({' '.join(proc.cmdline()[:3]) or proc.name()})"
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                return f"pid {c.pid}"
    return None


def process_tree(proc: psutil.Process) -> list[psutil.Process]:
    """The process (first), its descendants, and every member of its process group."""
    tree = {proc.pid: proc}
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        for child in proc.children(recursive=True):
            tree[child.pid] = child
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None and pgid == proc.pid:  # we made it a group leader at start
        for p in psutil.process_iter(["pid"]):
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                if p.pid not in tree and os.getpgid(p.pid) == pgid:
                    tree[p.pid] = p
    return list(tree.values())


@dataclass(frozen=True)
class TreeStop:
    """How to stop one service's process tree.

    ``leader_signal`` (e.g. ``SIGINT`` for PostgreSQL's fast shutdown) goes to the tree's first process only
    and the rest of the tree is left for it to shut down; without one, every process gets SIGTERM.
    """

    tree: list[psutil.Process]
    grace_s: float
    leader_signal: signal.Signals | None = None


def terminate_trees(stops: list[TreeStop]) -> list[psutil.Process]:
    """Signal every tree (see :class:`TreeStop`); SIGKILL what is left of a tree after its grace period.

    All trees are signalled at once, so stopping the stack takes as long as its slowest service, not
    their sum. Returns the processes that had to be killed.
    """
    for stop in stops:
        targets = stop.tree[:1] if stop.leader_signal is not None else stop.tree
        for p in targets:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                p.send_signal(stop.leader_signal or signal.SIGTERM)
    start = time.monotonic()
    pending = [(list(stop.tree), stop.grace_s) for stop in stops]
    killed: list[psutil.Process] = []
    while pending:
        still = []
        for tree, grace in pending:
            alive = [p for p in tree if _alive(p)]
            if not alive:
                continue
            if time.monotonic() - start >= grace:
                for p in alive:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        p.kill()
                killed.extend(alive)
                psutil.wait_procs(alive, timeout=5)
                continue
            still.append((alive, grace))
        pending = still
        if pending:
            psutil.wait_procs([p for tree, _ in pending for p in tree], timeout=0.1)
    return killed


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def uptime(record: PidRecord) -> float:
    return max(0.0, time.time() - record.started_at)


# Ports handed out by free_ports on this machine, so two callers starting stacks at the same moment (the parallel
# test workers, a benchmark beside a test run) never get the same one: the kernel may give a port just released
# by one caller to the next. A reservation lapses after RESERVE_S (by then the port is in use, or free again).
PORT_RESERVATIONS = Path(tempfile.gettempdir()) / "tickcast-port-reservations.json"
RESERVE_S = 900.0


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that are free right now and not handed to another caller on this machine within
    :data:`RESERVE_S` (for test and benchmark stacks). The reservations are a JSON file in the temp dir, read and
    written under a file lock; without write access to it the ports are still free, only not reserved."""
    try:
        lock = PORT_RESERVATIONS.with_suffix(".lock").open("a")
    except OSError:
        return _bind_free(n, host, frozenset())
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        now = time.time()
        try:
            held = {int(p): float(t) for p, t in json.loads(PORT_RESERVATIONS.read_text()).items() if float(t) > now}
        except (OSError, ValueError, AttributeError):
            held = {}
        ports = _bind_free(n, host, frozenset(held))
        held.update(dict.fromkeys(ports, now + RESERVE_S))
        with contextlib.suppress(OSError):
            staging = PORT_RESERVATIONS.with_suffix(f".{os.getpid()}.tmp")
            staging.write_text(json.dumps({str(p): t for p, t in held.items()}))
            staging.replace(PORT_RESERVATIONS)
        return ports


def _bind_free(n: int, host: str, reserved: frozenset[int]) -> list[int]:
    """Bind port 0 until ``n`` distinct ports outside ``reserved``; every socket stays open until the end, so the
    kernel cannot give one of them twice."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            if len(socks) >= 50 * n + 100:
                raise OSError(f"no {n} free TCP ports on {host} outside the {len(reserved)} reserved ones")
            s = socket.socket()
            socks.append(s)
            s.bind((host, 0))
            port = int(s.getsockname()[1])
            if port not in reserved and port not in ports:
                ports.append(port)
        return ports
    finally:
        for s in socks:
            s.close()
