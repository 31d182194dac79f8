"""The stuck-pipeline verdict of ``tickcast status``: stale lake, failing runs, growing lag — and quiet otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tickcast_dev.pipeline_health import (
    DagHealth,
    LagHistory,
    MarketSession,
    RunFailure,
    first_error_line,
    verdict,
)

NOW = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
OPEN = MarketSession(NOW, NOW.replace(hour=14, minute=30), NOW.replace(hour=21))
CLOSED = MarketSession(NOW.replace(hour=23), NOW.replace(hour=14, minute=30), NOW.replace(hour=21))
HEALTHY = [DagHealth("ingest", NOW - timedelta(seconds=40)), DagHealth("retrain", NOW - timedelta(minutes=9))]


def test_a_fresh_lake_with_succeeding_runs_is_not_stuck() -> None:
    assert verdict({"SPY": 50.0, "IBM": 61.0}, OPEN, HEALTHY) == []


def test_a_lake_more_than_two_minutes_behind_during_the_session_is_stale() -> None:
    reasons = verdict({"SPY": 50.0, "IBM": 185.0}, OPEN, HEALTHY)
    assert len(reasons) == 1 and "stale lake" in reasons[0] and "IBM 185 s" in reasons[0] and "SPY" not in reasons[0]
    assert verdict({"SPY": 120.0}, OPEN, HEALTHY) == []  # exactly at the limit is still fresh


def test_old_bars_outside_the_session_are_normal() -> None:
    assert verdict({"SPY": 9 * 3600.0, "IBM": None}, CLOSED, [DagHealth("ingest", NOW - timedelta(hours=3))]) == []


def test_a_symbol_without_bars_during_the_session_is_stale() -> None:
    assert "IBM no bars" in verdict({"SPY": 10.0, "IBM": None}, OPEN, HEALTHY)[0]


def test_a_failed_last_run_is_reported_with_its_task_and_first_error_line() -> None:
    failure = RunFailure("scheduled__x", NOW, "consume", "UnsupportedCodecError: libraries for zstd not found")
    reasons = verdict({"SPY": 30.0}, OPEN, [DagHealth("ingest", NOW - timedelta(seconds=50), failure)])
    assert reasons == [
        "ingest: the last run failed in task consume: UnsupportedCodecError: libraries for zstd not found"
    ]


def test_run_times_are_judged_on_the_wall_clock_not_the_sources() -> None:
    then = NOW - timedelta(days=2)  # an emulator two days behind the wall clock, in its session
    emulated = MarketSession(then, then - timedelta(hours=1), then + timedelta(hours=5))
    assert verdict({"SPY": 30.0}, emulated, HEALTHY, wall_now=NOW) == []
    late = [DagHealth("ingest", NOW - timedelta(minutes=10))]
    assert "ingest has not succeeded" in verdict({"SPY": 30.0}, emulated, late, wall_now=NOW)[0]


def test_ingest_without_a_recent_success_during_the_session_is_stuck() -> None:
    reasons = verdict({"SPY": 30.0}, OPEN, [DagHealth("ingest", NOW - timedelta(minutes=5))])
    assert reasons and "ingest has not succeeded during the session (not since 15:55:00 UTC)" in reasons[0]
    assert "never" in verdict({"SPY": 30.0}, OPEN, [DagHealth("ingest", None)])[0]


def test_lag_that_rises_at_every_sample_over_two_minutes_is_growing(tmp_path: Path) -> None:
    history = LagHistory.load(tmp_path / "lag.json")
    for i, lag in enumerate([3, 10, 25, 40]):
        history.add(NOW + timedelta(seconds=50 * i), lag)
    assert history.growing()
    assert "consumer lag growing: 3 -> 10 -> 25 -> 40" in verdict({"SPY": 10.0}, OPEN, HEALTHY, history)[0]
    again = LagHistory.load(tmp_path / "lag.json")  # two status calls share what they saw
    assert again.samples == history.samples


def test_lag_that_drains_or_was_sampled_too_briefly_is_not_growing(tmp_path: Path) -> None:
    draining = LagHistory(path=None)
    for i, lag in enumerate([40, 25, 30, 0]):
        draining.add(NOW + timedelta(seconds=50 * i), lag)
    assert not draining.growing()
    brief = LagHistory()
    for i, lag in enumerate([1, 2, 3, 4]):
        brief.add(NOW + timedelta(seconds=10 * i), lag)
    assert not brief.growing()  # 30 s of samples cannot show a trend over 2 minutes


def test_an_unreadable_history_file_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "lag.json"
    path.write_text("{not json")
    assert LagHistory.load(path).samples == []


def test_first_error_line_reads_structured_and_plain_logs() -> None:
    structured = {
        "content": [
            {"event": "Executing <Task(_PythonDecoratedOperator): consume>", "level": "info"},
            {"event": "Task failed with exception", "level": "error"},
        ]
    }
    assert first_error_line(structured) == "Task failed with exception"
    text = "INFO start\nTraceback (most recent call last):\n  File x\nkafka.errors.UnsupportedCodecError: zstd\n"
    assert first_error_line(text) == "kafka.errors.UnsupportedCodecError: zstd"
    assert first_error_line("all good\n") is None
