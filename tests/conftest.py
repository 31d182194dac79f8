"""Suite-wide fixtures.

Network guard: no test may reach Azure. An autouse, session-wide fixture patches
``socket.getaddrinfo``, ``socket.gethostbyname`` and ``socket.socket.connect``/``connect_ex`` so
that resolving or connecting to the instance-metadata service (169.254.169.254, which managed
identity probes) or any ``*.windows.net``, ``*.azure.com``, ``*.microsoftonline.com`` or
``*.azure.net`` host fails at once with :class:`BlockedNetworkError` naming the host, instead of
hanging on an IMDS probe or talking to a real tenant. Each blocked attempt is recorded in
``network_guard.blocked`` so a test can assert that nothing tried. It covers this Python process
only; the child processes tests start (Azurite, fake services) listen on loopback.

Test tiers (markers in pyproject.toml; `./just test-fast` runs what carries none of them):
``integration`` for everything under tests/integration and ``cloud_tools`` for every test that uses
the checkov / Azure SDK tool venv (the ``tool_python`` fixture) are set here, by location and
fixture use; ``slow`` (TensorFlow trainings, real installs, Airflow's DAG parse) and the other
``cloud_tools`` tests carry the mark in their module.

Order and parallel runs. In one process the unit tests run first, then the integration tests, with
``test_end_to_end.py`` last (its drills kill and restart the stack's services). ``./just test`` runs with
pytest-xdist (``--no-loadscope-reorder``) and the scheduler below, which gives every test a group
(:func:`group_of`): the unit a worker takes whole and runs in order. ``end-to-end`` (test_end_to_end.py)
and ``stack`` (the other integration tests) are handed out first, each to its own worker, which starts its
own private stack (free ports, a temporary home), so the drills never kill what the other integration
tests use; the unit tests follow a module at a time (each module is a group, so its module-scoped fixtures
— trained models, tool venvs — are built once, not once per worker).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

BLOCKED_ADDRESSES = frozenset({"169.254.169.254", "::ffff:169.254.169.254"})
BLOCKED_SUFFIXES = ("windows.net", "azure.com", "microsoftonline.com", "azure.net")


class BlockedNetworkError(ConnectionRefusedError):
    """A test tried to reach Azure or the instance-metadata service."""


def is_blocked_host(host: object) -> bool:
    """True for IMDS and for any host under one of the Azure / Entra ID domains."""
    if isinstance(host, bytes):
        host = host.decode("idna", errors="replace")
    if not isinstance(host, str):
        return False
    name = host.strip().strip("[]").rstrip(".").lower()
    if name in BLOCKED_ADDRESSES:
        return True
    return any(name == suffix or name.endswith("." + suffix) for suffix in BLOCKED_SUFFIXES)


class NetworkGuard:
    """Records and refuses connections to Azure hosts (see the module docstring)."""

    def __init__(self) -> None:
        self.blocked: list[str] = []

    def check(self, host: object, what: str) -> None:
        if is_blocked_host(host):
            self.blocked.append(f"{what} {host!r}")
            raise BlockedNetworkError(
                f"tests must not reach Azure: {what} {host!r} was blocked by the network guard in "
                "tests/conftest.py (use a fake on 127.0.0.1 instead)"
            )

    def install(self, mp: pytest.MonkeyPatch) -> None:
        guard = self
        real_getaddrinfo = socket.getaddrinfo
        real_gethostbyname = socket.gethostbyname
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            guard.check(host, "resolving")
            return real_getaddrinfo(host, *args, **kwargs)

        def gethostbyname(host: str) -> str:
            guard.check(host, "resolving")
            return real_gethostbyname(host)

        def address_host(address: Any) -> object:
            return address[0] if isinstance(address, tuple) and address else None

        def connect(self: socket.socket, address: Any) -> None:
            guard.check(address_host(address), "connecting to")
            real_connect(self, address)

        def connect_ex(self: socket.socket, address: Any) -> int:
            guard.check(address_host(address), "connecting to")
            return real_connect_ex(self, address)

        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        mp.setattr(socket, "gethostbyname", gethostbyname)
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)


END_TO_END = "tests/integration/test_end_to_end.py"


def group_of(nodeid: str) -> str:
    """The unit of work a pytest-xdist worker takes whole and runs in order (see the module docstring)."""
    path = nodeid.split("::", 1)[0]
    if path.startswith("tests/integration/"):
        return "end-to-end" if path == END_TO_END else "stack"
    return path


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Distribute by :func:`group_of` (xdist's own ``loadgroup`` marks do not reach pytest 9's node ids)."""
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tiers that follow from where a test lives and what it uses, and order the tests (see the module
    docstring)."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
        if "tool_python" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cloud_tools)
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    if workers >= 2:  # xdist workers: the two stacks' groups are handed out first, to two workers
        rank = {"end-to-end": 0, "stack": 1}
        items.sort(key=lambda item: rank.get(group_of(item.nodeid), 2))
    else:
        items.sort(key=lambda item: group_of(item.nodeid) == "end-to-end")


@pytest.fixture(scope="session", autouse=True)
def network_guard() -> Iterator[NetworkGuard]:
    """Active for every test; request it by name to inspect ``blocked``."""
    guard = NetworkGuard()
    with pytest.MonkeyPatch.context() as mp:
        guard.install(mp)
        yield guard
