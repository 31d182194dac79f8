"""The emulator's clock: which minute "now" is, so that bars appear as emulated time passes.

``EmulatorClock(start, speed)`` reads ``start + speed x (real seconds since start)``; speed 0 freezes it.
``set`` and ``advance`` move it (tests and demos do this through ``POST /_emulator/clock``).

The settings string ``TICKCAST_EMULATOR__CLOCK_START`` picks the start (:func:`clock_from_setting`):

* ``"now"``: the real current UTC time.
* an ISO-8601 time (``2026-11-25T15:00:00Z``; a time without zone is taken as UTC).
* ``"session"`` (default): **120 minutes after the 09:30 New York open of a session day** (plus the real
  clock's seconds within the current minute, so emulated minutes close on real minute boundaries), so that an hour
  of that day's bars is already there and new minutes keep closing while the clock runs at real-time
  speed. In synthetic mode the day is the latest Monday-Friday whose open has passed in real time (on a
  Saturday that is Friday; before 09:30 on a Tuesday it is Monday; holidays are not skipped). In tape mode
  it is the last day of the tape. The clock then runs forward from that point; once it passes 16:00 no
  new bars appear until the next session day's open in emulated time.
"""

from __future__ import annotations

import threading
import time as _time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from emulators.yahoo import sessions

SESSION_OFFSET = timedelta(minutes=120)  # > the 81 bars a prediction needs, so serving works at once


def parse_utc(value: str) -> datetime:
    """An ISO-8601 time as an aware UTC datetime (``Z`` accepted; naive means UTC)."""
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 time (e.g. 2026-11-25T15:00:00Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


class EmulatorClock:
    """Emulated UTC time: ``start + speed x real elapsed``. Thread-safe.

    ``monotonic`` is the real clock it runs on (``time.monotonic``); tests pass a fake one and move it.
    """

    def __init__(
        self, start: datetime, speed: float = 1.0, *, monotonic: Callable[[], float] = _time.monotonic
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("the clock start needs a time zone (use UTC)")
        if speed < 0:
            raise ValueError(f"clock speed {speed} is negative")
        self._lock = threading.Lock()
        self._base = start.astimezone(UTC)
        self._monotonic = monotonic
        self._real = monotonic()
        self._speed = float(speed)

    def _now_locked(self) -> datetime:
        return self._base + timedelta(seconds=self._speed * (self._monotonic() - self._real))

    def now(self) -> datetime:
        with self._lock:
            return self._now_locked()

    def epoch(self) -> float:
        return self.now().timestamp()

    @property
    def speed(self) -> float:
        return self._speed

    def set(self, t: datetime) -> None:
        """Jump to ``t`` (aware); the clock keeps running at its speed from there."""
        if t.tzinfo is None:
            raise ValueError("the clock time needs a time zone (use UTC)")
        with self._lock:
            self._base = t.astimezone(UTC)
            self._real = self._monotonic()

    def advance(self, seconds: float) -> None:
        """Move emulated time forward (or back, if negative) by ``seconds``."""
        with self._lock:
            self._base += timedelta(seconds=seconds)

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on, without a jump."""
        if speed < 0:
            raise ValueError(f"clock speed {speed} is negative")
        with self._lock:
            self._base = self._now_locked()
            self._real = self._monotonic()
            self._speed = float(speed)


def session_start(day: date) -> datetime:
    """The ``"session"`` starting point on ``day``: 120 minutes after the 09:30 New York open."""
    return sessions.to_utc(sessions.session_open(day)) + SESSION_OFFSET


def clock_from_setting(
    clock_start: str,
    speed: float,
    *,
    session_day: date | None = None,
    real_now: datetime | None = None,
) -> EmulatorClock:
    """Build the clock from ``TICKCAST_EMULATOR__CLOCK_START`` (see the module docstring).

    ``session_day`` overrides the day ``"session"`` picks (tape mode passes the tape's last day);
    ``real_now`` stands in for the real time (tests).
    """
    now = real_now or datetime.now(UTC)
    value = clock_start.strip()
    if value.lower() == "now":
        start = now
    elif value.lower() == "session":
        day = session_day or sessions.latest_session_started(now.timestamp())
        # keep the real clock's position within the minute, so emulated minutes close on real minute
        # boundaries and a poller that polls just after each real minute sees the new bar at once
        start = session_start(day) + timedelta(seconds=now.second, microseconds=now.microsecond)
    else:
        start = parse_utc(value)
    return EmulatorClock(start, speed)
