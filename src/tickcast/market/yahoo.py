"""HTTP client for Yahoo's v8 chart API — the same code reaches real Yahoo (profile cloud) or the emulator.

Requests time out, and transient failures (connection errors, timeouts, HTTP 429 and 5xx) are retried
with exponential backoff and full jitter, honouring ``Retry-After``. A 4xx answer other than 429 is
Yahoo saying the request is wrong (unknown symbol, bad range): it is raised at once as ``YahooError``
with Yahoo's own description, never retried.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from tickcast.errors import TickcastError, UnavailableError
from tickcast.market.chart import ChartBars, ChartError, chart_bars
from tickcast.settings import Settings, get_settings

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
USER_AGENT = "tickcast/0.1 (+https://github.com/tickcast)"


class YahooError(TickcastError):
    """Yahoo refused the request (unknown symbol, bad interval/range) — do not retry."""


class YahooUnavailable(UnavailableError):
    """Yahoo (or the emulator) could not be reached after every retry."""


class YahooClient:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        s = settings or get_settings()
        self.cfg = s.yahoo
        self.source = "yahoo" if s.profile == "cloud" and not s.yahoo.base_url else "emulator"
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=s.yahoo_base_url,
            timeout=s.yahoo.timeout_s,
            transport=transport,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> YahooClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), self.cfg.backoff_max_s)
        cap = min(self.cfg.backoff_max_s, self.cfg.backoff_s * 2**attempt)
        return random.uniform(0, cap)  # noqa: S311 - jitter, not cryptography

    def chart(self, symbol: str, **params: Any) -> dict[str, Any]:
        """The raw chart JSON for ``symbol`` (``range=1d`` or ``period1``/``period2``), with retries."""
        query = {"interval": "1m", "includePrePost": "false", **params}
        last: str = ""
        for attempt in range(self.cfg.retries + 1):
            retry_after = None
            try:
                resp = self._http.get(f"/v8/finance/chart/{symbol}", params=query)
            except httpx.TransportError as err:
                last = f"{type(err).__name__}: {err}"
            else:
                if resp.status_code == 200:
                    return dict(resp.json())
                if resp.status_code not in RETRYABLE_STATUS:
                    raise YahooError(f"{symbol}: HTTP {resp.status_code}: {_describe(resp)}")
                last = f"HTTP {resp.status_code}"
                retry_after = resp.headers.get("Retry-After")
            if attempt < self.cfg.retries:
                delay = self._backoff(attempt, retry_after)
                log.warning(
                    "chart %s failed (%s); retry %d/%d in %.1fs", symbol, last, attempt + 1, self.cfg.retries, delay
                )
                self._sleep(delay)
        raise YahooUnavailable(
            f"{symbol}: chart API at {self._http.base_url} unreachable after {self.cfg.retries + 1} attempts ({last})"
        )

    def bars(
        self, symbol: str, *, start: datetime | None = None, end: datetime | None = None, range_: str = "1d"
    ) -> ChartBars:
        """Closed, validated bars of ``symbol``: the last session (``range_``) or ``[start, end)``."""
        if start is not None:
            end = end or datetime.now(UTC)
            payload = self.chart(symbol, period1=int(start.timestamp()), period2=int(end.timestamp()))
        else:
            payload = self.chart(symbol, range=range_)
        try:
            return chart_bars(payload, source=self.source)
        except ChartError as err:
            raise YahooError(f"{symbol}: {err}") from None


def _describe(resp: httpx.Response) -> str:
    try:
        err = resp.json()["chart"]["error"]
        return f"{err['code']}: {err['description']}"
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]
