"""Kafka -> lake: the ingest consumer (run by the ingest DAG for a bounded slice of time).

For each polled batch:
1. decode every message (bar JSON or Airbyte envelope) and validate its bars;
   anything undecodable or invalid goes to the dead-letter topic with the reason and the original payload;
2. group the good bars by (symbol, UTC day) and upsert each group into the lake (ETag-guarded);
3. wait until the dead letters are acknowledged by the broker;
4. only then commit the batch's offsets.

A crash anywhere before step 4 re-delivers the batch; the upsert makes the repeat harmless, so every
bar lands exactly once in effect. If the lake is unreachable the consumer stops WITHOUT committing
(the run fails and Airflow retries) — nothing is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tickcast.ingest import kafka
from tickcast.ingest.messages import UndecodableMessage, dead_letter, decode_value
from tickcast.lake.store import Lake, bars_frame
from tickcast.market.bar import Bar
from tickcast.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    messages: int = 0
    bars: int = 0
    dead_letters: int = 0
    files_written: int = 0
    batches: int = 0
    seconds: float = 0.0
    symbols: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "bars": self.bars,
            "dead_letters": self.dead_letters,
            "files_written": self.files_written,
            "batches": self.batches,
            "seconds": round(self.seconds, 2),
            "symbols": sorted(self.symbols),
        }


def consume_to_lake(
    settings: Settings | None = None,
    *,
    max_seconds: float = 50.0,
    idle_seconds: float | None = None,
    max_messages: int | None = None,
    lake: Lake | None = None,
    after_write: Callable[[list[Any]], None] | None = None,
) -> IngestReport:
    """Consume the bars topic into the lake for at most ``max_seconds``.

    Stops early after ``idle_seconds`` without messages (if given) or after ``max_messages``.
    ``after_write`` is called after the lake write and before the commit (tests use it to crash there).
    """
    s = settings or get_settings()
    lake = lake or Lake.from_settings(s)
    topic = s.kafka.bars_topic
    consumer = kafka.consumer(s, topic)
    dlq: Any = None  # created on the first dead letter
    report = IngestReport()
    start = time.monotonic()
    last_message: float | None = None  # idle time counts from the partition assignment (group join is slow)
    try:
        while True:
            now = time.monotonic()
            if now - start >= max_seconds:
                break
            if last_message is None and consumer.assignment():
                last_message = now
            if idle_seconds is not None and last_message is not None and now - last_message >= idle_seconds:
                break
            if max_messages is not None and report.messages >= max_messages:
                break
            batch = consumer.poll(timeout_ms=250)
            records = [r for part in batch.values() for r in part]
            if not records:
                continue
            last_message = time.monotonic()
            report.batches += 1
            report.messages += len(records)
            good: list[Bar] = []
            pending_dlq = []
            for rec in records:
                try:
                    good.extend(decode_value(rec.value))
                except UndecodableMessage as err:
                    log.warning("dead letter %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, err)
                    dlq = dlq or kafka.producer(s)
                    pending_dlq.append(
                        dlq.send(
                            s.kafka.dlq_topic,
                            key=rec.key,
                            value=dead_letter(
                                str(err),
                                topic=rec.topic,
                                partition=rec.partition,
                                offset=rec.offset,
                                key=rec.key,
                                value=rec.value,
                            ),
                        )
                    )
            if good:
                results = lake.upsert_frame(bars_frame(good))
                report.files_written += len(results)
                report.bars += len(good)
                report.symbols.update(b.symbol for b in good)
            if pending_dlq:
                assert dlq is not None
                dlq.flush()
                for fut in pending_dlq:
                    fut.get(timeout=30)  # raises if the DLQ write failed: then we must not commit
                report.dead_letters += len(pending_dlq)
            if after_write is not None:
                after_write(records)
            consumer.commit()
    finally:
        report.seconds = time.monotonic() - start
        consumer.close(autocommit=False)
        if dlq is not None:
            dlq.close(timeout=5)
    log.info("ingest: %s", report.as_dict())
    return report
