"""Reading Kafka record batches from outside: bounded decompression, and an unreadable batch as a reference.

kafka-python decompresses a record batch (gzip, snappy, lz4 or zstd) when its fetcher first iterates it,
without any bound, and a failure there (a codec library missing, a corrupt stream, corrupt records) leaves
``poll()`` as an exception before any per-message handler — on every later run at the same offset, so one
batch would stop ingest for good. :func:`install` replaces the iteration of message-format-v2 batches
(``DefaultRecordBatch``: every client since Kafka 0.11, librdkafka included) with one that

* decompresses with a bound on the output (``settings.ingest.max_batch_bytes``): a ~1 MB gzip bomb that would
  become ~1 GB is stopped at the bound;
* turns a batch it cannot read into ONE record at the batch's last offset whose value is an
  :class:`UnreadableBatch` (where it was and why) instead of an exception: the consumer dead-letters it as a
  reference and the fetch position moves past the batch. Records already read from a batch that breaks half
  way are delivered as usual; the reference covers the rest.

The value is a Python object, not bytes, so no message on the wire can pass for a reference. A batch whose
CRC does not match is left as kafka-python handles it (an error, no commit): that is corruption on the way
or on the broker, which a retry may cure — not content. Written against kafka-python 3.0.12 (pinned); the
unit tests build real batches with its own builder for every codec. See decision 0030.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tickcast.errors import RefusedError

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
_state = {"max_bytes": DEFAULT_MAX_BYTES}
_lock = threading.Lock()
_installed = False


class BatchTooLarge(RefusedError):
    """A record batch decompresses to more bytes than allowed."""


@dataclass(frozen=True)
class UnreadableBatch:
    """The value of the stand-in record of a batch that could not be read (its ``offset`` is ``last_offset``)."""

    first_offset: int  # the first offset not delivered from the batch
    last_offset: int
    codec: str
    reason: str

    def __len__(self) -> int:  # kafka-python measures every value
        return 0


CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


def install(max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Guard every v2 record batch this process reads (idempotent; the latest ``max_bytes`` applies)."""
    global _installed
    from kafka.record.default_records import DefaultRecordBatch

    with _lock:
        _state["max_bytes"] = max_bytes
        if not _installed:
            DefaultRecordBatch.__iter__ = _guarded_iter
            _installed = True


def _guarded_iter(batch: Any) -> Iterator[Any]:
    return _records(batch, _state["max_bytes"])


def _records(batch: Any, max_bytes: int) -> Iterator[Any]:
    """The batch's records; what cannot be read becomes one :class:`UnreadableBatch` record (never raises)."""
    next_offset = batch.base_offset
    try:
        _uncompress(batch, max_bytes)
    except Exception as err:  # any failure here comes from the batch's bytes
        yield _reference(batch, next_offset, err)
        return
    read = type(batch).__next__
    while True:
        try:
            record = read(batch)
        except StopIteration:
            return
        except Exception as err:  # corrupt records after a readable start: deliver those, refer to the rest
            yield _reference(batch, next_offset, err)
            return
        next_offset = record.offset + 1
        yield record


def _reference(batch: Any, first_offset: int, err: Exception) -> Any:
    from kafka.record.default_records import DefaultRecord

    codec = CODECS.get(batch.compression_type, f"unknown codec {batch.compression_type}")
    reason = f"record batch cannot be read ({codec}): {type(err).__name__}: {err}"
    value = UnreadableBatch(first_offset, batch.last_offset, codec, reason[:1000])
    return DefaultRecord(0, batch.last_offset, batch.max_timestamp, batch.timestamp_type, None, value, [])


def _uncompress(batch: Any, max_bytes: int) -> None:
    """kafka-python's ``_maybe_uncompress`` with bounded decoders (same private fields, version pinned)."""
    if batch._decompressed:
        return
    codec = batch.compression_type
    if codec != 0:
        data = bytes(memoryview(batch._buffer)[batch._pos :])
        decoder = _DECODERS.get(codec)
        if decoder is None:
            raise ValueError(f"compression type {codec} is not one Kafka defines")
        batch._buffer = bytearray(decoder(data, max_bytes))
        batch._pos = 0
    batch._decompressed = True


def _too_large(max_bytes: int) -> BatchTooLarge:
    return BatchTooLarge(f"decompresses to more than {max_bytes} bytes (TICKCAST_INGEST__MAX_BATCH_BYTES)")


def gzip_decode(data: bytes, max_bytes: int) -> bytes:
    out = bytearray()
    while data:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        out += d.decompress(data, max_bytes + 1 - len(out))
        if len(out) > max_bytes or d.unconsumed_tail:
            raise _too_large(max_bytes)
        if not d.eof:
            raise ValueError("gzip stream is truncated")
        data = d.unused_data  # another gzip member follows
    return bytes(out)


def lz4_decode(data: bytes, max_bytes: int) -> bytes:
    import lz4.frame

    out = bytearray()
    while data:
        d = lz4.frame.LZ4FrameDecompressor()
        out += d.decompress(data, max_length=max_bytes + 1 - len(out))
        if len(out) > max_bytes or (not d.needs_input and not d.eof):
            raise _too_large(max_bytes)
        if not d.eof:
            raise ValueError("lz4 frame is truncated")
        data = d.unused_data
    return bytes(out)


def zstd_decode(data: bytes, max_bytes: int) -> bytes:
    import zstandard

    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as reader:
        out = reader.read(max_bytes + 1)
        while len(out) <= max_bytes:  # read() may return less than asked before the end
            more = reader.read(max_bytes + 1 - len(out))
            if not more:
                break
            out += more
    if len(out) > max_bytes:
        raise _too_large(max_bytes)
    return bytes(out)


_XERIAL_MAGIC = b"\x82SNAPPY\x00"


def snappy_decode(data: bytes, max_bytes: int) -> bytes:
    """Raw snappy, or the xerial framing Java clients use (blocks of ``int32 length + raw snappy``)."""
    if data[:8] == _XERIAL_MAGIC and len(data) >= 16:
        out = bytearray()
        pos = 16
        while pos < len(data):
            if pos + 4 > len(data):
                raise ValueError("xerial snappy block header is truncated")
            (size,) = struct.unpack_from("!i", data, pos)
            pos += 4
            if size < 0 or pos + size > len(data):
                raise ValueError(f"xerial snappy block of {size} bytes at {pos} is out of bounds")
            out += _snappy_block(data[pos : pos + size], max_bytes - len(out), max_bytes)
            pos += size
        return bytes(out)
    return _snappy_block(data, max_bytes, max_bytes)


def _snappy_block(block: bytes, room: int, max_bytes: int) -> bytes:
    """One raw snappy block; its header states the uncompressed length, checked against ``room`` first."""
    import snappy

    length, shift = 0, 0
    for i, byte in enumerate(block[:5]):
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
        if i == 4:
            raise ValueError("snappy length header is malformed")
    if length > room:
        raise _too_large(max_bytes)
    return bytes(snappy.decompress(block))


_DECODERS = {1: gzip_decode, 2: snappy_decode, 3: lz4_decode, 4: zstd_decode}
