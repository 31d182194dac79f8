"""A small typed client for the online endpoint: scoring (data plane) and the stand-in's management API.

One :class:`EndpointClient` holds ONE ``httpx.Client`` (connection pooling, one base URL, the auth header)
for its whole life; close it (or use it as a context manager) when done.

* **Scoring** — :meth:`EndpointClient.score` posts ``{symbol, bars}`` to ``POST /score``, optionally
  pinned to one deployment with the ``azureml-model-deployment`` header (how a colour at 0 % traffic is
  smoke-tested). It works against a real AML online endpoint too (same route, same headers).
* **Management** — ``PUT/GET/DELETE /deployments/{name}``, ``GET /deployments``, ``GET/PUT /traffic``: the
  LOCAL stand-in's API (``emulators/aml_endpoint``). In the cloud the control plane is Azure Resource
  Manager, driven by :class:`tickcast.release.deploy.AzureMLDeployer` through ``azure-ai-ml`` instead.

Authentication: ``Authorization: Bearer <TICKCAST_SERVING__ENDPOINT_KEY>`` (the stand-in's key). When no key
is configured and a ``token_credential`` is given (profile cloud: :func:`tickcast.azure.credential`), an
Entra ID token for ``https://ml.azure.com/.default`` is sent instead — what an endpoint with
``auth_mode="aad_token"`` expects; the credential caches and refreshes it.

Timeouts: scoring waits ``serving.request_timeout_ms`` plus :data:`SCORE_TIMEOUT_MARGIN_S` (so the
endpoint's own 408 arrives before the client gives up); management calls wait
:data:`MANAGEMENT_TIMEOUT_S` (a PUT downloads the model from MLflow and runs ``init()``); connecting waits
:data:`CONNECT_TIMEOUT_S`.

Every failure is an :class:`EndpointError`: ``status`` (``None`` when no HTTP answer came: refused,
timed out), the server's own ``message`` and ``code`` (ARM-style ``{"error": {"code", "message"}}``,
score.py's ``{"error", "code", "detail"}`` or AML's ``{"message"}``), and for scoring the container's status
behind AML's 424 (``model_status``, via :func:`tickcast.scoring.contract.model_status`).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx

from tickcast.scoring.contract import DEPLOYMENT_HEADER, PredictRequest, model_status
from tickcast.settings import Settings, get_settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = [
    "AML_TOKEN_SCOPE",
    "CONNECT_TIMEOUT_S",
    "MANAGEMENT_TIMEOUT_S",
    "SCORE_TIMEOUT_MARGIN_S",
    "DeploymentInfo",
    "EndpointClient",
    "EndpointError",
    "ScoreAnswer",
]

AML_TOKEN_SCOPE = "https://ml.azure.com/.default"  # noqa: S105 - an OAuth scope (aad_token endpoints), no secret
CONNECT_TIMEOUT_S = 5.0
MANAGEMENT_TIMEOUT_S = 180.0
SCORE_TIMEOUT_MARGIN_S = 5.0
_MAX_MESSAGE = 2000


class EndpointError(Exception):
    """The endpoint refused a call or could not be reached.

    ``status``: the HTTP status (``None`` when no answer came); ``message``: the server's own explanation
    (or the transport error); ``code``: the server's error code where it gave one; ``model_status``: for
    scoring, score.py's own status behind an AML 424; ``body``: the decoded answer (JSON or text).
    """

    def __init__(
        self,
        operation: str,
        status: int | None,
        message: str,
        *,
        code: str | None = None,
        model_status: int | None = None,
        body: Any = None,
    ) -> None:
        self.operation = operation
        self.status = status
        self.message = message
        self.code = code
        self.model_status = model_status
        self.body = body
        where = "no answer" if status is None else f"HTTP {status}"
        if model_status is not None and model_status != status:
            where += f" (model answered {model_status})"
        super().__init__(f"{operation}: {where}: {message}" + (f" [{code}]" if code else ""))


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


class _AadTokenAuth(httpx.Auth):
    """``Authorization: Bearer <Entra ID token>`` from a token credential (it caches and refreshes)."""

    def __init__(self, credential: TokenCredential, scope: str = AML_TOKEN_SCOPE) -> None:
        self.credential = credential
        self.scope = scope

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.credential.get_token(self.scope).token}"
        yield request


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _error_parts(body: Any) -> tuple[str, str | None]:
    """(message, code) from any of the error bodies the endpoint sends."""
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping):  # ARM style
            return str(err.get("message") or err), (str(err["code"]) if err.get("code") else None)
        if isinstance(err, str):  # score.py's ErrorBody, or a Failed deployment record
            return err, (str(body["code"]) if body.get("code") else None)
        if body.get("message"):  # AML / azmlinfsrv
            return str(body["message"]), None
        return json.dumps(body)[:_MAX_MESSAGE], None
    text = str(body or "").strip()
    return (text[:_MAX_MESSAGE] or "(empty body)"), None


class EndpointClient:
    """Typed calls to the endpoint at ``settings.endpoint_url`` (one pooled ``httpx.Client``).

    ``transport`` replaces the network (tests); ``base_url``/``key`` override the settings;
    ``token_credential`` is used only when there is no key (see the module docstring).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        base_url: str | None = None,
        key: str | None = None,
        token_credential: TokenCredential | None = None,
        transport: httpx.BaseTransport | None = None,
        management_timeout_s: float = MANAGEMENT_TIMEOUT_S,
    ) -> None:
        s = settings or get_settings()
        self.base_url = (base_url or s.endpoint_url).rstrip("/")
        self.score_timeout = httpx.Timeout(
            s.serving.request_timeout_ms / 1000 + SCORE_TIMEOUT_MARGIN_S, connect=CONNECT_TIMEOUT_S
        )
        self.management_timeout = httpx.Timeout(management_timeout_s, connect=CONNECT_TIMEOUT_S)
        secret = (
            key if key is not None else (s.serving.endpoint_key.get_secret_value() if s.serving.endpoint_key else "")
        )
        headers = {"Accept": "application/json", "User-Agent": "tickcast-endpoint-client"}
        auth: httpx.Auth | None = None
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        elif token_credential is not None:
            auth = _AadTokenAuth(token_credential)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            auth=auth,
            timeout=self.management_timeout,
            transport=transport,
            follow_redirects=False,
        )

    # --- life cycle -------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------------------

    def _send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        timeout: httpx.Timeout | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        try:
            return self._http.request(method, path, timeout=timeout or self.management_timeout, **kwargs)
        except httpx.TimeoutException as err:
            raise EndpointError(
                operation, None, f"timed out talking to {self.base_url} ({type(err).__name__}: {err})"
            ) from err
        except httpx.HTTPError as err:
            raise EndpointError(
                operation,
                None,
                f"cannot reach the endpoint at {self.base_url} ({type(err).__name__}: {err}); is it running? "
                "(locally: tickcast up; or set TICKCAST_SERVING__ENDPOINT_URL)",
            ) from err

    def _check(self, operation: str, response: httpx.Response, *ok: int) -> Any:
        body = _decode(response)
        if response.status_code in (ok or (200,)):
            return body
        message, code = _error_parts(body)
        raise EndpointError(operation, response.status_code, message, code=code, body=body)

    # --- data plane -------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """``GET /`` answers 200 (liveness; needs no key)."""
        try:
            return self._http.get("/", timeout=httpx.Timeout(CONNECT_TIMEOUT_S)).status_code == 200
        except httpx.HTTPError:
            return False

    def score(
        self,
        request: PredictRequest | Mapping[str, Any] | str | bytes,
        deployment: str | None = None,
    ) -> ScoreAnswer:
        """``POST /score``; ``deployment`` pins the request to one deployment (also at 0 % traffic).

        Raises :class:`EndpointError` for any non-200 answer (``model_status`` = score.py's own status).
        """
        if isinstance(request, PredictRequest):
            content: str | bytes = request.model_dump_json()
        elif isinstance(request, str | bytes):
            content = request
        else:
            content = json.dumps(dict(request))
        headers = {"Content-Type": "application/json"}
        if deployment:
            headers[DEPLOYMENT_HEADER] = deployment
        operation = f"score{f' on deployment {deployment!r}' if deployment else ''}"
        response = self._send(operation, "POST", "/score", content=content, headers=headers, timeout=self.score_timeout)
        body = _decode(response)
        answered = response.headers.get(DEPLOYMENT_HEADER)
        if response.status_code != 200:
            message, code = _error_parts(body)
            raise EndpointError(
                operation,
                response.status_code,
                message,
                code=code,
                model_status=model_status(response.status_code, response.headers),
                body=body,
            )
        if not isinstance(body, dict):
            raise EndpointError(operation, 200, f"the answer is not a JSON object: {str(body)[:200]!r}", body=body)
        return ScoreAnswer(body, answered, response.elapsed.total_seconds(), dict(response.headers))

    # --- management (the local stand-in) ----------------------------------------------------------

    def deployments(self) -> list[DeploymentInfo]:
        body = self._check("list deployments", self._send("list deployments", "GET", "/deployments"))
        return [DeploymentInfo.from_json(d) for d in body.get("value", [])]

    def deployment(self, name: str) -> DeploymentInfo | None:
        """One deployment, or ``None`` when it does not exist."""
        operation = f"get deployment {name!r}"
        response = self._send(operation, "GET", f"/deployments/{name}")
        if response.status_code == 404:
            return None
        return DeploymentInfo.from_json(self._check(operation, response))

    def put_deployment(self, name: str, model_version: str) -> DeploymentInfo:
        """Create or update ``name`` to serve ``model_version`` (synchronous: returns when ready).

        A 422 (download or ``init()`` failed) raises :class:`EndpointError` with the stand-in's reason.
        """
        operation = f"deploy model version {model_version} to {name!r}"
        response = self._send(operation, "PUT", f"/deployments/{name}", json={"model_version": str(model_version)})
        return DeploymentInfo.from_json(self._check(operation, response, 200, 201))

    def delete_deployment(self, name: str) -> None:
        operation = f"delete deployment {name!r}"
        self._check(operation, self._send(operation, "DELETE", f"/deployments/{name}"), 204)

    def traffic(self) -> dict[str, int]:
        body = self._check("get traffic", self._send("get traffic", "GET", "/traffic"))
        return {str(k): int(v) for k, v in dict(body).items()}

    def set_traffic(self, weights: Mapping[str, int]) -> dict[str, int]:
        """Replace the split (names not given get 0); returns the split now in force."""
        operation = f"set traffic {dict(weights)}"
        body = self._check(operation, self._send(operation, "PUT", "/traffic", json=dict(weights)))
        return {str(k): int(v) for k, v in dict(body).items()}
