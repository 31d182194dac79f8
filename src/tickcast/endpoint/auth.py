"""How a call to the online endpoint authenticates — decided once, here, for the sync and the async client.

* A **key** (``TICKCAST_SERVING__ENDPOINT_KEY`` in profile local — the stand-in's key —, or one passed in):
  ``Authorization: Bearer <key>``. Profile cloud never sends a configured key: no secret in the cloud.
* Otherwise, in profile **cloud** (or when a credential is passed in): an **AML token** (:class:`AmlTokens`).
  A Kubernetes online endpoint accepts a key or an AML token, never an Entra ID token (Microsoft's "authenticate
  online endpoint" doc; ``azure-ai-ml``'s ``KubernetesOnlineEndpoint``), and tickcast's endpoint uses AML tokens
  (docs/decisions/0020). A caller gets one as Azure does for ``azure-ai-ml``'s ``get_keys``::

      POST {management_url}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices
           /workspaces/{ws}/onlineEndpoints/{name}/token?api-version=2025-12-01
      Authorization: Bearer <Entra ID token for Azure Resource Manager (the managed identity)>
      -> 200 {"accessToken", "tokenType": "Bearer", "expiryTimeUtc": <epoch s>, "refreshAfterTimeUtc": <epoch s>}

  and sends ``Authorization: Bearer <accessToken>`` to ``/score``. The caller needs the endpoint's
  ``onlineEndpoints/token/action`` (the template's custom *endpoint invoker* role) and a route to ARM (the
  Function's subnet has a NAT gateway). The management token comes from :func:`tickcast.azure.credential`
  (created lazily: importing azure-identity costs time); the only Entra ID token in play is the one for ARM, and
  it goes to ARM only. ONE :class:`AmlTokens` per client reuses a token until its ``refreshAfterTimeUtc`` (or
  :data:`REFRESH_MARGIN_S` before it expires when ARM gives no refresh time); a refresh that fails while the
  token is still valid keeps it, and says so in the log; a token the endpoint refuses (401) is dropped
  (:meth:`EndpointAuth.invalidate`) and the client tries once more with a new one.
* Otherwise no ``Authorization`` header.

A token that cannot be had raises :class:`~tickcast.endpoint.errors.EndpointError` (no answer, code
``no_token``) — the API answers 503, the CLI exits with a line saying so. Missing endpoint coordinates
(``TICKCAST_AML__*``) are a configuration problem (:attr:`EndpointAuth.problem`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import httpx

from tickcast.endpoint.errors import EndpointError
from tickcast.settings import Settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = [
    "AML_TOKEN_API_VERSION",
    "REFRESH_MARGIN_S",
    "AmlToken",
    "AmlTokenError",
    "AmlTokens",
    "EndpointAuth",
    "management_scope",
    "missing_coordinates",
    "parse_token",
    "token_url",
]

log = logging.getLogger("tickcast.endpoint")

# the ML API version of cloud/arm, and of azure-ai-ml 1.35's get_token (a version, not a secret)
AML_TOKEN_API_VERSION: Final = "2025-12-01"  # noqa: S105
REFRESH_MARGIN_S: Final = 300.0
TOKEN_API_TIMEOUT_S: Final = 10.0
REQUIRED = ("subscription_id", "resource_group", "workspace", "endpoint_name")


class AmlTokenError(Exception):
    """No AML token could be had: ``status`` is ARM's HTTP status (None: no answer), the message says why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AmlToken:
    access_token: str
    expires_on: float
    refresh_after: float
    token_type: str = "Bearer"  # noqa: S105 - an authorization scheme

    def usable(self, now: float) -> bool:
        """Still accepted by the endpoint (with a minute to spare for the request itself)."""
        return now < self.expires_on - 60

    def fresh(self, now: float) -> bool:
        """Not yet due for a refresh."""
        return now < self.refresh_after

    @property
    def header(self) -> str:
        return f"Bearer {self.access_token}"


PUBLIC_ARM: Final = "https://management.azure.com"


def management_scope(settings: Settings) -> str:
    """The Entra ID scope of Azure Resource Manager in this cloud (``https://management.azure.com/.default``); a
    loopback stand-in of ARM (tests, the local stand-in's token API) takes public ARM's audience."""
    url = settings.aml_management_url
    return (PUBLIC_ARM if url.startswith("http://") else url) + "/.default"


def missing_coordinates(settings: Settings) -> list[str]:
    return [f"TICKCAST_AML__{name.upper()}" for name in REQUIRED if not getattr(settings.aml, name)]


def token_url(settings: Settings) -> str:
    """The ARM token API of the configured endpoint (``settings.aml``); raises when a coordinate is missing."""
    missing = missing_coordinates(settings)
    if missing:
        raise AmlTokenError(f"the endpoint's coordinates are not set: {', '.join(missing)} (ARM outputs)")
    aml = settings.aml
    parts = (aml.subscription_id, aml.resource_group, aml.workspace, aml.endpoint_name)
    sub, rg, ws, name = (quote(str(p), safe="") for p in parts)
    return (
        f"{settings.aml_management_url}/subscriptions/{sub}/resourceGroups/{rg}/providers/"
        f"Microsoft.MachineLearningServices/workspaces/{ws}/onlineEndpoints/{name}/token"
        f"?api-version={AML_TOKEN_API_VERSION}"
    )


def parse_token(body: Any, now: float) -> AmlToken:
    """ARM's ``EndpointAuthToken`` body as an :class:`AmlToken`; :class:`AmlTokenError` when it is not one."""
    if not isinstance(body, Mapping) or not isinstance(body.get("accessToken"), str) or not body["accessToken"]:
        raise AmlTokenError(f"the token API answered without an accessToken: {str(body)[:200]!r}", 200)
    expires = body.get("expiryTimeUtc")
    if isinstance(expires, bool) or not isinstance(expires, int | float) or expires <= now:
        raise AmlTokenError(f"the token API answered an expired or undated token (expiryTimeUtc={expires!r})", 200)
    refresh = body.get("refreshAfterTimeUtc")
    if isinstance(refresh, bool) or not isinstance(refresh, int | float) or not now < refresh <= expires:
        refresh = max(now, float(expires) - REFRESH_MARGIN_S)
    return AmlToken(body["accessToken"], float(expires), float(refresh), str(body.get("tokenType") or "Bearer"))


def _arm_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    return str(body)[:300]


def _check(response: httpx.Response, now: float) -> AmlToken:
    if response.status_code != 200:
        hint = {
            401: "Azure Resource Manager refused the managed identity's token",
            403: "the managed identity may not get tokens for this endpoint (role: onlineEndpoints/token/action)",
            404: "no such endpoint (TICKCAST_AML__* settings)",
        }.get(response.status_code, "the token API failed")
        raise AmlTokenError(f"{hint}: HTTP {response.status_code} {_arm_message(response)}", response.status_code)
    try:
        body = response.json()
    except ValueError:
        raise AmlTokenError(f"the token API answered no JSON: {response.text[:200]!r}", 200) from None
    return parse_token(body, now)


class _Cache:
    """The token and the decision to reuse, refresh or replace it (one per client, for both paths)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.token: AmlToken | None = None
        self.fetches = 0

    def reusable(self) -> bool:
        return self.token is not None and self.token.fresh(self.clock())

    def store(self, token: AmlToken) -> str:
        self.token = token
        self.fetches += 1
        log.info("endpoint: new AML token, refresh after %d, expires at %d", token.refresh_after, token.expires_on)
        return token.header

    def fallback(self, err: AmlTokenError) -> str:
        """A failed refresh: keep the current token while it is valid, else raise."""
        if self.token is not None and self.token.usable(self.clock()):
            log.warning("endpoint: refreshing the AML token failed, the current one stays in use: %s", err)
            return self.token.header
        raise err

    def invalidate(self) -> None:
        self.token = None


class AmlTokens:
    """``Authorization`` header values with an AML token, for a sync caller (:meth:`header`, one fetch at a time
    under a thread lock) and an async one (:meth:`aheader`, one fetch at a time under an asyncio lock; the
    management token is fetched in a worker thread because ``get_token`` blocks).

    ``credential_factory`` gives the Entra ID credential for ARM (created on first use); ``transport`` /
    ``async_transport`` replace the network to the token API (tests).
    """

    def __init__(
        self,
        settings: Settings,
        credential_factory: Callable[[], TokenCredential],
        *,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = token_url(settings)
        self.scope = management_scope(settings)
        self._factory = credential_factory
        self._credential: TokenCredential | None = None
        self._transport = transport
        self._async_transport = async_transport
        self._http: httpx.Client | None = None
        self._ahttp: httpx.AsyncClient | None = None
        self._cache = _Cache(clock)
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None

    @property
    def fetches(self) -> int:
        """Tokens fetched from ARM so far."""
        return self._cache.fetches

    def invalidate(self) -> None:
        """Forget the token (the endpoint refused it): the next header fetches a new one."""
        self._cache.invalidate()

    def _management_token(self) -> str:
        if self._credential is None:
            self._credential = self._factory()
        try:
            return self._credential.get_token(self.scope).token
        except Exception as err:  # azure-identity raises several types; all mean "no ARM token now"
            raise AmlTokenError(f"no Entra ID token for {self.scope}: {type(err).__name__}: {err}") from err

    def _unanswered(self, err: httpx.HTTPError) -> AmlTokenError:
        return AmlTokenError(f"the token API at {self.url} did not answer: {type(err).__name__}: {err}")

    def _fetch(self) -> AmlToken:
        bearer = self._management_token()
        if self._http is None:
            self._http = httpx.Client(transport=self._transport, timeout=TOKEN_API_TIMEOUT_S)
        try:
            response = self._http.post(self.url, headers={"Authorization": f"Bearer {bearer}"})
        except httpx.HTTPError as err:
            raise self._unanswered(err) from err
        return _check(response, self._cache.clock())

    async def _afetch(self) -> AmlToken:
        from anyio import to_thread

        bearer = await to_thread.run_sync(self._management_token)
        if self._ahttp is None or self._ahttp.is_closed:
            self._ahttp = httpx.AsyncClient(transport=self._async_transport, timeout=TOKEN_API_TIMEOUT_S)
        try:
            response = await self._ahttp.post(self.url, headers={"Authorization": f"Bearer {bearer}"})
        except httpx.HTTPError as err:
            raise self._unanswered(err) from err
        return _check(response, self._cache.clock())

    def header(self) -> str:
        cache = self._cache
        with self._thread_lock:
            if cache.token is not None and cache.reusable():
                return cache.token.header
            try:
                return cache.store(self._fetch())
            except AmlTokenError as err:
                return cache.fallback(err)

    async def aheader(self) -> str:
        cache = self._cache
        if cache.token is not None and cache.reusable():
            return cache.token.header
        self._async_lock = self._async_lock or asyncio.Lock()
        async with self._async_lock:
            if cache.token is not None and cache.reusable():
                return cache.token.header
            try:
                return cache.store(await self._afetch())
            except AmlTokenError as err:
                return cache.fallback(err)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    async def aclose(self) -> None:
        if self._ahttp is not None:
            await self._ahttp.aclose()
            self._ahttp = None


class EndpointAuth:
    """The ``Authorization`` header of endpoint calls (see the module docstring); ``problem`` names a
    configuration error that makes every call fail; ``tokens`` is set when AML tokens are used."""

    def __init__(
        self,
        settings: Settings,
        *,
        key: str | None = None,
        credential: TokenCredential | None = None,
        token_transport: httpx.BaseTransport | None = None,
        async_token_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        cloud = settings.profile == "cloud"
        configured = settings.serving.endpoint_key.get_secret_value() if settings.serving.endpoint_key else ""
        secret = key if key is not None else ("" if cloud else configured)  # profile cloud never sends a key
        problems: list[str] = []
        if cloud and not settings.serving.endpoint_url:
            problems.append("TICKCAST_SERVING__ENDPOINT_URL is not set (the AML endpoint's scoring URI)")
        self._static: str | None = f"Bearer {secret}" if secret else None
        self.tokens: AmlTokens | None = None
        if not secret and (cloud or credential is not None):
            missing = missing_coordinates(settings)
            if missing:
                problems.append(f"not set: {', '.join(missing)} (ARM outputs; the endpoint's AML token API)")
            else:
                factory: Callable[[], TokenCredential]
                if credential is not None:
                    fixed = credential
                    factory = lambda: fixed  # noqa: E731
                else:
                    from tickcast.azure import credential as make_credential

                    factory = lambda: make_credential(settings)  # noqa: E731
                self.tokens = AmlTokens(
                    settings, factory, transport=token_transport, async_transport=async_token_transport
                )
        self.problem: str | None = "; ".join(problems) or None

    def header(self, operation: str) -> str | None:
        if self.problem and self.tokens is None and self._static is None:
            raise EndpointError(operation, None, self.problem, code="misconfigured")
        if self.tokens is None:
            return self._static
        try:
            return self.tokens.header()
        except AmlTokenError as err:
            raise _no_token(operation, err) from err

    async def aheader(self, operation: str) -> str | None:
        if self.tokens is None:
            return self._static
        try:
            return await self.tokens.aheader()
        except AmlTokenError as err:
            raise _no_token(operation, err) from None

    def invalidate(self) -> bool:
        """The endpoint refused the token: drop it. True when a new one can be tried (tokens are in use)."""
        if self.tokens is None:
            return False
        self.tokens.invalidate()
        return True

    def close(self) -> None:
        if self.tokens is not None:
            self.tokens.close()

    async def aclose(self) -> None:
        if self.tokens is not None:
            await self.tokens.aclose()


def _no_token(operation: str, err: AmlTokenError) -> EndpointError:
    log.error("endpoint: no AML token: %s", err)
    return EndpointError(
        operation,
        None,
        f"no AML token for the endpoint ({err}); check the managed identity and its role on the endpoint",
        code="no_token",
    )
