"""Who may call the stand-in: endpoint keys, AML tokens from an ARM-shaped token API, and the Kubernetes rule.

Azure ML decides an online endpoint's authentication by its ``auth_mode``, and a **Kubernetes** endpoint (AML on
AKS, what tickcast deploys) supports only ``key`` and ``aml_token``: it refuses Entra ID tokens. The stand-in
enforces the same, so a client that sends the wrong credential fails locally the way it would in Azure:

* ``auth_mode="key"`` (the local stack): ``Authorization: Bearer <TICKCAST_SERVING__ENDPOINT_KEY>``;
* ``auth_mode="aml_token"``: ``Authorization: Bearer <AML token>``, a token this stand-in issued and that has not
  expired; the key is refused on ``/score`` (an AML-token endpoint has no usable keys);
* ``kind="kubernetes"``: an Entra ID token (a JWT issued by ``sts.windows.net`` / ``login.microsoftonline.com``)
  is refused with its own message and counted (:attr:`Authority.entra_tokens_refused`), whatever the mode.

AML tokens come from the same route Azure Resource Manager serves (:data:`ISSUER_ROUTE`), answered like ARM:
``POST .../onlineEndpoints/{name}/token?api-version=...`` with ``Authorization: Bearer <Entra ID token for
ARM>`` -> ``{"accessToken", "tokenType": "Bearer", "expiryTimeUtc", "refreshAfterTimeUtc"}`` (epoch seconds;
refresh after half the lifetime). The management token is checked like Azurite checks storage tokens: an
unsigned JWT is fine, but its audience must be ARM, its issuer Entra ID, and it must be inside its lifetime.
The endpoint's coordinates (subscription, resource group, workspace, endpoint) must match ``settings.aml``
where those are set; the stand-in's own management routes (deployments, traffic) keep requiring the key.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

AuthMode = Literal["key", "aml_token"]
Kind = Literal["managed", "kubernetes"]

ISSUER_ROUTE = (
    "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.MachineLearningServices"
    "/workspaces/{workspace}/onlineEndpoints/{endpoint}/token"
)
ARM_AUDIENCES = (
    "https://management.azure.com",
    "https://management.azure.com/",
    "https://management.core.windows.net/",
)
ENTRA_ISSUERS = ("https://sts.windows.net/", "https://login.microsoftonline.com/")
DEFAULT_TOKEN_LIFETIME_S = 3600


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT (not verified), or None when ``token`` is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def is_entra_token(token: str) -> bool:
    claims = jwt_claims(token)
    return claims is not None and str(claims.get("iss", "")).startswith(ENTRA_ISSUERS)


@dataclass
class Verdict:
    """The outcome of one check: ``ok``, or the HTTP status and message of the refusal."""

    ok: bool
    status: int = 200
    code: str = ""
    message: str = ""


@dataclass
class Authority:
    """The stand-in's credentials: its scoring key, its management key, the AML tokens it issued, and what it
    refused."""

    key: bytes
    admin_key: bytes = b""  # the management routes' own key (decision 0063); empty: no management at all
    auth_mode: AuthMode = "key"
    kind: Kind = "managed"
    coordinates: Mapping[str, str | None] = field(default_factory=dict)
    token_lifetime_s: int = DEFAULT_TOKEN_LIFETIME_S
    clock: Callable[[], float] = time.time
    entra_tokens_refused: int = 0
    tokens_issued: int = 0
    _tokens: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- the data plane --------------------------------------------------------------------------------------

    def score(self, authorization: str) -> Verdict:
        """May this ``Authorization`` header call ``/score``?"""
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return self._refuse("no credential: send Authorization: Bearer <" + self._wanted() + ">")
        if self.kind == "kubernetes" and is_entra_token(credential):
            with self._lock:
                self.entra_tokens_refused += 1
            return self._refuse(
                "this is a Kubernetes online endpoint: it accepts an endpoint key or an AML token, not a Microsoft "
                "Entra ID token (get an AML token from the endpoint's token API)"
            )
        if self.auth_mode == "key":
            if hmac.compare_digest(credential.encode(), self.key):
                return Verdict(True)
            return self._refuse("missing or invalid key: send Authorization: Bearer <endpoint key>")
        with self._lock:
            expires = self._tokens.get(credential)
        if expires is None:
            return self._refuse("invalid AML token: get one from the endpoint's token API")
        if expires <= self.clock():
            return self._refuse("the AML token has expired: get a new one from the endpoint's token API")
        return Verdict(True)

    def management(self, authorization: str) -> bool:
        """The stand-in's own management routes (deployments, traffic) take the management key in every mode;
        the scoring key opens none of them."""
        scheme, _, credential = authorization.partition(" ")
        return (
            scheme.lower() == "bearer"
            and bool(self.admin_key)
            and hmac.compare_digest(credential.strip().encode(), self.admin_key)
        )

    def _wanted(self) -> str:
        return "endpoint key" if self.auth_mode == "key" else "AML token"

    @staticmethod
    def _refuse(message: str) -> Verdict:
        return Verdict(False, 401, "Unauthorized", message)

    # --- the token API (Azure Resource Manager's shape) ------------------------------------------------------

    def issue(self, authorization: str, path: Mapping[str, str]) -> tuple[Verdict, dict[str, Any] | None]:
        """Check the caller's ARM token and the endpoint's coordinates; issue an AML token."""
        scheme, _, credential = authorization.partition(" ")
        claims = jwt_claims(credential.strip()) if scheme.lower() == "bearer" else None
        now = self.clock()
        if claims is None:
            return Verdict(False, 401, "AuthenticationFailed", "send Authorization: Bearer <Entra ID token>"), None
        if claims.get("aud") not in ARM_AUDIENCES:
            return (
                Verdict(False, 401, "InvalidAuthenticationTokenAudience", f"invalid audience {claims.get('aud')!r}"),
                None,
            )
        if not str(claims.get("iss", "")).startswith(ENTRA_ISSUERS):
            return Verdict(False, 401, "InvalidAuthenticationTokenTenant", "not an Entra ID token"), None
        if not float(claims.get("nbf", 0)) <= now < float(claims.get("exp", 0)):
            return Verdict(False, 401, "ExpiredAuthenticationToken", "the token is outside its lifetime"), None
        for name, want in self.coordinates.items():
            if want and path.get(name) != want:
                missing = f"no online endpoint with {name} {path.get(name)!r}"
                return Verdict(False, 404, "ResourceNotFound", missing), None
        if self.auth_mode != "aml_token":
            message = "the endpoint uses key authentication: it issues no AML tokens"
            return Verdict(False, 400, "BadRequest", message), None
        token = secrets.token_urlsafe(32)
        expires = int(now) + self.token_lifetime_s
        with self._lock:
            self._tokens[token] = expires
            self.tokens_issued += 1
        body = {
            "accessToken": token,
            "tokenType": "Bearer",
            "expiryTimeUtc": expires,
            "refreshAfterTimeUtc": int(now) + self.token_lifetime_s // 2,
        }
        return Verdict(True), body
