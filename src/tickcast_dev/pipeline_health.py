"""Is the pipeline stuck? The verdict ``tickcast status`` prints and exits non-zero on.

A pipeline can look alive (every process healthy, the API answering 200) while nothing new reaches the
lake: a poison message, a broken codec, a failing task retried forever. This module judges the pipeline
from what it produces, not from its processes:

* **stale lake** — during the market session, a symbol's newest closed bar is more than
  :data:`STALE_AFTER_S` behind the source's clock (outside the session old bars are normal);
* **failing runs** — the newest finished run of ``ingest`` or ``retrain`` failed (shown with the failed
  task and the first error line of its log), or ``ingest`` has not succeeded for :data:`STALE_AFTER_S`
  during the session;
* **lag growing** — the ingest consumer group's lag rose at every one of the last samples over at least
  :data:`LAG_WINDOW_S` (samples are kept in ``<stack home>/state/lag.json``, so two ``tickcast status``
  calls a minute apart can tell; ``--watch`` samples on every refresh).

:func:`verdict` is pure (tested on its own); :func:`dag_health` and :func:`market_session` read Airflow's REST
API and the chart API's public ``meta`` with short timeouts.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx

from tickcast.settings import Settings
from tickcast_dev.airflow_client import AirflowClient
from tickcast_dev.http import shared as shared_http

__all__ = [
    "LAG_WINDOW_S",
    "STALE_AFTER_S",
    "DagHealth",
    "LagHistory",
    "MarketSession",
    "RunFailure",
    "dag_health",
    "first_error_line",
    "market_session",
    "verdict",
]

STALE_AFTER_S: Final = 120.0  # a lake more than 2 minutes behind the source during the session is stale
LAG_WINDOW_S: Final = 120.0  # lag must have grown over at least this long to count as "growing"
LAG_KEEP_S: Final = 900.0  # samples older than this are dropped
WATCHED_DAGS: Final = ("ingest", "retrain")
_ERROR_LINE = re.compile(r"(Error|Exception|Traceback|FAILED|failed)", re.IGNORECASE)
_MAX_LINE: Final = 240


@dataclass(frozen=True)
class MarketSession:
    """The source's clock and today's regular session, from the chart API's public ``meta``."""

    now: datetime
    start: datetime | None = None
    end: datetime | None = None

    @property
    def open(self) -> bool:
        return self.start is not None and self.end is not None and self.start <= self.now < self.end


@dataclass(frozen=True)
class RunFailure:
    run_id: str
    at: datetime | None
    task: str | None
    line: str


@dataclass(frozen=True)
class DagHealth:
    """What Airflow says of one DAG: its last success and, when its newest finished run failed, why."""

    dag_id: str
    last_success: datetime | None
    failure: RunFailure | None = None  # set when the newest FINISHED run failed
    failures_recent: int = 0  # failed runs among the last ones read


@dataclass
class LagHistory:
    """Consumer-lag samples ``(epoch seconds, lag)``, persisted between ``tickcast status`` calls."""

    samples: list[tuple[float, int]] = field(default_factory=list)
    path: Path | None = None

    @classmethod
    def load(cls, path: Path) -> LagHistory:
        try:
            raw = json.loads(path.read_text())
            samples = [(float(t), int(n)) for t, n in raw]
        except (OSError, ValueError, TypeError):
            samples = []
        return cls(samples, path)

    def add(self, at: datetime, lag: int) -> None:
        t = at.timestamp()
        self.samples = [(s, n) for s, n in self.samples if t - LAG_KEEP_S <= s < t] + [(t, lag)]
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(json.dumps(self.samples))
            except OSError:
                pass  # a status that cannot remember still answers

    def growing(self, window_s: float = LAG_WINDOW_S) -> bool:
        """Lag rose at every sample over the last ``window_s`` seconds (at least three samples) and is > 0."""
        if len(self.samples) < 3:
            return False
        newest = self.samples[-1][0]
        recent = [(t, n) for t, n in self.samples if t >= newest - window_s * 1.5]
        if len(recent) < 3 or recent[-1][0] - recent[0][0] < window_s:
            return False
        lags = [n for _, n in recent]
        return lags[-1] > 0 and all(b > a for a, b in itertools.pairwise(lags))


def verdict(
    ages_s: Mapping[str, float | None],
    session: MarketSession,
    dags: Sequence[DagHealth],
    lag: LagHistory | None = None,
    *,
    stale_after_s: float = STALE_AFTER_S,
    wall_now: datetime | None = None,
) -> list[str]:
    """Why the pipeline is stuck (empty: it is not). Pure: every input is already read.

    Bar ages are on the source's clock (``session.now``); Airflow's run times are on the wall clock
    (``wall_now``, default ``session.now``) — locally the emulator's clock can be days away from it.
    """
    reasons: list[str] = []
    if session.open:
        stale = {s: a for s, a in ages_s.items() if a is None or a > stale_after_s}
        if stale:
            shown = ", ".join(f"{s} {'no bars' if a is None else f'{a:.0f} s'}" for s, a in sorted(stale.items()))
            reasons.append(f"stale lake: newest bar more than {stale_after_s:.0f} s behind the source ({shown})")
    for dag in dags:
        if dag.failure is not None:
            f = dag.failure
            where = f" in task {f.task}" if f.task else ""
            reasons.append(f"{dag.dag_id}: the last run failed{where}: {f.line}")
        if dag.dag_id == "ingest" and session.open:
            last = dag.last_success
            if last is None or ((wall_now or session.now) - last).total_seconds() > stale_after_s:
                since = "never" if last is None else f"not since {last:%H:%M:%S} UTC"
                reasons.append(f"ingest has not succeeded during the session ({since})")
    if lag is not None and lag.growing():
        reasons.append(f"consumer lag growing: {' -> '.join(str(n) for _, n in lag.samples[-4:])} messages")
    return reasons


# --- readers ------------------------------------------------------------------------------------------------


def market_session(settings: Settings, timeout_s: float = 2.0) -> MarketSession:
    """The source's clock and regular session from the chart API's public ``meta`` (``regularMarketTime``,
    ``currentTradingPeriod.regular``); the wall clock and no session when the source does not answer."""
    symbol = settings.symbols[0]
    try:
        r = shared_http().get(
            f"{settings.yahoo_base_url}/v8/finance/chart/{symbol}",
            params={"interval": "1m", "range": "1d"},
            timeout=timeout_s,
        )
        meta = r.json()["chart"]["result"][0]["meta"]
        now = datetime.fromtimestamp(int(meta["regularMarketTime"]), UTC)
        regular = meta.get("currentTradingPeriod", {}).get("regular", {})
        start, end = regular.get("start"), regular.get("end")
        return MarketSession(
            now,
            datetime.fromtimestamp(int(start), UTC) if start is not None else None,
            datetime.fromtimestamp(int(end), UTC) if end is not None else None,
        )
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return MarketSession(datetime.now(UTC))


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def first_error_line(log: Any) -> str | None:
    """The first line of a task log that reads like an error (Airflow 3 returns structured events or text)."""
    if isinstance(log, Mapping):
        log = log.get("content", log)
    lines: list[str] = []
    if isinstance(log, str):
        lines = log.splitlines()
    elif isinstance(log, Sequence):
        for item in log:
            if isinstance(item, Mapping):
                text = str(item.get("event") or item.get("message") or "")
                if str(item.get("level", "")).lower() in ("error", "critical") and text:
                    return text.strip().splitlines()[0][:_MAX_LINE]
                lines.extend(text.splitlines())
            else:
                lines.extend(str(item).splitlines())
    for line in lines:
        if _ERROR_LINE.search(line) and "Traceback" not in line:
            return line.strip()[:_MAX_LINE]
    return None


def dag_health(client: AirflowClient, dag_id: str, *, look_back: int = 10) -> DagHealth:
    """The DAG's last success and, when its newest finished run failed, the failed task and first error line."""
    runs = client.runs(dag_id)[:look_back]
    finished = [r for r in runs if r.get("state") in ("success", "failed")]
    success = next((r for r in finished if r["state"] == "success"), None)
    last_success = _when(success.get("end_date")) if success else None
    failed = [r for r in finished if r["state"] == "failed"]
    failure = None
    if finished and finished[0]["state"] == "failed":
        run = finished[0]
        task, line = None, "no failed task found (the run was marked failed or timed out)"
        for ti in client.task_instances(dag_id, run["dag_run_id"], state="failed"):
            task = str(ti.get("task_id"))
            try:
                found = first_error_line(
                    client.task_log(dag_id, run["dag_run_id"], task, int(ti.get("try_number") or 1))
                )
            except Exception as err:  # the log server may be gone: the verdict still stands
                found = f"(log unreadable: {type(err).__name__})"
            line = found or "failed (no error line in its log)"
            break
        failure = RunFailure(str(run["dag_run_id"]), _when(run.get("end_date")), task, line)
    return DagHealth(dag_id, last_success, failure, len(failed))


def since(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "never"
    return f"{at:%Y-%m-%d %H:%M:%S} UTC ({int((now - at) / timedelta(seconds=1))} s ago)"
