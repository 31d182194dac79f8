"""Source -> Kafka against real processes: the Yahoo emulator over HTTP, real Tansu brokers, real Azurite.

The emulator here runs on its own frozen clock (a real HTTP server in a thread), so the test decides
exactly when a minute closes; brokers that must die are started by the test itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from emulators.yahoo.clock import SESSION_OFFSET
from tests.support.market_source import (
    CLOSED,
    Broker,
    Emulator,
    configured,
    free_port,
    running_emulator,
    start_broker,
)
from tickcast.ingest import kafka
from tickcast.ingest.consumer import consume_to_lake
from tickcast.ingest.producer import BarPublisher, Poller, PublishError, backfill
from tickcast.lake.store import Lake
from tickcast.market.yahoo import YahooClient
from tickcast.settings import Settings
from tickcast_dev.stack.hooks import create_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with running_emulator() as emu:
        yield emu


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = start_broker(free_port(), tmp_path / "tansu.log")
    try:
        yield b
    finally:
        b.kill()


def test_poller_publishes_closed_minutes_once_and_the_next_one_when_it_closes(
    stack: Settings, emulator: Emulator
) -> None:
    s = configured(stack, emulator)
    a, b = emulator.symbols
    with YahooClient(s) as client:
        poller = Poller(s, client, BarPublisher(s))
        assert poller.poll_once() == {a: CLOSED, b: CLOSED}, "closed minutes only; the forming one is not sent"
        assert poller.poll_once() == {a: 0, b: 0}, "nothing new while the clock stands still"
        emulator.clock.advance(60)
        assert poller.poll_once() == {a: 1, b: 1}, "one more minute closed: exactly one new bar each"
        poller.publisher.close()
    consume_to_lake(s, max_seconds=60, idle_seconds=3)
    lake = Lake.from_settings(s)
    for sym in (a, b):
        df = lake.read(sym, emulator.day_open, emulator.day_open + timedelta(hours=6))
        assert len(df) == CLOSED + 1 and df["ts"].is_unique
        assert df["ts"].max() == emulator.day_open + SESSION_OFFSET  # the minute that closed last


def test_poller_follows_the_source_clock_not_the_wall_clock(stack: Settings) -> None:
    """A source whose clock is weeks behind (tape replay, a paused emulator) still gets polled forward."""
    with running_emulator(days_back=16) as emulator:
        s = configured(stack, emulator)
        a, b = emulator.symbols
        with YahooClient(s) as client:
            poller = Poller(s, client, BarPublisher(s))
            assert poller.poll_once() == {a: CLOSED, b: CLOSED}
            emulator.clock.advance(5 * 60)
            assert poller.poll_once() == {a: 5, b: 5}, "five more minutes closed on the source's clock"
            poller.publisher.close()


def test_unknown_symbol_is_a_clear_error_while_the_others_go_on(stack: Settings, emulator: Emulator) -> None:
    known = emulator.symbols[0]
    s = configured(stack, emulator, symbols=[known, "NOPE"])
    with YahooClient(s) as client:
        poller = Poller(s, client, BarPublisher(s))
        sent = poller.poll_once()
        poller.publisher.close()
    assert sent == {known: CLOSED}
    assert "No data found, symbol may be delisted" in poller.state.errors["NOPE"]


def test_source_down_is_retried_with_backoff_and_reported_without_a_crash(stack: Settings, emulator: Emulator) -> None:
    dead = Emulator(f"http://127.0.0.1:{free_port()}", emulator.clock, emulator.day_open, emulator.symbols[:1])
    s = configured(stack, dead)
    s = s.model_copy(update={"yahoo": s.yahoo.model_copy(update={"retries": 2, "backoff_s": 0.01})})
    slept: list[float] = []
    with YahooClient(s, sleep=slept.append) as client:
        poller = Poller(s, client, BarPublisher(s))
        assert poller.poll_once() == {}
        poller.publisher.close()
    assert len(slept) == 2, "two retries, each after a backoff"
    assert "unreachable after 3 attempts" in poller.state.errors[emulator.symbols[0]]


def test_broker_down_fails_loudly_and_nothing_counts_as_sent(
    stack: Settings, emulator: Emulator, tmp_path: Path
) -> None:
    b = start_broker(free_port(), tmp_path / "tansu.log")
    s = configured(stack, emulator, bootstrap=f"127.0.0.1:{b.port}", symbols=emulator.symbols[:1])
    publisher = BarPublisher(
        s, kafka.producer(s, delivery_timeout_ms=3000, request_timeout_ms=1000, max_block_ms=3000, retries=1)
    )
    with YahooClient(s) as client:
        poller = Poller(s, client, publisher)
        b.kill()
        with pytest.raises(PublishError, match="did not acknowledge"):
            poller.poll_once()
        assert poller.state.watermarks[emulator.symbols[0]] is None, "the watermark moves only after acknowledged sends"


def broker_and_half_hour_in_the_lake(
    stack: Settings, emulator: Emulator, tmp_path: Path
) -> tuple[Broker, Settings, Lake]:
    """A broker of the test's own, settings for the emulator's first symbol, and a lake that already holds the
    session's first 30 minutes (ingested before the broker died)."""
    b = start_broker(free_port(), tmp_path / "tansu.log")
    sym = emulator.symbols[0]
    s = configured(stack, emulator, bootstrap=f"127.0.0.1:{b.port}", symbols=[sym])
    lake = Lake.from_settings(s)
    with YahooClient(s) as client:
        got = client.bars(sym, range_="1d")
    lake.upsert_bars([bar for bar in got.bars if bar.ts < emulator.day_open + timedelta(minutes=30)])
    return b, s, lake


def test_broker_restart_loses_nothing_for_good_producer_refetches_from_the_lake_mark(
    stack: Settings, emulator: Emulator, tmp_path: Path
) -> None:
    b, s, lake = broker_and_half_hour_in_the_lake(stack, emulator, tmp_path)
    port, sym = b.port, emulator.symbols[0]
    # publish everything, then the broker dies before the consumer read it (memory storage: all lost)
    with YahooClient(s) as client:
        poller = Poller(s, client, BarPublisher(s))
        assert poller.poll_once() == {sym: CLOSED}
        poller.publisher.close()
    b.kill()
    b = start_broker(port, tmp_path / "tansu.log")
    try:
        create_topics(s)
        # the restarted producer resumes from the lake's last minute and re-fetches the rest from the source
        with YahooClient(s) as client:
            restarted = Poller(s, client, BarPublisher(s), lake_last_ts=lake.last_ts)
            assert restarted.poll_once() == {sym: CLOSED - 30}
            restarted.publisher.close()
        consume_to_lake(s, max_seconds=60, idle_seconds=3)
        df = lake.read(sym, emulator.day_open, emulator.day_open + timedelta(hours=6))
        assert len(df) == CLOSED and df["ts"].is_unique, "every minute of the session is in the lake once"
    finally:
        b.kill()


def test_a_running_poller_notices_the_broker_lost_its_log_and_publishes_again_from_the_lake_mark(
    stack: Settings, emulator: Emulator, tmp_path: Path
) -> None:
    """The producer service's case: the same poller lives through a restart of the memory-only broker."""
    b, s, lake = broker_and_half_hour_in_the_lake(stack, emulator, tmp_path)
    port, sym = b.port, emulator.symbols[0]
    try:
        with YahooClient(s) as client:
            poller = Poller(s, client, BarPublisher(s), lake_last_ts=lake.last_ts)
            assert poller.poll_once() == {sym: CLOSED - 30}
            b.kill()  # before the consumer read anything: the broker's memory held minutes 30..CLOSED-1
            b = start_broker(port, tmp_path / "tansu.log")
            create_topics(s)
            emulator.clock.advance(60)  # one more minute closes
            with pytest.raises(PublishError, match="UnknownProducerId"):
                poller.poll_once()  # the new broker does not know the producer: nothing counts as sent
            sent = poller.poll_once()  # a new producer, from the lake's last minute
            poller.publisher.close()
        assert sent == {sym: CLOSED + 1 - 30}, "everything after the lake's mark is published again"
        consume_to_lake(s, max_seconds=60, idle_seconds=3)
        df = lake.read(sym, emulator.day_open, emulator.day_open + timedelta(hours=6))
        assert len(df) == CLOSED + 1 and df["ts"].is_unique, "every closed minute is in the lake once"
    finally:
        b.kill()


def test_gap_repair_publishes_again_only_the_minutes_the_lake_lost(stack: Settings, emulator: Emulator) -> None:
    sym = emulator.symbols[0]
    s = configured(stack, emulator, symbols=[sym])
    lake = Lake.from_settings(s)
    with YahooClient(s) as client:
        got = client.bars(sym, range_="1d")
    lost = {emulator.day_open + timedelta(minutes=m) for m in range(30, 35)}
    not_yet = emulator.day_open + timedelta(minutes=CLOSED - 1)  # the newest minute, still on its way
    lake.upsert_bars([b for b in got.bars if b.ts not in lost and b.ts != not_yet])
    with YahooClient(s) as client:
        poller = Poller(s, client, BarPublisher(s), lake_minutes=lake.minutes)
        assert poller.repair_gaps() == {sym: 5}, "the hole, not the minute after the lake's newest"
        assert poller.repair_gaps() == {sym: 5}, "until ingested, the hole is still there"
        poller.publisher.close()
    consume_to_lake(s, max_seconds=60, idle_seconds=3)
    df = lake.read(sym, emulator.day_open, emulator.day_open + timedelta(hours=6))
    assert len(df) == CLOSED - 1 and df["ts"].is_unique and lost <= set(df["ts"].dt.to_pydatetime())
    with YahooClient(s) as client:
        assert Poller(s, client, BarPublisher(s), lake_minutes=lake.minutes).repair_gaps() == {}
    assert poller.state.repaired == 10


def test_backfill_publishes_every_closed_minute_of_the_requested_days(stack: Settings, emulator: Emulator) -> None:
    a, b = emulator.symbols
    s = configured(stack, emulator)
    calls: list[tuple[str, int, int]] = []
    report = backfill(s, 3, progress=lambda sym, done, total: calls.append((sym, done, total)))
    assert not report.errors
    assert report.per_symbol[a] == report.per_symbol[b] > CLOSED
    assert calls[-1][1] == calls[-1][2], "progress reaches its total"
    consume_to_lake(s, max_seconds=60, idle_seconds=3)
    lake = Lake.from_settings(s)
    now = datetime.now(UTC)
    df = lake.read(a, now - timedelta(days=10), now + timedelta(days=1))
    assert len(df) == report.per_symbol[a] and df["ts"].is_unique
    minutes_ny = {(t.tz_convert("America/New_York").hour, t.tz_convert("America/New_York").minute) for t in df["ts"]}
    assert min(minutes_ny) >= (9, 30) and max(minutes_ny) <= (15, 59), "regular-session minutes only"
