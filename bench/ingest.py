"""Benchmark: the market-data path end to end (Yahoo emulator -> Kafka -> Parquet lake), throughput and freshness.

    python bench/ingest.py [--symbols 20] [--days 5] [--runs 3] [--freshness-rounds 20]
                           [--session-timeout-ms MS] [--out bench/results/ingest.json]

Runs against the real services (Azurite, the Tansu broker, the Yahoo emulator as its own process), started
in a fresh temporary home on free ports (a running developer stack is not touched; stray ``TICKCAST_*``
variables of the calling shell are ignored, except ``TICKCAST_STACK__CACHE``). MLflow and Airflow are not
started: the ingest DAG only calls ``consume_to_lake``, which is what runs here.

The emulator serves N synthetic symbols (S00, S01, ...) and its clock is frozen (speed 0) at 15:00 New York
on a recent session day (``--clock``), so the work is deterministic: which minutes exist, which are
Yahoo-style nulls (0.2 %, dropped by the chart decoder) and which are closed.

1. Backfill throughput (the cold-start path, ``tickcast backfill --days N`` then one ingest run), ``--runs``
   times, each on fresh topics, a fresh consumer group and a fresh lake container; medians are reported:
   (a) ``backfill(settings, days)``: emulator -> validated bars -> Kafka (batch messages), acknowledged
       (``acks=all``);
   (b) ``consume_to_lake(settings, idle_seconds=3)``: Kafka -> lake upserts. Its time is measured from the
       call to the end of the last lake write (taken in its ``after_write`` hook, just before the last
       offset commit), i.e. the idle wait is not counted; the partition assignment is counted, as every
       ingest run pays it (it used to be a ~3 s consumer-group join). Broken down from the consumer's own
       report: the assignment ("join": call -> partitions
       assigned), then fetch, decode, lake writes and commits;
   (c) end to end: bars / (a + b); also without the join: bars / (a + b - join), and the consumer's
       steady state: bars / (first records fetched -> last lake write).
   Then the lake is checked: every symbol must hold exactly the closed, non-null minutes the emulator
   serves in the backfill window (compared as sets of minutes, no duplicate rows, nothing extra), the
   backfill must have published exactly that many and the consumer must have written them all with no
   dead letters. Any difference stops the benchmark with an error: a fast path that loses bars is no result.
   ``--session-timeout-ms`` overrides the consumer's session timeout (it set Tansu's join time when the
   consumer joined the group; with manual assignment it no longer matters).

2. Live freshness: the time from a minute closing on the emulator clock to that bar being readable in the
   lake. The poller (``Poller.poll_once`` in a thread every ``--poll-interval`` s, resuming from the lake
   like the producer service) and the consumer (``consume_to_lake`` in another thread) run concurrently.
   Each round advances the frozen clock by 60 s (``POST /_emulator/clock {"advance_s": 60}``): one minute
   closes at that instant. The round's latency is the time until ``Lake.last_ts(symbol)`` shows the new
   minute for every symbol (checked every ``--check-interval`` s; a symbol whose new minute is a null is
   not waited for). One unmeasured warm-up round first absorbs the consumer-group join and the poller's
   resume. It runs on the last backfill run's topic and lake. Also reported per round, from hooks in the same
   process: when the broker had acknowledged the
   last symbol's bar (``published``) and when the consumer had written it to the lake (``written``).
   In the deployed pipeline the producer polls once a minute (``TICKCAST_INGEST__POLL_INTERVAL_S``, at
   ``TICKCAST_INGEST__POLL_OFFSET_S`` after the minute boundary) and the ingest DAG consumes in slices,
   so real freshness adds up to that offset and the slice scheduling; this measures the path's own latency.

Prints a table and writes the figures (with the machine they ran on) to a JSON file.
Targets: end to end >= 20,000 bars/s on 2 cores; freshness p95 <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from bench.common import free_ports, machine, percentile
from tickcast.ingest.consumer import IngestReport, consume_to_lake
from tickcast.ingest.messages import decode_message
from tickcast.ingest.producer import BarPublisher, PendingSend, Poller, PublishError, backfill
from tickcast.lake.store import Lake
from tickcast.market.bar import Bar
from tickcast.market.yahoo import YahooClient
from tickcast.settings import Settings, load_settings
from tickcast_dev.stack.hooks import create_topics
from tickcast_dev.stack.supervisor import Supervisor

log = logging.getLogger("bench.ingest")

NEW_YORK = ZoneInfo("America/New_York")
SESSION_CLOSE = dtime(16, 0)
CLOCK_AT = dtime(15, 0)  # New York time the clock is frozen at: an hour of session left for freshness rounds
MINUTE_S = 60
DAY_S = 86_400
CHART_CHUNK_DAYS = 7  # the emulator (like Yahoo) serves at most 8 days of 1m bars per request
POLLER_SPAN_DAYS = 6  # the poller asks from max(watermark, REAL now - 7 days): keep the clock well inside that
TARGET_BARS_PER_S = 20_000
TARGET_FRESHNESS_P95_S = 5.0
KEEP_ENV = {"TICKCAST_STACK__CACHE"}


class BenchError(Exception):
    """The pipeline lost, duplicated or failed to deliver bars; the message says which."""


# --- helpers -------------------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "max": round(max(values), 3),
        "mean": round(statistics.fmean(values), 3),
    }


def default_clock(now: datetime) -> datetime:
    """15:00 New York on the most recent Friday whose session has closed, if within ``POLLER_SPAN_DAYS``.

    A Friday makes ``--days 5`` cover Monday-Friday whatever the weekday the benchmark runs on; if that
    Friday is too old for the poller's real-time window, the most recent closed weekday is used instead.
    """
    day = now.astimezone(NEW_YORK).date()
    fallback: datetime | None = None
    for _ in range(14):
        if day.weekday() < 5:
            close = datetime.combine(day, SESSION_CLOSE, tzinfo=NEW_YORK)
            at = datetime.combine(day, CLOCK_AT, tzinfo=NEW_YORK).astimezone(UTC)
            if close <= now:
                fallback = fallback or at
                if day.weekday() == 4 and now - at <= timedelta(days=POLLER_SPAN_DAYS):
                    return at
        day -= timedelta(days=1)
    assert fallback is not None
    return fallback


def check_clock(clock: datetime, now: datetime, rounds: int) -> None:
    ny = clock.astimezone(NEW_YORK)
    close = datetime.combine(ny.date(), SESSION_CLOSE, tzinfo=NEW_YORK)
    if ny.weekday() >= 5 or ny.time() < dtime(9, 30) or clock + timedelta(minutes=rounds + 1) > close:
        raise SystemExit(f"--clock {clock.isoformat()}: needs {rounds + 1} session minutes left (Mon-Fri, New York)")
    if clock + timedelta(minutes=rounds + 1) > now or now - clock > timedelta(days=POLLER_SPAN_DAYS):
        raise SystemExit(
            f"--clock {clock.isoformat()}: the poller asks the source for [watermark, real now + 1 min] within "
            f"7 days of real now, so the clock (plus the rounds) must be in the past but at most "
            f"{POLLER_SPAN_DAYS} days ago"
        )
    if clock.second or clock.microsecond:
        raise SystemExit(f"--clock {clock.isoformat()}: use a whole minute")


def parse_utc(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def isolate_environment() -> None:
    """Forget the shell's TICKCAST_* settings, so nothing can point this run at a developer's stack."""
    for name in [n for n in os.environ if n.startswith("TICKCAST_") and n not in KEEP_ENV]:
        del os.environ[name]


class Emulator:
    """The emulator's clock endpoint and its raw chart answers (the truth the lake is checked against)."""

    def __init__(self, settings: Settings) -> None:
        self.http = httpx.Client(base_url=settings.yahoo_base_url, timeout=30)
        self.client = YahooClient(settings)

    def close(self) -> None:
        self.http.close()
        self.client.close()

    def clock(self, **update: Any) -> dict[str, Any]:
        resp = self.http.post("/_emulator/clock", json=update)
        resp.raise_for_status()
        return dict(resp.json())

    def freeze_at(self, at: datetime) -> None:
        self.clock(speed=0)
        state = self.clock(set=at.isoformat())
        if state["epoch"] != at.timestamp() or state["speed"] != 0:
            raise BenchError(f"the emulator clock did not freeze at {at.isoformat()}: {state}")

    def closed_minutes(self, symbol: str, start: int, end: int) -> set[int]:
        """Epoch starts of the closed, non-null 1m bars the emulator serves in ``[start, end)``."""
        out: set[int] = set()
        for a in range(start, end, CHART_CHUNK_DAYS * DAY_S):
            b = min(a + CHART_CHUNK_DAYS * DAY_S, end)
            result = self.client.chart(symbol, period1=a, period2=b)["chart"]["result"][0]
            market_time = int(result["meta"]["regularMarketTime"])
            closes = (result["indicators"]["quote"][0] or {}).get("close") or []
            for ts, close in zip(result.get("timestamp") or [], closes, strict=True):
                if close is not None and ts + MINUTE_S <= market_time:
                    out.add(int(ts))
        return out

    def is_null(self, symbol: str, minute: int) -> bool:
        """Whether the (forming) minute starting at ``minute`` is one the source serves as nulls."""
        result = self.client.chart(symbol, period1=minute, period2=minute + MINUTE_S)["chart"]["result"][0]
        if result.get("timestamp") != [minute]:
            raise BenchError(
                f"{symbol}: the emulator does not serve the minute {minute} yet: {result.get('timestamp')}"
            )
        return bool(result["indicators"]["quote"][0]["close"][0] is None)


class WriteClock:
    """``after_write`` hook of ``consume_to_lake``: when the consumer wrote its batches to the lake."""

    def __init__(self, per_bar: bool) -> None:
        self.per_bar = per_bar
        self.first: float | None = None
        self.last: float | None = None
        self.written: dict[tuple[str, int], float] = {}

    def __call__(self, records: list[Any]) -> None:
        now = time.monotonic()
        self.first = self.first or now
        self.last = now
        if self.per_bar:
            for rec in records:
                for cols in decode_message(rec.value).columns:
                    for epoch in cols.ts.tolist():
                        self.written.setdefault((cols.symbol, epoch), now)


class TimedPublisher(BarPublisher):
    """The real publisher, noting when the broker had acknowledged each bar."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.acked: dict[tuple[str, int], float] = {}
        self._sent: dict[int, list[Bar]] = {}

    def send(self, bars: Iterable[Bar]) -> PendingSend:
        batch = list(bars)
        pending = super().send(batch)
        self._sent[id(pending)] = batch
        return pending

    def confirm(self, pending: PendingSend) -> int:
        sent = super().confirm(pending)
        now = time.monotonic()
        for bar in self._sent.pop(id(pending), []):
            self.acked.setdefault((bar.symbol, bar.epoch), now)
        return sent


def minute_epochs(df: Any) -> list[int]:
    return [int(ts.timestamp()) for ts in df["ts"]]


# --- 1. backfill throughput ----------------------------------------------------------------------------


def run_settings(settings: Settings, run: int) -> Settings:
    """Settings of one backfill run: its own topics, consumer group and lake container."""
    tag = f"run{run}"
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={
                    "bars_topic": f"{settings.kafka.bars_topic}.{tag}",
                    "dlq_topic": f"{settings.kafka.dlq_topic}.{tag}",
                    "consumer_group": f"{settings.kafka.consumer_group}-{tag}",
                }
            ),
            "storage": settings.storage.model_copy(
                update={"lake_container": f"{settings.storage.lake_container}-{tag}"}
            ),
        }
    )


def bench_backfill(
    settings: Settings,
    emu: Emulator,
    lake: Lake,
    clock: datetime,
    days: int,
    consumer_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    t0 = time.monotonic()
    report = backfill(settings, days)
    backfill_s = time.monotonic() - t0
    if report.errors:
        raise BenchError(f"backfill failed for {report.errors}")

    hook = WriteClock(per_bar=False)
    idle_s = 3.0
    t0 = time.monotonic()
    ingest = consume_to_lake(
        settings,
        max_seconds=max(120.0, report.bars / 500),
        idle_seconds=idle_s,
        after_write=hook,
        consumer_options=consumer_options,
    )
    if hook.last is None or hook.first is None or ingest.first_records_at is None or ingest.joined_at is None:
        raise BenchError(f"the consumer wrote nothing to the lake: {ingest.as_dict()}")
    consume_s = hook.last - t0
    first_write_s = hook.first - t0
    # the consumer's clock starts a little after ours (it builds its Kafka client first)
    offset = consume_s - (ingest.last_write_at or 0.0)
    join_s = ingest.joined_at + offset
    first_records_s = ingest.first_records_at + offset
    active_s = consume_s - first_records_s

    # the same window backfill asks for: the last `days` before the source's clock, closed minutes only
    end = int(clock.timestamp()) + MINUTE_S
    start = end - days * DAY_S
    verify_backfill(settings, emu, lake, report.per_symbol, ingest, start, end)

    total = report.bars
    return {
        "bars": total,
        "bars_per_symbol": round(total / len(settings.symbols)),
        "messages": ingest.messages,
        "window": [datetime.fromtimestamp(start, UTC).isoformat(), datetime.fromtimestamp(end, UTC).isoformat()],
        "backfill_s": round(backfill_s, 3),
        "consume_s": round(consume_s, 3),
        "consume_join_s": round(join_s, 3),
        "consume_first_records_s": round(first_records_s, 3),
        "consume_first_write_s": round(first_write_s, 3),
        "consume_active_s": round(active_s, 3),
        "consume_decode_s": round(ingest.decode_seconds, 3),
        "consume_lake_write_s": round(ingest.write_seconds, 3),
        "consume_commit_s": round(ingest.commit_seconds, 3),
        "consume_wall_s": round(ingest.seconds, 3),
        "consume_idle_s": idle_s,
        "consume_batches": ingest.batches,
        "lake_upserts": ingest.files_written,
        "backfill_bars_per_s": round(total / backfill_s),
        "consume_bars_per_s": round(total / consume_s),
        "consume_steady_bars_per_s": round(total / active_s),
        "end_to_end_s": round(backfill_s + consume_s, 3),
        "end_to_end_bars_per_s": round(total / (backfill_s + consume_s)),
        "end_to_end_without_join_bars_per_s": round(total / (backfill_s + consume_s - join_s)),
        "verified": True,
    }


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key: the median over runs of numbers (ints stay ints), the first run's value otherwise."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        if isinstance(first, int | float) and not isinstance(first, bool):
            m = statistics.median(r[key] for r in runs)
            out[key] = round(m) if isinstance(first, int) else round(m, 3)
        else:
            out[key] = first
    return out


def verify_backfill(
    settings: Settings,
    emu: Emulator,
    lake: Lake,
    published: dict[str, int],
    ingest: IngestReport,
    start: int,
    end: int,
) -> None:
    problems: list[str] = []
    total = 0
    for symbol in settings.symbols:
        expected = emu.closed_minutes(symbol, start, end)
        total += len(expected)
        if published.get(symbol) != len(expected):
            problems.append(
                f"{symbol}: backfill published {published.get(symbol)} bars, the source has {len(expected)}"
            )
        df = lake.read(
            symbol,
            datetime.fromtimestamp(start - DAY_S, UTC),
            datetime.fromtimestamp(end + DAY_S, UTC),
        )
        got = minute_epochs(df)
        unique = set(got)
        if len(got) != len(unique):
            problems.append(f"{symbol}: the lake holds {len(got) - len(unique)} duplicate rows")
        missing, extra = expected - unique, unique - expected
        if missing or extra:
            first = min(missing | extra)
            problems.append(
                f"{symbol}: the lake holds {len(unique)} minutes, expected {len(expected)} "
                f"({len(missing)} missing, {len(extra)} extra; first at {datetime.fromtimestamp(first, UTC)})"
            )
    if ingest.bars != total or ingest.dead_letters:
        problems.append(
            f"the consumer wrote {ingest.bars} bars ({ingest.dead_letters} dead letters); {total} were published"
        )
    if problems:
        raise BenchError("backfill verification failed:\n  " + "\n  ".join(problems))


# --- 2. live freshness ---------------------------------------------------------------------------------


class Worker(threading.Thread):
    """A daemon thread whose exception is kept for the main thread to raise."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as err:
            self.error = err
            log.exception("%s thread failed", self.name)


def bench_freshness(
    settings: Settings,
    emu: Emulator,
    lake: Lake,
    clock: datetime,
    rounds: int,
    poll_interval: float,
    check_interval: float,
    round_timeout: float,
) -> dict[str, Any]:
    symbols = list(settings.symbols)
    base = int(clock.timestamp())
    # which symbol has a real (non-null) bar in each round's minute: round 0 is the warm-up
    wanted: list[set[str]] = []
    nulls = 0

    publisher = TimedPublisher(settings)
    poller = Poller(settings, YahooClient(settings), publisher, lake_last_ts=Lake.from_settings(settings).last_ts)
    writes = WriteClock(per_bar=True)
    stop = threading.Event()
    publish_errors: list[str] = []

    def poll_loop() -> None:
        while not stop.is_set():
            try:
                poller.poll_once()
            except PublishError as err:  # the service logs and retries at the next poll; so do we
                publish_errors.append(str(err))
                log.error("%s", err)
            stop.wait(poll_interval)

    # the consumer stops after exactly the bars the rounds will publish, so it needs the count up front:
    # null-ness is deterministic, but the emulator only shows a minute once it has started, so peek ahead
    # by moving the frozen clock to each round's minute and back (nothing else is polling it yet).
    for k in range(rounds + 1):
        minute = base + k * MINUTE_S
        emu.clock(set=datetime.fromtimestamp(minute, UTC).isoformat())
        want = {s for s in symbols if not emu.is_null(s, minute)}
        nulls += len(symbols) - len(want)
        wanted.append(want)
    emu.freeze_at(clock)
    total_messages = sum(len(w) for w in wanted)
    results: dict[str, Any] = {}

    def consume() -> None:
        report = consume_to_lake(
            settings,
            max_seconds=(rounds + 1) * round_timeout + 60,
            max_messages=total_messages,
            after_write=writes,
        )
        results["consumer"] = report.as_dict()

    consumer = Worker("consumer", consume)
    polling = Worker("poller", poll_loop)
    consumer.start()
    polling.start()

    def check_threads() -> None:
        for w in (consumer, polling):
            if w.error is not None:
                raise BenchError(f"the {w.name} thread failed: {w.error!r}") from w.error

    rows: list[dict[str, float]] = []
    checks: list[float] = []
    try:
        for k in range(rounds + 1):
            minute = base + k * MINUTE_S
            pending = set(wanted[k])
            seen: dict[str, float] = {}
            timeout = round_timeout * (3 if k == 0 else 1)  # the warm-up includes the consumer-group join
            t0 = time.monotonic()
            emu.clock(advance_s=MINUTE_S)  # the minute starting at `minute` closes now
            while pending:
                check_threads()
                c0 = time.monotonic()
                for symbol in sorted(pending):
                    last = lake.last_ts(symbol)
                    if last is not None and int(last.timestamp()) >= minute:
                        seen[symbol] = time.monotonic() - t0
                        pending.discard(symbol)
                checks.append(time.monotonic() - c0)
                if pending and time.monotonic() - t0 > timeout:
                    raise BenchError(
                        f"round {k}: the minute {datetime.fromtimestamp(minute, UTC).isoformat()} did not reach the "
                        f"lake within {timeout:.0f} s for {sorted(pending)} (poller state: {poller.state.as_dict()})"
                    )
                if pending:
                    time.sleep(check_interval)
            if k == 0 or not seen:
                continue  # warm-up, or a minute that is null for every symbol
            rows.append(
                {
                    "visible": max(seen.values()),
                    "published": max(publisher.acked[(s, minute)] - t0 for s in seen),
                    "written": max(writes.written[(s, minute)] - t0 for s in seen),
                }
            )
        consumer.join(timeout=round_timeout)
        check_threads()
        if consumer.is_alive():
            raise BenchError(f"the consumer did not stop after the {total_messages} expected messages")
    finally:
        stop.set()
        polling.join(timeout=30)
        publisher.close()
        poller.client.close()
    if not rows:
        raise BenchError("no freshness round produced a bar")
    visible = [r["visible"] for r in rows]
    return {
        "rounds": len(rows),
        "latency_s": summary(visible),
        "stages_s": {
            "published": summary([r["published"] for r in rows]),
            "written": summary([r["written"] for r in rows]),
            "visible": summary(visible),
        },
        "rounds_s": [round(v, 3) for v in visible],
        "null_minutes_skipped": nulls,
        "publish_errors": len(publish_errors),
        "lake_check_sweep_s": round(statistics.fmean(checks), 3) if checks else None,
        "poller_polls": poller.state.polls,
        "consumer": results.get("consumer"),
    }


# --- main ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=20, help="number of synthetic symbols S00, S01, ...")
    ap.add_argument("--days", type=int, default=5, help="days to backfill (calendar days, as `tickcast backfill`)")
    ap.add_argument("--runs", type=int, default=3, help="backfill runs (fresh topics and lake each); medians")
    ap.add_argument("--session-timeout-ms", type=int, help="consumer session timeout (Tansu's join takes ~half)")
    ap.add_argument("--freshness-rounds", type=int, default=20, help="measured minutes (max 58)")
    ap.add_argument("--poll-interval", type=float, default=0.2, help="seconds between poller passes")
    ap.add_argument("--check-interval", type=float, default=0.1, help="seconds between lake checks")
    ap.add_argument("--round-timeout", type=float, default=30.0, help="seconds one round may take before failing")
    ap.add_argument("--clock", help="ISO-8601 UTC time to freeze the emulator at (default: 15:00 New York, recent)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ingest.json")
    args = ap.parse_args()
    if not 1 <= args.symbols <= 100 or not 1 <= args.days <= 29 or not 1 <= args.freshness_rounds <= 58:
        ap.error("--symbols 1..100, --days 1..29, --freshness-rounds 1..58")
    if not 1 <= args.runs <= 20:
        ap.error("--runs 1..20")
    consumer_options: dict[str, Any] = {}
    if args.session_timeout_ms:
        consumer_options = {
            "session_timeout_ms": args.session_timeout_ms,
            "heartbeat_interval_ms": max(100, args.session_timeout_ms // 4),
        }
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    now = datetime.now(UTC)
    clock = parse_utc(args.clock) if args.clock else default_clock(now)
    check_clock(clock, now, args.freshness_rounds)
    symbols = [f"S{i:02d}" for i in range(args.symbols)]

    isolate_environment()
    with tempfile.TemporaryDirectory(prefix="tickcast-bench-") as home:
        azurite, kafka, yahoo, producer, mlflow, airflow = free_ports(6)
        settings = load_settings(
            _env_file=None,
            symbols=symbols,
            stack={
                "home": home,
                "azurite_port": azurite,
                "kafka_port": kafka,
                "yahoo_port": yahoo,
                "producer_port": producer,
                "mlflow_port": mlflow,
                "airflow_port": airflow,
                "start_timeout_s": 300,
            },
        )
        os.environ.update(settings.to_env())
        sup = Supervisor(settings)
        emu: Emulator | None = None
        try:
            t0 = time.monotonic()
            sup.up(["azurite", "kafka", "yahoo"])
            stack_up_s = time.monotonic() - t0
            emu = Emulator(settings)
            emu.freeze_at(clock)
            runs: list[dict[str, Any]] = []
            for k in range(args.runs):
                run = run_settings(settings, k)
                create_topics(run)
                runs.append(bench_backfill(run, emu, Lake.from_settings(run), clock, args.days, consumer_options))
                print_run(k, runs[-1])
            backfill_result = {**medians(runs), "runs": runs}
            freshness = bench_freshness(
                run,
                emu,
                Lake.from_settings(run),
                clock,
                args.freshness_rounds,
                args.poll_interval,
                args.check_interval,
                args.round_timeout,
            )
        finally:
            if emu is not None:
                emu.close()
            sup.down()

    result: dict[str, Any] = {
        "benchmark": "ingest",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "parameters": {
            "symbols": args.symbols,
            "days": args.days,
            "freshness_rounds": args.freshness_rounds,
            "poll_interval_s": args.poll_interval,
            "check_interval_s": args.check_interval,
            "emulator_clock": clock.isoformat(),
            "kafka_partitions": settings.kafka.partitions,
            "runs": args.runs,
            "consumer_options": consumer_options,
        },
        "stack_up_s": round(stack_up_s, 1),
        "backfill": backfill_result,
        "freshness": freshness,
        "targets": {"end_to_end_bars_per_s": TARGET_BARS_PER_S, "freshness_p95_s": TARGET_FRESHNESS_P95_S},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result, args.out)


def print_run(k: int, b: dict[str, Any]) -> None:
    print(
        f"run {k}: {b['bars']} bars, produce {b['backfill_s']:.2f} s, consume {b['consume_s']:.2f} s "
        f"(join {b['consume_join_s']:.2f} s, lake writes {b['consume_lake_write_s']:.2f} s), "
        f"end to end {b['end_to_end_bars_per_s']:,} bars/s",
        flush=True,
    )


def print_table(result: dict[str, Any], out: Path) -> None:
    m, p, b, f = result["machine"], result["parameters"], result["backfill"], result["freshness"]
    ok = "ok" if b["end_to_end_bars_per_s"] >= TARGET_BARS_PER_S else "MISSED"
    fok = "ok" if f["latency_s"]["p95"] <= TARGET_FRESHNESS_P95_S else "MISSED"
    print(f"machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['platform']}, Python {m['python']}")
    print(f"stack (azurite, kafka, yahoo) up in {result['stack_up_s']:.1f} s; emulator clock {p['emulator_clock']}")
    print(
        f"backfill: {p['symbols']} symbols x {p['days']} days = {b['bars']} bars in {b['messages']} messages "
        f"(lake verified: every minute once); medians of {p['runs']} runs"
    )
    print(f"  (a) backfill  emulator -> Kafka   {b['backfill_s']:8.2f} s  {b['backfill_bars_per_s']:>9,} bars/s")
    print(
        f"  (b) consume   Kafka -> lake       {b['consume_s']:8.2f} s  {b['consume_bars_per_s']:>9,} bars/s"
        f"   (idle wait excluded; {b['consume_batches']} batches, {b['lake_upserts']} upserts)"
    )
    print(f"      partition assignment          {b['consume_join_s']:8.2f} s")
    print(
        f"      first records -> last write   {b['consume_active_s']:8.2f} s"
        f"  {b['consume_steady_bars_per_s']:>9,} bars/s"
        f"   (decode {b['consume_decode_s']:.2f} s, lake writes {b['consume_lake_write_s']:.2f} s,"
        f" commits {b['consume_commit_s']:.2f} s)"
    )
    print(
        f"  (c) end to end (a + b)            {b['end_to_end_s']:8.2f} s  {b['end_to_end_bars_per_s']:>9,} bars/s"
        f"   (target >= {TARGET_BARS_PER_S:,}: {ok})"
    )
    print(f"      end to end without the join              {b['end_to_end_without_join_bars_per_s']:>9,} bars/s")
    print(
        f"freshness: {f['rounds']} minutes, poll every {p['poll_interval_s']} s, lake checked every "
        f"{p['check_interval_s']} s (one sweep {f['lake_check_sweep_s']} s)"
    )
    print(f"  {'stage (s after the minute closed)':<36} {'p50':>7} {'p95':>7} {'max':>7}")
    for stage, label in (
        ("published", "acknowledged by the broker"),
        ("written", "written to the lake"),
        ("visible", "seen by Lake.last_ts"),
    ):
        s = f["stages_s"][stage]
        print(f"  {label:<36} {s['p50']:7.2f} {s['p95']:7.2f} {s['max']:7.2f}")
    print(f"  freshness p95 {f['latency_s']['p95']:.2f} s (target <= {TARGET_FRESHNESS_P95_S:.0f} s: {fok})")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
