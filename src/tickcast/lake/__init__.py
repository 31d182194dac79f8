"""The Parquet lake on Blob: per symbol-day files, ETag-guarded upserts, range reads."""

from tickcast.lake.store import Lake, UpsertResult, day_path

__all__ = ["Lake", "UpsertResult", "day_path"]
