"""Hostile input against the real broker and real Azurite: nothing a message holds stops ingest or the producer.

A librdkafka producer (confluent-kafka, another client than the pipeline's) writes every pill of
``tests/support/hostile.py`` with every codec Kafka defines, between good bars; then a decompression bomb and a
batch whose compressed bytes its codec cannot read. ONE ingest run stores every good bar, dead-letters every pill
at its own offset with its reason, and commits to the end (lag 0). Each test gets its own topics and group.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.hostile import Pill, batch_doc, far_future_bar, pills
from tickcast.ingest import kafka
from tickcast.ingest.consumer import consume_to_lake
from tickcast.lake.store import QUARANTINE_PREFIX, CorruptDayFile, Lake, day_path
from tickcast.market.bar import Bar
from tickcast.settings import Settings
from tickcast_dev.stack.hooks import create_topics

pytestmark = pytest.mark.integration

DAY = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)  # a Monday, 09:30 New York
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
MAX_BATCH_BYTES = 3 * 1024 * 1024  # the 2 MiB pill fits (alone in its batch); the 6 MiB bomb does not


@pytest.fixture
def isolated(stack: Settings) -> Iterator[Settings]:
    run = uuid.uuid4().hex[:8]
    s = stack.model_copy(
        update={
            "kafka": stack.kafka.model_copy(
                update={"bars_topic": f"it.{run}.bars", "dlq_topic": f"it.{run}.dlq", "consumer_group": f"it-{run}"}
            ),
            "ingest": stack.ingest.model_copy(update={"max_batch_bytes": MAX_BATCH_BYTES}),
        }
    )
    create_topics(s)
    yield s


def symbol() -> str:
    return "H" + uuid.uuid4().hex[:5].upper()


class Librdkafka:
    """A confluent-kafka producer that remembers where each message landed (partition, offset) -> label."""

    def __init__(self, settings: Settings, codec: str) -> None:
        from confluent_kafka import Producer

        self.topic = settings.kafka.bars_topic
        self.landed: dict[tuple[int, int], str] = {}
        self.errors: list[str] = []
        self.producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "compression.type": codec,
                "partitioner": "murmur2_random",  # the Java/kafka-python key hashing (FINDINGS: Tansu)
                "message.max.bytes": 8_000_000,
                "linger.ms": 20,
            }
        )

    def send(self, key: bytes | None, value: bytes | None, label: str) -> None:
        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                self.errors.append(f"{label}: {err}")
            else:
                self.landed[(msg.partition(), msg.offset())] = label

        self.producer.produce(self.topic, key=key, value=value, on_delivery=delivered)
        self.producer.poll(0)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0, "every message delivered"
        assert not self.errors, self.errors


def good_batch(sym: str, first_minute: int, n: int = 5) -> bytes:
    return json.dumps(batch_doc(sym, DAY + timedelta(minutes=first_minute), n)).encode()


def read_dlq(settings: Settings, n: int, deadline_s: float = 60) -> list[dict[str, Any]]:
    import time

    dlq = kafka.consumer(settings, settings.kafka.dlq_topic, group=f"{settings.kafka.consumer_group}-dlq")
    letters: list[dict[str, Any]] = []
    deadline = time.monotonic() + deadline_s
    try:
        while len(letters) < n and time.monotonic() < deadline:
            for part in dlq.poll(timeout_ms=500).values():
                letters.extend(json.loads(r.value) for r in part)
    finally:
        dlq.close()
    return letters


def lag(settings: Settings) -> int:
    """Messages past the group's committed offsets. Tansu can report an end offset BELOW a committed one when
    messages arrive in batches, so a partition committed past its reported end counts as 0, not negative."""
    from kafka import TopicPartition

    c = kafka.consumer(settings)
    try:
        parts = [
            TopicPartition(settings.kafka.bars_topic, p) for p in c.partitions_for_topic(settings.kafka.bars_topic)
        ]
        ends = c.end_offsets(parts)
        return sum(max(ends[tp] - (c.committed(tp) or 0), 0) for tp in parts)
    finally:
        c.close(autocommit=False)


def test_every_pill_with_every_codec_is_dead_lettered_and_the_good_bars_land(isolated: Settings) -> None:
    sym = symbol()
    catalogue: dict[str, Pill] = {}
    landed: dict[tuple[int, int], str] = {}
    minute = 0
    for codec in CODECS:
        out = Librdkafka(isolated, codec)
        out.send(sym.encode(), good_batch(sym, minute), f"{codec}/good")
        for pill in pills(sym, DAY):
            catalogue[pill.name] = pill
            out.send(pill.key, pill.value, f"{codec}/{pill.name}")
        out.send(sym.encode(), good_batch(sym, minute + 5), f"{codec}/good")
        out.flush()
        landed.update(out.landed)
        minute += 10

    bomb = Librdkafka(isolated, "gzip")  # 6 MiB of zeros: ~6 KB on the wire, past the 3 MiB bound unpacked
    bomb.send(sym.encode(), bytes(2 * MAX_BATCH_BYTES), "gzip/bomb")
    bomb.flush()
    landed.update(bomb.landed)
    landed.update(send_with_a_broken_codec(isolated, sym))
    after = Librdkafka(isolated, "zstd")
    after.send(sym.encode(), good_batch(sym, minute), "zstd/good-after")
    after.flush()
    landed.update(after.landed)

    report = consume_to_lake(isolated, max_seconds=120, idle_seconds=5)

    expected_bars = 10 * len(CODECS) + 5
    df = Lake.from_settings(isolated).read(sym, DAY, DAY + timedelta(hours=2))
    assert len(df) == expected_bars and df["ts"].is_unique, "every good bar landed, once"
    assert report.unreadable_batches == 2
    assert lag(isolated) == 0, "the run committed to the end: no pill is waiting to stop the next run"

    pill_count = len(catalogue) * len(CODECS)
    letters = read_dlq(isolated, pill_count + 2)
    assert len(letters) == pill_count + 2
    by_place = {(d["partition"], d["offset"]): d for d in letters}
    for place, label in landed.items():
        codec, name = label.split("/", 1)
        if name.startswith("good"):
            assert place not in by_place, f"{label} was dead-lettered: {by_place[place]['error']}"
            continue
        letter = by_place[place]
        assert letter["topic"] == isolated.kafka.bars_topic
        if name == "bomb":
            assert f"more than {MAX_BATCH_BYTES} bytes" in letter["error"] and letter["payload"] is None
            assert letter["last_offset"] == place[1] and letter["codec"] == "gzip"
        elif name == "broken-codec":
            assert "zstd" in letter["error"] and letter["payload"] is None and letter["codec"] == "zstd"
        else:
            pill = catalogue[name]
            assert pill.reason in letter["error"], (label, letter["error"])
            assert len(json.dumps(letter)) < 128 * 1024, f"{label}: a bounded letter"
    big = [d for d in letters if d.get("payload_truncated")]
    assert len(big) == len(CODECS) and all(d["payload_bytes"] == 2 * 1024 * 1024 for d in big)

    again = consume_to_lake(isolated, max_seconds=10, idle_seconds=3)
    assert again.messages == 0 and again.dead_letters == 0


def send_with_a_broken_codec(settings: Settings, sym: str) -> dict[tuple[int, int], str]:
    """A batch whose zstd bytes are garbage under a valid CRC: what a client with a broken codec sends."""
    from kafka.record import default_records

    real = default_records.zstd_encode
    default_records.zstd_encode = lambda payload: b"\x28\xb5\x2f\xfd garbage, not a zstd frame"
    producer = kafka.producer(settings, compression_type="zstd")
    try:
        meta = producer.send(settings.kafka.bars_topic, key=sym.encode(), value=good_batch(sym, 500)).get(30)
    finally:
        default_records.zstd_encode = real
        producer.close()
    return {(meta.partition, meta.offset): "zstd/broken-codec"}


def test_a_corrupt_day_file_is_quarantined_and_rewritten_and_the_run_succeeds(isolated: Settings) -> None:
    sym = symbol()
    lake = Lake.from_settings(isolated)
    path = day_path(sym, DAY.date())
    garbage = b"PAR1 this is not a parquet file"
    lake.container.get_blob_client(path).upload_blob(garbage)
    with pytest.raises(CorruptDayFile, match=path):
        lake.read_day(sym, DAY.date())

    producer = kafka.producer(isolated)
    producer.send(isolated.kafka.bars_topic, key=sym.encode(), value=good_batch(sym, 0, 3)).get(30)
    producer.close()
    report = consume_to_lake(isolated, max_seconds=60, idle_seconds=3)

    assert report.bars == 3 and len(report.quarantined) == 1
    (moved,) = report.quarantined
    assert moved.startswith(f"{QUARANTINE_PREFIX}{path}.")
    kept = lake.container.get_blob_client(moved)
    assert kept.download_blob().readall() == garbage, "the damaged file is kept as it was"
    assert "cannot be read" in kept.get_blob_properties().metadata["reason"]
    assert list(lake.read_day(sym, DAY.date())["close"]) == [10.2, 10.2, 10.2]
    assert lag(isolated) == 0


def test_a_far_future_bar_in_the_lake_is_not_the_newest_minute(stack: Settings) -> None:
    sym = symbol()
    lake = Lake.from_settings(stack)
    lake.upsert_bars([Bar(**far_future_bar(sym)), Bar(**(far_future_bar(sym) | {"ts": DAY}))])
    assert lake.last_ts(sym) == datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "it is there (stored before the rule)"
    assert lake.last_ts(sym, not_after=datetime.now(UTC) + timedelta(minutes=5)) == DAY


def test_the_stack_producer_and_api_still_answer(stack: Settings) -> None:
    """After the pills (run first in this module): the producer shows its failure counts, the API is alive."""
    url = f"http://{stack.stack.host}:{stack.stack.producer_port}/status"
    with urllib.request.urlopen(url, timeout=10) as resp:
        status = json.load(resp)
    assert status["status"] == "ok"
    assert {"errors", "failures", "failed_polls", "last_failure"} <= set(status)
    with urllib.request.urlopen(f"{stack.function_url}/api/health", timeout=10) as resp:
        assert resp.status == 200
