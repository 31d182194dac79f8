"""The HTTP face of the AML online endpoint stand-in (FastAPI). Routes, in AML's terms:

Data plane (``Authorization: Bearer <settings.serving.endpoint_key>`` on ``POST /score``; ``GET /`` needs no key):

* ``GET /`` → 200 ``Healthy`` (liveness, no key).
* ``POST /score`` → routed by the traffic weights (a seeded draw), or to the deployment named in the
  ``azureml-model-deployment`` request header (also at 0 % traffic: how a new colour is smoke-tested). The
  chosen deployment's score.py ``run()`` gets the body as a ``str``, in a worker thread. Every scored answer
  carries ``azureml-model-deployment: <name>``. Answers:

  - 200: ``run()``'s result, JSON-encoded (as azmlinfsrv does);
  - a non-200 answer of score.py (its 4xx, or 500 when ``run()`` raised — azmlinfsrv's body
    ``{"message": "An unexpected error occurred in scoring script. Check the logs for more info."}``):
    with ``model_errors="aml"`` (default) the status becomes **424** with the container's status in
    ``ms-azureml-model-error-statuscode`` and its reason phrase in ``ms-azureml-model-error-reason``, the body
    untouched — what a real AML online endpoint documents ("Model Error"); with ``model_errors="passthrough"``
    the container's status is returned as is. :func:`tickcast.scoring.contract.model_status` reads both;
  - 408 ``{"message": ...}`` when ``run()`` takes longer than ``settings.serving.request_timeout_ms`` (AML's
    ``request_timeout_ms``; the stuck thread is left to finish);
  - 404 ``{"message": "No valid deployments to route to. ..."}`` when no deployment has a positive weight
    (or the header names a deployment that does not exist or is Failed);
  - 401 ``{"message": ...}`` + ``WWW-Authenticate: Bearer`` without the right key.

Management (``Authorization: Bearer <settings.serving.endpoint_admin_key>``, a key of its own: the scoring key
opens no management route and the management key scores nothing, as in AML, where scoring keys and the Azure
Resource Manager credential are separate; bodies ``{"error": {"code", "message"}}`` on failure, ARM style):

* ``PUT /deployments/{name}`` ``{"model_version": "3"}`` → create (201) or update (200) synchronously; 422
  when the model could not be fetched or ``init()`` failed (body ``provisioning_state: "Failed"`` + ``error``);
* ``GET /deployments`` → ``{"value": [...]}``; ``GET /deployments/{name}``; ``DELETE /deployments/{name}`` →
  204, 409 while it has traffic;
* ``GET /traffic`` → ``{"blue": 100, "green": 0}``; ``PUT /traffic`` same shape → names not given get 0;
  weights must be whole percentages summing to 100 (or all 0 to stop routing) and only Succeeded deployments
  may get a positive weight (400 otherwise, saying why).

Deployments, the state file and restarts: :mod:`emulators.aml_endpoint.deployments`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from emulators.aml_endpoint.auth import DEFAULT_TOKEN_LIFETIME_S, ISSUER_ROUTE, AuthMode, Authority, Kind
from emulators.aml_endpoint.deployments import SCORE_SCRIPT, Deployments, EndpointError, ModelLoader
from emulators.settings import StandInSettings, get_stand_in_settings
from tickcast.scoring.contract import DEPLOYMENT_HEADER, MODEL_ERROR_REASON_HEADER, MODEL_ERROR_STATUS_HEADER

log = logging.getLogger("emulators.aml_endpoint")

ModelErrors = Literal["aml", "passthrough"]
UNEXPECTED_SCORING_ERROR = "An unexpected error occurred in scoring script. Check the logs for more info."
UNEXPECTED_INTERNAL_ERROR = "An unexpected internal error occurred. Check the logs for more info."
SCORE_THREADS = 8
KEY_REFUSED = "missing or invalid key: send Authorization: Bearer <endpoint key> (TICKCAST_SERVING__ENDPOINT_KEY)"
MANAGEMENT_KEY_REFUSED = (
    "missing or invalid management key: send Authorization: Bearer <management key> "
    "(TICKCAST_SERVING__ENDPOINT_ADMIN_KEY; the scoring key does not manage deployments)"
)


def default_state_dir(settings: StandInSettings) -> Path:
    """``<stack.home>/data/endpoint`` — the stack's data folder of the ``endpoint`` service."""
    return settings.stack.resolved_home() / "data" / "endpoint"


def registry_loader(settings: StandInSettings, downloads: Path) -> ModelLoader:
    """Fetch a registered version's ``model/`` folder from MLflow into ``downloads/<random>/`` — what AML does
    with a registered model, through MLflow's own client (the stand-in knows no tickcast module but the
    scoring contract)."""

    def load(version: str) -> Path:
        import uuid

        import httpx
        import mlflow
        from mlflow.tracking import MlflowClient

        uri = settings.mlflow_tracking_uri
        try:  # fail in seconds, not after MLflow's minutes of retries
            httpx.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
        except httpx.HTTPError:
            raise RuntimeError(
                f"MLflow at {uri} is not reachable: start the stack (tickcast up) or set TICKCAST_MLFLOW__TRACKING_URI"
            ) from None
        mv = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(settings.mlflow.model_name, version)
        dest = downloads / uuid.uuid4().hex[:12]
        dest.mkdir(parents=True)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(dest), tracking_uri=uri))

    return load


def _container_answer(result: Any) -> tuple[int, bytes, str]:
    """(status, body, content type) of what ``run()`` returned, the way azmlinfsrv turns it into HTTP."""
    if hasattr(result, "status_code") and hasattr(result, "get_data"):  # AMLResponse / flask / ScoreResponse
        headers = getattr(result, "headers", None) or {}
        content_type = headers.get("Content-Type") or getattr(result, "mimetype", None) or "application/json"
        data = result.get_data()
        return int(result.status_code), data if isinstance(data, bytes) else str(data).encode(), str(content_type)
    try:
        return 200, json.dumps(result).encode("utf-8"), "application/json"
    except (TypeError, ValueError):
        log.exception("run() returned a value that is not JSON-serialisable")
        return 500, json.dumps({"message": UNEXPECTED_INTERNAL_ERROR}).encode(), "application/json"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _Guard:
    """A pure ASGI middleware that hands each request to ``check(scope, receive, send, inner_app)``."""

    def __init__(self, app: ASGIApp, check: Callable[[Scope, Receive, Send, ASGIApp], Awaitable[None]]) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.check(scope, receive, send, self.app)


def _arm_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_app(
    settings: StandInSettings | None = None,
    *,
    state_dir: Path | None = None,
    model_loader: ModelLoader | None = None,
    score_script: Path | None = None,
    seed: int | None = None,
    model_errors: ModelErrors = "aml",
    kind: Kind = "managed",
    auth_mode: AuthMode = "key",
    token_lifetime_s: int = DEFAULT_TOKEN_LIFETIME_S,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The stand-in. ``model_loader(version) -> folder`` replaces the MLflow download (tests);
    ``score_script`` replaces ``src/tickcast/scoring/score.py`` (AML's ``scoring_script``); ``seed`` makes the
    weighted routing reproducible; ``model_errors`` chooses how score.py's non-200 answers reach the caller;
    ``kind``/``auth_mode``/``token_lifetime_s``/``clock``: who may score (:mod:`emulators.aml_endpoint.auth`,
    ``app.state.authority`` counts the tokens issued and the Entra ID tokens refused).
    """
    cfg = settings or get_stand_in_settings()
    if cfg.serving.endpoint_key is None or not cfg.serving.endpoint_key.get_secret_value():
        raise ValueError("the endpoint stand-in needs a key: set TICKCAST_SERVING__ENDPOINT_KEY")
    admin = cfg.serving.endpoint_admin_key
    if admin is None or not admin.get_secret_value():
        raise ValueError("the endpoint stand-in needs a management key: set TICKCAST_SERVING__ENDPOINT_ADMIN_KEY")
    key = cfg.serving.endpoint_key.get_secret_value().encode()
    admin_key = admin.get_secret_value().encode()
    if hmac.compare_digest(key, admin_key):
        raise ValueError(
            "TICKCAST_SERVING__ENDPOINT_ADMIN_KEY must differ from TICKCAST_SERVING__ENDPOINT_KEY: "
            "a scoring key must not manage deployments"
        )
    timeout_s = cfg.serving.request_timeout_ms / 1000
    folder = (state_dir or default_state_dir(cfg)).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    downloads = folder / "downloads"
    deployments = Deployments(
        folder,
        model_loader or registry_loader(cfg, downloads),
        score_script=score_script or SCORE_SCRIPT,
        seed=seed,
        downloads_dir=None if model_loader else downloads,
    )
    executor = ThreadPoolExecutor(max_workers=SCORE_THREADS, thread_name_prefix="aml-score")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="tickcast AML online endpoint stand-in", version="1", lifespan=lifespan)
    app.state.deployments = deployments
    aml = cfg.aml
    authority = Authority(
        key,
        admin_key=admin_key,
        auth_mode=auth_mode,
        kind=kind,
        coordinates={
            "subscription": aml.subscription_id,
            "resource_group": aml.resource_group,
            "workspace": aml.workspace,
            "endpoint": aml.endpoint_name if aml.subscription_id else None,
        },
        token_lifetime_s=token_lifetime_s,
        clock=clock,
    )
    app.state.authority = authority
    unauthorized = {"WWW-Authenticate": "Bearer"}

    def refusal(path: str, message: str) -> Response:
        if path == "/score":
            return JSONResponse({"message": message}, status_code=401, headers=unauthorized)
        response = _arm_error(401, "Unauthorized", message)
        response.headers.update(unauthorized)
        return response

    async def require_credential(scope: Scope, receive: Receive, send: Send, inner: ASGIApp) -> None:
        """``GET /`` is open, the token API checks its own ARM token, ``/score`` takes what ``auth_mode`` says,
        everything else the key. A plain ASGI wrapper: per request it costs a header lookup, where FastAPI's
        ``@app.middleware("http")`` costs a task and a streamed copy of the response."""
        path = scope.get("path", "")
        if scope["type"] == "http" and path != "/" and not path.startswith("/subscriptions/"):
            header = next((v for k, v in scope["headers"] if k == b"authorization"), b"").decode("latin-1")
            if path == "/score":
                verdict = authority.score(header)
                if not verdict.ok:
                    await refusal(path, verdict.message)(scope, receive, send)
                    return
            elif not authority.management(header):
                await refusal(path, MANAGEMENT_KEY_REFUSED)(scope, receive, send)
                return
        await inner(scope, receive, send)

    app.add_middleware(_Guard, check=require_credential)

    @app.exception_handler(EndpointError)
    async def endpoint_error(_: Request, err: EndpointError) -> JSONResponse:
        return _arm_error(err.status, err.code, err.message)

    @app.get("/", response_class=PlainTextResponse)
    def liveness() -> str:
        return "Healthy"

    @app.post(ISSUER_ROUTE)
    def token(request: Request, subscription: str, resource_group: str, workspace: str, endpoint: str) -> JSONResponse:
        """Azure Resource Manager's ``onlineEndpoints/{name}/token`` (the caller's Entra ID token for ARM)."""
        coordinates = {
            "subscription": subscription,
            "resource_group": resource_group,
            "workspace": workspace,
            "endpoint": endpoint,
        }
        verdict, body = authority.issue(request.headers.get("authorization", ""), coordinates)
        if not verdict.ok or body is None:
            return _arm_error(verdict.status, verdict.code, verdict.message)
        return JSONResponse(body)

    @app.post("/score")
    async def score(request: Request) -> Response:
        try:
            name, module = deployments.route(request.headers.get(DEPLOYMENT_HEADER))
        except EndpointError as err:
            return JSONResponse({"message": err.message}, status_code=err.status)
        headers = {DEPLOYMENT_HEADER: name}
        raw = await request.body()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:  # azmlinfsrv's BadInput
            status, body, content_type = (
                400,
                json.dumps({"message": f"Input cannot be decoded as UTF-8: {err}"}).encode(),
                "application/json",
            )
        else:
            future = asyncio.get_running_loop().run_in_executor(executor, module.run, text)
            try:
                result = await asyncio.wait_for(future, timeout=timeout_s)
            except TimeoutError:
                log.warning("deployment %s: run() exceeded request_timeout_ms=%d", name, cfg.serving.request_timeout_ms)
                return JSONResponse(
                    {
                        "message": f"Request timed out: deployment {name!r} did not answer within "
                        f"request_timeout_ms={cfg.serving.request_timeout_ms}"
                    },
                    status_code=408,
                    headers=headers,
                )
            except Exception:
                log.exception("deployment %s: run() raised", name)
                status, body, content_type = (
                    500,
                    json.dumps({"message": UNEXPECTED_SCORING_ERROR}).encode(),
                    ("application/json"),
                )
            else:
                status, body, content_type = _container_answer(result)
        if status != 200 and model_errors == "aml":
            headers[MODEL_ERROR_STATUS_HEADER] = str(status)
            headers[MODEL_ERROR_REASON_HEADER] = _phrase(status)
            status = 424
        return Response(body, status_code=status, headers=headers, media_type=content_type)

    # --- management ---------------------------------------------------------------------------------

    async def json_body(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except ValueError as err:
            raise EndpointError(400, f"the body is not valid JSON ({err})") from None

    @app.put("/deployments/{name}")
    async def put_deployment(name: str, request: Request) -> JSONResponse:
        body = await json_body(request)
        if not isinstance(body, dict) or set(body) != {"model_version"}:
            raise EndpointError(400, 'send {"model_version": "<MLflow model version>"}, e.g. {"model_version": "3"}')
        version = body["model_version"]
        if isinstance(version, bool) or not isinstance(version, str | int):
            raise EndpointError(400, f"model_version must be a string or an integer, got {version!r}")
        record, created = await asyncio.to_thread(deployments.put, name, str(version).strip())
        if record["provisioning_state"] != "Succeeded":
            return JSONResponse(record, status_code=422)
        return JSONResponse(record, status_code=201 if created else 200)

    @app.get("/deployments")
    def list_deployments() -> dict[str, Any]:
        return {"value": deployments.list()}

    @app.get("/deployments/{name}")
    def get_deployment(name: str) -> dict[str, Any]:
        return deployments.get(name)

    @app.delete("/deployments/{name}", status_code=204)
    def delete_deployment(name: str) -> Response:
        deployments.delete(name)
        return Response(status_code=204)

    @app.get("/traffic")
    def get_traffic() -> dict[str, int]:
        return deployments.get_traffic()

    @app.put("/traffic")
    async def put_traffic(request: Request) -> dict[str, int]:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise EndpointError(400, 'send the split as {"<deployment>": <percent>, ...}, e.g. {"blue": 100}')
        return deployments.set_traffic(body)

    return app
