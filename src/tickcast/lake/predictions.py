"""The prediction log in the lake: every forecast served, one Parquet file per symbol and UTC day.

Layout (the lake container, beside ``bars/``)::

    predictions/symbol=SPY/date=2026-11-24.parquet

One row per forecast served (``GET /api/predictions/{symbol}`` and ``POST /api/predict``): :data:`SCHEMA`.
``date`` is the UTC day of ``as_of``. Rows are appended with the lake's optimistic concurrency (read the file
and its ETag, concatenate, write with ``If-Match`` / ``If-None-Match: *``, retry on a precondition failure),
so two Function instances flushing at once lose nothing. The same forecast served twice is two rows: the
evaluation (:mod:`tickcast.validation.live`) counts a forecast once per (symbol, as_of, model_version).
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tickcast.lake.store import MAX_ATTEMPTS, LakeConflict, table_bytes

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

PREFIX = "predictions"
SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("as_of", pa.timestamp("s", tz="UTC")),  # the last bar used; the forecast is for as_of + 1 minute
        ("served_at", pa.timestamp("ms", tz="UTC")),
        ("model_version", pa.string()),
        ("model_kind", pa.string()),
        ("predicted_close", pa.float64()),
        ("lower", pa.float64()),
        ("upper", pa.float64()),
        ("level", pa.float64()),
        ("route", pa.string()),  # "GET" | "POST"
    ]
)
COLUMNS = SCHEMA.names


def day_path(symbol: str, day: date) -> str:
    return f"{PREFIX}/symbol={symbol}/date={day.isoformat()}.parquet"


def row_of(answer: Mapping[str, Any], route: str, served_at: datetime | None = None) -> dict[str, Any]:
    """One log row from a served answer (a :class:`~tickcast.scoring.contract.PredictResponse` as a dict)."""
    interval = answer.get("interval") or {}
    as_of = answer["as_of"]
    return {
        "symbol": str(answer["symbol"]),
        "as_of": as_of if isinstance(as_of, datetime) else datetime.fromisoformat(str(as_of).replace("Z", "+00:00")),
        "served_at": served_at or datetime.now(UTC),
        "model_version": str(answer.get("model_version", "unknown")),
        "model_kind": str(answer.get("model_kind", "")),
        "predicted_close": float(answer["predicted_close"]),
        "lower": float(interval.get("lower", float("nan"))),
        "upper": float(interval.get("upper", float("nan"))),
        "level": float(interval.get("level", float("nan"))),
        "route": route,
    }


def rows_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts of :data:`COLUMNS`) as an Arrow table of :data:`SCHEMA`."""
    items = list(rows)
    return pa.Table.from_pylist([{c: r[c] for c in COLUMNS} for r in items], schema=SCHEMA)


def read_table(data: bytes) -> pa.Table:
    """A prediction-log file as a :data:`SCHEMA` table (columns a newer writer added are dropped)."""
    table = pq.read_table(io.BytesIO(data))
    return table.select(COLUMNS).cast(SCHEMA).replace_schema_metadata(None)


def _empty() -> pd.DataFrame:
    return SCHEMA.empty_table().to_pandas()


class PredictionLog:
    """Append and read the prediction log (the lake container's ``predictions/``)."""

    def __init__(self, container: ContainerClient) -> None:
        self.container = container

    @classmethod
    def from_settings(cls, settings: object | None = None) -> PredictionLog:
        from tickcast.azure import lake_container
        from tickcast.settings import Settings

        assert settings is None or isinstance(settings, Settings)
        return cls(lake_container(settings, create=True))

    def append(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append rows (any symbols and days); returns how many were written. Raises on a storage error."""
        table = rows_table(rows)
        if not table.num_rows:
            return 0
        frame = table.to_pandas()
        for (symbol, day), part in frame.groupby([frame["symbol"], frame["as_of"].dt.date], sort=True):
            self._append_day(str(symbol), day, pa.Table.from_pandas(part, schema=SCHEMA, preserve_index=False))
        return int(table.num_rows)

    def _append_day(self, symbol: str, day: date, new: pa.Table) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        blob = self.container.get_blob_client(day_path(symbol, day))
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                downloader = blob.download_blob()
                etag: str | None = downloader.properties.etag
                merged = pa.concat_tables([read_table(downloader.readall()), new])
            except ResourceNotFoundError:
                etag, merged = None, new
            try:
                if etag is None:
                    blob.upload_blob(table_bytes(merged), overwrite=False)
                else:
                    blob.upload_blob(
                        table_bytes(merged), overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified
                    )
                return
            except (ResourceExistsError, ResourceModifiedError):
                time.sleep(random.uniform(0, 0.05 * 2**attempt))  # noqa: S311 - jitter
        raise LakeConflict(f"{day_path(symbol, day)}: precondition failed {MAX_ATTEMPTS} times in a row")

    def read(self, symbol: str, start: datetime, end: datetime) -> pd.DataFrame:
        """Rows of ``symbol`` with ``start <= as_of < end`` (a missing day file is simply no rows)."""
        from azure.core.exceptions import ResourceNotFoundError

        parts = []
        day = start.astimezone(UTC).date()
        while day <= end.astimezone(UTC).date():
            try:
                data = self.container.get_blob_client(day_path(symbol, day)).download_blob().readall()
            except ResourceNotFoundError:
                pass
            else:
                parts.append(read_table(data).to_pandas())
            day += timedelta(days=1)
        if not parts:
            return _empty()
        frame = pd.concat(parts, ignore_index=True)
        lo, hi = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
        return frame[(frame["as_of"] >= lo) & (frame["as_of"] < hi)].reset_index(drop=True)
