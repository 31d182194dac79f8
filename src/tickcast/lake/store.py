"""The Parquet lake on Blob: one file per symbol and UTC day, written by optimistic-concurrency upserts.

Layout (container ``settings.storage.lake_container``)::

    bars/symbol=SPY/date=2026-11-24.parquet      (Hive-style partitions: readable by Spark/Databricks)

US regular sessions (13:30–21:00 UTC) never cross a UTC midnight, so a UTC day is one session.

**Upsert** (:meth:`Lake.upsert`): read the day file and its ETag, merge the new bars keyed by ``ts``
(a later ingestion of the same minute replaces the earlier one), write back with ``If-Match: <etag>``,
or ``If-None-Match: *`` when the file is new. A concurrent writer makes the precondition fail; the
upsert then re-reads and retries with jittered backoff. Nothing is ever appended blindly, so
re-delivered messages are harmless: together with "commit offsets after the write" this gives
exactly-once in effect.

The write path works on Arrow tables (merge = concatenate, keep the last row per ``ts``, sort), so an
upsert costs ~1 ms of CPU besides its two requests; :meth:`Lake.upsert_columns` takes the consumer's
column blocks straight to those tables, without a pandas frame or a ``Bar`` object per row. Upserts of
different day files run concurrently on a shared thread pool.

**A day file that cannot be read** (not Parquet, wrong columns: written by something else, or damaged) must
not fail every ingest run that touches it: the upsert copies it to ``quarantine/<its path>.<UTC stamp>.parquet``
(kept for a person to inspect, with the reason in its metadata), logs it, and rewrites the day from the incoming
bars (``If-Match`` the damaged file's ETag, so a concurrent repair is not overwritten); the result names the
quarantined copy. Reads raise :class:`CorruptDayFile` naming the blob. Decision 0031.

**Reads** (:meth:`Lake.read`) touch only the day files that overlap the requested range.
"""

from __future__ import annotations

import io
import logging
import random
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tickcast.errors import UnavailableError
from tickcast.market.bar import Bar

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

    from tickcast.market.columns import BarColumns

COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume", "source", "ingested_at"]
SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts", pa.timestamp("s", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("source", pa.string()),
        ("ingested_at", pa.timestamp("ms", tz="UTC")),
    ]
)
log = logging.getLogger(__name__)
QUARANTINE_PREFIX = "quarantine/"
MAX_ATTEMPTS = 8
UPSERT_THREADS = 8  # concurrent day-file upserts: each is mostly two round trips to Blob
DAY_S = 86_400
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """One pool for every Lake in the process (starting threads per batch costs more than the work)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=UPSERT_THREADS, thread_name_prefix="lake-upsert")
        return _pool


class LakeConflict(Exception):
    """An upsert lost the optimistic-concurrency race too many times in a row."""


class CorruptDayFile(UnavailableError):
    """A day file exists but cannot be read as a lake table; the message names the blob and the cause (503)."""

    default_code = "corrupt_lake_data"

    def __init__(self, path: str, cause: Exception) -> None:
        super().__init__(
            f"lake day file {path} cannot be read: {type(cause).__name__}: {str(cause)[:300]}",
            detail={"blob": path},
        )
        self.path = path


@dataclass(frozen=True)
class UpsertResult:
    symbol: str
    day: date
    rows_before: int
    rows_after: int
    added: int
    replaced: int
    attempts: int
    quarantined: str | None = None  # where an unreadable previous day file was moved to (its rows are not merged)


def day_path(symbol: str, day: date) -> str:
    return f"bars/symbol={symbol}/date={day.isoformat()}.parquet"


def bars_frame(bars: Iterable[Bar], ingested_at: datetime | None = None) -> pd.DataFrame:
    """Bars as a lake-schema DataFrame, in the given order (later rows win on duplicate ts)."""
    stamp = ingested_at or datetime.now(UTC)
    rows = [(b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume, b.source, stamp) for b in bars]
    df = pd.DataFrame(rows, columns=COLUMNS)
    return _normalise(df)


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["ts"] = pd.to_datetime(df["ts"], utc=True).astype("datetime64[s, UTC]")
    df["ingested_at"] = pd.to_datetime(df["ingested_at"], utc=True).dt.floor("ms").astype("datetime64[ms, UTC]")
    for col in ("open", "high", "low", "close", "volume"):
        df[col] = df[col].astype("float64")
    return df[COLUMNS]


def frame_table(df: pd.DataFrame) -> pa.Table:
    """A lake-schema DataFrame (any dtypes ``_normalise`` accepts) as a lake-schema Arrow table."""
    return pa.Table.from_pandas(_normalise(df), schema=SCHEMA, preserve_index=False).replace_schema_metadata(None)


def columns_table(
    symbol: str,
    ts: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    source: np.ndarray,
    ingested_at: datetime,
) -> pa.Table:
    """Validated bar columns of one symbol (``ts`` in epoch seconds) as a lake-schema Arrow table."""
    n = len(ts)
    return pa.Table.from_arrays(
        [
            pa.array(np.full(n, symbol, dtype=object), pa.string()),
            pa.array(np.asarray(ts, dtype=np.int64), pa.int64()).cast(SCHEMA.field("ts").type),
            pa.array(open_, pa.float64()),
            pa.array(high, pa.float64()),
            pa.array(low, pa.float64()),
            pa.array(close, pa.float64()),
            pa.array(volume, pa.float64()),
            pa.array(source, pa.string()),
            pa.array(np.full(n, int(ingested_at.timestamp() * 1000), dtype=np.int64), pa.int64()).cast(
                SCHEMA.field("ingested_at").type
            ),
        ],
        schema=SCHEMA,
    )


def table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_table(data: bytes, path: str = "<bytes>") -> pa.Table:
    """A day file as a lake-schema Arrow table (whatever metadata the writer added is dropped).

    Anything that is not a readable lake table raises :class:`CorruptDayFile` (Arrow raises many kinds).
    """
    try:
        table = pq.read_table(io.BytesIO(data))
        return table.select(COLUMNS).cast(SCHEMA).replace_schema_metadata(None)
    except Exception as err:
        raise CorruptDayFile(path, err) from err


def merge_tables(existing: pa.Table | None, new: pa.Table) -> tuple[pa.Table, int, int]:
    """(merged, added, replaced): one row per ``ts``, the LAST one of ``existing + new`` winning, sorted by ts.

    ``added``/``replaced`` count the distinct minutes of ``new`` that were absent from / present in ``existing``.
    """
    combined = pa.concat_tables([existing, new]) if existing is not None and existing.num_rows else new
    ts = combined.column("ts").cast(pa.int64()).to_numpy()
    # np.unique on the reversed column finds each ts's last occurrence and sorts by ts in one pass
    _, last_reversed = np.unique(ts[::-1], return_index=True)
    merged = combined.take(pa.array(len(ts) - 1 - last_reversed))
    new_ts = np.unique(new.column("ts").cast(pa.int64()).to_numpy())
    if existing is None or not existing.num_rows:
        return merged, len(new_ts), 0
    replaced = int(np.isin(new_ts, existing.column("ts").cast(pa.int64()).to_numpy()).sum())
    return merged, len(new_ts) - replaced, replaced


def to_parquet_bytes(df: pd.DataFrame) -> bytes:
    return table_bytes(pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False))


def from_parquet_bytes(data: bytes, path: str = "<bytes>") -> pd.DataFrame:
    try:
        return _normalise(pq.read_table(io.BytesIO(data)).to_pandas())
    except Exception as err:
        raise CorruptDayFile(path, err) from err


class Lake:
    def __init__(self, container: ContainerClient) -> None:
        self.container = container

    @classmethod
    def from_settings(cls, settings: object | None = None) -> Lake:
        from tickcast.azure import lake_container
        from tickcast.settings import Settings

        assert settings is None or isinstance(settings, Settings)
        return cls(lake_container(settings, create=True))

    # --- writes ----------------------------------------------------------------------------------

    def upsert(self, symbol: str, day: date, new: pd.DataFrame | pa.Table) -> UpsertResult:
        """Merge ``new`` (one symbol, one UTC day) into the day file, keyed by ts; later rows win."""
        if new.num_rows == 0 if isinstance(new, pa.Table) else new.empty:
            raise ValueError("upsert needs at least one bar")
        table = new if isinstance(new, pa.Table) else frame_table(new)
        return self._upsert_table(symbol, day, table)

    def _upsert_table(self, symbol: str, day: date, new: pa.Table) -> UpsertResult:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        path = day_path(symbol, day)
        blob = self.container.get_blob_client(path)
        quarantined: str | None = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            existing: pa.Table | None
            try:
                downloader = blob.download_blob()
                etag: str | None = downloader.properties.etag
                data = downloader.readall()
            except ResourceNotFoundError:
                etag, existing = None, None
            else:
                try:
                    existing = read_table(data, path)
                except CorruptDayFile as err:
                    quarantined, existing = self._quarantine(path, data, etag, err), None
            merged, added, replaced = merge_tables(existing, new)
            payload = table_bytes(merged)
            try:
                if etag is None:
                    blob.upload_blob(payload, overwrite=False)
                else:
                    blob.upload_blob(payload, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)
            except (ResourceExistsError, ResourceModifiedError):
                time.sleep(random.uniform(0, 0.05 * 2**attempt))  # noqa: S311 - jitter
                continue
            return UpsertResult(
                symbol=symbol,
                day=day,
                rows_before=existing.num_rows if existing is not None else 0,
                rows_after=merged.num_rows,
                added=added,
                replaced=replaced,
                attempts=attempt,
                quarantined=quarantined,
            )
        raise LakeConflict(f"{day_path(symbol, day)}: precondition failed {MAX_ATTEMPTS} times in a row")

    def _quarantine(self, path: str, data: bytes, etag: str | None, err: CorruptDayFile) -> str:
        """Copy an unreadable day file aside (same bytes, the reason in its metadata); the copy's name."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = f"{QUARANTINE_PREFIX}{path}.{stamp}.parquet"
        reason = str(err).encode("ascii", errors="replace").decode()[:1000]  # metadata values must be ASCII
        self.container.get_blob_client(target).upload_blob(
            data, overwrite=True, metadata={"reason": reason, "etag": str(etag)}
        )
        log.error("%s; moved its %d bytes to %s and rewriting the day from the incoming bars", err, len(data), target)
        return target

    def upsert_bars(self, bars: Iterable[Bar]) -> list[UpsertResult]:
        """Group bars by (symbol, UTC day) and upsert each group (order kept: later bars win)."""
        df = bars_frame(bars)
        return self.upsert_frame(df)

    def upsert_frame(self, df: pd.DataFrame, parallel: int = UPSERT_THREADS) -> list[UpsertResult]:
        """Upsert every (symbol, day) group; groups touch different files, so they run concurrently."""
        if df.empty:
            return []
        df = _normalise(df)
        days = df["ts"].dt.date
        groups = [
            (str(sym), day, frame_table(group)) for (sym, day), group in df.groupby([df["symbol"], days], sort=True)
        ]
        return self._upsert_groups(groups, parallel)

    def upsert_columns(
        self, blocks: Sequence[BarColumns], ingested_at: datetime | None = None, parallel: int = UPSERT_THREADS
    ) -> list[UpsertResult]:
        """Upsert validated bar columns (the consumer's decoded messages), one write per (symbol, UTC day).

        Rows keep their order within a symbol across blocks, so a later message's revision of a minute wins.
        """
        stamp = ingested_at or datetime.now(UTC)
        per_symbol: dict[str, list[BarColumns]] = {}
        for block in blocks:
            if len(block):
                per_symbol.setdefault(block.symbol, []).append(block)
        groups: list[tuple[str, date, pa.Table]] = []
        for symbol in sorted(per_symbol):
            parts = per_symbol[symbol]

            block = parts[0] if len(parts) == 1 else parts[0].concat(parts)
            ts = block.ts
            table = columns_table(
                symbol,
                ts,
                block.open,
                block.high,
                block.low,
                block.close,
                block.volume,
                block.source,
                ingested_at=stamp,
            )
            day_no = ts // DAY_S
            for d in np.unique(day_no).tolist():
                rows = np.flatnonzero(day_no == d)
                part = table if len(rows) == len(day_no) else table.take(pa.array(rows))
                groups.append((symbol, date(1970, 1, 1) + timedelta(days=d), part))
        return self._upsert_groups(groups, parallel)

    def _upsert_groups(self, groups: list[tuple[str, date, pa.Table]], parallel: int) -> list[UpsertResult]:
        if len(groups) <= 1 or parallel <= 1:
            return [self._upsert_table(*g) for g in groups]
        if parallel >= UPSERT_THREADS:
            return list(_executor().map(lambda g: self._upsert_table(*g), groups))
        with ThreadPoolExecutor(max_workers=min(parallel, len(groups))) as pool:
            return list(pool.map(lambda g: self._upsert_table(*g), groups))

    # --- reads -----------------------------------------------------------------------------------

    def days(self, symbol: str) -> list[date]:
        prefix = f"bars/symbol={symbol}/date="
        out = []
        for name in self.container.list_blob_names(name_starts_with=prefix):
            stem = name[len(prefix) :].removesuffix(".parquet")
            try:
                out.append(date.fromisoformat(stem))
            except ValueError:  # not a day file of the lake's layout: not ours to read
                log.warning("ignoring blob %s: not a day file (date=YYYY-MM-DD.parquet)", name)
        return sorted(out)

    def read_day(self, symbol: str, day: date) -> pd.DataFrame:
        """One day file as a frame (empty when there is none); :class:`CorruptDayFile` when it cannot be read."""
        from azure.core.exceptions import ResourceNotFoundError

        path = day_path(symbol, day)
        try:
            data = self.container.get_blob_client(path).download_blob().readall()
        except ResourceNotFoundError:
            return _normalise(pd.DataFrame(columns=COLUMNS))
        return from_parquet_bytes(data, path)

    def read(self, symbol: str, start: datetime, end: datetime) -> pd.DataFrame:
        """Bars of ``symbol`` with ``start <= ts < end``, reading only the day files in that range."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware (UTC)")
        frames = []
        day = start.astimezone(UTC).date()
        last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
        while day <= last:
            frames.append(self.read_day(symbol, day))
            day += timedelta(days=1)
        if not frames:
            return _normalise(pd.DataFrame(columns=COLUMNS))
        df = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
        mask = (df["ts"] >= pd.Timestamp(start)) & (df["ts"] < pd.Timestamp(end))
        return df[mask].reset_index(drop=True)

    def minutes(self, symbol: str, start: datetime, end: datetime) -> set[datetime]:
        """The minutes stored for ``symbol`` with ``start <= ts < end`` (UTC datetimes)."""
        df = self.read(symbol, start, end)
        return set() if df.empty else set(df["ts"].dt.to_pydatetime())

    def last_ts(self, symbol: str, not_after: datetime | None = None) -> datetime | None:
        """The newest minute stored for ``symbol`` (reads one day file), ignoring any after ``not_after``.

        ``not_after`` keeps a bar from the far future (stored before such bars were refused) from posing as
        the newest minute.
        """
        days = self.days(symbol)
        if not_after is not None:
            days = [d for d in days if d <= not_after.astimezone(UTC).date()]
        for day in reversed(days):
            df = self.read_day(symbol, day)
            if not_after is not None:
                df = df[df["ts"] <= pd.Timestamp(not_after)]
            if not df.empty:
                newest: datetime = df["ts"].max().to_pydatetime()
                return newest
        return None
