"""A cross-process mutex on Blob storage: one blob created with ``If-None-Match: *`` (atomic in Blob).

Used where two processes of the pipeline may race to do something once (the first baseline deployment of a
fresh stack: ``tickcast run`` and the scheduled ``retrain`` run). The blob's body says who holds it and until
when; a lock past its expiry (a holder that died) is broken by the next caller. Releasing deletes the blob only
if it is still ours (``If-Match`` on its ETag).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

PREFIX = "_locks"


class BlobLock:
    """``with BlobLock(container, "serve-baseline").held(wait_s=...) as mine:`` — ``mine`` says if we hold it."""

    def __init__(self, container: ContainerClient, name: str, *, ttl_s: float = 600.0) -> None:
        self.blob = container.get_blob_client(f"{PREFIX}/{name}.json")
        self.ttl_s = ttl_s
        self._etag: str | None = None

    def try_acquire(self) -> bool:
        """Take the lock if free (or expired); never waits."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        body = json.dumps(
            {
                "holder": f"{socket.gethostname()}:{os.getpid()}",
                "expires": (datetime.now(UTC) + timedelta(seconds=self.ttl_s)).isoformat(),
            }
        ).encode()
        try:
            self._etag = self.blob.upload_blob(body, overwrite=False)["etag"]
            return True
        except ResourceExistsError:
            pass
        try:
            current = self.blob.download_blob()
            held = json.loads(current.readall())
            if datetime.fromisoformat(held["expires"]) > datetime.now(UTC):
                return False
            self.blob.delete_blob(etag=current.properties.etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            pass  # released or taken meanwhile: try once more below
        except (ValueError, KeyError):
            self.blob.delete_blob()  # unreadable lock: break it
        try:
            self._etag = self.blob.upload_blob(body, overwrite=False)["etag"]
            return True
        except ResourceExistsError:
            return False

    def acquire(self, wait_s: float, poll_s: float = 1.0) -> bool:
        """Take the lock within ``wait_s`` seconds; False if someone else held it all that time."""
        deadline = time.monotonic() + wait_s
        while True:
            if self.try_acquire():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)

    def release(self) -> None:
        """Delete the lock blob if it is still ours."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        if self._etag is None:
            return
        with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):  # expired and taken over, or gone
            self.blob.delete_blob(etag=self._etag, match_condition=MatchConditions.IfNotModified)
        self._etag = None
