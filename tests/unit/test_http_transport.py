"""The aiohttp transport under httpx (``tickcast.endpoint.http_transport``) against a real local HTTP server."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tickcast.endpoint.http_transport import AiohttpTransport
from tickcast_dev.stack.procs import free_ports

TEXT = b'{"predicted_close": 101.25}' * 20


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    seen = {"method": request.method, "headers": request.headers.items(), "body": body.decode()}
    return JSONResponse({**seen, "query": request.url.query})


async def gzipped(_: Request) -> Response:
    return Response(gzip.compress(TEXT), headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})


async def slow(_: Request) -> Response:
    await asyncio.sleep(2.0)
    return Response(b"late")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    app = Starlette(
        routes=[
            Route("/echo", echo, methods=["GET", "POST"]),
            Route("/gzip", gzipped),
            Route("/slow", slow),
        ]
    )
    port = free_ports(1)[0]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = 100
    while not srv.started and deadline:
        threading.Event().wait(0.05)
        deadline -= 1
    assert srv.started, "the test server did not start within 5 s"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def call(base: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(base_url=base, transport=AiohttpTransport(), timeout=5.0) as client:
            return await client.request(method, path, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_the_request_goes_out_with_exactly_the_headers_httpx_built(server: str) -> None:
    body = json.dumps({"symbol": "SPY", "bars": [1, 2, 3]}).encode()
    r = call(server, "POST", "/echo?x=1", content=body, headers={"Content-Type": "application/json", "X-Trace": "7"})
    assert r.status_code == 200 and r.request.url.path == "/echo"
    seen = r.json()
    assert seen["method"] == "POST" and seen["body"] == body.decode() and seen["query"] == "x=1"
    names = [name for name, _ in seen["headers"]]
    assert sorted(names) == sorted(
        ["host", "accept", "accept-encoding", "user-agent", "content-type", "x-trace", "content-length"]
    ), "httpx's headers and the body's length, nothing aiohttp would add on its own"
    headers = dict(seen["headers"])
    assert headers["content-length"] == str(len(body)) and headers["user-agent"].startswith("python-httpx")


def test_a_compressed_body_is_decoded_once_and_its_raw_bytes_are_kept(server: str) -> None:
    async def go() -> tuple[bytes, bytes]:
        async with httpx.AsyncClient(base_url=server, transport=AiohttpTransport()) as client:
            decoded = (await client.get("/gzip")).content
            upstream = await client.send(client.build_request("GET", "/gzip"), stream=True)
            raw = b"".join([chunk async for chunk in upstream.aiter_raw()])
            await upstream.aclose()
            return decoded, raw

    decoded, raw = asyncio.run(go())
    assert decoded == TEXT, "httpx decodes Content-Encoding once"
    assert gzip.decompress(raw) == TEXT, "aiter_raw gives the bytes as sent (what the gateway forwards)"


def test_a_slow_answer_is_an_httpx_read_timeout(server: str) -> None:
    async def go() -> None:
        timeout = httpx.Timeout(0.3, connect=1.0)
        async with httpx.AsyncClient(base_url=server, transport=AiohttpTransport(), timeout=timeout) as client:
            await client.get("/slow")

    with pytest.raises(httpx.ReadTimeout):
        asyncio.run(go())


def test_nothing_listening_is_an_httpx_connect_error() -> None:
    port = free_ports(1)[0]
    with pytest.raises(httpx.ConnectError):
        call(f"http://127.0.0.1:{port}", "GET", "/echo")


def test_the_session_is_reused_and_closed_with_the_client(server: str) -> None:
    transport = AiohttpTransport()

    async def go() -> list[int]:
        async with httpx.AsyncClient(base_url=server, transport=transport) as client:
            codes = [(await client.get("/echo")).status_code for _ in range(3)]
            session = transport._session
            assert session is not None and not session.closed
        assert transport._session is None and session.closed
        return codes

    assert asyncio.run(go()) == [200, 200, 200]
