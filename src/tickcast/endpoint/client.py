"""The ONE client of the online endpoint: a sync :class:`EndpointClient` and its async twin
:class:`AsyncEndpointClient`, sharing their models, timeouts, authentication and error parsing.

* **Scoring** — ``score()`` posts ``{symbol, bars}`` to ``POST /score``, optionally pinned to one deployment
  with the ``azureml-model-deployment`` header (how a colour at 0 % traffic is smoke-tested). Same route and
  headers on a real AML online endpoint. The sync client serves deploy, smoke and status; the async twin
  serves the public API (one pooled ``httpx.AsyncClient`` over aiohttp, :mod:`tickcast.endpoint.http_transport`).
* **Management** (sync only) — ``PUT/GET/DELETE /deployments/{name}``, ``GET /deployments``,
  ``GET/PUT /traffic``: the LOCAL stand-in's API (``emulators/aml_endpoint``). In the cloud the control plane
  is Azure Resource Manager, driven by :mod:`tickcast.release.aml` through ``azure-ai-ml`` instead.

Authentication is decided once, by :class:`EndpointAuth` (:mod:`tickcast.endpoint.auth`), for both twins: the
stand-in's key locally, an AML token in profile cloud (never an Entra ID token: a Kubernetes endpoint refuses
them, docs/decisions/0020). When the endpoint refuses an AML token (401), both twins drop it and send the call
once more with a new one.

Management calls send the stand-in's own management key, ``TICKCAST_SERVING__ENDPOINT_ADMIN_KEY`` (the
scoring key opens no management route; decision 0063).

Timeouts (one set): scoring waits ``serving.request_timeout_ms`` plus :data:`SCORE_TIMEOUT_MARGIN_S`, so
the endpoint's own 408 arrives before the client gives up; management calls wait
:data:`MANAGEMENT_TIMEOUT_S` (a PUT downloads the model and runs ``init()``); connecting waits
:data:`CONNECT_TIMEOUT_S`.

Every failure is an :class:`EndpointError`: ``status`` (``None`` when no HTTP answer came: refused, timed
out, no token), the server's own ``message`` and ``code`` — parsed once, by :func:`error_parts`, from every
error-body shape we meet — and for scoring the container's status behind AML's 424 (``model_status``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import httpx

from tickcast.endpoint.auth import EndpointAuth
from tickcast.endpoint.errors import EndpointError, decode_body, error_parts, retry_after_of
from tickcast.endpoint.http_transport import AiohttpTransport
from tickcast.scoring.contract import DEPLOYMENT_HEADER, PredictRequest, model_status
from tickcast.settings import Settings, get_settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = [
    "CONNECT_TIMEOUT_S",
    "MANAGEMENT_TIMEOUT_S",
    "SCORE_TIMEOUT_MARGIN_S",
    "AsyncEndpointClient",
    "DeploymentInfo",
    "EndpointClient",
    "EndpointError",
    "ScoreAnswer",
    "error_parts",
    "retry_after_of",
]

log = logging.getLogger("tickcast.endpoint")

CONNECT_TIMEOUT_S: Final = 3.0
MANAGEMENT_TIMEOUT_S: Final = 180.0
SCORE_TIMEOUT_MARGIN_S: Final = 1.0


@dataclass(frozen=True)
class DeploymentInfo:
    """One deployment as the stand-in reports it (``GET /deployments/{name}``)."""

    name: str
    model_version: str
    provisioning_state: str
    traffic: int = 0
    error: str | None = None
    last_failed_model_version: str | None = None
    updated_at: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.provisioning_state == "Succeeded"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeploymentInfo:
        return cls(
            name=str(data["name"]),
            model_version=str(data["model_version"]),
            provisioning_state=str(data["provisioning_state"]),
            traffic=int(data.get("traffic") or 0),
            error=data.get("error"),
            last_failed_model_version=data.get("last_failed_model_version"),
            updated_at=data.get("updated_at"),
        )


@dataclass(frozen=True)
class ScoreAnswer:
    """A 200 answer of ``POST /score``: the decoded body, who answered, how long it took."""

    body: dict[str, Any]
    deployment: str | None
    elapsed_s: float
    headers: dict[str, str] = field(default_factory=dict, repr=False)


# --- shared by both twins -----------------------------------------------------------------------------------


def _score_content(request: PredictRequest | Mapping[str, Any] | str | bytes) -> str | bytes:
    if isinstance(request, PredictRequest):
        return request.model_dump_json()
    if isinstance(request, str | bytes):
        return request
    return json.dumps(dict(request))


def _score_headers(deployment: str | None, auth: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if deployment:
        headers[DEPLOYMENT_HEADER] = deployment
    if auth:
        headers["Authorization"] = auth
    return headers


def _score_operation(deployment: str | None) -> str:
    return f"score{f' on deployment {deployment!r}' if deployment else ''}"


def _score_answer(operation: str, response: httpx.Response, elapsed_s: float) -> ScoreAnswer:
    """The answer of ``POST /score`` as a :class:`ScoreAnswer`, or the :class:`EndpointError` it means."""
    body = decode_body(response.content)
    if response.status_code != 200:
        message, code = error_parts(body)
        raise EndpointError(
            operation,
            response.status_code,
            message,
            code=code,
            model_status=model_status(response.status_code, response.headers),
            body=body,
            retry_after=retry_after_of(response.headers),
        )
    if not isinstance(body, dict):
        raise EndpointError(operation, 200, f"the answer is not a JSON object: {str(body)[:200]!r}", body=body)
    return ScoreAnswer(body, response.headers.get(DEPLOYMENT_HEADER), elapsed_s, dict(response.headers))


def _no_answer(operation: str, base_url: str, err: httpx.HTTPError) -> EndpointError:
    if isinstance(err, httpx.TimeoutException):
        return EndpointError(operation, None, f"timed out talking to {base_url} ({type(err).__name__}: {err})")
    return EndpointError(
        operation,
        None,
        f"cannot reach the endpoint at {base_url} ({type(err).__name__}: {err}); is it running? "
        "(locally: tickcast up; or set TICKCAST_SERVING__ENDPOINT_URL)",
    )


def _timeouts(settings: Settings) -> httpx.Timeout:
    return httpx.Timeout(settings.serving.request_timeout_ms / 1000 + SCORE_TIMEOUT_MARGIN_S, connect=CONNECT_TIMEOUT_S)


# --- the sync client ----------------------------------------------------------------------------------------


class EndpointClient:
    """Typed calls to the endpoint at ``settings.endpoint_url`` (one pooled ``httpx.Client``).

    ``transport`` replaces the network (tests); ``base_url``/``key``/``admin_key`` override the settings;
    ``token_credential`` replaces :func:`tickcast.azure.credential` when a token is used (see
    :mod:`tickcast.endpoint.auth`), ``token_transport`` the network to the AML token API. Close it (or use it
    as a context manager) when done.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        base_url: str | None = None,
        key: str | None = None,
        admin_key: str | None = None,
        token_credential: TokenCredential | None = None,
        transport: httpx.BaseTransport | None = None,
        token_transport: httpx.BaseTransport | None = None,
        management_timeout_s: float = MANAGEMENT_TIMEOUT_S,
    ) -> None:
        s = settings or get_settings()
        self.base_url = (base_url or s.endpoint_url).rstrip("/")
        self.score_timeout = _timeouts(s)
        self.management_timeout = httpx.Timeout(management_timeout_s, connect=CONNECT_TIMEOUT_S)
        self.auth = EndpointAuth(s, key=key, credential=token_credential, token_transport=token_transport)
        configured = s.serving.endpoint_admin_key if s.profile == "local" else None  # local stand-in only
        admin = admin_key if admin_key is not None else (configured.get_secret_value() if configured else "")
        self._management_headers = {"Authorization": f"Bearer {admin}"} if admin else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Accept": "application/json", "User-Agent": "tickcast-endpoint-client"},
            timeout=self.management_timeout,
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()
        self.auth.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _send(
        self, operation: str, method: str, path: str, *, timeout: httpx.Timeout | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        own_auth = "Authorization" not in headers
        for attempt in (1, 2):
            if own_auth:
                auth = self.auth.header(operation)
                if auth:
                    headers["Authorization"] = auth
            try:
                response = self._http.request(
                    method, path, timeout=timeout or self.management_timeout, headers=headers, **kwargs
                )
            except httpx.HTTPError as err:
                raise _no_answer(operation, self.base_url, err) from err
            if not (response.status_code == 401 and own_auth and attempt == 1 and self.auth.invalidate()):
                return response
            log.warning("endpoint: the AML token was refused (%s); fetching a new one", response.text[:200])
        return response

    def _manage(self, operation: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A management call: with the management key instead of the scoring key."""
        return self._send(operation, method, path, headers=self._management_headers, **kwargs)

    def _check(self, operation: str, response: httpx.Response, *ok: int) -> Any:
        body = decode_body(response.content)
        if response.status_code in (ok or (200,)):
            return body
        message, code = error_parts(body)
        raise EndpointError(operation, response.status_code, message, code=code, body=body)

    def healthy(self) -> bool:
        """``GET /`` answers 200 (liveness; needs no key)."""
        try:
            return self._http.get("/", timeout=httpx.Timeout(CONNECT_TIMEOUT_S)).status_code == 200
        except httpx.HTTPError:
            return False

    def score(
        self, request: PredictRequest | Mapping[str, Any] | str | bytes, deployment: str | None = None
    ) -> ScoreAnswer:
        """``POST /score``; ``deployment`` pins the request to one deployment (also at 0 % traffic).

        Raises :class:`EndpointError` for any non-200 answer (``model_status`` = score.py's own status).
        """
        operation = _score_operation(deployment)
        started = time.perf_counter()
        response = self._send(
            operation,
            "POST",
            "/score",
            content=_score_content(request),
            headers=_score_headers(deployment, None),
            timeout=self.score_timeout,
        )
        return _score_answer(operation, response, time.perf_counter() - started)

    # --- management (the local stand-in) ------------------------------------------------------------------

    def deployments(self) -> list[DeploymentInfo]:
        body = self._check("list deployments", self._manage("list deployments", "GET", "/deployments"))
        return [DeploymentInfo.from_json(d) for d in body.get("value", [])]

    def deployment(self, name: str) -> DeploymentInfo | None:
        """One deployment, or ``None`` when it does not exist."""
        operation = f"get deployment {name!r}"
        response = self._manage(operation, "GET", f"/deployments/{name}")
        if response.status_code == 404:
            return None
        return DeploymentInfo.from_json(self._check(operation, response))

    def put_deployment(self, name: str, model_version: str) -> DeploymentInfo:
        """Create or update ``name`` to serve ``model_version`` (synchronous: returns when ready).

        A 422 (download or ``init()`` failed) raises :class:`EndpointError` with the stand-in's reason.
        """
        operation = f"deploy model version {model_version} to {name!r}"
        response = self._manage(operation, "PUT", f"/deployments/{name}", json={"model_version": str(model_version)})
        return DeploymentInfo.from_json(self._check(operation, response, 200, 201))

    def delete_deployment(self, name: str) -> None:
        operation = f"delete deployment {name!r}"
        self._check(operation, self._manage(operation, "DELETE", f"/deployments/{name}"), 204)

    def traffic(self) -> dict[str, int]:
        body = self._check("get traffic", self._manage("get traffic", "GET", "/traffic"))
        return {str(k): int(v) for k, v in dict(body).items()}

    def set_traffic(self, weights: Mapping[str, int]) -> dict[str, int]:
        """Replace the split (names not given get 0); returns the split now in force."""
        operation = f"set traffic {dict(weights)}"
        body = self._check(operation, self._manage(operation, "PUT", "/traffic", json=dict(weights)))
        return {str(k): int(v) for k, v in dict(body).items()}


# --- the async twin -----------------------------------------------------------------------------------------


class AsyncEndpointClient:
    """``POST /score`` through ONE pooled ``httpx.AsyncClient`` over aiohttp — the public API's hop.

    :meth:`open` creates the pooled client (the API's lifespan does; :meth:`score` does on first use when no
    lifespan ran); :meth:`aclose` closes it. ``transport`` replaces the network (tests); ``credential``
    replaces :func:`tickcast.azure.credential` when a token is used, ``token_transport`` the network to the
    AML token API.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        credential: TokenCredential | None = None,
        token_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = settings.endpoint_url
        self.timeout = _timeouts(settings)
        self.timeout_s = settings.serving.request_timeout_ms / 1000
        self.transport = transport
        self.auth = EndpointAuth(settings, credential=credential, async_token_transport=token_transport)
        self.problem: str | None = self.auth.problem  # a configuration error: every score() fails saying so
        self._client: httpx.AsyncClient | None = None

    def open(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self.timeout,
                transport=self.transport or AiohttpTransport(),
                headers={"Accept": "application/json", "User-Agent": "tickcast-api"},
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await self.auth.aclose()

    async def score(
        self, request: PredictRequest | Mapping[str, Any] | str | bytes, deployment: str | None = None
    ) -> ScoreAnswer:
        """The async twin of :meth:`EndpointClient.score` (the body is sent as given when it is bytes)."""
        operation = _score_operation(deployment)
        if self.problem:
            raise EndpointError(operation, None, self.problem, code="misconfigured")
        client = self.open()
        content = _score_content(request)
        started = time.perf_counter()
        for attempt in (1, 2):
            auth = await self.auth.aheader(operation)
            try:
                response = await client.post("/score", content=content, headers=_score_headers(deployment, auth))
            except httpx.HTTPError as err:
                raise _no_answer(operation, self.base_url, err) from None
            if not (response.status_code == 401 and attempt == 1 and self.auth.invalidate()):
                break
            log.warning("endpoint: the AML token was refused (%s); fetching a new one", response.text[:200])
        return _score_answer(operation, response, time.perf_counter() - started)
