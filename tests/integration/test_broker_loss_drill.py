"""Drill: the memory-only broker restarts while the consumer lags, and the lake still ends equal to the source.

The local broker (Tansu) keeps its log in memory (decision 0003): what it acknowledged and the consumer had
not read yet is gone when it restarts. Nothing may stay lost for good (decision 0060): the producer's gap
repair compares the lake with the source over the whole lookback and publishes again what the lake lacks.

Real parts throughout: a Tansu broker started by the test (so the test can restart it), the Yahoo emulator
over HTTP on a frozen clock (so no new minute arrives to reveal the restart through the producer's offsets:
only the repair can close the hole), the stack's Azurite lake, the real consumer.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.market_source import CLOSED, configured, running_emulator, start_broker
from tickcast.ingest.consumer import consume_to_lake
from tickcast.ingest.producer import BarPublisher, Poller
from tickcast.lake.store import Lake
from tickcast.market.yahoo import YahooClient
from tickcast.settings import Settings
from tickcast_dev.stack.hooks import create_topics
from tickcast_dev.stack.procs import free_ports

pytestmark = pytest.mark.integration

SETTLE_S = 20.0  # the frozen clock is 30 s into a minute: every published minute has settled


def test_broker_restart_while_the_consumer_lags_then_the_lake_equals_the_source(
    stack: Settings, tmp_path: Path
) -> None:
    with running_emulator(days_back=0) as emulator:
        port = free_ports(1)[0]
        broker = start_broker(port, tmp_path / "tansu.log")
        try:
            sym = emulator.symbols[0]
            s = configured(stack, emulator, bootstrap=f"127.0.0.1:{port}", symbols=[sym])
            s = s.model_copy(
                update={"ingest": s.ingest.model_copy(update={"repair_settle_s": SETTLE_S, "repair_every_polls": 1})}
            )
            lake = Lake.from_settings(s)
            now = emulator.day_open + timedelta(minutes=CLOSED)
            window_start = now - timedelta(days=s.ingest.max_backfill_days) + timedelta(minutes=1)
            with YahooClient(s) as client:
                source = client.bars(sym, start=window_start, end=now + timedelta(minutes=1)).bars
            earlier = sorted(b.ts for b in source if b.ts < emulator.day_open)
            assert len(earlier) > 390, "the source serves earlier sessions inside the lookback"

            # The lake before the incident: the lookback up to today's minute 30, minus 10 minutes of an older day
            # (lost before this producer started: a restored backup, a crashed emulator, a deleted file).
            older_hole = set(earlier[100:110])
            lake.upsert_bars(
                [b for b in source if b.ts < emulator.day_open + timedelta(minutes=30) and b.ts not in older_hole]
            )

            with YahooClient(s) as client:
                poller = Poller(s, client, BarPublisher(s), lake_last_ts=lake.last_ts, lake_minutes=lake.minutes)
                assert poller.poll_once() == {sym: CLOSED - 30}
                today_tail = {emulator.day_open + timedelta(minutes=m) for m in range(30, CLOSED)}
                in_lake = lake.minutes(sym, window_start, now + timedelta(minutes=1))
                assert not today_tail & in_lake, "consumer lag > 0: the broker alone holds today's tail"

                broker.kill()  # memory storage: the tail is gone
                broker = start_broker(port, tmp_path / "tansu.log")
                create_topics(s)

                # The producer service's turns on a frozen clock: no new minute, so only the repair can help.
                # The first repair compares the whole lookback; its first send meets a broker that no longer
                # knows the producer (a new producer is made), so the next turn repeats the lookback repair.
                for _ in range(3):
                    poller.tick()
                poller.publisher.close()
            assert poller.state.repaired >= len(today_tail) + len(older_hole)

            report = consume_to_lake(s, max_seconds=90, idle_seconds=3)
            assert report.dead_letters == 0
            stored = lake.read(sym, window_start, now + timedelta(minutes=1))
            assert stored["ts"].is_unique, "every minute once"
            assert set(stored["ts"].dt.to_pydatetime()) == {b.ts for b in source}, "the lake equals the source"
            closes = dict(zip(stored["ts"].dt.to_pydatetime(), stored["close"], strict=True))
            assert all(closes[b.ts] == pytest.approx(b.close) for b in source)
        finally:
            broker.kill()
