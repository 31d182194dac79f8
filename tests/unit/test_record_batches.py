"""Record batches as kafka-python's fetcher reads them, built with kafka-python's own batch builder: every codec
decodes, a bomb or a batch that cannot be read becomes one reference record past which the position moves."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from tickcast.ingest import record_batches
from tickcast.ingest.record_batches import UnreadableBatch

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
LIMIT = 1024 * 1024
TP = TopicPartition("market.bars.1m", 0)


@pytest.fixture(autouse=True)
def guard() -> None:
    record_batches.install(LIMIT)


def build(codec: int, values: list[bytes], base_offset: int = 0) -> bytes:
    b = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 30,
    )
    for i, v in enumerate(values):
        b.append(i, timestamp=None, key=b"SPY", value=v, headers=[])
    data = bytearray(b.build())
    data[0:8] = base_offset.to_bytes(8, "big")  # the broker assigns offsets; the CRC does not cover them
    return bytes(data)


def fetch(*batches: bytes, fetch_offset: int = 0) -> tuple[list[Any], int]:
    """What the fetcher hands to ``poll()`` for these batches, and the position it moves to."""
    part = Fetcher.PartitionRecords(fetch_offset, TP, MemoryRecords(b"".join(batches)))
    records = part.take()
    return records, part.next_fetch_offset


@pytest.mark.parametrize("codec", CODECS, ids=str)
def test_every_codec_decodes(codec: str) -> None:
    values = [b'{"n": %d}' % i for i in range(50)]
    records, position = fetch(build(CODECS[codec], values))
    assert [r.value for r in records] == values and position == 50


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_a_bomb_becomes_a_reference_and_the_next_batch_is_read(codec: str) -> None:
    bomb = build(CODECS[codec], [bytes(2 * LIMIT)], base_offset=10)
    assert len(bomb) < 200_000, "compressed it is small"
    good = build(CODECS[codec], [b"after"], base_offset=11)
    records, position = fetch(bomb, good, fetch_offset=10)
    ref = records[0].value
    assert isinstance(ref, UnreadableBatch)
    assert (records[0].offset, ref.first_offset, ref.last_offset, ref.codec) == (10, 10, 10, codec)
    assert "more than 1048576 bytes" in ref.reason
    assert [r.value for r in records[1:]] == [b"after"] and position == 12


def test_a_corrupt_stream_with_a_valid_crc_becomes_a_reference() -> None:
    """What another client's broken codec would send: the CRC is computed over the garbage, so it matches."""
    from kafka.record import default_records

    real = default_records.zstd_encode
    default_records.zstd_encode = lambda payload: b"\x28\xb5\x2f\xfd not zstd at all"
    try:
        broken = build(CODECS["zstd"], [b"a", b"b", b"c"], base_offset=5)
    finally:
        default_records.zstd_encode = real
    records, position = fetch(broken, fetch_offset=5)
    (ref,) = (r.value for r in records)
    assert isinstance(ref, UnreadableBatch) and (ref.first_offset, ref.last_offset) == (5, 7)
    assert "zstd" in ref.reason and position == 8, "skipped by offset: the position is past the whole batch"


def test_records_before_a_corrupt_one_are_delivered_and_the_rest_is_referenced() -> None:
    batch = bytearray(build(CODECS["none"], [b"one", b"two", b"three"]))
    batch[-4:] = b"\x7f\x7f\x7f\x7f"  # damage the last record (the CRC check is off here: content, not transit)
    part = Fetcher.PartitionRecords(0, TP, MemoryRecords(bytes(batch)), check_crcs=False)
    records = part.take()
    assert [r.value for r in records[:2]] == [b"one", b"two"]
    ref = records[2].value
    assert isinstance(ref, UnreadableBatch) and (ref.first_offset, ref.last_offset) == (2, 2)
    assert part.next_fetch_offset == 3


def test_an_unknown_codec_is_a_reference() -> None:
    batch = bytearray(build(CODECS["gzip"], [b"x"]))
    batch[22] = (batch[22] & ~0x07) | 0x06  # attributes, low byte: codec 6 does not exist
    part = Fetcher.PartitionRecords(0, TP, MemoryRecords(bytes(batch)), check_crcs=False)
    (record,) = part.take()
    assert isinstance(record.value, UnreadableBatch) and "compression type 6" in record.value.reason


def test_bounded_decoders_handle_multi_member_and_truncated_streams() -> None:
    two = gzip.compress(b"a" * 10) + gzip.compress(b"b" * 10)
    assert record_batches.gzip_decode(two, LIMIT) == b"a" * 10 + b"b" * 10
    with pytest.raises(ValueError, match="truncated"):
        record_batches.gzip_decode(gzip.compress(b"a" * 1000)[:-12], LIMIT)
    with pytest.raises(zlib.error):
        record_batches.gzip_decode(b"\x1f\x8b garbage", LIMIT)
    import snappy

    with pytest.raises(record_batches.BatchTooLarge):
        record_batches.snappy_decode(snappy.compress(bytes(LIMIT + 1)), LIMIT)
