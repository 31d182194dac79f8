"""A Blob ``ContainerClient`` whose reads fail fast: for readers that must answer now (the API, status).

The storage SDK's default retry policy backs off 15 s, then longer: with Blob unreachable one read took
~90 s. A reader that answers a person (the public API's 503 + ``Retry-After``, ``tickcast status``) wraps
its container in :class:`FastFailContainer` instead: no SDK retries, short timeouts, per call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["LAKE_CALL_OPTIONS", "FastFailContainer"]


LAKE_CALL_OPTIONS: Final[dict[str, Any]] = {"retry_total": 0, "connection_timeout": 3, "read_timeout": 10}


class _FastFailBlob:
    def __init__(self, blob: Any, options: Mapping[str, Any]) -> None:
        self._blob, self._options = blob, options

    def download_blob(self, *args: Any, **kwargs: Any) -> Any:
        return self._blob.download_blob(*args, **{**self._options, **kwargs})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blob, name)


class FastFailContainer:
    """A Blob ``ContainerClient`` whose reads fail fast: no SDK retries, short timeouts (per-call options).

    The storage SDK's default retry policy backs off 15 s, then longer: with Blob unreachable one ``GET`` took
    ~90 s. The API answers 503 + ``Retry-After`` instead and lets the caller retry. Wraps the two read calls
    :class:`tickcast.lake.store.Lake` makes (``list_blob_names``, ``get_blob_client().download_blob``); anything
    else passes through unchanged.
    """

    def __init__(self, container: Any, options: Mapping[str, Any] = LAKE_CALL_OPTIONS) -> None:
        self._container, self._options = container, dict(options)

    def list_blob_names(self, *args: Any, **kwargs: Any) -> Any:
        return self._container.list_blob_names(*args, **{**self._options, **kwargs})

    def get_blob_client(self, *args: Any, **kwargs: Any) -> _FastFailBlob:
        return _FastFailBlob(self._container.get_blob_client(*args, **kwargs), self._options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)
