"""The producer never dies of one symbol: a failure is caught, counted and shown on ``GET /status``; a far-future
watermark (a bar stored before such bars were refused) neither overflows nor stalls the symbol.

The Yahoo API is stood in for by ``httpx.MockTransport`` (a 200 with a body that is not JSON cannot be provoked
from the emulator) and the broker by a recording producer that acknowledges every send (no broker in unit
tests; the integration tests publish to the real one).
"""

from __future__ import annotations

import json
import threading
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from typing import Any

import httpx

from tickcast.ingest.producer import BarPublisher, Poller, _StatusHandler
from tickcast.market.yahoo import YahooClient
from tickcast.settings import load_settings

T0 = 1763994600  # 2025-11-24 14:30:00Z


@dataclass
class Meta:
    partition: int
    offset: int


class Acked:
    def __init__(self, meta: Meta) -> None:
        self.meta = meta

    def get(self, timeout: float | None = None) -> Meta:
        return self.meta


class RecordingProducer:
    """Stands in for the broker: every send is acknowledged at the next offset."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> Acked:
        self.sent.append((topic, key, value))
        return Acked(Meta(0, len(self.sent) - 1))

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def chart(symbol: str, n: int) -> dict[str, Any]:
    ts = [T0 + 60 * i for i in range(n)]
    quote = {k: [10.0] * n for k in ("open", "high", "low", "close")} | {"volume": [100] * n}
    return {
        "chart": {
            "result": [
                {
                    "meta": {"symbol": symbol, "regularMarketTime": T0 + 60 * n},
                    "timestamp": ts,
                    "indicators": {"quote": [quote]},
                }
            ],
            "error": None,
        }
    }


def poller(lake_last_ts: Any) -> tuple[Poller, RecordingProducer]:
    def handler(request: httpx.Request) -> httpx.Response:
        symbol = request.url.path.rsplit("/", 1)[-1]
        if symbol == "BAD":
            return httpx.Response(200, text="<html>maintenance</html>")  # resp.json() raises
        return httpx.Response(200, json=chart(symbol, 5))

    s = load_settings(_env_file=None, symbols=["GOOD", "BAD"], yahoo={"base_url": "http://yahoo.test", "retries": 0})
    producer = RecordingProducer()
    client = YahooClient(s, transport=httpx.MockTransport(handler), sleep=lambda _: None)
    return Poller(s, client, BarPublisher(s, producer=producer), lake_last_ts=lake_last_ts), producer


def test_a_symbol_that_raises_is_counted_and_shown_and_the_others_are_published() -> None:
    p, producer = poller(lambda symbol: None)
    for _ in range(2):
        p.poll_once()
    assert p.state.failures == {"BAD": 2} and "JSONDecodeError" in p.state.errors["BAD"]
    assert [k for _, k, _ in producer.sent] == [b"GOOD"], "GOOD published once, then nothing new"
    assert p.state.watermarks["GOOD"] == datetime.fromtimestamp(T0 + 240, UTC)

    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_StatusHandler,), {"poller": p}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/status", timeout=5) as resp:
            status = json.load(resp)
    finally:
        server.shutdown()
    assert status["failures"] == {"BAD": 2} and "JSONDecodeError" in status["errors"]["BAD"]
    assert status["failed_polls"] == 0 and status["polls"] == 2


def test_a_far_future_watermark_from_the_lake_is_ignored_not_overflowed() -> None:
    far = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    p, _ = poller(lambda symbol: far)
    sent = p.poll_once()
    assert sent == {"GOOD": 5}, "the current session is published, as without a watermark"
    assert p.state.watermarks["GOOD"] == datetime.fromtimestamp(T0 + 240, UTC)
    assert p.state.failures == {"BAD": 1}


def test_run_forever_outlives_a_poll_that_raises() -> None:
    p, _ = poller(lambda symbol: None)
    stop = threading.Event()
    calls: list[int] = []

    def exploding_poll() -> dict[str, int]:
        calls.append(1)
        stop.set()
        raise OverflowError("date value out of range")

    p.poll_once = exploding_poll  # type: ignore[method-assign]
    p.run_forever(stop)  # returns (stop is set) instead of dying with the OverflowError
    assert calls == [1] and p.state.failed_polls == 1
    assert "OverflowError: date value out of range" in str(p.state.last_failure)
    assert p.state.as_dict()["last_failure"] == p.state.last_failure
    assert datetime.now(UTC) - timedelta(minutes=1) < datetime.fromisoformat(str(p.state.last_failure).split()[0])
