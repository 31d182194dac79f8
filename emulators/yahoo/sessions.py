"""The US regular-session calendar the emulator serves: which days trade and when each minute starts.

A session day is any Monday-Friday; exchange holidays are deliberately ignored (the synthetic market
trades on Thanksgiving). The regular session runs 09:30-16:00 America/New_York, so its 390 one-minute
bars start at 09:30 … 15:59 local time; Yahoo's pre (04:00-09:30) and post (16:00-20:00) periods are
only reported in ``meta``, never served as bars. Conversions to UTC go through ``zoneinfo``, so
daylight-saving changes move the UTC times (13:30Z in summer, 14:30Z in winter).

All times here are integer epoch seconds (UTC) unless a name says otherwise. The calendar (session days,
open, close) is :mod:`tickcast.market.sessions`, re-exported here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

# the calendar itself is the product's (one definition): the API judges staleness on it
from tickcast.market.sessions import CLOSE as CLOSE
from tickcast.market.sessions import NEW_YORK as NEW_YORK
from tickcast.market.sessions import OPEN as OPEN
from tickcast.market.sessions import is_session_day as is_session_day
from tickcast.market.sessions import local_epoch as local_epoch
from tickcast.market.sessions import session_close as session_close
from tickcast.market.sessions import session_open as session_open

EXCHANGE_TZ_NAME = "America/New_York"
PRE_OPEN = time(4, 0)
POST_CLOSE = time(20, 0)
MINUTES_PER_SESSION = 390
BAR_SECONDS = 60
DAY_SECONDS = 86_400


def ny_date(epoch: float) -> date:
    """The New York calendar date at ``epoch``."""
    return datetime.fromtimestamp(epoch, tz=NEW_YORK).date()


def to_utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def previous_session_day(day: date) -> date:
    d = day - timedelta(days=1)
    while not is_session_day(d):
        d -= timedelta(days=1)
    return d


def latest_session_started(epoch: float) -> date:
    """The most recent session day whose 09:30 open is at or before ``epoch``."""
    d = ny_date(epoch)
    if is_session_day(d) and session_open(d) <= epoch:
        return d
    return previous_session_day(d)


def recent_sessions(epoch: float, n: int) -> list[date]:
    """The ``n`` most recent session days that have begun by ``epoch``, oldest first."""
    days = [latest_session_started(epoch)]
    while len(days) < n:
        days.append(previous_session_day(days[-1]))
    return days[::-1]


def sessions_overlapping(start: int, end: int) -> list[date]:
    """Session days whose regular hours intersect ``[start, end)``, oldest first."""
    if end <= start:
        return []
    out: list[date] = []
    d = ny_date(start)
    last = ny_date(end - 1)
    while d <= last:
        if is_session_day(d) and session_open(d) < end and session_close(d) > start:
            out.append(d)
        d += timedelta(days=1)
    return out


def tz_abbrev_and_offset(epoch: float) -> tuple[str, int]:
    """New York's zone abbreviation (EST/EDT) and UTC offset in seconds at ``epoch``."""
    local = datetime.fromtimestamp(epoch, tz=NEW_YORK)
    offset = local.utcoffset()
    return local.tzname() or "EST", int(offset.total_seconds()) if offset is not None else 0


def _period(start: int, end: int) -> dict[str, Any]:
    abbrev, offset = tz_abbrev_and_offset(start)
    return {"timezone": abbrev, "start": start, "end": end, "gmtoffset": offset}


def trading_periods(day: date) -> dict[str, dict[str, Any]]:
    """Yahoo's ``currentTradingPeriod`` object for ``day``: pre, regular and post periods."""
    return {
        "pre": _period(local_epoch(day, PRE_OPEN), session_open(day)),
        "regular": _period(session_open(day), session_close(day)),
        "post": _period(session_close(day), local_epoch(day, POST_CLOSE)),
    }


def regular_period(day: date) -> dict[str, Any]:
    """One entry of Yahoo's ``tradingPeriods`` (the regular session of ``day``)."""
    return _period(session_open(day), session_close(day))
