"""Ports for test and benchmark stacks: free now, and never handed to two callers at once on one machine."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tickcast_dev.stack import procs


@pytest.fixture
def reservations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ports.json"
    monkeypatch.setattr(procs, "PORT_RESERVATIONS", path)
    return path


class ScriptedSocket:
    """A socket whose bind(0) gets the next port of a script, as a kernel that reuses released ports would."""

    script: Iterator[int] = iter(())

    def __init__(self, *_: Any) -> None:
        self.port = 0

    def bind(self, address: tuple[str, int]) -> None:
        self.port = next(ScriptedSocket.script)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def close(self) -> None:
        pass


def test_two_callers_never_get_the_same_port_even_when_the_kernel_offers_it_again(
    reservations: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ScriptedSocket.script = iter([40001, 40002, 40001, 40002, 40003, 40004])
    monkeypatch.setattr(socket, "socket", ScriptedSocket)
    assert procs.free_ports(2) == [40001, 40002]
    assert procs.free_ports(2) == [40003, 40004], "the first caller's ports are reserved"
    held = json.loads(reservations.read_text())
    assert set(held) == {"40001", "40002", "40003", "40004"}


def test_a_lapsed_reservation_frees_the_port(reservations: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reservations.write_text(json.dumps({"40001": 0.0, "40002": 9e12}))  # lapsed long ago / held far into the future
    ScriptedSocket.script = iter([40002, 40001])
    monkeypatch.setattr(socket, "socket", ScriptedSocket)
    assert procs.free_ports(1) == [40001]
    assert set(json.loads(reservations.read_text())) == {"40001", "40002"}


def test_real_ports_are_distinct_bindable_and_survive_an_unreadable_reservation_file(reservations: Path) -> None:
    reservations.write_text("not json")
    ports = procs.free_ports(8) + procs.free_ports(8)
    assert len(set(ports)) == 16
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
