"""A fake App Service managed-identity token endpoint on 127.0.0.1, for the cloud auth path.

azure-identity's ``ManagedIdentityCredential`` (through MSAL, azure-identity 1.27) uses the App
Service flavour when ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` are set, and sends::

    GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=https://storage.azure.com
    X-IDENTITY-HEADER: {IDENTITY_HEADER}

It needs ``access_token`` and ``expires_on`` (epoch seconds) in the JSON answer; ``resource``
and ``token_type`` are passed through. The tokens are unsigned JWTs (``alg: none``) carrying
the claims Azurite's ``--oauth basic`` checks (it never verifies signatures): ``aud`` (a storage
audience such as ``https://storage.azure.com``), ``iss`` (prefix ``https://sts.windows.net/``),
``iat``, ``nbf`` and ``exp``; ``oid``/``tid``/``sub``/``appid`` make it look like a real MI token.

    with FakeIdentityEndpoint() as idp:
        monkeypatch.setenv("IDENTITY_ENDPOINT", idp.url)
        monkeypatch.setenv("IDENTITY_HEADER", idp.secret)
        ...
        assert idp.request_count == 1
"""

from __future__ import annotations

import base64
import http.server
import json
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

API_VERSION = "2019-08-01"
TOKEN_PATH = "/msi/token"
DEFAULT_TENANT = "00000000-0000-4000-8000-00000000a2e1"  # obviously fake


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned_jwt(claims: Mapping[str, Any]) -> str:
    """An ``alg: none`` JWT (``header.payload.``) with ``claims``."""
    header = {"alg": "none", "typ": "JWT"}
    parts = (json.dumps(part, separators=(",", ":")).encode() for part in (header, claims))
    return ".".join(_b64url(p) for p in parts) + "."


def decode_jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, without any verification (for assertions)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


@dataclass(frozen=True)
class TokenRequest:
    """One request the endpoint received."""

    path: str
    api_version: str | None
    resource: str | None
    client_id: str | None
    identity_header: str | None
    status: int


class FakeIdentityEndpoint:
    """A threaded HTTP server that hands out managed-identity tokens; a context manager.

    ``claims`` overrides or adds token claims (e.g. ``{"aud": "https://management.azure.com/"}`` for
    a token Azurite must refuse); ``None`` values remove a claim.
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        claims: Mapping[str, Any] | None = None,
        lifetime_s: int = 3600,
        tenant_id: str = DEFAULT_TENANT,
        object_id: str | None = None,
    ) -> None:
        self.secret = secret or secrets.token_urlsafe(24)
        self.claims_override = dict(claims or {})
        self.lifetime_s = lifetime_s
        self.tenant_id = tenant_id
        self.object_id = object_id or str(uuid.uuid4())
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._issued: list[str] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- what the tests look at ---------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeIdentityEndpoint is not running; use it as a context manager")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The value for ``IDENTITY_ENDPOINT``."""
        return f"http://127.0.0.1:{self.port}{TOKEN_PATH}"

    def env(self) -> dict[str, str]:
        """The App Service managed-identity variables that point azure-identity here."""
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.secret}

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def issued(self) -> list[str]:
        """The access tokens handed out, in order."""
        with self._lock:
            return list(self._issued)

    # --- tokens ---------------------------------------------------------------------------------

    def token_claims(self, resource: str, client_id: str | None = None) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now - 60,  # a little in the past: Azurite refuses a token before nbf
            "nbf": now - 60,
            "exp": now + self.lifetime_s,
            "oid": self.object_id,
            "sub": self.object_id,
            "tid": self.tenant_id,
            "appid": client_id or str(uuid.UUID(int=0)),
            "idtyp": "app",
            "ver": "1.0",
        }
        for key, value in self.claims_override.items():
            if value is None:
                claims.pop(key, None)
            else:
                claims[key] = value
        return claims

    def _answer(self, path: str, query: dict[str, list[str]], header: str | None) -> tuple[int, dict[str, Any]]:
        resource = query.get("resource", [None])[0]
        client_id = query.get("client_id", [None])[0]
        if path != TOKEN_PATH:
            return 404, {"statusCode": 404, "message": f"no such path {path}"}
        if header is None or not secrets.compare_digest(header, self.secret):
            return 401, {"statusCode": 401, "message": "missing or wrong X-IDENTITY-HEADER"}
        if query.get("api-version", [None])[0] != API_VERSION:
            return 400, {"statusCode": 400, "message": f"api-version must be {API_VERSION}"}
        if not resource:
            return 400, {"statusCode": 400, "message": "resource is required"}
        claims = self.token_claims(resource, client_id)
        token = unsigned_jwt(claims)
        with self._lock:
            self._issued.append(token)
        body = {
            "access_token": token,
            "expires_on": str(claims.get("exp", int(time.time()) + self.lifetime_s)),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id or claims["appid"],
        }
        return 200, body

    # --- server ---------------------------------------------------------------------------------

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                split = urlsplit(self.path)
                query = parse_qs(split.query)
                header = self.headers.get("X-IDENTITY-HEADER")
                status, body = endpoint._answer(split.path, query, header)
                with endpoint._lock:
                    endpoint._requests.append(
                        TokenRequest(
                            path=split.path,
                            api_version=query.get("api-version", [None])[0],
                            resource=query.get("resource", [None])[0],
                            client_id=query.get("client_id", [None])[0],
                            identity_header=header,
                            status=status,
                        )
                    )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> Self:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-identity", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None
