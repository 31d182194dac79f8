"""An httpx transport over aiohttp: the serving hops' HTTP client with aiohttp's C parser underneath.

The function app (to the endpoint) and the gateway (to the function app) forward every request through one
pooled ``httpx.AsyncClient``. httpx's own transport parses HTTP/1.1 in pure Python (h11); on 2 cores that
was the largest CPU cost per forwarded request after the scoring itself (``bench/serve.py``). This transport
keeps the httpx interface — timeouts, exceptions, ``MockTransport`` in tests — and sends with aiohttp.

What it guarantees to its callers:

* the request goes out with exactly the headers httpx built (no ``Accept``/``User-Agent``/``Content-Type``
  that aiohttp would add on its own; aiohttp sets ``Content-Length`` for the body);
* the response body is returned as received (no decompression here: httpx decodes ``Content-Encoding`` when
  ``.content`` is read, and ``aiter_raw()`` gives the bytes as sent, which is what the gateway forwards);
* httpx's timeouts apply (connect, read; the pool wait counts as connect) and failures raise httpx's
  exceptions: ``ConnectTimeout``, ``ReadTimeout``, ``ConnectError`` (refused, unresolvable),
  ``RemoteProtocolError`` (the server closed the connection), ``ReadError`` (a broken body);
* no proxy from the environment (``trust_env=False``): these hops are loopback or private network calls;
* redirects are not followed (httpx decides that, and the callers switch it off).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"})
_SKIP_AUTO = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=AiohttpTransport())``: one aiohttp session, created on first use."""

    def __init__(self, *, max_connections: int = 100, keepalive_s: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=self._keepalive_s)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, trust_env=False, skip_auto_headers=_SKIP_AUTO
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        limits: dict[str, Any] = request.extensions.get("timeout", {})
        connect = _sum(limits.get("pool"), limits.get("connect"))
        timeout = aiohttp.ClientTimeout(total=None, connect=connect, sock_read=limits.get("read"))
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.decode("latin-1").lower() not in _HOP_BY_HOP
        ]
        body = request.content  # httpx has read the body: the callers send bytes, never a stream
        try:
            async with session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                content = await response.read()
                return httpx.Response(
                    status_code=response.status,
                    headers=list(response.raw_headers),
                    stream=_ReadBody(content),  # read by httpx like a network body: aiter_raw() works
                    request=request,
                    extensions={"http_version": b"HTTP/1.1"},
                )
        except aiohttp.ConnectionTimeoutError as err:
            raise httpx.ConnectTimeout(str(err) or "connect timeout", request=request) from err
        except (TimeoutError, aiohttp.ServerTimeoutError) as err:
            raise httpx.ReadTimeout(str(err) or "read timeout", request=request) from err
        except aiohttp.ClientConnectorError as err:
            raise httpx.ConnectError(str(err), request=request) from err
        except aiohttp.ServerDisconnectedError as err:
            raise httpx.RemoteProtocolError(str(err) or "server disconnected", request=request) from err
        except aiohttp.ClientError as err:
            raise httpx.ReadError(f"{type(err).__name__}: {err}", request=request) from err

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _ReadBody(httpx.AsyncByteStream):
    """A body aiohttp has already read, handed to httpx as a one-chunk stream."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._content:
            yield self._content


def _sum(*parts: float | None) -> float | None:
    """Seconds, or None (no limit) when every part is None."""
    given = [p for p in parts if p is not None]
    return sum(given) if given else None
