"""The local API Management gateway: a reverse proxy that enforces ``cloud/apim/policy.xml``.

Every method and path is forwarded to the backend (the Function app, ``settings.function_url``) through
one shared :class:`httpx.AsyncClient` over aiohttp (:mod:`tickcast.endpoint.http_transport`; created at
startup, closed at shutdown, keep-alive pooled, with timeouts), after the same checks APIM makes, in
APIM's order and with APIM's error bodies (``{"statusCode": N, "message": "..."}``):

1. **Subscription key** (the API's ``subscriptionRequired``, always on): header ``Ocp-Apim-Subscription-Key``,
   else query parameter ``subscription-key``. Missing → 401 "missing subscription key", unknown → 401
   "invalid subscription key"; neither reaches the backend. Keys are ``settings.gateway.subscription_keys``,
   compared in constant time; key number *i* (from 1) is subscription ``local-subscription-i``, the value of
   ``@(context.Subscription.Id)``.
2. **Inbound policy**, in document order: ``rate-limit-by-key`` → 429 + ``Retry-After`` (a sliding window, as
   APIM documents it: at most ``calls`` calls in any ``renewal-period`` seconds); ``quota-by-key`` → 403 +
   ``Retry-After`` (fixed windows, each starting at a key's first counted call); ``set-header`` /
   ``set-query-parameter`` on the forwarded request; ``validate-content`` → **413** when the body is longer than
   ``max-size`` (``Content-Length`` is checked before anything is read; a chunked body is counted while it is read;
   a gzip/deflate body is measured decompressed, like APIM), **400** when a body's media type is not one of the
   ``<content type>`` ones. Rejected calls are not counted. Like APIM, the gateway
   itself forwards the subscription key; the policy's ``set-header``/``set-query-parameter`` ``delete``
   removes it.
3. **Forwarding**: the path and query are kept, hop-by-hop headers dropped, ``X-Forwarded-For`` (appended),
   ``X-Forwarded-Host`` and ``X-Forwarded-Proto`` set; the body is passed through untouched (still compressed
   if the backend compressed it).
4. **Outbound policy**: ``set-header`` on the backend's response (not on the gateway's own 401/403/429).

Backend failures never hang: a refused or broken connection answers **502**, no answer within the timeout
**504** (real APIM answers 500 for both; the distinct codes tell a local user at once that the Function app
is down or slow rather than failing). Neither body names the backend's address (it is logged).
``GET /status-0123456789abcdef`` (APIM's own health path) answers 200
without a key and is the stack's health check.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from emulators.apim.policy import (
    SUBSCRIPTION_ID,
    Policy,
    QuotaByKey,
    RateLimitByKey,
    SetHeader,
    SetQueryParameter,
    ValidateContent,
    load_policy,
)
from emulators.settings import StandInSettings, get_stand_in_settings
from tickcast.endpoint.http_transport import AiohttpTransport

log = logging.getLogger("emulators.apim")

HEALTH_PATH = "/status-0123456789abcdef"
SUBSCRIPTION_HEADER = "Ocp-Apim-Subscription-Key"
SUBSCRIPTION_QUERY = "subscription-key"
MISSING_KEY = (
    "Access denied due to missing subscription key. Make sure to include subscription key when making requests to "
    "an API."
)
INVALID_KEY = (
    "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."
)
DEFAULT_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# RFC 9110 §7.6.1 hop-by-hop headers, plus those the proxy sets itself for each leg.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_FORWARDED_REQUEST = _HOP_BY_HOP | {"host", "content-length"}
_NOT_FORWARDED_RESPONSE = _HOP_BY_HOP | {"content-length", "date"}  # the gateway's server sets its own Date

Headers = list[tuple[str, str]]


def subscription_id(index: int) -> str:
    """``@(context.Subscription.Id)`` of the ``index``-th (0-based) configured key."""
    return f"local-subscription-{index + 1}"


def apim_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error in APIM's shape: ``{"statusCode": status, "message": message}``."""
    return JSONResponse({"statusCode": status, "message": message}, status_code=status, headers=headers)


def format_replenish(seconds: int) -> str:
    """A .NET ``TimeSpan`` as APIM prints it: ``HH:MM:SS``, with ``d.`` in front past a day."""
    days, rest = divmod(max(seconds, 0), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}.{clock}" if days else clock


# --- counters ---------------------------------------------------------------------------------------


class SlidingWindowLimiter:
    """``rate-limit-by-key``: at most ``calls`` accepted calls in any ``period`` seconds, per key."""

    def __init__(self, calls: int, period: float) -> None:
        self.calls = calls
        self.period = period
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str, now: float) -> tuple[bool, int, float]:
        """Count one call; ``(allowed, remaining calls, seconds until one more call is allowed)``."""
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.period:
            hits.popleft()
        if len(hits) >= self.calls:
            return False, 0, hits[0] + self.period - now
        hits.append(now)
        return True, self.calls - len(hits), 0.0


class FixedWindowQuota:
    """``quota-by-key``: at most ``calls`` accepted calls per ``period``-second window, per key."""

    def __init__(self, calls: int, period: float) -> None:
        self.calls = calls
        self.period = period
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, key: str, now: float) -> tuple[bool, float]:
        """Count one call; ``(allowed, seconds until the window renews)``."""
        start, used = self._windows.get(key, (now, 0))
        if now >= start + self.period:
            start, used = now, 0
        if used >= self.calls:
            return False, start + self.period - now
        self._windows[key] = (start, used + 1)
        return True, start + self.period - now


# --- header and query manipulation ----------------------------------------------------------------


def _apply(items: Headers, step: SetHeader | SetQueryParameter, *, case_insensitive: bool) -> Headers:
    """APIM's ``exists-action`` on a list of (name, value) pairs."""

    def same(name: str) -> bool:
        return name.lower() == step.name.lower() if case_insensitive else name == step.name

    exists = any(same(n) for n, _ in items)
    added = [(step.name, v) for v in step.values]
    if step.exists_action == "delete":
        return [(n, v) for n, v in items if not same(n)]
    if step.exists_action == "skip":
        return items if exists else items + added
    if step.exists_action == "append":
        return items + added
    return [(n, v) for n, v in items if not same(n)] + added  # override


# --- request bodies -------------------------------------------------------------------------------


class BodyTooLarge(Exception):
    """The request body is longer than a ``validate-content`` ``max-size``; ``size`` is what was seen so far."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(size, limit)
        self.size, self.limit = size, limit


def body_too_large(size: int, limit: int, *, at_least: bool) -> JSONResponse:
    """APIM's 413 for ``validate-content`` (its ``RequestBodyTooLarge`` message)."""
    length = f"at least {size}" if at_least else str(size)
    return apim_error(
        413, f"Request's body is {length} bytes long, which exceeds the configured limit of {limit} bytes."
    )


_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(request: Request, limit: int | None) -> bytes:
    """The whole request body; with ``limit``, :class:`BodyTooLarge` as soon as it (decompressed, for a
    gzip/deflate ``Content-Encoding``) exceeds ``limit`` bytes — never more than ``limit`` + one chunk in memory."""
    if limit is None:
        return await request.body()
    encoding = (request.headers.get("content-encoding") or "").strip().lower()
    decoder = zlib.decompressobj(_DECODERS[encoding]) if encoding in _DECODERS else None
    chunks: list[bytes] = []
    raw = size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        raw += len(chunk)
        if decoder is None:
            size = raw
        else:
            try:
                size += len(decoder.decompress(decoder.unconsumed_tail + chunk, limit + 1 - size))
            except zlib.error:
                return b"".join(chunks)  # not what it says it is: the backend answers for it, as APIM would let it
        if size > limit:
            raise BodyTooLarge(size, limit)
    return b"".join(chunks)


def _media_type(headers: Headers) -> str:
    return (_first(headers, "content-type", case_insensitive=True) or "").split(";", 1)[0].strip().lower()


def _first(items: Headers, name: str, *, case_insensitive: bool) -> str | None:
    for n, v in items:
        if (n.lower() == name.lower()) if case_insensitive else (n == name):
            return v
    return None


# --- the gateway ----------------------------------------------------------------------------------


class Gateway:
    """The state behind the app: policy, keys, counters and the one backend client."""

    def __init__(
        self,
        policy: Policy,
        backend_url: str,
        keys: Sequence[str],
        clock: Callable[[], float],
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.policy = policy
        self.backend_url = backend_url.rstrip("/")
        self._keys = [(hashlib.sha256(k.encode()).digest(), subscription_id(i)) for i, k in enumerate(keys) if k]
        self.clock = clock
        self.timeout_s = timeout_s
        self._transport = transport
        self.client: httpx.AsyncClient | None = None
        self._rate: dict[int, SlidingWindowLimiter] = {}
        self._quota: dict[int, FixedWindowQuota] = {}
        for i, step in enumerate(policy.inbound):
            if isinstance(step, RateLimitByKey):
                self._rate[i] = SlidingWindowLimiter(step.calls, step.renewal_period)
            elif isinstance(step, QuotaByKey):
                self._quota[i] = FixedWindowQuota(step.calls, step.renewal_period)

    def open_client(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = httpx.AsyncClient(
                transport=self._transport or AiohttpTransport(),
                timeout=httpx.Timeout(self.timeout_s, connect=min(CONNECT_TIMEOUT_S, self.timeout_s)),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
                follow_redirects=False,
                trust_env=False,  # never route loopback traffic through an HTTP(S)_PROXY from the environment
            )
            # Forward the caller's Accept/Accept-Encoding/User-Agent, not httpx's defaults (an Accept-Encoding
            # the caller did not send could make the backend compress a body the caller cannot read).
            for name in ("accept", "accept-encoding", "user-agent"):
                self.client.headers.pop(name, None)
        return self.client

    async def close_client(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def subscription(self, presented: str) -> str | None:
        """The subscription id of a presented key, or None; every key is compared (constant time)."""
        digest = hashlib.sha256(presented.encode()).digest()
        found: str | None = None
        for key_digest, sub_id in self._keys:
            if hmac.compare_digest(digest, key_digest):
                found = sub_id
        return found

    async def handle(self, request: Request) -> Response:
        headers: Headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        query: Headers = parse_qsl(raw_query, keep_blank_values=True)

        presented = _first(headers, SUBSCRIPTION_HEADER, case_insensitive=True)
        if presented is None:
            presented = _first(query, SUBSCRIPTION_QUERY, case_insensitive=False)
        if not presented:
            return apim_error(401, MISSING_KEY)
        sub_id = self.subscription(presented)
        if sub_id is None:
            return apim_error(401, INVALID_KEY)

        now = self.clock()
        extra: Headers = []  # rate-limit headers for the response
        original_query = list(query)
        body: bytes | None = None
        for i, step in enumerate(self.policy.inbound):
            if isinstance(step, RateLimitByKey):
                allowed, remaining, wait = self._rate[i].hit(_counter_key(step, sub_id), now)
                if step.remaining_calls_header_name:
                    extra.append((step.remaining_calls_header_name, str(remaining)))
                if step.total_calls_header_name:
                    extra.append((step.total_calls_header_name, str(step.calls)))
                if not allowed:
                    seconds = max(1, math.ceil(wait))
                    response = apim_error(429, f"Rate limit is exceeded. Try again in {seconds} seconds.")
                    response.headers[step.retry_after_header_name] = str(seconds)
                    for name, value in extra:
                        response.headers.append(name, value)
                    return response
            elif isinstance(step, QuotaByKey):
                allowed, renews_in = self._quota[i].hit(_counter_key(step, sub_id), now)
                if not allowed:
                    seconds = max(1, math.ceil(renews_in))
                    return apim_error(
                        403,
                        f"Out of call volume quota. Quota will be replenished in {format_replenish(seconds)}.",
                        headers={"Retry-After": str(seconds)},
                    )
            elif isinstance(step, ValidateContent):
                refused, body = await self.validate_content(request, step, headers, body)
                if refused is not None:
                    return refused
            elif isinstance(step, SetHeader):
                headers = _apply(headers, step, case_insensitive=True)
            else:
                query = _apply(query, step, case_insensitive=False)

        if body is None:
            body = await request.body()
        changed_query = query if query != original_query else None
        return await self.forward(request, headers, changed_query, raw_query, extra, body)

    async def validate_content(
        self, request: Request, step: ValidateContent, headers: Headers, body: bytes | None
    ) -> tuple[Response | None, bytes | None]:
        """``<validate-content>`` on the request: (the refusal or None, the body if it had to be read)."""
        length = _first(headers, "content-length", case_insensitive=True)
        declared = int(length) if length is not None and length.strip().isdigit() else None
        encoded = bool((_first(headers, "content-encoding", case_insensitive=True) or "").strip())
        if step.size_exceeded_action == "prevent":
            if declared is not None and not encoded and declared > step.max_size:  # refused before reading a byte
                log.warning("request body of %d bytes exceeds validate-content max-size %d", declared, step.max_size)
                return body_too_large(declared, step.max_size, at_least=False), body
            if body is None:
                try:
                    body = await read_body(request, step.max_size)
                except BodyTooLarge as err:
                    log.warning("request body of %d+ bytes exceeds validate-content max-size %d", err.size, err.limit)
                    return body_too_large(err.size, err.limit, at_least=True), None
        elif step.size_exceeded_action == "detect":
            if body is None:
                body = await request.body()
            if len(body) > step.max_size:  # APIM only logs it
                log.warning("request body of %d bytes exceeds validate-content max-size %d", len(body), step.max_size)
        has_body = declared > 0 if declared is not None else (body is None or len(body) > 0)
        media = _media_type(headers)
        if has_body and step.unspecified_content_type_action != "ignore" and media not in step.content_types:
            log.warning("request content type %r is not one of %s", media, step.content_types)
            if step.unspecified_content_type_action == "prevent":
                allowed = ", ".join(step.content_types) or "none"
                shown = media or "(none)"
                return apim_error(400, f"Content type {shown} is not allowed; send one of: {allowed}."), body
        return None, body

    async def forward(
        self, request: Request, headers: Headers, query: Headers | None, raw_query: str, extra: Headers, body: bytes
    ) -> Response:
        client_host = request.client.host if request.client else None
        out: Headers = [(n, v) for n, v in headers if n.lower() not in _NOT_FORWARDED_REQUEST]
        prior_xff = _first(out, "x-forwarded-for", case_insensitive=True)
        out = [(n, v) for n, v in out if n.lower() not in ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto")]
        if client_host:
            out.append(("X-Forwarded-For", f"{prior_xff}, {client_host}" if prior_xff else client_host))
        elif prior_xff:
            out.append(("X-Forwarded-For", prior_xff))
        if host := request.headers.get("host"):
            out.append(("X-Forwarded-Host", host))
        out.append(("X-Forwarded-Proto", request.url.scheme))

        path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        qs = urlencode(query) if query is not None else raw_query
        url = self.backend_url + path + (f"?{qs}" if qs else "")

        client = self.open_client()
        try:
            upstream = await client.send(
                client.build_request(request.method, url, headers=out, content=body), stream=True
            )
            try:
                content = b"".join([chunk async for chunk in upstream.aiter_raw()])
            finally:
                await upstream.aclose()
        except httpx.TimeoutException as err:
            log.warning("backend %s timed out after %.1f s: %r", url, self.timeout_s, err)
            return apim_error(504, f"Gateway timeout: the backend did not answer within {self.timeout_s:g} s.")
        except httpx.TransportError as err:
            log.warning("backend %s unreachable: %r", url, err)
            return apim_error(502, "Bad gateway: the backend service is unreachable; try again shortly.")

        keep_length = request.method == "HEAD"  # a HEAD response announces the length of the GET body
        resp_headers: Headers = []
        for k, v in upstream.headers.raw:
            name = k.decode("latin-1")
            if name.lower() not in _NOT_FORWARDED_RESPONSE or (keep_length and name.lower() == "content-length"):
                resp_headers.append((name, v.decode("latin-1")))
        for step in self.policy.outbound:
            resp_headers = _apply(resp_headers, step, case_insensitive=True)
        resp_headers += extra
        response = Response(content=content, status_code=upstream.status_code)
        raw = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in resp_headers]
        if request.method != "HEAD" and upstream.status_code >= 200 and upstream.status_code not in (204, 304):
            raw.append((b"content-length", str(len(content)).encode()))
        response.raw_headers = raw
        return response


def _counter_key(step: RateLimitByKey | QuotaByKey, sub_id: str) -> str:
    """The value of the step's ``counter-key`` for this call: the subscription id, or the literal key."""
    return sub_id if step.counter_key == SUBSCRIPTION_ID else step.counter_key


def create_app(
    settings: StandInSettings | None = None,
    *,
    backend_url: str | None = None,
    policy: Policy | Path | str | None = None,
    clock: Callable[[], float] = time.monotonic,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The gateway app.

    ``settings`` (default :func:`emulators.settings.get_stand_in_settings`) gives the subscription keys, the backend
    (``settings.function_url``) and the policy file (``settings.gateway.policy_file``); ``backend_url`` and
    ``policy`` override the last two. ``clock`` (seconds, monotonic) drives the rate-limit and quota windows;
    ``timeout_s`` bounds one backend call; ``transport`` replaces the network (tests).
    """
    cfg = settings if settings is not None else get_stand_in_settings()
    if policy is None:
        policy = cfg.gateway.policy_file
    enforced = policy if isinstance(policy, Policy) else load_policy(policy)
    keys = [k.get_secret_value() for k in cfg.gateway.subscription_keys]
    gateway = Gateway(enforced, backend_url or cfg.function_url, keys, clock, timeout_s, transport)
    for line in enforced.describe():
        log.info("%s", line)
    log.info("backend %s, %d subscription key(s), timeout %g s", gateway.backend_url, len(keys), timeout_s)
    if not keys:
        log.warning("no subscription keys configured (TICKCAST_GATEWAY__SUBSCRIPTION_KEYS): every call gets 401")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        gateway.open_client()
        try:
            yield
        finally:
            await gateway.close_client()

    app = FastAPI(
        title="tickcast APIM gateway (local)",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.gateway = gateway

    @app.api_route(HEALTH_PATH, methods=["GET", "HEAD"], include_in_schema=False)
    async def status() -> Response:
        return Response(status_code=200)

    @app.api_route("/{path:path}", methods=METHODS, include_in_schema=False)
    async def proxy(request: Request) -> Response:
        return await gateway.handle(request)

    return app
