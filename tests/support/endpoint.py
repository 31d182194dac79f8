"""The AML endpoint stand-in in-process (its app on an httpx client), with its scoring and management keys:
shared by the unit and contract tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI

from emulators.settings import StandInSettings, load_stand_in_settings

KEY = "test-endpoint-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ADMIN_KEY = "test-endpoint-admin-key"  # the management API's own key (decision 0063)
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


class Endpoint:
    """Synchronous calls into the app through ``httpx.ASGITransport`` (no sockets, no lifespan)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://endpoint") as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(call())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


def settings(timeout_ms: int = 5000) -> StandInSettings:
    """The stand-in's settings: the test scoring and management keys, ``timeout_ms`` per scoring request."""
    return load_stand_in_settings(
        _env_file=None,
        serving={"endpoint_key": KEY, "endpoint_admin_key": ADMIN_KEY, "request_timeout_ms": timeout_ms},
    )
