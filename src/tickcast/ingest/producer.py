"""Source -> Kafka: the poller (a stack service) and the backfill (``tickcast backfill --days N``).

Only CLOSED minutes are published (the chart decoder drops the forming minute and null bars), keyed by
symbol so one symbol keeps its order, through an idempotent ``acks=all`` producer. Bars travel as batch
messages (up to ``BATCH_MAX_BARS`` bars of one symbol each, ``tickcast.ingest.messages``) on every path:
backfill, catch-up after a restart, and the live minute (a batch of one). A send counts only once the
broker acknowledged it: on failure :class:`PublishError` is raised and the watermark does not move, so
the next poll sends the same minutes again. Sends are confirmed together (one flush per backfill or per
poll pass), so the HTTP requests to the source overlap the producer's network I/O.

Where does a poll start? At the symbol's watermark (last minute published). On start-up the watermark
is the lake's last minute for the symbol — so after a restart of the memory-only broker, everything
not yet in the lake is fetched again from the source (Yahoo keeps 7 days of 1-minute bars). A watermark
later than the source's clock plus ``ingest.max_future_s`` (a far-future bar stored before the consumer
refused them) is ignored, so it can neither stall the symbol nor overflow ``mark + 1 minute``.

The poller never dies of one symbol or one poll: every exception of a symbol is caught, counted in
``failures`` and shown with its message in ``errors`` on ``GET /status``; an exception of a whole poll
(gap repair included) is counted in ``failed_polls`` with ``last_failure``, and the next poll runs on time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tickcast.errors import UnavailableError
from tickcast.ingest import kafka
from tickcast.ingest.messages import BATCH_MAX_BARS, encode_batches
from tickcast.market.bar import Bar
from tickcast.market.yahoo import YahooClient, YahooError, YahooUnavailable
from tickcast.settings import Settings, get_settings

log = logging.getLogger(__name__)
MINUTE = timedelta(minutes=1)


class PublishError(UnavailableError):
    """The broker did not acknowledge every bar; nothing after the first failure counts as sent."""


@dataclass
class PendingSend:
    """Messages handed to the producer and not yet confirmed: ``bars`` counts only once confirmed."""

    futures: list[Any] = field(default_factory=list)
    bars: int = 0


class BarPublisher:
    """Publishes bars to the bars topic as batch messages; nothing counts as sent before the broker's ack."""

    def __init__(self, settings: Settings, producer: Any | None = None, max_bars: int = BATCH_MAX_BARS) -> None:
        self.settings = settings
        self.topic = settings.kafka.bars_topic
        self.max_bars = max_bars
        self._own_producer = producer is None
        self._producer = producer or kafka.producer(settings)
        self._offsets: dict[int, int] = {}  # partition -> highest offset the broker acknowledged
        self.broker_lost_messages = False  # set when a partition's offsets went back (see confirm)

    def send(self, bars: Iterable[Bar]) -> PendingSend:
        """Hand ``bars`` to the producer (batched per symbol); :meth:`confirm` says whether they arrived."""
        pending = PendingSend()
        try:
            for key, value, count in encode_batches(bars, self.max_bars):
                pending.futures.append(self._producer.send(self.topic, key=key, value=value))
                pending.bars += count
        except Exception as err:
            raise PublishError(f"cannot hand bars to the producer for {self.settings.kafka_bootstrap}: {err}") from err
        return pending

    def confirm(self, pending: PendingSend) -> int:
        """Wait until the broker acknowledged every message of ``pending``; the number of bars, or PublishError."""
        if not pending.futures:
            return 0
        try:
            self._producer.flush(timeout=60)  # a no-op when an earlier confirm already flushed
        except Exception as err:
            raise PublishError(f"broker at {self.settings.kafka_bootstrap} did not take the bars: {err}") from err
        for fut in pending.futures:
            try:
                meta = fut.get(timeout=30)
            except Exception as err:
                raise PublishError(
                    f"broker at {self.settings.kafka_bootstrap} did not acknowledge a bar: {err}"
                ) from err
            self._note_offset(getattr(meta, "partition", None), getattr(meta, "offset", None))
        return pending.bars

    def _note_offset(self, partition: int | None, offset: int | None) -> None:
        """Offsets only grow on a broker that keeps its log; a smaller one means it restarted empty.

        That is how a restart of the memory-only local broker shows itself: what was sent before it and
        not yet ingested is gone, so the poller goes back to the lake's last minute (see Poller.poll_once).
        """
        if not isinstance(partition, int) or not isinstance(offset, int) or offset < 0:
            return
        if offset < self._offsets.get(partition, -1):
            log.warning(
                "partition %d of %s: offset %d after %d, the broker lost its log (restarted?)",
                partition,
                self.topic,
                offset,
                self._offsets[partition],
            )
            self.broker_lost_messages = True
            self._offsets.clear()
        self._offsets[partition] = max(offset, self._offsets.get(partition, -1))

    def publish(self, bars: Iterable[Bar]) -> int:
        """Send and confirm: the number of bars the broker acknowledged (PublishError otherwise)."""
        return self.confirm(self.send(bars))

    def renew(self) -> None:
        """After a failed send: a new producer (new producer ID), so a broker that restarted empty and no
        longer knows the old ID (``UnknownProducerIdError``) takes the next sends."""
        if not self._own_producer:
            return
        try:
            fresh = kafka.producer(self.settings)
        except Exception as err:  # broker still down: keep the old one, the next failure tries again
            log.warning("cannot create a new producer yet (%s); keeping the old one", err)
            return
        try:
            self._producer.close(timeout=1)
        except Exception as err:  # the old producer is being dropped: its close may fail on a dead broker
            log.debug("closing the failed producer: %s", err)
        self._producer = fresh
        self._offsets.clear()

    def close(self) -> None:
        self._producer.close(timeout=10)


@dataclass
class PollerState:
    watermarks: dict[str, datetime | None] = field(default_factory=dict)
    published: int = 0
    polls: int = 0
    repaired: int = 0  # minutes published again because the lake had lost them (see Poller.repair_gaps)
    errors: dict[str, str] = field(default_factory=dict)  # symbol -> its latest failure (cleared by a success)
    failures: dict[str, int] = field(default_factory=dict)  # symbol -> failed polls since start
    failed_polls: int = 0  # polls (or gap repairs) that raised as a whole
    last_failure: str | None = None
    last_poll: datetime | None = None
    source_time: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "watermarks": {k: v.isoformat() if v else None for k, v in self.watermarks.items()},
            "published": self.published,
            "polls": self.polls,
            "repaired": self.repaired,
            "errors": self.errors,
            "failures": self.failures,
            "failed_polls": self.failed_polls,
            "last_failure": self.last_failure,
            "last_poll": self.last_poll.isoformat() if self.last_poll else None,
            "source_time": self.source_time.isoformat() if self.source_time else None,
        }


class Poller:
    """Polls every configured symbol and publishes the minutes that closed since the watermark."""

    def __init__(
        self,
        settings: Settings,
        client: YahooClient,
        publisher: BarPublisher,
        lake_last_ts: Callable[[str], datetime | None] | None = None,
        lake_minutes: Callable[[str, datetime, datetime], set[datetime]] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.publisher = publisher
        self.state = PollerState()
        self._lake_last_ts = lake_last_ts
        self._lake_minutes = lake_minutes
        for symbol in settings.symbols:
            self.state.watermarks[symbol] = None
        self._resumed = False
        self._resent_after_newest: dict[str, datetime] = {}  # newest minute repair published past the lake's newest
        self._repairs = 0

    def _resume(self) -> None:
        if self._resumed or self._lake_last_ts is None:
            self._resumed = True
            return
        for symbol in self.settings.symbols:
            try:
                self.state.watermarks[symbol] = self._lake_last_ts(symbol)
            except Exception as err:  # the lake may be down; start from the current session instead
                log.warning("cannot read the lake's last minute of %s (%s); polling the current session", symbol, err)
        self._resumed = True

    def _source_now(self, symbol: str) -> datetime:
        """The source's own clock (meta.regularMarketTime), learnt once; the emulator's may be days behind."""
        if self.state.source_time is None:
            probe = self.client.bars(symbol, range_="1d")
            self.state.source_time = probe.market_time or datetime.now(UTC)
        return self.state.source_time

    def fresh_bars(self, symbol: str) -> list[Bar]:
        """The closed minutes of ``symbol`` after its watermark (the whole current session without one)."""
        mark = self.state.watermarks.get(symbol)
        if mark is not None and mark > self._source_now(symbol) + timedelta(seconds=self.settings.ingest.max_future_s):
            log.warning(
                "%s: watermark %s is later than the source's clock %s; polling the current session instead",
                symbol,
                mark.isoformat(),
                self._source_now(symbol).isoformat(),
            )
            mark = self.state.watermarks[symbol] = None
        if mark is None:
            got = self.client.bars(symbol, range_="1d")
        else:
            # The window starts after the watermark (but no further back than the source allows) and spans
            # the longest request the source accepts; the source returns only what exists up to its clock.
            # A watermark far behind catches up over a few polls.
            span = timedelta(days=self.settings.ingest.max_backfill_days)
            start = max(mark + MINUTE, self._source_now(symbol) - span + MINUTE)
            got = self.client.bars(symbol, start=start, end=start + span)
        if got.market_time:
            self.state.source_time = got.market_time
        for ts, reason in got.rejected:
            log.warning("%s: source bar at %s rejected: %s", symbol, ts, reason)
        return [b for b in got.bars if mark is None or b.ts > mark]

    def poll_symbol(self, symbol: str) -> int:
        """Fetch and publish one symbol's new minutes; the watermark moves once the broker has them."""
        fresh = self.fresh_bars(symbol)
        sent = self.publisher.publish(fresh)
        if fresh:
            self.state.watermarks[symbol] = max(b.ts for b in fresh)
        return sent

    def poll_once(self) -> dict[str, int]:
        """One pass over every symbol; a failing symbol is logged and does not stop the others.

        Every symbol's new minutes are handed to the producer first and confirmed together afterwards
        (one flush); a symbol's watermark moves only when all its messages were acknowledged. If any
        symbol's send failed, :class:`PublishError` is raised after the others were accounted for.
        """
        self._resume()
        sent: dict[str, int] = {}
        pending: list[tuple[str, list[Bar], PendingSend]] = []
        failed: list[PublishError] = []
        for symbol in self.settings.symbols:
            try:
                fresh = self.fresh_bars(symbol)
                pending.append((symbol, fresh, self.publisher.send(fresh)))
            except YahooError as err:
                self._fail(symbol, err)
                log.error("%s: the source refused the request: %s", symbol, err)
            except YahooUnavailable as err:
                self._fail(symbol, err)
                log.error("%s: source unavailable, will retry next poll: %s", symbol, err)
            except PublishError as err:
                self._fail(symbol, err)
                failed.append(err)
            except Exception as err:  # anything else one symbol meets must not stop the others, nor the poller
                self._fail(symbol, err)
                log.exception("%s: poll failed, will retry next poll", symbol)
        for symbol, fresh, handle in pending:
            try:
                sent[symbol] = self.publisher.confirm(handle)
            except PublishError as err:
                self._fail(symbol, err)
                failed.append(err)
                continue
            if fresh:
                self.state.watermarks[symbol] = max(b.ts for b in fresh)
            self.state.errors.pop(symbol, None)
        self.state.polls += 1
        self.state.published += sum(sent.values())
        self.state.last_poll = datetime.now(UTC)
        if failed:
            # Minutes sent before the failure may be gone with the broker (the local one keeps its log in
            # memory): the next poll starts again from the lake's last minute, with a new producer.
            self._resumed = False
            self.publisher.renew()
            raise failed[0]
        if self.publisher.broker_lost_messages and self._lake_last_ts is not None:
            # what went to the broker before it lost its log may not be in the lake: send again from there
            self.publisher.broker_lost_messages = False
            self._resumed = False
            log.warning("the broker lost messages: publishing again from the lake's last minute per symbol")
            again = self.poll_once()
            return {sym: sent.get(sym, 0) + again.get(sym, 0) for sym in set(sent) | set(again)}
        return sent

    def _fail(self, symbol: str, err: Exception) -> None:
        self.state.errors[symbol] = f"{type(err).__name__}: {err}"[:500]
        self.state.failures[symbol] = self.state.failures.get(symbol, 0) + 1

    def repair_gaps(self, lookback: bool = False) -> dict[str, int]:
        """Publish again the minutes the source has and the lake lost: the current session, or with ``lookback``
        every day up to ``ingest.max_backfill_days`` back (decisions 0013 and 0060).

        A minute is lost when the lake lacks it and either
        * holds a LATER minute of the symbol: the consumer writes each symbol's messages in order, so the minute
          was not merely slow (e.g. the local Azurite keeps its metadata in memory for up to 5 s, so a ``kill -9``
          can undo writes it had acknowledged); or
        * it closed at least ``ingest.repair_settle_s`` ago at the source: it was published and then lost with
          the memory-only local broker (a restart while the consumer lagged) or it never arrived. Such a minute
          is published again once per poller; if that copy is lost too, the broker restart shows in the offsets
          (:meth:`BarPublisher._note_offset`) and the poller goes back to the lake's newest minute.

        The source still has the minute (Yahoo keeps ~7 days), so it is published again and the upsert fills the
        hole. A symbol with nothing in the lake in the window is left to ``tickcast backfill``; one whose source
        or lake cannot be read is skipped until the next repair.
        """
        if self._lake_minutes is None:
            return {}
        repaired: dict[str, int] = {}
        settle = timedelta(seconds=self.settings.ingest.repair_settle_s)
        for symbol in self.settings.symbols:
            try:
                if lookback:
                    now = self._source_now(symbol)
                    span = timedelta(days=self.settings.ingest.max_backfill_days)
                    got = self.client.bars(symbol, start=now - span + MINUTE, end=now + MINUTE)
                else:
                    got = self.client.bars(symbol, range_="1d")
                if not got.bars:
                    continue
                first, last_source = min(b.ts for b in got.bars), max(b.ts for b in got.bars)
                stored = self._lake_minutes(symbol, first, last_source + MINUTE)
            except (YahooError, YahooUnavailable) as err:
                log.warning("%s: gap repair skipped, the source did not answer: %s", symbol, err)
                continue
            except Exception as err:  # the lake may be down: the next repair tries again
                log.warning("%s: gap repair skipped, the lake could not be read: %s", symbol, err)
                continue
            if not stored:
                continue
            newest = max(stored)
            settled = (got.market_time or last_source + MINUTE) - settle  # closed (ts + 1 min) before this
            resent = self._resent_after_newest.get(symbol, newest)
            holes = [
                b
                for b in got.bars
                if b.ts not in stored and (b.ts < newest or (b.ts + MINUTE <= settled and b.ts > resent))
            ]
            if holes:
                try:
                    count = self.publisher.publish(holes)
                except PublishError:
                    self.publisher.renew()  # e.g. a broker that restarted empty no longer knows the producer
                    raise
                after = [b.ts for b in holes if b.ts > newest]
                if after:
                    self._resent_after_newest[symbol] = max(after)
                log.warning(
                    "%s: the lake lacked %d minute(s) between %s and %s (%d after its newest); published them again",
                    symbol,
                    count,
                    min(b.ts for b in holes).isoformat(),
                    max(b.ts for b in holes).isoformat(),
                    len(after),
                )
                repaired[symbol] = count
        self.state.repaired += sum(repaired.values())
        return repaired

    def _poll_failed(self, err: Exception) -> None:
        self.state.failed_polls += 1
        self.state.last_failure = f"{datetime.now(UTC).isoformat()} {type(err).__name__}: {err}"[:500]

    def repair_due(self) -> dict[str, int]:
        """The repair of this turn: the whole lookback on the first one and every ``repair_lookback_every``-th."""
        every = self.settings.ingest.repair_lookback_every
        lookback = self._repairs == 0 or (every > 0 and self._repairs % every == 0)
        repaired = self.repair_gaps(lookback=lookback)
        self._repairs += 1  # not after a PublishError: a failed lookback repair is a lookback repair again
        return repaired

    def tick(self) -> None:
        """One turn of the service: a poll, and every ``ingest.repair_every_polls`` polls a gap repair. Never
        raises: a failed turn is counted in ``failed_polls`` and the next one runs on time."""
        cfg = self.settings.ingest
        try:
            counts = self.poll_once()
            if any(counts.values()):
                log.info("published %s", counts)
            if cfg.repair_every_polls and self.state.polls % cfg.repair_every_polls == 0:
                self.repair_due()
        except PublishError as err:
            self._poll_failed(err)
            log.error("%s; the same minutes will be sent again on the next poll", err)
        except Exception as err:  # the poller outlives any single poll
            self._poll_failed(err)
            log.exception("poll failed; polling again on the next tick")

    def run_forever(self, stop: threading.Event) -> None:
        """Poll on a fixed cadence aligned to minute boundaries (+offset) until ``stop`` is set; every
        ``ingest.repair_every_polls`` polls, repair the lake's holes (:meth:`repair_due`)."""
        cfg = self.settings.ingest
        while not stop.is_set():
            self.tick()
            now = time.time()
            wait = cfg.poll_interval_s - ((now - cfg.poll_offset_s) % cfg.poll_interval_s)
            stop.wait(wait)


@dataclass
class BackfillReport:
    bars: int = 0
    seconds: float = 0.0
    per_symbol: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def backfill(
    settings: Settings,
    days: int,
    *,
    client: YahooClient | None = None,
    publisher: BarPublisher | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> BackfillReport:
    """Publish the last ``days`` of closed minutes of every symbol, in chunks the source accepts.

    ``progress(symbol, chunks_done, chunks_total)`` is called after every chunk has been handed to the
    producer; the report counts a symbol's bars once the broker acknowledged all of them (one flush at the
    end). A failed send raises :class:`PublishError`.
    """
    own_client, own_pub = client is None, publisher is None
    client = client or YahooClient(settings)
    publisher = publisher or BarPublisher(settings)
    report = BackfillReport()
    t0 = time.monotonic()
    pending: dict[str, PendingSend] = {}
    try:
        for symbol in settings.symbols:
            try:
                probe = client.bars(symbol, range_="1d")
            except (YahooError, YahooUnavailable) as err:
                report.errors[symbol] = str(err)
                log.error("%s: backfill skipped: %s", symbol, err)
                continue
            end = (probe.market_time or datetime.now(UTC)) + MINUTE
            start = end - timedelta(days=days)
            span = timedelta(days=settings.ingest.max_backfill_days)
            chunks = []
            while start < end:
                chunks.append((start, min(start + span, end)))
                start += span
            handle = pending.setdefault(symbol, PendingSend())
            for i, (a, b) in enumerate(chunks):
                got = client.bars(symbol, start=a, end=b)
                sent = publisher.send(got.bars)  # confirmed all together at the end: one flush
                handle.futures.extend(sent.futures)
                handle.bars += sent.bars
                if progress:
                    progress(symbol, i + 1, len(chunks))
        for symbol, handle in pending.items():
            report.per_symbol[symbol] = publisher.confirm(handle)
            report.bars += report.per_symbol[symbol]
    finally:
        report.seconds = time.monotonic() - t0
        if own_client:
            client.close()
        if own_pub:
            publisher.close()
    return report


class _StatusHandler(BaseHTTPRequestHandler):
    poller: Poller

    def do_GET(self) -> None:
        if self.path not in ("/health", "/status"):
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps({"status": "ok", **self.poller.state.as_dict()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve_producer(settings: Settings | None = None, stop: threading.Event | None = None) -> None:
    """The producer stack service: poll forever and answer ``GET /health`` with the poller's state."""
    import signal

    from tickcast.lake.store import Lake

    s = settings or get_settings()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lake = Lake.from_settings(s)

    def lake_last_ts(symbol: str) -> datetime | None:  # a far-future bar in the lake is not the newest minute
        return lake.last_ts(symbol, not_after=datetime.now(UTC) + timedelta(seconds=s.ingest.max_future_s))

    poller = Poller(s, YahooClient(s), BarPublisher(s), lake_last_ts=lake_last_ts, lake_minutes=lake.minutes)
    handler = type("Handler", (_StatusHandler,), {"poller": poller})
    server = ThreadingHTTPServer((s.stack.host, s.stack.producer_port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log.info("producer polling %s every %.0fs from %s", s.symbols, s.ingest.poll_interval_s, s.yahoo_base_url)
    try:
        poller.run_forever(stop)
    finally:
        server.shutdown()
        poller.publisher.close()
        poller.client.close()
