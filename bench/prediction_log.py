"""Benchmark: what recording every served forecast costs the Function app's request path.

    python bench/prediction_log.py [--requests 3000] [--out bench/results/prediction_log.json]

The public API (:func:`tickcast.api.app.create_app`) in-process, driven through ``httpx.ASGITransport``;
the endpoint answers instantly from a canned body (``httpx.MockTransport``), so what is measured is the
Function app's own work per ``POST /api/predict`` (validation, the endpoint call, the answer) with the
prediction log OFF (``evaluation.log_predictions = false``) and ON, interleaved in rounds so drift on a
shared machine hits both alike. With the log on, a real :class:`tickcast.lake.predictions.PredictionLog`
writes batches in its own thread (to an in-memory container: the write is off the request path, so its
cost lands on the writer thread, not on the measured latency). Target: p50 ON − p50 OFF <= 0.2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import machine, percentile
from tickcast.settings import PROJECT_ROOT, load_settings

TARGET_MS = 0.2
SYMBOL = "SPY"


class _Blob:
    def __init__(self, store: dict[str, bytes], name: str) -> None:
        self.store, self.name = store, name

    def download_blob(self) -> Any:
        from types import SimpleNamespace

        from azure.core.exceptions import ResourceNotFoundError

        if self.name not in self.store:
            raise ResourceNotFoundError(self.name)
        data = self.store[self.name]
        return SimpleNamespace(properties=SimpleNamespace(etag=str(len(data))), readall=lambda: data)

    def upload_blob(self, data: bytes, **_: Any) -> None:
        self.store[self.name] = bytes(data)


class MemoryContainer:
    """An in-memory stand-in for the lake container (the writer thread's target)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def get_blob_client(self, name: str) -> _Blob:
        return _Blob(self.blobs, name)


def bars(n: int = 90) -> list[dict[str, Any]]:
    out, price = [], 100.0
    for i in range(n):
        ts = 1_717_421_400 + 60 * i  # 2024-06-03 13:30Z
        out.append(
            {"ts": ts, "open": price, "high": price * 1.001, "low": price * 0.999, "close": price, "volume": 1e4}
        )
        price *= 1.0001
    return out


def app(log_on: bool, container: MemoryContainer) -> Any:
    from tickcast.api.app import create_app
    from tickcast.lake.predictions import PredictionLog

    answer = {
        "symbol": SYMBOL, "as_of": "2024-06-03T14:59:00Z", "horizon_minutes": 1, "predicted_close": 101.0,
        "model_version": "1", "model_kind": "baseline", "interval": {"level": 0.8, "lower": 100.9, "upper": 101.1},
    }  # fmt: skip
    endpoint = httpx.MockTransport(lambda _: httpx.Response(200, json=answer))
    settings = load_settings(
        _env_file=None,
        symbols=[SYMBOL],
        serving={"endpoint_key": "k", "endpoint_url": "http://endpoint", "clock": "wall"},
        evaluation={"log_predictions": log_on},
    )
    return create_app(
        settings,
        endpoint_transport=endpoint,
        prediction_sink=PredictionLog(container).append,  # type: ignore[arg-type]
    )


async def measure(requests: int, rounds: int) -> dict[str, Any]:
    body = json.dumps({"symbol": SYMBOL, "bars": bars()}).encode()
    headers = {"content-type": "application/json"}
    container = MemoryContainer()
    apps = {"off": app(False, container), "on": app(True, container)}
    lat: dict[str, list[float]] = {"off": [], "on": []}
    clients = {k: httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://f") for k, a in apps.items()}
    try:
        for client in clients.values():  # warm up both
            for _ in range(200):
                (await client.post("/api/predict", content=body, headers=headers)).raise_for_status()
        for _ in range(rounds):
            for name, client in clients.items():
                for _ in range(requests // rounds):
                    t0 = time.perf_counter()
                    r = await client.post("/api/predict", content=body, headers=headers)
                    lat[name].append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        raise SystemExit(f"{name}: {r.status_code} {r.text[:300]}")
    finally:
        for client in clients.values():
            await client.aclose()
    recorder = apps["on"].state.prediction_log
    recorder.close()
    stats = recorder.stats().as_dict()
    out: dict[str, Any] = {}
    for name, xs in lat.items():
        ms = [x * 1e3 for x in xs]
        out[name] = {
            "n": len(ms),
            "p50_ms": percentile(ms, 50),
            "p95_ms": percentile(ms, 95),
            "mean_ms": statistics.fmean(ms),
        }
    out["p50_overhead_ms"] = out["on"]["p50_ms"] - out["off"]["p50_ms"]
    out["prediction_log"] = stats
    out["blobs_written"] = len(container.blobs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per variant")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "prediction_log.json")
    args = parser.parse_args()
    result = {"machine": machine(), **asyncio.run(measure(args.requests, args.rounds)), "target_ms": TARGET_MS}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    ok = "ok" if result["p50_overhead_ms"] <= TARGET_MS else "MISSED"
    print(f"POST /api/predict in-process, {result['on']['n']} requests per variant")
    print(f"  log off: p50 {result['off']['p50_ms']:.3f} ms, p95 {result['off']['p95_ms']:.3f} ms")
    print(f"  log on:  p50 {result['on']['p50_ms']:.3f} ms, p95 {result['on']['p95_ms']:.3f} ms")
    print(f"  p50 overhead {result['p50_overhead_ms'] * 1e3:.0f} us (target <= {TARGET_MS * 1e3:.0f} us: {ok})")
    print(f"  prediction log: {result['prediction_log']}; written to {args.out}")


if __name__ == "__main__":
    main()
