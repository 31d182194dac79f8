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

**Reads** (:meth:`Lake.read`) touch only the day files that overlap the requested range.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tickcast.market.bar import Bar

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

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
MAX_ATTEMPTS = 8


class LakeConflict(Exception):
    """An upsert lost the optimistic-concurrency race too many times in a row."""


@dataclass(frozen=True)
class UpsertResult:
    symbol: str
    day: date
    rows_before: int
    rows_after: int
    added: int
    replaced: int
    attempts: int


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


def to_parquet_bytes(df: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def from_parquet_bytes(data: bytes) -> pd.DataFrame:
    return _normalise(pq.read_table(io.BytesIO(data)).to_pandas())


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

    def upsert(self, symbol: str, day: date, new: pd.DataFrame) -> UpsertResult:
        """Merge ``new`` (one symbol, one UTC day) into the day file, keyed by ts; later rows win."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        if new.empty:
            raise ValueError("upsert needs at least one bar")
        new = _normalise(new)
        blob = self.container.get_blob_client(day_path(symbol, day))
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                downloader = blob.download_blob()
                etag: str | None = downloader.properties.etag
                existing = from_parquet_bytes(downloader.readall())
            except ResourceNotFoundError:
                etag, existing = None, pd.DataFrame(columns=COLUMNS)
            merged = pd.concat([existing, new], ignore_index=True) if len(existing) else new.copy()
            merged = merged.drop_duplicates(subset="ts", keep="last").sort_values("ts", kind="stable")
            payload = to_parquet_bytes(merged.reset_index(drop=True))
            try:
                if etag is None:
                    blob.upload_blob(payload, overwrite=False)
                else:
                    blob.upload_blob(payload, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)
            except (ResourceExistsError, ResourceModifiedError):
                time.sleep(random.uniform(0, 0.05 * 2**attempt))  # noqa: S311 - jitter
                continue
            existing_ts = set(existing["ts"]) if len(existing) else set()
            new_ts = set(new["ts"])
            return UpsertResult(
                symbol=symbol,
                day=day,
                rows_before=len(existing),
                rows_after=len(merged),
                added=len(new_ts - existing_ts),
                replaced=len(new_ts & existing_ts),
                attempts=attempt,
            )
        raise LakeConflict(f"{day_path(symbol, day)}: precondition failed {MAX_ATTEMPTS} times in a row")

    def upsert_bars(self, bars: Iterable[Bar]) -> list[UpsertResult]:
        """Group bars by (symbol, UTC day) and upsert each group (order kept: later bars win)."""
        df = bars_frame(bars)
        return self.upsert_frame(df)

    def upsert_frame(self, df: pd.DataFrame, parallel: int = 8) -> list[UpsertResult]:
        """Upsert every (symbol, day) group; groups touch different files, so they run concurrently."""
        if df.empty:
            return []
        days = df["ts"].dt.date
        groups = [(str(sym), day, group) for (sym, day), group in df.groupby([df["symbol"], days], sort=True)]
        if len(groups) == 1 or parallel <= 1:
            return [self.upsert(*g) for g in groups]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(parallel, len(groups))) as pool:
            return list(pool.map(lambda g: self.upsert(*g), groups))

    # --- reads -----------------------------------------------------------------------------------

    def days(self, symbol: str) -> list[date]:
        prefix = f"bars/symbol={symbol}/date="
        out = []
        for name in self.container.list_blob_names(name_starts_with=prefix):
            stem = name[len(prefix) :].removesuffix(".parquet")
            out.append(date.fromisoformat(stem))
        return sorted(out)

    def read_day(self, symbol: str, day: date) -> pd.DataFrame:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            data = self.container.get_blob_client(day_path(symbol, day)).download_blob().readall()
        except ResourceNotFoundError:
            return _normalise(pd.DataFrame(columns=COLUMNS))
        return from_parquet_bytes(data)

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

    def last_ts(self, symbol: str) -> datetime | None:
        """The newest minute stored for ``symbol`` (reads one day file)."""
        days = self.days(symbol)
        if not days:
            return None
        df = self.read_day(symbol, days[-1])
        return None if df.empty else df["ts"].max().to_pydatetime()
