"""The age of the data behind a forecast, the API's "now" to measure it on, and the stale-data refusal.

* **Data age** (``data_age_s`` of every prediction): seconds from the close of the newest bar used (its ``ts``
  + 60 s) to now, at least 0 — the measure ``tickcast status`` uses for the lake. For ``GET`` that bar is the
  lake's newest; for ``POST`` the caller's last one.
* **Now** comes from a :class:`Clock` (``settings.serving.clock``, decision 0070): :class:`WallClock` (this
  machine's UTC clock; the cloud default) or :class:`SourceClock`, the clock the bars are produced on:
  ``meta.regularMarketTime`` of the chart API at ``settings.yahoo_base_url`` — a public route of Yahoo and of
  the emulator alike (locally the emulator runs its own, emulated, clock). It is read at most every
  ``serving.clock_refresh_s`` seconds and advanced by the monotonic clock in between; when it cannot be read
  the last reading keeps advancing, and with no reading at all the age is unknown (``null``, never a 503).
* **Stale** (:func:`check_fresh`, ``GET`` only): during the regular session of now
  (:func:`tickcast.market.sessions.regular_session`), when ``now - max(newest close, session open)`` exceeds
  ``serving.max_data_age_s`` the API answers 503 ``stale_data`` naming the newest bar and its age instead of a
  stale forecast. Counting from the open lets the first minutes of a session pass while its first bars are
  ingested. Outside the session an old bar is normal: 200 with its age.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import httpx

from tickcast.api.backend import PredictionError
from tickcast.market.sessions import regular_session
from tickcast.settings import Settings

__all__ = [
    "BAR_S",
    "STALE_DATA",
    "STALE_RETRY_AFTER_S",
    "Clock",
    "SourceClock",
    "WallClock",
    "check_fresh",
    "data_age_s",
    "make_clock",
]

log = logging.getLogger("tickcast.api.app")

STALE_DATA: Final = "stale_data"
STALE_RETRY_AFTER_S: Final = 60  # a new bar closes every minute
BAR_S: Final = 60
_USER_AGENT: Final = "tickcast/0.1 (+https://github.com/tickcast)"


class Clock(Protocol):
    """The API's "now" (UTC), or ``None`` when it cannot be known."""

    async def now(self) -> datetime | None: ...

    async def aclose(self) -> None: ...


class WallClock:
    """This machine's UTC clock."""

    async def now(self) -> datetime | None:
        return datetime.now(UTC)

    async def aclose(self) -> None:
        return None


class SourceClock:
    """``meta.regularMarketTime`` of a Yahoo-shaped chart answer at ``url``, read every ``refresh_s`` seconds."""

    def __init__(
        self,
        url: str,
        *,
        refresh_s: float,
        timeout_s: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh_s = refresh_s
        self._timeout_s = timeout_s
        self._transport = transport
        self._monotonic = monotonic
        self._reading: tuple[datetime, float] | None = None  # (source time, monotonic time of the reading)
        self._tried_at: float | None = None
        self._failing = False
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None

    async def now(self) -> datetime | None:
        if self._due():
            async with self._lock:
                if self._due():
                    await self._refresh()
        if self._reading is None:
            return None
        source, at = self._reading
        return source + timedelta(seconds=self._monotonic() - at)

    def _due(self) -> bool:
        return self._tried_at is None or self._monotonic() - self._tried_at >= self.refresh_s

    async def _refresh(self) -> None:
        self._tried_at = self._monotonic()
        try:
            reading = await self._read()
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as err:
            if not self._failing:
                log.warning(
                    "the source's clock at %s cannot be read (%s: %s); %s",
                    self.url,
                    type(err).__name__,
                    str(err)[:200],
                    "advancing its last reading" if self._reading else "data age unknown until it answers",
                )
            self._failing = True
            return
        if self._failing:
            log.warning("the source's clock at %s answers again", self.url)
        self._failing = False
        self._reading = (reading, self._monotonic())

    async def _read(self) -> datetime:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=self._timeout_s,
                trust_env=False,
                headers={"User-Agent": _USER_AGENT, "Accept": "application/json"},
            )
        response = await self._client.get(self.url)
        response.raise_for_status()
        epoch = response.json()["chart"]["result"][0]["meta"]["regularMarketTime"]
        if isinstance(epoch, bool) or not isinstance(epoch, int | float) or not math.isfinite(epoch):
            raise ValueError(f"meta.regularMarketTime {epoch!r} is not epoch seconds")
        return datetime.fromtimestamp(epoch, UTC)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def make_clock(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> Clock:
    """The clock ``settings.serving.clock`` names (``auto``: the source in profile local, the wall in cloud)."""
    if settings.serving_clock == "wall":
        return WallClock()
    symbol = (settings.symbols[0] if settings.symbols else "SPY").strip().upper()
    url = f"{settings.yahoo_base_url}/v8/finance/chart/{symbol}?interval=1m&range=1d"
    return SourceClock(url, refresh_s=settings.serving.clock_refresh_s, transport=transport)


def data_age_s(bar_ts: datetime, now: datetime | None) -> float | None:
    """Seconds from the close of the bar starting at ``bar_ts`` to ``now`` (0.1 s, at least 0); None if unknown."""
    if now is None:
        return None
    return round(max((now - bar_ts).total_seconds() - BAR_S, 0.0), 1)


def check_fresh(symbol: str, bar_ts: datetime, now: datetime | None, max_age_s: float) -> None:
    """503 ``stale_data`` when, during the regular session of ``now``, the lake is more than ``max_age_s``
    behind it (see the module docstring); nothing outside the session, with ``max_age_s`` 0 or no clock."""
    if now is None or not max_age_s:
        return
    session = regular_session(now)
    if session is None:
        return
    opened = session[0]
    closed = bar_ts + timedelta(seconds=BAR_S)
    behind = (now - max(closed, opened)).total_seconds()
    if behind <= max_age_s:
        return
    age = data_age_s(bar_ts, now)
    raise PredictionError(
        503,
        STALE_DATA,
        f"the newest bar of {symbol} in the lake is from {bar_ts:%Y-%m-%d %H:%MZ} and closed {age:.0f} s ago, "
        f"more than the {max_age_s:g} s this API serves forecasts from during the session: ingestion is behind "
        "(operators: tickcast status); try again shortly, or POST /api/predict with your own bars",
        {
            "symbol": symbol,
            "newest_bar": bar_ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data_age_s": age,
            "max_data_age_s": max_age_s,
            "now": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        retry_after=STALE_RETRY_AFTER_S,
    )
