"""Kafka -> lake against the real broker and real Azurite: exactly once in effect, dead letters, no loss.

Each test gets its own topics and consumer group, so tests never see each other's messages.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tickcast.ingest import kafka
from tickcast.ingest.consumer import consume_to_lake
from tickcast.ingest.messages import encode_batches
from tickcast.lake.store import Lake, day_path
from tickcast.market.bar import Bar
from tickcast.settings import Settings
from tickcast_dev.stack.hooks import create_topics

pytestmark = pytest.mark.integration

DAY1 = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)  # a Monday, 09:30 New York
DAY2 = DAY1 + timedelta(days=1)


@pytest.fixture
def isolated(stack: Settings) -> Iterator[Settings]:
    run = uuid.uuid4().hex[:8]
    s = stack.model_copy(
        update={
            "kafka": stack.kafka.model_copy(
                update={
                    "bars_topic": f"it.{run}.bars",
                    "dlq_topic": f"it.{run}.dlq",
                    "consumer_group": f"it-{run}",
                }
            )
        }
    )
    create_topics(s)
    yield s


def symbol() -> str:
    return "Z" + uuid.uuid4().hex[:5].upper()


def bar(sym: str, ts: datetime, close: float, source: str = "test") -> Bar:
    return Bar(
        symbol=sym, ts=ts, open=close, high=close + 0.05, low=close - 0.05, close=close, volume=100.0, source=source
    )


def send_raw(settings: Settings, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = kafka.producer(settings)
    for key, value in messages:
        producer.send(settings.kafka.bars_topic, key=key, value=value)
    producer.flush()
    producer.close()


def send(settings: Settings, bars: list[Bar]) -> None:
    send_raw(settings, [(b.symbol.encode(), b.to_json()) for b in bars])


def send_batches(settings: Settings, bars: list[Bar], max_bars: int) -> int:
    messages: list[tuple[bytes | None, bytes]] = [(k, v) for k, v, _ in encode_batches(bars, max_bars)]
    send_raw(settings, messages)
    return len(messages)


def dlq_letters(settings: Settings, n: int) -> list[dict[str, object]]:
    dlq = kafka.consumer(settings, settings.kafka.dlq_topic, group=f"{settings.kafka.consumer_group}-dlq")
    letters: list[dict[str, object]] = []
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while len(letters) < n and datetime.now(UTC) < deadline:
        for part in dlq.poll(timeout_ms=500).values():
            letters.extend(json.loads(r.value) for r in part)
    dlq.close()
    return letters


def test_duplicates_revisions_and_a_crash_before_commit_leave_each_minute_once(isolated: Settings) -> None:
    a, b = symbol(), symbol()
    minutes = [DAY1 + timedelta(minutes=i) for i in range(30)] + [DAY2 + timedelta(minutes=i) for i in range(30)]
    original = [bar(s, ts, 100.0 + i * 0.01) for s in (a, b) for i, ts in enumerate(minutes)]
    duplicates = original[::7]  # exact repeats
    revised = [bar(a, minutes[3], 555.5, source="revision"), bar(b, minutes[40], 666.6, source="revision")]
    send(isolated, original + duplicates + revised)
    total = len(original) + len(duplicates) + len(revised)

    def crash(records: list[object]) -> None:
        raise RuntimeError("simulated crash after the lake write, before the offset commit")

    with pytest.raises(RuntimeError, match="simulated crash"):
        consume_to_lake(isolated, max_seconds=60, idle_seconds=10, after_write=crash)

    report = consume_to_lake(isolated, max_seconds=60, idle_seconds=3)
    assert report.messages == total, "the uncommitted batch is delivered again after the crash"

    lake = Lake.from_settings(isolated)
    for sym in (a, b):
        df = lake.read(sym, DAY1, DAY2 + timedelta(days=1))
        assert len(df) == len(minutes), f"{sym}: every minute exactly once"
        assert df["ts"].is_unique and df["ts"].is_monotonic_increasing
    df_a = lake.read(a, DAY1, DAY1 + timedelta(hours=1))
    assert df_a.loc[df_a["ts"] == minutes[3], "close"].item() == 555.5, "the later revision wins"
    df_b = lake.read(b, DAY2, DAY2 + timedelta(hours=1))
    assert df_b.loc[df_b["ts"] == minutes[40], "close"].item() == 666.6

    again = consume_to_lake(isolated, max_seconds=8, idle_seconds=3)
    assert again.messages == 0, "offsets were committed after the successful write"


def test_bad_messages_go_to_the_dlq_with_reason_and_payload_and_good_ones_still_land(isolated: Settings) -> None:
    sym = symbol()
    garbage = b"\xff\xfe not json at all"
    invalid = json.dumps(
        {"symbol": sym, "ts": DAY1.isoformat(), "open": 10, "high": 9, "low": 8, "close": 10, "volume": 5}
    ).encode()
    ts0 = int((DAY1 + timedelta(minutes=10)).timestamp())
    airbyte = json.dumps(
        {
            "_airbyte_ab_id": "x",
            "_airbyte_emitted_at": 1,
            "_airbyte_data": {
                "chart": {
                    "result": [
                        {
                            "meta": {"symbol": sym, "regularMarketTime": ts0 + 600},
                            "timestamp": [ts0, ts0 + 60, ts0 + 120],
                            "indicators": {
                                "quote": [
                                    {
                                        "open": [10.0, 10.1, None],
                                        "high": [10.2, 10.3, None],
                                        "low": [9.9, 10.0, None],
                                        "close": [10.1, 10.2, None],
                                        "volume": [1000, 1100, None],
                                    }
                                ]
                            },
                        }
                    ],
                    "error": None,
                }
            },
        }
    ).encode()
    good = bar(sym, DAY1 + timedelta(minutes=20), 11.0)
    send_raw(
        isolated,
        [(sym.encode(), garbage), (sym.encode(), invalid), (sym.encode(), airbyte), (sym.encode(), good.to_json())],
    )

    report = consume_to_lake(isolated, max_seconds=60, idle_seconds=3)
    assert report.dead_letters == 2 and report.bars == 3

    df = Lake.from_settings(isolated).read(sym, DAY1, DAY1 + timedelta(hours=1))
    assert [t.minute for t in df["ts"]] == [40, 41, 50], "Airbyte bars (nulls dropped) and the good bar"

    letters = dlq_letters(isolated, 2)
    by_encoding = {str(d["payload_encoding"]): d for d in letters}
    assert set(by_encoding) == {"base64", "utf-8"}
    assert "not JSON" in str(by_encoding["base64"]["error"])
    assert "high 9.0 is below max(open 10.0, close 10.0)" in str(by_encoding["utf-8"]["error"])
    assert by_encoding["utf-8"]["payload"] == invalid.decode()
    assert {d["topic"] for d in letters} == {isolated.kafka.bars_topic}


def test_batches_with_duplicates_and_revisions_across_them_land_exactly_once(isolated: Settings) -> None:
    """Batch messages (interleaved symbols, a day boundary inside a batch) and a crash before the commit."""
    a, b = symbol(), symbol()
    minutes = [DAY1 + timedelta(minutes=i) for i in range(120)] + [DAY2 + timedelta(minutes=i) for i in range(80)]
    original = [bar(s, ts, 100.0 + i * 0.01) for i, ts in enumerate(minutes) for s in (a, b)]
    repeated = original[100:300]  # exact repeats, in later batches
    revised = [bar(a, minutes[5], 555.5, source="revision"), bar(b, minutes[150], 666.6, source="revision")]
    messages = send_batches(isolated, original + repeated + revised, max_bars=50)
    assert messages == 2 * (200 // 50) + 2 * (100 // 50) + 2, "a batch holds one symbol and one source"

    def crash(records: list[object]) -> None:
        raise RuntimeError("simulated crash after the lake write, before the offset commit")

    with pytest.raises(RuntimeError, match="simulated crash"):
        consume_to_lake(isolated, max_seconds=60, idle_seconds=10, after_write=crash)

    report = consume_to_lake(isolated, max_seconds=60, idle_seconds=3)
    assert report.messages == messages and report.bars == len(original) + len(repeated) + len(revised)
    assert report.dead_letters == 0 and report.joined_at is not None and report.last_write_at is not None

    lake = Lake.from_settings(isolated)
    for sym in (a, b):
        df = lake.read(sym, DAY1, DAY2 + timedelta(days=1))
        assert len(df) == len(minutes), f"{sym}: every minute exactly once"
        assert df["ts"].is_unique and df["ts"].is_monotonic_increasing
        assert lake.days(sym) == [DAY1.date(), DAY2.date()]
    df_a = lake.read(a, DAY1, DAY1 + timedelta(hours=3))
    assert df_a.loc[df_a["ts"] == minutes[5], "close"].item() == 555.5, "the later revision wins"
    assert df_a.loc[df_a["ts"] == minutes[5], "source"].item() == "revision"
    df_b = lake.read(b, DAY2, DAY2 + timedelta(hours=3))
    assert df_b.loc[df_b["ts"] == minutes[150], "close"].item() == 666.6
    assert df_b.loc[df_b["ts"] == minutes[151], "close"].item() == 100.0 + 151 * 0.01

    again = consume_to_lake(isolated, max_seconds=8, idle_seconds=3)
    assert again.messages == 0, "offsets were committed after the successful write"


def test_an_invalid_bar_in_a_batch_is_dead_lettered_alone_and_the_others_land(isolated: Settings) -> None:
    sym = symbol()
    good = [bar(sym, DAY1 + timedelta(minutes=i), 20.0 + i) for i in range(10)]
    ((key, value, _),) = encode_batches(good)
    doc = json.loads(value)
    doc["high"][4] = 1.0  # below open and close
    payload = json.dumps(doc).encode()
    send_raw(isolated, [(key, payload)])

    report = consume_to_lake(isolated, max_seconds=60, idle_seconds=3)
    assert report.bars == 9 and report.dead_letters == 1

    df = Lake.from_settings(isolated).read(sym, DAY1, DAY1 + timedelta(hours=1))
    assert [t.minute for t in df["ts"]] == [30, 31, 32, 33, 35, 36, 37, 38, 39]

    (letter,) = dlq_letters(isolated, 1)
    assert letter["error"] == "invalid bar: high 1.0 is below max(open 24.0, close 24.0)"
    assert letter["index"] == 4 and letter["key"] == sym and letter["topic"] == isolated.kafka.bars_topic
    one = json.loads(str(letter["payload"]))
    assert one["ts"] == [doc["ts"][4]] and one["high"] == [1.0] and one["symbol"] == sym, "the bar as sent"


def test_an_undecodable_batch_goes_to_the_dlq_whole_and_the_next_message_lands(isolated: Settings) -> None:
    sym = symbol()
    first = [bar(sym, DAY1 + timedelta(minutes=i), 30.0 + i) for i in range(5)]
    ((key, value, _),) = encode_batches(first)
    broken = json.loads(value)
    broken["close"].pop()  # arrays of different lengths: no bar can be trusted
    broken_value = json.dumps(broken).encode()
    later = [bar(sym, DAY1 + timedelta(minutes=10 + i), 40.0 + i) for i in range(3)]
    ((_, good_value, _),) = encode_batches(later)
    send_raw(isolated, [(key, broken_value), (key, good_value)])

    report = consume_to_lake(isolated, max_seconds=60, idle_seconds=3)
    assert report.messages == 2 and report.dead_letters == 1 and report.bars == 3

    df = Lake.from_settings(isolated).read(sym, DAY1, DAY1 + timedelta(hours=1))
    assert list(df["close"]) == [40.0, 41.0, 42.0]
    (letter,) = dlq_letters(isolated, 1)
    assert "'close' has 4 values for 5 timestamps" in str(letter["error"])
    assert letter["payload"] == broken_value.decode() and "index" not in letter, "the whole message, as sent"


def test_lake_down_commits_nothing_and_loses_nothing(isolated: Settings) -> None:
    from azure.storage.blob import ContainerClient

    sym = symbol()
    bars = [bar(sym, DAY1 + timedelta(minutes=i), 50.0 + i) for i in range(5)]
    send(isolated, bars)
    dead_port = isolated.blob_connection_string().replace(f":{isolated.stack.azurite_port}/", ":1/")
    unreachable = Lake(ContainerClient.from_connection_string(dead_port, "lake", retry_total=0))
    with pytest.raises(Exception, match=r"(?i)connect|refused"):
        consume_to_lake(isolated, max_seconds=30, idle_seconds=5, lake=unreachable)

    report = consume_to_lake(isolated, max_seconds=60, idle_seconds=3)
    assert report.bars == 5
    df = Lake.from_settings(isolated).read(sym, DAY1, DAY1 + timedelta(hours=1))
    assert list(df["close"]) == [50.0, 51.0, 52.0, 53.0, 54.0]


def test_concurrent_upserts_to_one_day_file_lose_nothing(stack: Settings) -> None:
    """Two writers racing on the same day file: ETag preconditions make the loser retry and merge."""
    from concurrent.futures import ThreadPoolExecutor

    from tickcast.lake.store import bars_frame

    sym = symbol()
    lake = Lake.from_settings(stack)
    chunks = [[bar(sym, DAY1 + timedelta(minutes=10 * w + i), 20.0 + w) for i in range(10)] for w in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda c: lake.upsert(sym, DAY1.date(), bars_frame(c)), chunks))
    df = lake.read_day(sym, DAY1.date())
    assert len(df) == 60 and df["ts"].is_unique
    assert sum(r.added for r in results) == 60, "every writer's bars counted as added exactly once"
    assert lake.days(sym) == [DAY1.date()]
    assert lake.container.get_blob_client(day_path(sym, DAY1.date())).exists()


def test_range_read_touches_only_the_needed_day_files(stack: Settings) -> None:
    sym = symbol()
    lake = Lake.from_settings(stack)
    lake.upsert_bars([bar(sym, DAY1 + timedelta(days=d, minutes=i), 30.0 + d) for d in range(4) for i in range(3)])
    touched: list[str] = []
    original = lake.read_day

    def spy(s: str, day: object) -> object:
        touched.append(str(day))
        return original(s, day)  # type: ignore[arg-type]

    lake.read_day = spy  # type: ignore[method-assign,assignment]
    df = lake.read(sym, DAY1 + timedelta(days=1), DAY1 + timedelta(days=2, minutes=2))
    assert touched == [str((DAY1 + timedelta(days=1)).date()), str((DAY1 + timedelta(days=2)).date())]
    assert len(df) == 3 + 2
    assert lake.last_ts(sym) == DAY1 + timedelta(days=3, minutes=2)


def test_ingest_dag_runs_with_dag_test_against_the_stack(isolated: Settings, stack_home: object) -> None:
    """`dag.test()` of dags/ingest.py, in a process configured exactly like the stack's Airflow."""
    from tests.support.stack import run_dag_test

    sym = symbol()
    send(isolated, [bar(sym, DAY1 + timedelta(minutes=i), 70.0 + i) for i in range(4)])
    run_dag_test(
        isolated, "ingest.py", "ingest_dag", timeout_s=240, extra_env={"TICKCAST_INGEST__CONSUME_SLICE_S": "8"}
    )
    df = Lake.from_settings(isolated).read(sym, DAY1, DAY1 + timedelta(hours=1))
    assert list(df["close"]) == [70.0, 71.0, 72.0, 73.0]
