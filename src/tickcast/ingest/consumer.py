"""Kafka -> lake: the ingest consumer (run by the ingest DAG for a bounded slice of time).

For each polled batch:
1. decode every message (bar batch, bar JSON or Airbyte envelope) and validate its bars, against the Bar rules
   and :class:`~tickcast.ingest.messages.DecodeLimits` (time window, size, key); an undecodable message goes
   to the dead-letter topic whole, an invalid bar of a batch alone, each with the reason and the original
   payload (bounded; see ``tickcast.ingest.messages``). A record batch the client cannot even decompress
   arrives as one :class:`~tickcast.ingest.record_batches.UnreadableBatch` record and is dead-lettered as a
   reference. Whatever a message holds, the run moves on: nothing in its content stops ingest;
2. group the good bars of the WHOLE polled batch by (symbol, UTC day) and upsert each group into the lake
   (ETag-guarded, one write per day file, concurrently);
3. wait until the dead letters are acknowledged by the broker;
4. only then commit the batch's offsets.

A crash anywhere before step 4 re-delivers the batch; the upsert makes the repeat harmless, so every
bar lands exactly once in effect. If the lake or the broker is unreachable the consumer stops WITHOUT
committing (the run fails and Airflow retries) — nothing is lost. A day file in the lake that cannot be read is
quarantined by the upsert (:meth:`tickcast.lake.store.Lake.upsert_columns`) and counted in the report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tickcast.ingest import kafka
from tickcast.ingest.messages import (
    DecodeLimits,
    UndecodableMessage,
    dead_letter,
    dead_letter_key,
    decode_message,
)
from tickcast.ingest.record_batches import UnreadableBatch
from tickcast.lake.store import Lake
from tickcast.market.columns import BarColumns
from tickcast.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What one run did, and where its time went (seconds; ``*_at`` are measured from the run's start)."""

    messages: int = 0
    bars: int = 0
    dead_letters: int = 0
    unreadable_batches: int = 0  # record batches skipped by offset (dead-lettered as references)
    quarantined: list[str] = field(default_factory=list)  # day files that could not be read, moved aside
    files_written: int = 0
    batches: int = 0
    seconds: float = 0.0
    symbols: set[str] = field(default_factory=set)
    joined_at: float | None = None  # partitions assigned: the consumer-group join is done
    first_records_at: float | None = None
    last_write_at: float | None = None  # the last batch's lake writes (and dead letters) done
    decode_seconds: float = 0.0
    write_seconds: float = 0.0
    commit_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {
            "messages": self.messages,
            "bars": self.bars,
            "dead_letters": self.dead_letters,
            "unreadable_batches": self.unreadable_batches,
            "quarantined": self.quarantined,
            "files_written": self.files_written,
            "batches": self.batches,
            "seconds": round(self.seconds, 2),
            "symbols": sorted(self.symbols),
            "joined_at": r(self.joined_at),
            "first_records_at": r(self.first_records_at),
            "last_write_at": r(self.last_write_at),
            "decode_seconds": r(self.decode_seconds),
            "write_seconds": r(self.write_seconds),
            "commit_seconds": r(self.commit_seconds),
        }


def consume_to_lake(
    settings: Settings | None = None,
    *,
    max_seconds: float = 50.0,
    idle_seconds: float | None = None,
    max_messages: int | None = None,
    lake: Lake | None = None,
    after_write: Callable[[list[Any]], None] | None = None,
    consumer_options: dict[str, Any] | None = None,
) -> IngestReport:
    """Consume the bars topic into the lake for at most ``max_seconds``.

    Stops early after ``idle_seconds`` without messages (if given) or after ``max_messages``.
    ``after_write`` is called after the lake write and before the commit (tests use it to crash there).
    ``consumer_options`` override the Kafka consumer's settings (``tickcast.ingest.kafka.CONSUMER_DEFAULTS``).
    """
    s = settings or get_settings()
    lake = lake or Lake.from_settings(s)
    topic = s.kafka.bars_topic
    consumer = kafka.assigned_consumer(s, topic, **(consumer_options or {}))
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
            if report.joined_at is None and consumer.assignment():
                report.joined_at = time.monotonic() - start
            records = [r for part in batch.values() for r in part]
            if not records:
                continue
            last_message = time.monotonic()
            if report.first_records_at is None:
                report.first_records_at = last_message - start
            report.batches += 1
            report.messages += len(records)
            blocks: list[BarColumns] = []
            pending_dlq = []
            limits = DecodeLimits.from_settings(s)  # per polled batch: the source clock moves
            for rec in records:
                for error, value, index, extra in _letters_for(rec, blocks, limits, report):
                    where = f"{rec.topic}[{rec.partition}]@{rec.offset}" + (
                        f" bar {index}" if index is not None else ""
                    )
                    log.warning("dead letter %s: %s", where, error[:300])
                    dlq = dlq or kafka.producer(s)
                    letter = dead_letter(
                        error,
                        topic=rec.topic,
                        partition=rec.partition,
                        offset=extra.pop("offset", rec.offset),
                        key=rec.key,
                        value=value,
                        index=index,
                        extra=extra,
                    )
                    pending_dlq.append(dlq.send(s.kafka.dlq_topic, key=dead_letter_key(rec.key), value=letter))
            t_write = time.monotonic()
            report.decode_seconds += t_write - last_message
            if blocks:
                results = lake.upsert_columns(blocks)
                report.files_written += len(results)
                report.quarantined.extend(r.quarantined for r in results if r.quarantined)
                report.bars += sum(len(b) for b in blocks)
                report.symbols.update(b.symbol for b in blocks)
            if pending_dlq:
                assert dlq is not None
                dlq.flush()
                for fut in pending_dlq:
                    fut.get(timeout=30)  # raises if the DLQ write failed: then we must not commit
                report.dead_letters += len(pending_dlq)
            t_commit = time.monotonic()
            report.write_seconds += t_commit - t_write
            report.last_write_at = t_commit - start
            if after_write is not None:
                after_write(records)
            t_commit = time.monotonic()
            consumer.commit()
            report.commit_seconds += time.monotonic() - t_commit
    finally:
        report.seconds = time.monotonic() - start
        consumer.close(autocommit=False)
        if dlq is not None:
            dlq.close(timeout=5)
    log.info("ingest: %s", report.as_dict())
    return report


Letter = tuple[str, bytes | None, int | None, dict[str, Any]]  # reason, payload, bar index, extra fields


def _letters_for(rec: Any, blocks: list[BarColumns], limits: DecodeLimits, report: IngestReport) -> list[Letter]:
    """Decode one record: its good bars go to ``blocks``, what must be dead-lettered is returned. Never raises."""
    value = rec.value
    if isinstance(value, UnreadableBatch):
        report.unreadable_batches += 1
        extra: dict[str, Any] = {"offset": value.first_offset, "last_offset": value.last_offset, "codec": value.codec}
        return [(value.reason, None, None, extra)]
    try:
        decoded = decode_message(value, key=rec.key, limits=limits)
    except UndecodableMessage as err:
        return [(str(err), value, None, {})]
    except Exception as err:  # a decoder fault on some content: it must not stop ingest either
        log.exception("decoding %s[%s]@%s failed", rec.topic, rec.partition, rec.offset)
        return [(f"message cannot be decoded: {type(err).__name__}: {err}", value, None, {})]
    blocks.extend(decoded.columns)
    return [(f"invalid bar: {r.reason}", r.payload, r.index, {}) for r in decoded.rejected]
