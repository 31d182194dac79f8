"""Health checks of stack services: a heartbeat left by a previous run is not health; a command check."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from tickcast_dev.stack.health import _stale_heartbeats, check

STARTED = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def body(scheduler_beat: datetime | None, processor_beat: datetime) -> dict[str, object]:
    """Airflow's /api/v2/monitor/health answer."""
    return {
        "metadatabase": {"status": "healthy"},
        "scheduler": {
            "status": "healthy",
            "latest_scheduler_heartbeat": scheduler_beat.isoformat() if scheduler_beat else None,
        },
        "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": processor_beat.isoformat()},
    }


def test_heartbeats_from_before_the_start_are_stale() -> None:
    """A scheduler killed 10 s before this start still reads "healthy" for Airflow's 30 s threshold."""
    keys = ["metadatabase", "scheduler", "dag_processor"]
    since = STARTED.timestamp()
    old, new = STARTED - timedelta(seconds=10), STARTED + timedelta(seconds=3)
    assert _stale_heartbeats(body(old, new), keys, since) == ["scheduler"]
    assert _stale_heartbeats(body(new, old), keys, since) == ["dag_processor"]
    assert _stale_heartbeats(body(None, new), keys, since) == ["scheduler"], "no heartbeat at all is not fresh"
    assert _stale_heartbeats(body(new, new), keys, since) == []
    assert _stale_heartbeats(body(old, old), ["metadatabase"], since) == [], "keys without heartbeats"


def test_a_command_check_is_healthy_on_exit_0_and_says_why_not() -> None:
    assert check({"command": [sys.executable, "-c", "pass"]})[0]
    ok, detail = check({"command": [sys.executable, "-c", "print('no response'); raise SystemExit(2)"]})
    assert not ok and detail == "no response"
    ok, detail = check({"command": ["/nonexistent/pg_isready"]})
    assert not ok and "FileNotFoundError" in detail
