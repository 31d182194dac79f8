"""`tickcast status` answers quickly when the stack is down or a service hangs, and `--watch` redraws in place.

The stack here is a settings object whose ports are free (nothing listens: every probe must fail at
once) or held by a socket that accepts connections and never answers (a hung service). With the
stack up, tests/integration/test_end_to_end.py checks what the snapshot reports.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text

from tickcast.settings import PROJECT_ROOT, Settings, StackSettings, load_settings
from tickcast_dev import status
from tickcast_dev.stack.procs import free_ports


def ports() -> dict[str, int]:
    fields = [name for name in StackSettings.model_fields if name.endswith("_port")]
    return dict(zip(fields, free_ports(len(fields)), strict=True))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(_env_file=None, stack={"home": tmp_path / "home", **ports()})


@pytest.fixture
def hung_mlflow(settings: Settings) -> Iterator[Settings]:
    """MLflow's port accepts connections (the kernel completes the handshake) but nothing ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        yield load_settings(_env_file=None, stack={**settings.stack.model_dump(), "mlflow_port": port})


def test_a_stopped_stack_is_reported_at_once(settings: Settings) -> None:
    started = time.monotonic()
    snap = status.snapshot(settings)
    elapsed = time.monotonic() - started
    parts = {"lake": snap.lake, "kafka": snap.consumer_lag, "mlflow": snap.model, "endpoint": snap.endpoint}
    for part, answer in parts.items():
        assert isinstance(answer, status.Problem), f"{part}: {answer!r}"
        assert "nothing answers on 127.0.0.1:" in answer.reason, f"{part}: {answer.reason}"
    # refused connections, not client retries: well under the snapshot's deadline
    assert elapsed < status.DEADLINE_S, f"{elapsed:.1f} s"


def test_a_hung_service_costs_the_deadline_not_more(hung_mlflow: Settings) -> None:
    started = time.monotonic()
    snap = status.snapshot(hung_mlflow, deadline_s=1.0)
    elapsed = time.monotonic() - started
    assert isinstance(snap.model, status.Problem)
    assert snap.model.reason == "no answer within 1 s"
    assert isinstance(snap.consumer_lag, status.Problem) and "nothing answers" in snap.consumer_lag.reason
    assert elapsed < 2.5, f"{elapsed:.1f} s for a 1 s deadline"


def test_without_a_deadline_a_hung_service_is_still_bounded_by_its_timeouts(hung_mlflow: Settings) -> None:
    snap = status.snapshot(hung_mlflow, deadline_s=60)
    assert isinstance(snap.model, status.Problem)
    assert "ReadTimeout" in snap.model.reason, snap.model.reason


def test_the_command_answers_quickly_with_the_stack_down(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update(settings.to_env(), COLUMNS="200")
    started = time.monotonic()
    shown = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "tickcast"), "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert shown.returncode == 1, shown.stdout + shown.stderr  # exit 1: not every service is healthy
    assert "not running" in shown.stdout
    for part in ("lake", "kafka", "mlflow", "endpoint"):
        assert f"{part}: unreachable" in shown.stdout, shown.stdout
    # it took minutes (MLflow's client retried with backoff); generous for a loaded 2-core machine
    assert elapsed < 30, f"{elapsed:.1f} s"


def test_watch_redraws_in_place() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=60, color_system=None)
    calls = []

    def view() -> tuple[Text, bool]:
        calls.append(len(calls) + 1)
        return Text(f"view number {len(calls)}"), len(calls) < 3

    status.watch(console, view, 0.01, rounds=3)
    text = out.getvalue()
    assert calls == [1, 2, 3]
    assert all(f"view number {n}" in text for n in (1, 2, 3))
    assert "\x1b[2K" in text and "\x1b[1A" in text, "earlier frames are erased, not scrolled"
    assert "not every service healthy" in text.rsplit("view number 3", 1)[1]
