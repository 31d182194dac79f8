"""Sources and brokers a test owns: a Yahoo emulator over HTTP on a frozen clock (the test decides when a
minute closes) and Tansu brokers it can kill and restart (memory storage), plus settings that point at them.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import uvicorn

from emulators.yahoo import sessions
from emulators.yahoo.app import create_app
from emulators.yahoo.clock import SESSION_OFFSET, EmulatorClock, session_start
from emulators.yahoo.synthetic import SyntheticMarket
from tickcast.settings import Settings
from tickcast_dev.stack.definition import tansu_binary
from tickcast_dev.stack.hooks import create_topics
from tickcast_dev.stack.procs import free_ports


def free_port() -> int:
    return free_ports(1)[0]


CLOSED = int(SESSION_OFFSET.total_seconds() // 60)  # minutes closed when the frozen clock starts


def wait_for_port(port: int, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {deadline_s}s")


@dataclass
class Emulator:
    url: str
    clock: EmulatorClock
    day_open: datetime
    symbols: list[str]


@contextmanager
def running_emulator(days_back: int = 0) -> Iterator[Emulator]:
    """A Yahoo emulator on a free port, clock frozen 30 s into the first minute after SESSION_OFFSET."""
    day = sessions.latest_session_started(time.time() - days_back * 86400)
    start = session_start(day) + timedelta(seconds=30)  # CLOSED minutes closed, the next one forming
    clock = EmulatorClock(start, speed=0)
    suffix = uuid.uuid4().hex[:4].upper()  # symbols unique to the test: the shared lake has none of them yet
    symbols = [f"A{suffix}", f"B{suffix}"]
    source = SyntheticMarket(11, symbols, {}, 0.3, null_fraction=0.0)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(clock=clock, source=source), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port)
    try:
        day_open = start - timedelta(seconds=30) - SESSION_OFFSET
        yield Emulator(f"http://127.0.0.1:{port}", clock, day_open, symbols)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class Broker:
    port: int
    proc: subprocess.Popen[bytes]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def start_broker(port: int, log: Path) -> Broker:
    out = log.open("ab")
    proc = subprocess.Popen(
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port)
    return Broker(port, proc)


def configured(
    stack: Settings, emulator: Emulator, bootstrap: str | None = None, symbols: list[str] | None = None
) -> Settings:
    run = uuid.uuid4().hex[:8]
    kafka_cfg = {"bars_topic": f"it.{run}.bars", "dlq_topic": f"it.{run}.dlq", "consumer_group": f"it-{run}"}
    if bootstrap:
        kafka_cfg["bootstrap_servers"] = bootstrap
    syms = symbols or emulator.symbols
    s = stack.model_copy(
        update={
            "symbols": syms,
            "kafka": stack.kafka.model_copy(update=kafka_cfg),
            "yahoo": stack.yahoo.model_copy(update={"base_url": emulator.url, "retries": 1, "backoff_s": 0.05}),
        }
    )
    create_topics(s)
    return s
