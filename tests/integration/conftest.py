"""The real local stack for integration tests, started once per test session.

Which flavour runs is decided once and printed in pytest's header:
* a Docker engine answers -> docker-compose.local.yml through testcontainers (set
  TICKCAST_TEST_STACK=processes to force the process stack anyway);
* otherwise -> the process stack, supervised by tickcast itself, in a temporary home on free ports,
  so it never touches a developer's own stack.

At the end of the session the stack is stopped and the teardown fails if any process it started
(or any of their children) is still alive.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.stack import stack_flavour, stack_processes
from tickcast.settings import Settings, StackSettings, get_settings, load_settings
from tickcast_dev.stack.procs import free_ports


def pytest_report_header(config: pytest.Config) -> str:
    flavour, reason = stack_flavour()
    return f"tickcast integration stack: {flavour} ({reason})"


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """Settings pointing at a running, healthy stack (exported as TICKCAST_* for child processes too)."""
    flavour, _ = stack_flavour()
    saved = dict(os.environ)
    if flavour == "containers":
        from tests.support.containers import start_compose_stack

        settings = load_settings(_env_file=None)
        handle = start_compose_stack()
        os.environ.update(settings.to_env())
        get_settings.cache_clear()
        try:
            yield settings
        finally:
            handle.stop()
            os.environ.clear()
            os.environ.update(saved)
            get_settings.cache_clear()
        return

    from tickcast_dev.stack.supervisor import Supervisor

    # Not under pytest's basetemp: as root the stack's PostgreSQL runs as an unprivileged user that must reach
    # its data directory, and every pytest session on the machine resets /tmp/pytest-of-<user> to mode 0700.
    home = Path(tempfile.mkdtemp(prefix="tickcast-it-stack-"))
    port_fields = [name for name in StackSettings.model_fields if name.endswith("_port")]
    ports = dict(zip(port_fields, free_ports(len(port_fields)), strict=True))
    settings = load_settings(
        _env_file=None,
        stack={"home": home, "start_timeout_s": 240, **ports},
        airflow={"unpause": []},  # the test stack runs DAGs only when a test triggers them
        # the fault drills wait for the lake's holes to be repaired (every poll) and for ingest runs to end (a
        # 15 s slice instead of 45 s: a drill's triggered run queues behind a scheduled one for less)
        ingest={"repair_every_polls": 1, "consume_slice_s": 15},
    )
    os.environ.update(settings.to_env())
    get_settings.cache_clear()
    log: list[str] = []
    sup = Supervisor(settings, report=log.append)
    t0 = time.monotonic()
    try:
        sup.up()
    except Exception:
        sup.down()
        shutil.rmtree(home, ignore_errors=True)
        raise
    print(f"\nstack healthy in {time.monotonic() - t0:.1f}s: " + "; ".join(log))
    try:
        yield settings
    finally:
        started = stack_processes(sup)
        sup.down()
        leftovers = [p for p in started if _alive(p)]
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        shutil.rmtree(home, ignore_errors=True)
        assert not leftovers, f"down left processes behind: {[_describe(p) for p in leftovers]}"


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline()[:3])}"
    except psutil.Error:
        return str(p.pid)


@pytest.fixture(scope="session")
def stack_home(stack: Settings) -> Path:
    return stack.stack.resolved_home()
