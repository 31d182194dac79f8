"""How a call to the online endpoint authenticates — decided once, here, for the sync and the async client.

* A **key** (``TICKCAST_SERVING__ENDPOINT_KEY`` in profile local — the stand-in's key —, or one passed in):
  ``Authorization: Bearer <key>``. Profile cloud never sends a configured key: no secret in the cloud.
* Otherwise, in profile **cloud** (or when a credential is passed in): a token for :data:`AML_TOKEN_SCOPE`
  from the managed identity (:func:`tickcast.azure.credential`), held by ONE :class:`TokenCache` per client
  until :data:`TOKEN_REFRESH_MARGIN_S` before it expires; the credential is created lazily (importing
  azure-identity costs time) and never called per request.
* Otherwise no ``Authorization`` header.

A token that cannot be had raises :class:`~tickcast.endpoint.client.EndpointError` (no answer, code
``no_token``) — the API answers 503, the CLI exits with a line saying so.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from tickcast.endpoint.errors import EndpointError
from tickcast.settings import Settings

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, TokenCredential

__all__ = ["AML_TOKEN_SCOPE", "TOKEN_REFRESH_MARGIN_S", "EndpointAuth", "TokenCache"]

log = logging.getLogger("tickcast.endpoint")

AML_TOKEN_SCOPE: Final = "https://ml.azure.com/.default"  # noqa: S105 - an OAuth scope, no secret
TOKEN_REFRESH_MARGIN_S: Final = 300.0  # refresh a token this long before it expires (azure-core does the same)


class TokenCache:
    """``Bearer <token>`` for ``scope`` from a token credential, cached until ``margin_s`` before it expires.

    One fetch at a time (a thread lock for the sync side, an asyncio lock for the async side, which fetches
    in a worker thread because ``get_token`` blocks).
    """

    def __init__(
        self,
        credential_factory: Callable[[], TokenCredential],
        scope: str = AML_TOKEN_SCOPE,
        *,
        margin_s: float = TOKEN_REFRESH_MARGIN_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._factory = credential_factory
        self._credential: TokenCredential | None = None
        self.scope = scope
        self.margin_s = margin_s
        self.clock = clock
        self._token: AccessToken | None = None
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None

    def _fresh(self) -> bool:
        return self._token is not None and self._token.expires_on - self.margin_s > self.clock()

    def _fetch(self) -> AccessToken:
        if self._credential is None:
            self._credential = self._factory()
        token = self._credential.get_token(self.scope)
        log.info("endpoint: new token for %s, expires at %d", self.scope, token.expires_on)
        return token

    def header(self) -> str:
        with self._thread_lock:
            if not self._fresh():
                self._token = self._fetch()
        assert self._token is not None
        return f"Bearer {self._token.token}"

    async def aheader(self) -> str:
        if not self._fresh():
            from anyio import to_thread

            self._async_lock = self._async_lock or asyncio.Lock()
            async with self._async_lock:
                if not self._fresh():
                    self._token = await to_thread.run_sync(self._fetch)
        assert self._token is not None
        return f"Bearer {self._token.token}"


class EndpointAuth:
    """The ``Authorization`` header of endpoint calls (see the module docstring); ``problem`` names a
    configuration error that makes every call fail."""

    def __init__(
        self, settings: Settings, *, key: str | None = None, credential: TokenCredential | None = None
    ) -> None:
        cloud = settings.profile == "cloud"
        configured = settings.serving.endpoint_key.get_secret_value() if settings.serving.endpoint_key else ""
        secret = key if key is not None else ("" if cloud else configured)  # profile cloud never sends a key
        self.problem: str | None = None
        if settings.profile == "cloud" and not settings.serving.endpoint_url:
            self.problem = "TICKCAST_SERVING__ENDPOINT_URL is not set (the AML endpoint's scoring URI)"
        self._static: str | None = f"Bearer {secret}" if secret else None
        self.tokens: TokenCache | None = None
        if not secret and (cloud or credential is not None):
            if credential is not None:
                fixed = credential
                self.tokens = TokenCache(lambda: fixed)
            else:
                from tickcast.azure import credential as make_credential

                self.tokens = TokenCache(lambda: make_credential(settings))

    def header(self, operation: str) -> str | None:
        if self.tokens is None:
            return self._static
        try:
            return self.tokens.header()
        except Exception as err:  # azure-identity raises several types; all mean "no token now"
            raise _no_token(operation, self.tokens.scope, err) from err

    async def aheader(self, operation: str) -> str | None:
        if self.tokens is None:
            return self._static
        try:
            return await self.tokens.aheader()
        except Exception as err:  # azure-identity raises several types; all mean "no token now"
            raise _no_token(operation, self.tokens.scope, err) from None


def _no_token(operation: str, scope: str, err: BaseException) -> EndpointError:
    log.error("endpoint: no token for %s: %s: %s", scope, type(err).__name__, err)
    return EndpointError(
        operation,
        None,
        f"no token for {scope} ({type(err).__name__}: {err}); check the managed identity",
        code="no_token",
    )
