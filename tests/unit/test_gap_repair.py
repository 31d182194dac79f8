"""The producer's gap repair rules (decisions 0013 and 0060), against an in-memory source, lake and publisher.

Which minutes are published again: holes before the lake's newest minute; minutes after it once they have
settled at the source (once); older days only on a lookback repair; nothing for a symbol the lake lacks.
The end-to-end drill with a real broker restart is tests/integration/test_broker_loss_drill.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tickcast.ingest.producer import Poller, PublishError
from tickcast.market.bar import Bar
from tickcast.market.chart import ChartBars
from tickcast.settings import Settings, load_settings

MINUTE = timedelta(minutes=1)
DAY_OPEN = datetime(2026, 12, 4, 14, 30, tzinfo=UTC)  # a Friday, 09:30 New York
OLDER_OPEN = DAY_OPEN - timedelta(days=1)  # Thursday
NOW = DAY_OPEN + timedelta(minutes=60, seconds=30)  # the source's clock: 60 minutes closed today
SYM = "SPY"


def bar(ts: datetime) -> Bar:
    return Bar(symbol=SYM, ts=ts, open=10, high=11, low=9, close=10.5, volume=100, source="test")


SESSION = [bar(DAY_OPEN + i * MINUTE) for i in range(60)]
OLDER = [bar(OLDER_OPEN + i * MINUTE) for i in range(390)]


class Source:
    """The chart API: today's 60 closed minutes and yesterday's whole session."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    def bars(
        self, symbol: str, *, start: datetime | None = None, end: datetime | None = None, range_: str = "1d"
    ) -> ChartBars:
        if start is None:
            self.requests.append("session")
            return ChartBars(symbol, list(SESSION), market_time=NOW)
        self.requests.append("lookback")
        assert end is not None
        return ChartBars(symbol, [b for b in OLDER + SESSION if start <= b.ts < end], market_time=NOW)


class Publisher:
    def __init__(self, fail: int = 0) -> None:
        self.sent: list[list[datetime]] = []
        self.fail = fail
        self.renewed = 0

    def publish(self, bars: Iterable[Bar]) -> int:
        if self.fail:
            self.fail -= 1
            raise PublishError("UnknownProducerIdError: the broker restarted empty")
        batch = sorted(b.ts for b in bars)
        self.sent.append(batch)
        return len(batch)

    def renew(self) -> None:
        self.renewed += 1


class FakeLake:
    def __init__(self, stored: Iterable[datetime]) -> None:
        self.stored = set(stored)

    def minutes(self, symbol: str, start: datetime, end: datetime) -> set[datetime]:
        return {t for t in self.stored if start <= t < end}


def poller(lake: FakeLake, publisher: Publisher, settle_s: float = 300.0, **ingest: Any) -> Poller:
    cfg: Settings = load_settings(
        _env_file=None, symbols=[SYM], ingest={"repair_settle_s": settle_s, "max_backfill_days": 7, **ingest}
    )
    p = Poller(cfg, Source(), publisher, lake_minutes=lake.minutes)  # type: ignore[arg-type]
    p.state.source_time = NOW
    return p


def minutes(first: int, last: int, day: datetime = DAY_OPEN) -> list[datetime]:
    return [day + i * MINUTE for i in range(first, last)]


def test_a_hole_before_the_newest_is_published_again_at_once_the_unsettled_tail_is_not() -> None:
    lake = FakeLake(set(minutes(0, 56)) - set(minutes(10, 15)))
    pub = Publisher()
    assert poller(lake, pub).repair_gaps() == {SYM: 5}
    assert pub.sent == [minutes(10, 15)], "minutes 56..59 closed less than 5 minutes ago: still on their way"


def test_a_settled_tail_after_the_newest_is_published_again_once() -> None:
    """The broker restarted while the consumer lagged: the lake stops at minute 29 and nothing later arrives."""
    lake = FakeLake(minutes(0, 30))
    pub = Publisher()
    p = poller(lake, pub, settle_s=60)
    assert p.repair_gaps() == {SYM: 29}, "minutes 30..58 closed >= 60 s before the source's clock"
    assert pub.sent == [minutes(30, 59)]
    assert p.repair_gaps() == {}, "not again while the copy is on its way"
    lake.stored |= set(minutes(30, 59))
    assert p.repair_gaps() == {}, "caught up; minute 59 closed 30 s ago and is still on its way"
    lake.stored -= set(minutes(40, 42))
    assert p.repair_gaps() == {SYM: 2}, "a hole before the newest is published again every time"


def test_older_days_are_compared_only_by_a_lookback_repair() -> None:
    lake = FakeLake((set(minutes(0, 390, OLDER_OPEN)) - set(minutes(100, 110, OLDER_OPEN))) | set(minutes(0, 60)))
    pub = Publisher()
    p = poller(lake, pub, repair_lookback_every=3)
    assert p.repair_due() == {SYM: 10}, "the first repair compares the whole lookback"
    assert pub.sent == [minutes(100, 110, OLDER_OPEN)]
    assert p.repair_due() == {} and p.repair_due() == {}, "then the current session"
    assert p.repair_due() == {SYM: 10}, "and every repair_lookback_every-th the lookback again"
    assert p.client.requests == ["lookback", "session", "session", "lookback"]  # type: ignore[attr-defined]


def test_a_failed_lookback_repair_renews_the_producer_and_is_repeated() -> None:
    lake = FakeLake(set(minutes(0, 390, OLDER_OPEN)) - set(minutes(0, 5, OLDER_OPEN)) | set(minutes(0, 60)))
    pub = Publisher(fail=1)
    p = poller(lake, pub)
    with pytest.raises(PublishError):
        p.repair_due()
    assert pub.renewed == 1
    assert p.repair_due() == {SYM: 5}, "the lookback again, with the new producer"
    assert p.client.requests == ["lookback", "lookback"]  # type: ignore[attr-defined]


def test_a_symbol_with_nothing_in_the_lake_is_left_to_backfill() -> None:
    pub = Publisher()
    assert poller(FakeLake(()), pub, settle_s=1).repair_due() == {}
    assert pub.sent == []
