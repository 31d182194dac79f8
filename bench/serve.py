"""Benchmark: the serving path, latency percentiles and throughput, from score.py alone to the public gateway.

    python bench/serve.py [--requests 400] [--concurrency 1,16] [--warmup 50] [--no-azmlinfsrv]
                          [--out bench/results/serve.json]

No training, no MLflow, no lake: the model is the tiny handmade ONNX graph + preprocessing.json of
``tests/unit/test_score.py`` (symbols SPY and IBM), and every request is the same valid ``{symbol, bars}``
body (SPY, the model's window of consecutive 1-minute bars + 5). Every service runs as its own process on a
free port, in a temporary folder, with only the ``TICKCAST_*`` variables set here (stray ones of the calling
shell are not passed on). Measured, for each concurrency level (default 1 and 16; a fixed ``--requests``
per level, after ``--warmup`` unmeasured requests):

(a) ``score``: score.py in this process, ``init()`` once then ``run(body)`` in a loop (concurrency 1 only);
(b) ``endpoint``: the AML endpoint stand-in (``python -m emulators.aml_endpoint``, uvicorn), ``POST /score``
    with the endpoint key. Its state dir is pre-populated the way its restart path reads it
    (``state.json`` with deployment ``blue`` Succeeded at 100 % traffic, ``deployments/blue/model/`` +
    ``deployments/blue/version.txt``), so it loads the model at start without MLflow;
(c) ``full``: gateway -> function -> endpoint, ``POST /api/predict`` with the bars in the body, through the
    APIM gateway stand-in (``python -m emulators.apim``, ``Ocp-Apim-Subscription-Key`` = the first
    subscription key) in front of the function app (``uvicorn tickcast.api.app:app_factory --factory``,
    ``TICKCAST_SERVING__ENDPOINT_URL`` = the stand-in of (b)). The policy's limits (cloud/apim/policy.xml:
    120 calls / 60 s and 10,000 / day per subscription) would answer 429 within a second, so the gateway
    runs a temporary copy of the policy with every ``calls="N"`` raised to 1,000,000,000 (``--policy``);
    everything else in it (key check, header rewrites) is enforced as usual;
(d) ``azmlinfsrv``: Microsoft's azureml-inference-server-http on the same score.py and model files (the
    reference for (b)), from the AML serving venv built/reused exactly as
    ``tests/integration/test_score_contract.py`` does (``<stack.cache>/venvs/aml-serving``, WORKER_COUNT=1);
    skipped with the reason printed when it cannot be built.

Latency is per request as the client sees it (httpx.AsyncClient over the serving hops' aiohttp transport,
one asyncio task per concurrent caller, keep-alive connections, all in this process: the client's own cost
is included and, on a small machine, competes with the servers for CPU). Throughput = measured requests /
wall time of the level. Any answer other than 200 stops the benchmark. Services log at ``warning`` (no
access log), azmlinfsrv at its default.

Prints a table with the targets beside the figures and writes them (with the machine) to a JSON file.
Targets: score p50 <= 1 ms; full path at concurrency 16 p50 <= 10 ms, p99 <= 50 ms and >= 300 req/s;
stand-in p50 at concurrency 1 within 1.5x of azmlinfsrv's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from tests.support.models import SCORE_PY, SYMBOLS, load_score, request_body, write_model

from bench.common import free_ports, machine, percentile
from tickcast.endpoint.http_transport import AiohttpTransport
from tickcast.settings import PROJECT_ROOT

ENDPOINT_KEY = "bench-endpoint-key"
SUBSCRIPTION_KEYS = ["bench-subscription-key-1", "bench-subscription-key-2"]
DEPLOYMENT = "blue"
MODEL_VERSION = "1"
RAISED_CALLS = 1_000_000_000
START_TIMEOUT_S = 90.0
TARGETS = {
    "score_p50_ms": 1.0,
    "full_c16_p50_ms": 10.0,
    "full_c16_p99_ms": 50.0,
    "full_c16_rps": 300.0,
    "endpoint_vs_azmlinfsrv_p50_c1": 1.5,
}


class BenchError(Exception):
    """Something the benchmark cannot measure around (a service that does not start, a non-200 answer)."""


def summary(latencies_s: list[float], wall_s: float, concurrency: int) -> dict[str, float | int]:
    ms = [x * 1000 for x in latencies_s]
    return {
        "concurrency": concurrency,
        "requests": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "max_ms": round(max(ms), 3),
        "rps": round(len(ms) / wall_s, 1),
    }


# --- processes ----------------------------------------------------------------------------------


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without TICKCAST_*/AZUREML_*/PYTHON* variables, plus ``extra``."""
    keep = {"TICKCAST_STACK__CACHE"}
    env = {
        k: v
        for k, v in os.environ.items()
        if k in keep or not k.startswith(("TICKCAST_", "AZUREML_", "PYTHON", "WORKER_"))
    }
    return env | extra


@contextmanager
def service(
    name: str, command: list[str], env: dict[str, str], workdir: Path, health_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command`` (own session, output to ``workdir/<name>.log``), wait for ``health_url`` 200, stop it."""
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(health_url, timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            try:
                proc.wait(timeout=0.1)  # the poll interval; returns early only if the service died
            except subprocess.TimeoutExpired:
                pass
            else:
                raise BenchError(f"{name} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"{name} not healthy after {START_TIMEOUT_S:.0f}s:\n{log_path.read_text()[-3000:]}")
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the service and its workers
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


# --- load ---------------------------------------------------------------------------------------


async def _load(
    url: str, headers: dict[str, str], body: bytes, concurrency: int, requests: int, warmup: int
) -> dict[str, float | int]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    transport = AiohttpTransport(max_connections=limits.max_connections or 100)
    async with httpx.AsyncClient(timeout=30.0, limits=limits, headers=headers, transport=transport) as client:

        async def batch(total: int) -> tuple[list[float], float]:
            left = [total]
            latencies: list[float] = []

            async def caller() -> None:
                while left[0] > 0:
                    left[0] -= 1
                    t0 = time.perf_counter()
                    response = await client.post(url, content=body)
                    latencies.append(time.perf_counter() - t0)
                    if response.status_code != 200:
                        raise BenchError(f"POST {url} answered {response.status_code}: {response.text[:500]}")

            t0 = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(concurrency)))
            return latencies, time.perf_counter() - t0

        await batch(max(warmup, concurrency))
        latencies, wall = await batch(requests)
    return summary(latencies, wall, concurrency)


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """User + system CPU seconds of a process and (``children``) its live children, e.g. uvicorn workers."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *(proc.children(recursive=True) if children else [])]:
        with suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def http_levels(
    url: str,
    headers: dict[str, str],
    body: bytes,
    levels: list[int],
    requests: int,
    warmup: int,
    services: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Check one answer is a prediction, then measure each concurrency level.

    ``services`` (name -> pid): their CPU time is sampled around each level (warm-up included) and reported as
    ``cpu_ms_per_request`` per service and for this client process, to show where a request's CPU goes.
    """
    first = httpx.post(url, content=body, headers=headers, timeout=30.0)
    if first.status_code != 200 or "predicted_close" not in first.json():
        raise BenchError(f"POST {url} answered {first.status_code}: {first.text[:500]}")
    pids = {"client": os.getpid(), **(services or {})}

    def sample() -> dict[str, float]:  # the services are this process's children: the client counts itself only
        return {name: cpu_seconds(pid, children=name != "client") for name, pid in pids.items()}

    out: list[dict[str, Any]] = []
    for c in levels:
        before = sample()
        run: dict[str, Any] = dict(asyncio.run(_load(url, headers, body, c, requests, warmup)))
        after, sent = sample(), requests + max(warmup, c)
        run["cpu_ms_per_request"] = {name: round((after[name] - before[name]) * 1000 / sent, 3) for name in pids}
        out.append(run)
    return out


def bench_score(model_root: Path, body: bytes, requests: int, warmup: int) -> dict[str, float | int]:
    """(a) score.py in-process: init() once, then run(body) ``requests`` times."""
    module = load_score("bench_score")
    saved = os.environ.get("AZUREML_MODEL_DIR")
    os.environ["AZUREML_MODEL_DIR"] = str(model_root)
    try:
        module.init()
    finally:
        if saved is None:
            os.environ.pop("AZUREML_MODEL_DIR", None)
        else:
            os.environ["AZUREML_MODEL_DIR"] = saved
    text = body.decode()
    run: Callable[[str], Any] = module.run
    for _ in range(warmup):
        run(text)
    latencies = []
    t_start = time.perf_counter()
    for _ in range(requests):
        t0 = time.perf_counter()
        out = run(text)
        latencies.append(time.perf_counter() - t0)
        if not isinstance(out, dict):
            raise BenchError(f"score.run answered an error: {out!r}")
    return summary(latencies, time.perf_counter() - t_start, 1)


def populate_endpoint_state(state_dir: Path) -> None:
    """What the stand-in's restart path reads: state.json + deployments/blue/{model/, version.txt}."""
    write_model(state_dir / "deployments" / DEPLOYMENT, version=MODEL_VERSION)
    state = {
        "version": 1,
        "deployments": {
            DEPLOYMENT: {"name": DEPLOYMENT, "model_version": MODEL_VERSION, "provisioning_state": "Succeeded"}
        },
        "traffic": {DEPLOYMENT: 100},
    }
    (state_dir / "state.json").write_text(json.dumps(state, indent=2))


def raised_policy(dest: Path) -> Path:
    """A copy of the gateway policy with every ``calls="N"`` raised, so the benchmark is not rate limited."""
    text = (PROJECT_ROOT / "cloud" / "apim" / "policy.xml").read_text(encoding="utf-8")
    raised, n = re.subn(r'\bcalls="\d+"', f'calls="{RAISED_CALLS}"', text)
    if n == 0:
        raise BenchError('cloud/apim/policy.xml has no calls="N" attribute to raise')
    dest.write_text(raised, encoding="utf-8")
    return dest


def azmlinfsrv_venv() -> tuple[Path | None, str | None]:
    """The AML serving venv as the contract test builds it, or (None, why it cannot be had)."""
    from tests.support.serving_venv import serving_venv

    try:
        return serving_venv(), None
    except (pytest.skip.Exception, pytest.fail.Exception) as err:
        return None, str(err.msg if hasattr(err, "msg") else err).strip()[:500]


# --- report -------------------------------------------------------------------------------------


def check(result: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, figure, met) for every target; met is None when the figure is missing."""
    by = {(r["name"], r["concurrency"]): r for r in result["runs"]}
    out: list[tuple[str, str, bool | None]] = []
    score = by.get(("score", 1))
    out.append(
        (
            f"score p50 <= {TARGETS['score_p50_ms']} ms",
            f"{score['p50_ms']:.3f} ms" if score else "n/a",
            score["p50_ms"] <= TARGETS["score_p50_ms"] if score else None,
        )
    )
    full = by.get(("full", 16))
    for key, label, field, op in (
        ("full_c16_p50_ms", "full c=16 p50 <= {} ms", "p50_ms", "le"),
        ("full_c16_p99_ms", "full c=16 p99 <= {} ms", "p99_ms", "le"),
        ("full_c16_rps", "full c=16 >= {} req/s", "rps", "ge"),
    ):
        target = TARGETS[key]
        if full is None:
            out.append((label.format(target), "n/a (concurrency 16 not run)", None))
            continue
        value = float(full[field])
        met = value <= target if op == "le" else value >= target
        out.append((label.format(target), f"{value:.3f} ms" if field != "rps" else f"{value:.1f} req/s", met))
    ratio = result.get("endpoint_vs_azmlinfsrv_p50_c1")
    out.append(
        (
            f"endpoint p50 c=1 <= {TARGETS['endpoint_vs_azmlinfsrv_p50_c1']}x azmlinfsrv",
            f"{ratio:.2f}x" if ratio is not None else f"n/a ({result.get('azmlinfsrv_skipped') or 'not run'})",
            ratio <= TARGETS["endpoint_vs_azmlinfsrv_p50_c1"] if ratio is not None else None,
        )
    )
    return out


def print_report(result: dict[str, Any], out: Path) -> None:
    m = result["machine"]
    print(f"machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['platform']}")
    print(f"requests per level: {result['requests']} (after {result['warmup']} warm-up)")
    print(
        f"{'path':<12} {'conc':>4} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'max ms':>9} {'req/s':>9}  "
        "CPU ms per request"
    )
    for r in result["runs"]:
        cpu = " ".join(f"{name} {ms:.2f}" for name, ms in r.get("cpu_ms_per_request", {}).items())
        print(
            f"{r['name']:<12} {r['concurrency']:>4} {r['p50_ms']:>9.3f} {r['p95_ms']:>9.3f} {r['p99_ms']:>9.3f} "
            f"{r['max_ms']:>9.3f} {r['rps']:>9.1f}  {cpu}"
        )
    if result.get("azmlinfsrv_skipped"):
        print(f"azmlinfsrv skipped: {result['azmlinfsrv_skipped']}")
    print("targets:")
    # Little's law: with 16 callers always waiting, mean latency = 16 / throughput
    print(
        f"  (at concurrency 16 a p50 of {TARGETS['full_c16_p50_ms']:.0f} ms needs about "
        f"{16_000 / TARGETS['full_c16_p50_ms']:,.0f} req/s: latency = concurrency / throughput)"
    )
    for label, figure, met in check(result):
        verdict = "ok" if met else ("MISSED" if met is False else "-")
        print(f"  {label:<40} {figure:<28} {verdict}")
    print(f"written to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=400, help="measured requests per path and level")
    ap.add_argument("--warmup", type=int, default=50, help="unmeasured requests before each level")
    ap.add_argument("--concurrency", default="1,16", help="comma-separated concurrency levels (default: 1,16)")
    ap.add_argument("--no-azmlinfsrv", action="store_true", help="skip the azmlinfsrv reference")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.json")
    args = ap.parse_args()
    levels = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    if not levels or min(levels) < 1 or args.requests < 1:
        ap.error("--concurrency needs levels >= 1 and --requests >= 1")

    body = request_body("SPY").encode()
    runs: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "benchmark": "serve",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "requests": args.requests,
        "warmup": args.warmup,
        "concurrency": levels,
        "request": {"symbol": "SPY", "bars": len(json.loads(body)["bars"]), "bytes": len(body)},
        "gateway_rate_limit": (
            f'policy copy with every calls="N" raised to {RAISED_CALLS} (cloud/apim/policy.xml: 120 calls/60 s, '
            "10,000/day per subscription)"
        ),
        "runs": runs,
    }
    with tempfile.TemporaryDirectory(prefix="tickcast-bench-serve-") as tmp:
        root = Path(tmp)
        model_root = write_model(root / "azureml-models" / "tickcast" / MODEL_VERSION, version=MODEL_VERSION)

        print("(a) score.py in-process ...", flush=True)
        runs.append({"name": "score", **bench_score(model_root, body, args.requests, args.warmup)})

        endpoint_port, function_port, gateway_port, aml_port = free_ports(4)
        endpoint_url = f"http://127.0.0.1:{endpoint_port}"
        function_url = f"http://127.0.0.1:{function_port}"
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        state_dir = root / "endpoint"
        populate_endpoint_state(state_dir)
        env = child_env(
            {
                "TICKCAST_PROFILE": "local",
                "TICKCAST_STACK__HOME": str(root / "home"),
                "TICKCAST_SYMBOLS": json.dumps(list(SYMBOLS)),
                "TICKCAST_SERVING__ENDPOINT_KEY": ENDPOINT_KEY,
                "TICKCAST_SERVING__ENDPOINT_URL": endpoint_url,
                "TICKCAST_GATEWAY__SUBSCRIPTION_KEYS": json.dumps(SUBSCRIPTION_KEYS),
                "PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}{PROJECT_ROOT / 'src'}",
            }
        )
        py = sys.executable
        endpoint_cmd = [py, "-m", "emulators.aml_endpoint", "--host", "127.0.0.1", "--port", str(endpoint_port)]
        endpoint_cmd += ["--state-dir", str(state_dir), "--log-level", "warning"]
        with service("endpoint", endpoint_cmd, env, root, endpoint_url + "/") as endpoint_proc:
            auth = {"Authorization": f"Bearer {ENDPOINT_KEY}", "Content-Type": "application/json"}
            print("(b) endpoint stand-in ...", flush=True)
            cpu = {"endpoint": endpoint_proc.pid}
            for r in http_levels(endpoint_url + "/score", auth, body, levels, args.requests, args.warmup, cpu):
                runs.append({"name": "endpoint", **r})

            function_cmd = [py, "-m", "uvicorn", "tickcast.api.app:app_factory", "--factory"]
            function_cmd += ["--host", "127.0.0.1", "--port", str(function_port), "--log-level", "warning"]
            gateway_cmd = [py, "-m", "emulators.apim", "--host", "127.0.0.1", "--port", str(gateway_port)]
            gateway_cmd += ["--backend", function_url, "--policy", str(raised_policy(root / "policy.xml"))]
            gateway_cmd += ["--log-level", "warning"]
            with (
                service("function", function_cmd, env, root, function_url + "/api/health") as function_proc,
                service("gateway", gateway_cmd, env, root, gateway_url + "/status-0123456789abcdef") as gateway_proc,
            ):
                cpu |= {"function": function_proc.pid, "gateway": gateway_proc.pid}
                key = {"Ocp-Apim-Subscription-Key": SUBSCRIPTION_KEYS[0], "Content-Type": "application/json"}
                print("(c) full path gateway -> function -> endpoint ...", flush=True)
                for r in http_levels(gateway_url + "/api/predict", key, body, levels, args.requests, args.warmup, cpu):
                    runs.append({"name": "full", **r})

        reason: str | None = "--no-azmlinfsrv" if args.no_azmlinfsrv else None
        venv: Path | None = None
        if reason is None:
            print("(d) azmlinfsrv reference (building/reusing the AML serving venv) ...", flush=True)
            venv, reason = azmlinfsrv_venv()
        if venv is not None:
            aml_env = child_env(
                {"AZUREML_MODEL_DIR": str(model_root), "PYTHONPATH": str(PROJECT_ROOT / "src"), "WORKER_COUNT": "1"}
            )
            aml_cmd = [str(venv / "bin" / "azmlinfsrv"), "--entry_script", str(SCORE_PY)]
            aml_cmd += ["--port", str(aml_port)]
            with service("azmlinfsrv", aml_cmd, aml_env, root, f"http://127.0.0.1:{aml_port}/"):
                headers = {"Content-Type": "application/json"}
                aml_url = f"http://127.0.0.1:{aml_port}/score"
                for r in http_levels(aml_url, headers, body, levels, args.requests, args.warmup):
                    runs.append({"name": "azmlinfsrv", **r})
        else:
            print(f"(d) azmlinfsrv skipped: {reason}", flush=True)
            result["azmlinfsrv_skipped"] = reason

    by = {(r["name"], r["concurrency"]): r for r in runs}
    if ("endpoint", 1) in by and ("azmlinfsrv", 1) in by:
        result["endpoint_vs_azmlinfsrv_p50_c1"] = round(by["endpoint", 1]["p50_ms"] / by["azmlinfsrv", 1]["p50_ms"], 2)
    result["targets"] = TARGETS
    result["targets_met"] = {label: met for label, _, met in check(result)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_report(result, args.out)


if __name__ == "__main__":
    main()
