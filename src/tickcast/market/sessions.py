"""The US regular-session calendar: which days trade and when the session opens and closes.

A session day is any Monday-Friday; exchange holidays are not modelled (a holiday counts as a session day, so
on one the API may call the lake stale). The regular session runs 09:30-16:00 America/New_York; conversions
go through ``zoneinfo``, so daylight saving moves the UTC times (13:30Z in summer, 14:30Z in winter). The
Yahoo emulator (``emulators/yahoo/sessions.py``) serves bars on this same calendar.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Final
from zoneinfo import ZoneInfo

__all__ = [
    "CLOSE",
    "NEW_YORK",
    "OPEN",
    "is_session_day",
    "local_epoch",
    "regular_session",
    "session_close",
    "session_open",
]

NEW_YORK: Final = ZoneInfo("America/New_York")
OPEN: Final = time(9, 30)
CLOSE: Final = time(16, 0)


def local_epoch(day: date, at: time) -> int:
    """Epoch seconds of wall-clock time ``at`` in New York on ``day``."""
    return int(datetime.combine(day, at, tzinfo=NEW_YORK).timestamp())


def is_session_day(day: date) -> bool:
    """Monday-Friday (holidays are not modelled)."""
    return day.weekday() < 5


def session_open(day: date) -> int:
    """Epoch seconds of the regular session's open (the first bar starts then)."""
    return local_epoch(day, OPEN)


def session_close(day: date) -> int:
    """End of the regular session (the last bar starts one minute before)."""
    return local_epoch(day, CLOSE)


def regular_session(now: datetime) -> tuple[datetime, datetime] | None:
    """``(open, close)`` in UTC of the regular session that ``now`` (tz-aware) falls in, else ``None``."""
    day = now.astimezone(NEW_YORK).date()
    if not is_session_day(day):
        return None
    opens, closes = session_open(day), session_close(day)
    if not opens <= now.timestamp() < closes:
        return None
    return datetime.fromtimestamp(opens, UTC), datetime.fromtimestamp(closes, UTC)
