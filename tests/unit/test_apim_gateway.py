"""The local APIM gateway (emulators/apim) and the policy file it shares with the cloud overlay.

The gateway runs in-process (httpx's ASGI transport, with its lifespan run); the backend behind it is a tiny
FastAPI app served by a real uvicorn server on a free loopback port, so forwarding really goes over HTTP.
Limits are never written down here: they are read from cloud/apim/policy.xml, or from a small policy in
tmp_path, and the windows are driven by an injected clock.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from emulators.apim.__main__ import main
from emulators.apim.app import (
    HEALTH_PATH,
    INVALID_KEY,
    MISSING_KEY,
    create_app,
    format_replenish,
)
from emulators.apim.policy import PolicyError, QuotaByKey, RateLimitByKey, SetHeader, load_policy, parse_policy
from emulators.settings import StandInSettings, load_stand_in_settings
from tickcast.settings import PROJECT_ROOT, load_settings

POLICY_FILE = PROJECT_ROOT / "cloud" / "apim" / "policy.xml"
KEY_A, KEY_B = "key-a-0123456789", "key-b-9876543210"
SUB_HEADER = "Ocp-Apim-Subscription-Key"


# --- the backend: a real HTTP server that records what reaches it -----------------------------------------


class Backend:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.app = FastAPI()

        @self.app.api_route("/slow", methods=["GET"])
        async def slow() -> JSONResponse:
            await asyncio.sleep(2)
            return JSONResponse({"slow": True})

        @self.app.api_route("/{path:path}", methods=["GET", "POST", "DELETE"])
        async def echo(request: Request, path: str) -> JSONResponse:
            body = await request.body()
            record = {
                "method": request.method,
                "path": "/" + path,
                "query": list(request.query_params.multi_items()),
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body.decode("utf-8", "replace"),
            }
            self.seen.append(record)
            status = 404 if path.startswith("missing") else 200
            return JSONResponse(record, status_code=status, headers={"X-Powered-By": "uvicorn/fastapi"})


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[Backend, str]]:
    be = Backend()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(be.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "backend did not start"
        time.sleep(0.02)
    yield be, f"http://127.0.0.1:{port}"
    server.should_exit = server.force_exit = True  # do not wait for /slow to finish
    thread.join(5)
    sock.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings() -> StandInSettings:
    return load_stand_in_settings(gateway={"subscription_keys": [KEY_A, KEY_B]})


@pytest.fixture
def seen(backend: tuple[Backend, str]) -> list[dict[str, Any]]:
    backend[0].seen.clear()
    return backend[0].seen


class GatewayClient:
    """A synchronous client of the in-process gateway: its own event loop, the app's lifespan run around it."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 50000)), base_url="http://testserver"
        )
        self.lifespan: AbstractAsyncContextManager[Any] = app.router.lifespan_context(app)

    def _run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def __enter__(self) -> GatewayClient:
        self._run(self.lifespan.__aenter__())
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self._run(self.client.aclose())
            self._run(self.lifespan.__aexit__(et, e, tb))
        finally:
            self.loop.close()

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        response: httpx.Response = self._run(self.client.get(url, **kwargs))
        return response

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        response: httpx.Response = self._run(self.client.post(url, **kwargs))
        return response


def gateway(settings: StandInSettings, backend_url: str, **kwargs: Any) -> GatewayClient:
    return GatewayClient(create_app(settings, backend_url=backend_url, **kwargs))


def write_policy(tmp_path: Path, inbound: str, outbound: str = "") -> Path:
    path = tmp_path / "policy.xml"
    path.write_text(
        "<policies><inbound><base />"
        + inbound
        + "</inbound><backend><base /></backend><outbound><base />"
        + outbound
        + "</outbound><on-error><base /></on-error></policies>",
        encoding="utf-8",
    )
    return path


def policy_numbers(element: str) -> tuple[int, int]:
    """(calls, renewal-period) of an inbound element of the committed policy, read with plain ElementTree."""
    found = ET.parse(POLICY_FILE).getroot().find(f"inbound/{element}")
    assert found is not None, f"cloud/apim/policy.xml has no <{element}>"
    return int(found.attrib["calls"]), int(found.attrib["renewal-period"])


# --- the committed policy ------------------------------------------------------------------------------------


def test_committed_policy_parses_to_what_the_xml_says() -> None:
    policy = load_policy(POLICY_FILE)
    (rate,) = policy.rate_limits
    (quota,) = policy.quotas
    assert (rate.calls, rate.renewal_period) == policy_numbers("rate-limit-by-key")
    assert (quota.calls, quota.renewal_period) == policy_numbers("quota-by-key")
    assert rate.counter_key == quota.counter_key == "@(context.Subscription.Id)"
    assert policy.unsupported == (), "the committed policy must be fully enforced locally"
    inbound = {h.name: h for h in policy.inbound_headers}
    assert inbound[SUB_HEADER].exists_action == "delete"
    assert inbound["X-Forwarded-By"] == SetHeader("X-Forwarded-By", ("tickcast-apim",), "override")
    assert [q.name for q in policy.inbound_query] == ["subscription-key"]
    assert {h.name for h in policy.outbound_headers} == {"X-Powered-By", "X-Tickcast-Gateway"}
    (content,) = policy.content_validations
    xml = ET.parse(POLICY_FILE).getroot().find("inbound/validate-content")
    assert xml is not None
    assert content.max_size == int(xml.attrib["max-size"]) <= 4 * 1024 * 1024  # APIM's largest max-size
    assert content.size_exceeded_action == content.unspecified_content_type_action == "prevent"
    assert content.content_types == ("application/json",)


def test_the_functions_body_limit_defaults_to_the_gateways() -> None:
    (content,) = load_policy(POLICY_FILE).content_validations
    assert load_settings(_env_file=None).serving.max_body_bytes == content.max_size


def test_default_settings_point_at_the_committed_policy() -> None:
    # the gateway enforces the policy that deploy-cloud ships
    assert load_stand_in_settings(_env_file=None).gateway.policy_file.resolve() == POLICY_FILE.resolve()
    assert load_settings(_env_file=None).gateway.policy_file.resolve() == POLICY_FILE.resolve()


# --- subscription keys -----------------------------------------------------------------------------------------


def test_health_path_needs_no_key_and_never_reaches_the_backend(settings: StandInSettings, backend, seen) -> None:
    with gateway(settings, backend[1]) as gw:
        assert gw.get(HEALTH_PATH).status_code == 200
    assert seen == []


def test_one_backend_client_per_app_lifetime(settings: StandInSettings, backend, seen) -> None:
    gw = gateway(settings, backend[1])
    state = gw.app.state.gateway
    with gw:
        client = state.client
        assert client is not None
        for _ in range(3):
            assert gw.get("/x", headers={SUB_HEADER: KEY_A}).status_code == 200
            assert state.client is client
    assert state.client is None and client.is_closed


def test_missing_key_is_401_and_not_forwarded(settings: StandInSettings, backend, seen) -> None:
    with gateway(settings, backend[1]) as gw:
        r = gw.get("/api/predictions/SPY")
        assert r.status_code == 401
        assert r.json() == {"statusCode": 401, "message": MISSING_KEY}
        assert gw.get("/api/predictions/SPY", headers={SUB_HEADER: ""}).json()["message"] == MISSING_KEY
    assert seen == []


def test_wrong_key_is_401_in_header_or_query(settings: StandInSettings, backend, seen) -> None:
    with gateway(settings, backend[1]) as gw:
        for r in (
            gw.get("/api/predictions/SPY", headers={SUB_HEADER: KEY_A + "x"}),
            gw.get("/api/predictions/SPY", params={"subscription-key": "nope"}),
            # like APIM, the header wins over the query parameter
            gw.get("/api/predictions/SPY", headers={SUB_HEADER: "nope"}, params={"subscription-key": KEY_A}),
        ):
            assert r.status_code == 401
            assert r.json() == {"statusCode": 401, "message": INVALID_KEY}
    assert seen == []


def test_key_in_header_or_query_is_accepted_and_stripped_before_forwarding(
    settings: StandInSettings, backend, seen
) -> None:
    with gateway(settings, backend[1]) as gw:
        r1 = gw.get("/api/predictions/SPY", headers={SUB_HEADER: KEY_A}, params={"n": "3"})
        r2 = gw.get("/api/predictions/IBM", params={"subscription-key": KEY_B, "n": "4"})
    assert r1.status_code == r2.status_code == 200
    assert [s["path"] for s in seen] == ["/api/predictions/SPY", "/api/predictions/IBM"]
    assert [s["query"] for s in seen] == [[("n", "3")], [("n", "4")]]
    for s in seen:
        assert SUB_HEADER.lower() not in s["headers"]
        assert KEY_A not in str(s) and KEY_B not in str(s)


def test_without_the_delete_policy_the_key_is_forwarded_like_apim(settings, backend, seen, tmp_path) -> None:
    """APIM does not strip the key by itself; only the policy's delete does. The gateway must not hide that."""
    policy = write_policy(tmp_path, "")
    with gateway(settings, backend[1], policy=policy) as gw:
        assert gw.get("/x", headers={SUB_HEADER: KEY_A}).status_code == 200
    assert seen[0]["headers"][SUB_HEADER.lower()] == KEY_A


# --- headers, body, status ---------------------------------------------------------------------------------


def test_policy_headers_reach_backend_and_client(settings: StandInSettings, backend, seen) -> None:
    with gateway(settings, backend[1]) as gw:
        r = gw.post(
            "/api/predict",
            headers={SUB_HEADER: KEY_A, "X-Forwarded-For": "10.0.0.9", "Content-Type": "application/json"},
            content=b'{"symbol": "SPY"}',
        )
    assert r.status_code == 200
    (got,) = seen
    assert got["method"] == "POST" and got["body"] == '{"symbol": "SPY"}'
    assert got["headers"]["x-forwarded-by"] == "tickcast-apim"
    assert got["headers"]["x-forwarded-for"] == "10.0.0.9, 203.0.113.7"
    assert got["headers"]["x-forwarded-host"] == "testserver"
    assert got["headers"]["content-type"] == "application/json"
    assert r.headers["x-tickcast-gateway"] == "tickcast-apim"
    assert "x-powered-by" not in r.headers
    assert r.json()["path"] == "/api/predict"


def test_backend_status_passes_through(settings: StandInSettings, backend, seen) -> None:
    with gateway(settings, backend[1]) as gw:
        r = gw.get("/missing/thing", headers={SUB_HEADER: KEY_A})
    assert r.status_code == 404
    assert r.headers["x-tickcast-gateway"] == "tickcast-apim"


# --- rate limit and quota ------------------------------------------------------------------------------------


def test_rate_limit_from_the_committed_policy(settings: StandInSettings, backend, seen) -> None:
    calls, period = policy_numbers("rate-limit-by-key")
    clock = FakeClock()
    with gateway(settings, backend[1], clock=clock) as gw:
        for i in range(calls):
            assert gw.get("/api/predictions/SPY", headers={SUB_HEADER: KEY_A}).status_code == 200, i
        r = gw.get("/api/predictions/SPY", headers={SUB_HEADER: KEY_A})
        assert r.status_code == 429
        assert r.headers["retry-after"] == str(period)
        assert r.json() == {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {period} seconds."}
        assert gw.get("/api/predictions/SPY", headers={SUB_HEADER: KEY_B}).status_code == 200  # per subscription
        clock.now += period
        assert gw.get("/api/predictions/SPY", headers={SUB_HEADER: KEY_A}).status_code == 200
    assert len(seen) == calls + 2


def test_rate_limit_window_slides_with_the_clock(settings: StandInSettings, backend, seen, tmp_path) -> None:
    policy = write_policy(
        tmp_path, '<rate-limit-by-key calls="3" renewal-period="10" counter-key="@(context.Subscription.Id)" />'
    )
    clock = FakeClock()
    headers = {SUB_HEADER: KEY_A}
    with gateway(settings, backend[1], policy=policy, clock=clock) as gw:
        assert gw.get("/a", headers=headers).status_code == 200  # t=0
        clock.now += 4
        assert gw.get("/a", headers=headers).status_code == 200  # t=4
        assert gw.get("/a", headers=headers).status_code == 200  # t=4
        r = gw.get("/a", headers=headers)
        assert (r.status_code, r.headers["retry-after"]) == (429, "6")  # the t=0 call leaves the window at t=10
        clock.now += 5.5  # t=9.5
        assert gw.get("/a", headers=headers).headers["retry-after"] == "1"
        clock.now += 0.5  # t=10: one slot free again, not three
        assert gw.get("/a", headers=headers).status_code == 200
        assert gw.get("/a", headers=headers).status_code == 429
        clock.now += 4  # t=14: both t=4 calls have left
        assert [gw.get("/a", headers=headers).status_code for _ in range(3)] == [200, 200, 429]
    assert len(seen) == 6  # rejected calls never reach the backend


def test_quota_403_and_renewal(settings: StandInSettings, backend, seen, tmp_path) -> None:
    policy = write_policy(
        tmp_path,
        '<rate-limit-by-key calls="100" renewal-period="60" counter-key="@(context.Subscription.Id)" />'
        '<quota-by-key calls="2" renewal-period="3600" counter-key="@(context.Subscription.Id)" />',
    )
    clock = FakeClock()
    with gateway(settings, backend[1], policy=policy, clock=clock) as gw:
        assert gw.get("/q", headers={SUB_HEADER: KEY_A}).status_code == 200
        clock.now += 60
        assert gw.get("/q", headers={SUB_HEADER: KEY_A}).status_code == 200
        r = gw.get("/q", headers={SUB_HEADER: KEY_A})
        assert r.status_code == 403
        assert r.headers["retry-after"] == "3540"
        assert r.json() == {
            "statusCode": 403,
            "message": "Out of call volume quota. Quota will be replenished in 00:59:00.",
        }
        assert gw.get("/q", headers={SUB_HEADER: KEY_B}).status_code == 200
        clock.now += 3540
        assert gw.get("/q", headers={SUB_HEADER: KEY_A}).status_code == 200
    assert len(seen) == 4


def test_replenish_time_format() -> None:
    assert format_replenish(59) == "00:00:59"
    assert format_replenish(86400) == "1.00:00:00"
    assert format_replenish(3 * 3600 + 5) == "03:00:05"


# --- request bodies (validate-content) -------------------------------------------------------------------------


def test_a_body_over_the_committed_max_size_is_413_and_never_forwarded(
    settings: StandInSettings, backend, seen
) -> None:
    (content,) = load_policy(POLICY_FILE).content_validations
    limit = content.max_size
    json_header = {SUB_HEADER: KEY_A, "Content-Type": "application/json"}
    with gateway(settings, backend[1]) as gw:
        r = gw.post("/api/predict", headers=json_header, content=b" " * (limit + 1))
        assert r.status_code == 413
        assert r.json() == {
            "statusCode": 413,
            "message": f"Request's body is {limit + 1} bytes long, which exceeds the configured limit of {limit} "
            "bytes.",
        }

        async def chunks() -> Any:  # no Content-Length: counted while read
            for _ in range(limit // 65536 + 2):
                yield b" " * 65536

        r = gw.post("/api/predict", headers=json_header, content=chunks())
        assert r.status_code == 413 and "exceeds the configured limit" in r.json()["message"]
        assert seen == []
        # exactly at the limit: forwarded untouched
        r = gw.post("/api/predict", headers=json_header, content=b" " * limit)
        assert r.status_code == 200
    assert len(seen) == 1 and len(seen[0]["body"]) == limit


def test_a_compressed_body_is_measured_decompressed(settings: StandInSettings, backend, seen, tmp_path) -> None:
    path = write_policy(
        tmp_path,
        '<validate-content unspecified-content-type-action="prevent" max-size="2000" size-exceeded-action="prevent">'
        '<content type="application/json" validate-as="json" action="ignore" /></validate-content>',
    )
    bomb = gzip.compress(b" " * 100_000)
    small = gzip.compress(b'{"symbol": "SPY"}')
    headers = {SUB_HEADER: KEY_A, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    with gateway(settings, backend[1], policy=path) as gw:
        assert len(bomb) < 2000
        r = gw.post("/api/predict", headers=headers, content=bomb)
        assert r.status_code == 413 and r.json()["statusCode"] == 413
        assert seen == []
        assert gw.post("/api/predict", headers=headers, content=small).status_code == 200
    assert len(seen) == 1 and seen[0]["headers"]["content-encoding"] == "gzip"  # forwarded as sent


def test_a_body_that_is_not_json_is_400_and_bodiless_calls_pass(settings: StandInSettings, backend, seen) -> None:
    with gateway(settings, backend[1]) as gw:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {SUB_HEADER: KEY_A} | ({"Content-Type": content_type} if content_type else {})
            r = gw.post("/api/predict", headers=headers, content=b"symbol=SPY")
            assert r.status_code == 400, content_type
            assert r.json()["statusCode"] == 400 and "application/json" in r.json()["message"]
        assert seen == []
        headers = {SUB_HEADER: KEY_A, "Content-Type": "application/json; charset=utf-8"}
        assert gw.post("/api/predict", headers=headers, content=b"{}").status_code == 200
        assert gw.get("/api/predictions/SPY", headers={SUB_HEADER: KEY_A}).status_code == 200
    assert [r["method"] for r in seen] == ["POST", "GET"]


# --- backend failures ----------------------------------------------------------------------------------------


def test_backend_down_is_502_quickly(settings: StandInSettings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with gateway(settings, dead) as gw:
        start = time.monotonic()
        r = gw.get("/api/predictions/SPY", headers={SUB_HEADER: KEY_A})
    assert r.status_code == 502
    assert r.json()["statusCode"] == 502
    assert time.monotonic() - start < 2
    port = dead.rsplit(":", 1)[1]
    assert "127.0.0.1" not in r.text and port not in r.text, "a public 502 must not name the backend's address"


def test_slow_backend_is_504_not_a_hang(settings: StandInSettings, backend, seen) -> None:
    with gateway(settings, backend[1], timeout_s=0.3) as gw:
        start = time.monotonic()
        r = gw.get("/slow", headers={SUB_HEADER: KEY_A})
    assert r.status_code == 504
    assert r.json()["statusCode"] == 504
    assert time.monotonic() - start < 2


# --- what the gateway refuses or reports --------------------------------------------------------------------


@pytest.mark.parametrize(
    "inbound",
    [
        '<ip-filter action="allow"><address>10.0.0.1</address></ip-filter>',
        '<validate-jwt header-name="Authorization"><openid-config url="https://x/.well-known" /></validate-jwt>',
        '<choose><when condition="@(true)"><check-header name="X" failed-check-httpcode="401" '
        'failed-check-error-message="no" ignore-case="true" /></when></choose>',
        '<rate-limit-by-key calls="5" renewal-period="60" counter-key="@(context.Subscription.Id)" '
        'increment-condition="@(context.Response.StatusCode == 200)" />',
        '<rate-limit-by-key calls="5" renewal-period="600" counter-key="@(context.Subscription.Id)" />',
        '<rate-limit-by-key calls="5" renewal-period="60" counter-key="@(context.Request.IpAddress)" />',
        '<rate-limit-by-key calls="5" renewal_period="60" counter-key="@(context.Subscription.Id)" />',
        '<quota-by-key calls="5" renewal-period="60" counter-key="@(context.Subscription.Id)" />',
        '<quota-by-key calls="5" bandwidth="100" renewal-period="3600" counter-key="@(context.Subscription.Id)" />',
        # validate-content: schema validation, content-type maps, sizes APIM refuses, unknown attributes
        '<validate-content unspecified-content-type-action="prevent" max-size="100" size-exceeded-action="prevent">'
        '<content type="application/json" validate-as="json" action="prevent" /></validate-content>',
        '<validate-content unspecified-content-type-action="prevent" max-size="100" size-exceeded-action="prevent">'
        '<content-type-map missing-content-type-value="application/json" /></validate-content>',
        '<validate-content unspecified-content-type-action="prevent" max-size="4194305" '
        'size-exceeded-action="prevent" />',
        '<validate-content unspecified-content-type-action="prevent" max-size="@(100)" '
        'size-exceeded-action="prevent" />',
        '<validate-content unspecified-content-type-action="block" max-size="100" size-exceeded-action="prevent" />',
        '<validate-content unspecified-content-type-action="prevent" max_size="100" size-exceeded-action="prevent" />',
        '<choose><when condition="@(true)"><validate-content unspecified-content-type-action="prevent" '
        'max-size="100" size-exceeded-action="prevent" /></when></choose>',
    ],
)
def test_policies_the_gateway_must_not_skip_stop_it(settings: StandInSettings, tmp_path: Path, inbound: str) -> None:
    path = write_policy(tmp_path, inbound)
    with pytest.raises(PolicyError):
        load_policy(path)
    with pytest.raises(PolicyError):
        create_app(settings, backend_url="http://127.0.0.1:9", policy=path)


def test_main_exits_2_on_a_refused_policy(tmp_path: Path) -> None:
    path = write_policy(tmp_path, '<ip-filter action="forbid"><address>1.2.3.4</address></ip-filter>')
    with pytest.raises(SystemExit) as exc:
        main(["--policy", str(path), "--port", "1"])
    assert exc.value.code == 2


def test_transforming_policies_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_policy(
        tmp_path,
        '<set-variable name="v" value="1" />'
        '<set-header name="X-Caller" exists-action="override"><value>@(context.Subscription.Name)</value></set-header>'
        '<rate-limit-by-key calls="7" renewal-period="30" counter-key="@(context.Subscription.Id)" />',
        outbound='<set-header name="X-A" exists-action="append"><value>1</value><value>2</value></set-header>',
    )
    with caplog.at_level("WARNING", logger="emulators.apim"):
        policy = load_policy(path)
    assert [u.element for u in policy.unsupported] == ["set-variable", "set-header"]
    assert "set-variable" in caplog.text and "X-Caller" in caplog.text
    assert policy.rate_limits == (RateLimitByKey(calls=7, renewal_period=30),)
    assert policy.quotas == ()
    assert policy.outbound_headers == (SetHeader("X-A", ("1", "2"), "append"),)


def test_malformed_documents_are_refused() -> None:
    for text in (
        "<policies><inbound>",
        "<policy />",
        "<policies><inbound /><inbound /></policies>",
        "<policies><x /></policies>",
    ):
        with pytest.raises(PolicyError):
            parse_policy(text)
    assert parse_policy(
        "<policies><inbound><quota-by-key calls='9' renewal-period='300' counter-key='all' /></inbound></policies>"
    ).quotas == (QuotaByKey(calls=9, renewal_period=300, counter_key="all"),)
