"""The HTTP face of the emulator: FastAPI routes over a market source and the emulated clock.

* ``GET /v8/finance/chart/{symbol}``: Yahoo's chart API, 1-minute bars (rules in :mod:`chart`).
* ``GET /health``: ``{"status": "ok", "mode": ..., "clock": iso}``.
* ``GET|POST /_emulator/clock``: read or move the clock; POST takes any of ``{"set": iso}``,
  ``{"speed": x}``, ``{"advance_s": n}`` (applied in that order).
* ``GET /_emulator/oracle/{symbol}?period1=&period2=``: the synthetic market's best forecasts (409 in
  tape mode). Defaults to the current session; only bars whose next bar has closed by the clock
  (``ts + 120 s <= now``) are listed, so the oracle never shows a price the chart has not served yet.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from emulators.settings import StandInSettings, get_stand_in_settings
from emulators.yahoo import chart, sessions
from emulators.yahoo.clock import EmulatorClock, clock_from_setting, parse_utc
from emulators.yahoo.source import MarketSource
from emulators.yahoo.synthetic import SyntheticMarket
from emulators.yahoo.tape import TapeReplay

ORACLE_MAX_DAYS = 31


class ClockUpdate(BaseModel):
    """Body of ``POST /_emulator/clock``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    set_: str | None = Field(None, alias="set", description="jump to this ISO-8601 time (UTC)")
    speed: float | None = Field(None, ge=0, description="emulated seconds per real second (0 = frozen)")
    advance_s: float | None = Field(None, description="move the clock by this many seconds")


def build_source(settings: StandInSettings) -> MarketSource:
    """The market the settings ask for (``TICKCAST_EMULATOR__MODE``)."""
    em = settings.emulator
    if em.mode == "tape":
        return TapeReplay(em.tape_dir)
    return SyntheticMarket(
        em.seed, [s.upper() for s in settings.symbols], em.phi, em.default_phi, null_fraction=em.null_fraction
    )


def _iso(epoch: float) -> str:
    return sessions.to_utc(epoch).isoformat().replace("+00:00", "Z")


def _clock_state(clock: EmulatorClock) -> dict[str, Any]:
    now = clock.epoch()
    return {"now": _iso(now), "epoch": now, "speed": clock.speed}


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(v) else round(float(v), 6) for v in values.tolist()]


def create_app(
    settings: StandInSettings | None = None,
    *,
    clock: EmulatorClock | None = None,
    source: MarketSource | None = None,
) -> FastAPI:
    """The emulator app. Without arguments everything comes from :func:`emulators.settings.get_stand_in_settings`."""
    cfg = settings if settings is not None or (source is not None and clock is not None) else get_stand_in_settings()
    if source is None:
        assert cfg is not None
        source = build_source(cfg)
    market: MarketSource = source
    if clock is None:
        assert cfg is not None
        real_now = datetime.now(UTC)
        clock = clock_from_setting(
            cfg.emulator.clock_start,
            cfg.emulator.clock_speed,
            session_day=market.default_session_day(real_now),
            real_now=real_now,
        )
    the_clock = clock

    app = FastAPI(title="tickcast Yahoo chart-API emulator", version="1")
    app.state.source = market
    app.state.clock = the_clock

    @app.exception_handler(chart.ChartError)
    async def _chart_error(_: Request, err: chart.ChartError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "mode": market.mode, "clock": _iso(the_clock.epoch())}

    @app.get("/v8/finance/chart/{symbol}")
    def chart_endpoint(
        symbol: str,
        interval: str | None = None,
        range_: str | None = Query(None, alias="range"),
        period1: str | None = None,
        period2: str | None = None,
        includePrePost: str | None = None,
    ) -> dict[str, Any]:
        now = the_clock.epoch()
        ivl = chart.check_interval(interval)
        sym = symbol.strip().upper()
        if not market.has_symbol(sym):
            raise chart.not_found()
        window = chart.resolve_window(market, sym, now, interval=ivl, range_=range_, period1=period1, period2=period2)
        return chart.chart_result(market, sym, window, now, ivl)

    @app.get("/_emulator/clock")
    def get_clock() -> dict[str, Any]:
        return _clock_state(the_clock)

    @app.post("/_emulator/clock")
    def post_clock(update: ClockUpdate = Body(...)) -> Any:  # noqa: B008 - FastAPI's idiom
        if update.set_ is None and update.speed is None and update.advance_s is None:
            return JSONResponse({"error": 'send {"set": iso}, {"advance_s": n} or {"speed": x}'}, status_code=422)
        if update.set_ is not None:
            try:
                the_clock.set(parse_utc(update.set_))
            except ValueError as err:
                return JSONResponse({"error": str(err)}, status_code=422)
        if update.speed is not None:
            the_clock.set_speed(update.speed)
        if update.advance_s is not None:
            the_clock.advance(update.advance_s)
        return _clock_state(the_clock)

    @app.get("/_emulator/oracle/{symbol}")
    def oracle(symbol: str, period1: int | None = None, period2: int | None = None) -> Any:
        if not isinstance(market, SyntheticMarket):
            return JSONResponse(
                {"error": f"the oracle exists only for the synthetic market; this emulator replays a {market.mode}"},
                status_code=409,
            )
        sym = symbol.strip().upper()
        if not market.has_symbol(sym):
            return JSONResponse(chart.not_found().body(), status_code=404)
        now = the_clock.epoch()
        if period1 is None:
            current = market.recent_sessions(sym, now, 1)
            period1 = sessions.session_open(current[0]) if current else math.floor(now)
        end = min(period2 if period2 is not None else math.floor(now), math.floor(now) - 119)
        if end - period1 > ORACLE_MAX_DAYS * sessions.DAY_SECONDS:
            return JSONResponse({"error": f"ask for at most {ORACLE_MAX_DAYS} days at once"}, status_code=400)
        cols = market.oracle_arrays(sym, period1, max(end, period1))
        p = market.params(sym)
        rmse = market.oracle_rmse(sym, period1, max(end, period1))
        return {
            "symbol": sym,
            "phi": p.phi,
            "sigma": p.sigma,
            "definition": "oracle = close * exp(phi * r + sigma^2 / 2): E[close of the next bar | bars up to ts]",
            "theoretical_oracle_rmse": None if math.isnan(rmse) else rmse,
            "ts": [int(t) for t in cols["ts"].tolist()],
            "close": _floats(cols["close"]),
            "next_close": _floats(cols["next_close"]),
            "oracle": _floats(cols["oracle"]),
        }

    return app
