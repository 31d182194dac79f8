"""Benchmark: how fast and how reliably the local stack comes up and goes down, and what each service costs.

    python bench/stack_startup.py [--rounds N] [--out bench/results/stack_startup.json]

Measures, in a fresh temporary home on free ports (a running developer stack is not touched):
* cold up: first start with empty data directories (database migrations included), installs cached;
* warm up: N restarts on the same data (what `just up` costs day to day); every other round is stopped
  mid-session with ``ingest`` runs triggered and pending (queued or running), so the next start meets them.
  A round counts as healthy when `up` returns with every service healthy; a failed start is recorded with
  its error and the benchmark goes on (the target is N of N);
* per service: seconds from its start to healthy, per round (where the time goes);
* down: time for `down` to stop every service and its children;
* RSS per service: the resident memory of each service's whole process tree once healthy.
The machine's load average is recorded beside the timings: on a shared machine it explains outliers.
Prints a table and writes the figures (with the machine they ran on) to a JSON file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench.common import machine, stack_ports
from tickcast.settings import Settings, load_settings
from tickcast_dev.stack import procs
from tickcast_dev.stack.supervisor import StackError, Supervisor

HEALTHY = re.compile(r"^(?P<name>[\w-]+): healthy after (?P<s>[\d.]+)s")
PENDING_RUNS = 3


def rss_by_service(sup: Supervisor) -> dict[str, float]:
    out = {}
    for name in sup.services:
        record = sup.pid_file(name).read()
        proc = procs.live_process(record) if record else None
        total = 0
        if proc is not None:
            for p in procs.process_tree(proc):
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        out[name] = round(total / 2**20, 1)
    return out


def timed(fn: Callable[[], object]) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def leave_runs_pending(settings: Settings, deadline_s: float = 60.0) -> int:
    """Trigger ``ingest`` runs and wait until one is running: the stop that follows is mid-session."""
    from tickcast_dev.airflow_client import AirflowClient

    with AirflowClient(settings) as af:
        for _ in range(PENDING_RUNS):
            af.trigger("ingest")
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline and not af.runs("ingest", state="running"):
            time.sleep(0.5)
        return len(af.runs("ingest", state="running")) + len(af.runs("ingest", state="queued"))


def summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"runs": 0}
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
        "runs": len(values),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10, help="warm up/down rounds")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stack_startup.json")
    args = ap.parse_args()

    messages: list[str] = []
    rounds: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    # not under a 0700 parent that others reset (the stack's PostgreSQL runs unprivileged as root)
    with tempfile.TemporaryDirectory(prefix="tickcast-bench-") as home:
        ports = stack_ports()
        settings = load_settings(_env_file=None, stack={"home": home, "start_timeout_s": 300, **ports})
        os.environ.update(settings.to_env())
        sup = Supervisor(settings, report=messages.append)
        try:
            cold = timed(sup.up)
            cold_services = {m["name"]: float(m["s"]) for m in map(HEALTHY.match, messages) if m}
            rss = rss_by_service(sup)
            downs = [timed(sup.down)]
            pending = 0
            for i in range(args.rounds):
                messages.clear()
                record: dict[str, Any] = {
                    "round": i + 1,
                    "pending_runs_at_start": pending,
                    "load_1m": round(os.getloadavg()[0], 2),
                }
                t0 = time.monotonic()
                try:
                    sup.up()
                    record["healthy"] = True
                except StackError as err:
                    record["healthy"] = False
                    record["error"] = str(err).splitlines()[0]
                record["up_s"] = round(time.monotonic() - t0, 1)
                record["services_s"] = {m["name"]: float(m["s"]) for m in map(HEALTHY.match, messages) if m}
                pending = 0
                if record["healthy"] and i % 2 == 0 and i + 1 < args.rounds:
                    try:
                        pending = leave_runs_pending(settings)
                    except Exception as err:  # the benchmark goes on; the round records why
                        record["pending_error"] = f"{type(err).__name__}: {err}"
                record["runs_left_pending_at_stop"] = pending
                downs.append(timed(sup.down))
                rounds.append(record)
                state = "healthy" if record["healthy"] else f"FAILED: {record.get('error')}"
                print(
                    f"round {i + 1:2d}: up {record['up_s']:5.1f} s ({state}); airflow "
                    f"{record['services_s'].get('airflow', float('nan')):.1f} s; pending at start "
                    f"{record['pending_runs_at_start']}; load {record['load_1m']}",
                    flush=True,
                )
        finally:
            sup.down()

    warms = [r["up_s"] for r in rounds if r["healthy"]]
    per_service = {
        name: summary([r["services_s"][name] for r in rounds if name in r["services_s"]])
        for name in sorted({n for r in rounds for n in r["services_s"]})
    }
    healthy = sum(1 for r in rounds if r["healthy"])
    result: dict[str, Any] = {
        "benchmark": "stack_startup",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "load_average_1_5_15": {"before": [round(x, 2) for x in load_before], "after": list(os.getloadavg())},
        "cold_up_s": round(cold, 1),
        "cold_services_s": cold_services,
        "warm_up_s": summary(warms),
        "warm_healthy": f"{healthy}/{len(rounds)}",
        "warm_with_pending_runs_healthy": (
            f"{sum(1 for r in rounds if r['healthy'] and r['pending_runs_at_start'])}/"
            f"{sum(1 for r in rounds if r['pending_runs_at_start'])}"
        ),
        "warm_services_s": per_service,
        "down_s": summary(downs),
        "rss_mib": rss,
        "rss_total_mib": round(sum(rss.values()), 1),
        "rounds": rounds,
        "targets": {"warm_up_s": 15, "warm_healthy": f"{len(rounds)}/{len(rounds)}", "down_s": 10},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    m = result["machine"]
    print(f"machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['platform']}; load {result['load_average_1_5_15']}")
    print(f"cold up (fresh data, migrations, installs cached): {result['cold_up_s']:6.1f} s")
    w, d = result["warm_up_s"], result["down_s"]
    print(f"warm up healthy: {result['warm_healthy']} (with runs pending: {result['warm_with_pending_runs_healthy']})")
    if w["runs"]:
        print(f"warm up  median/min/max: {w['median']:6.1f} / {w['min']:.1f} / {w['max']:.1f} s   (target <= 15 s)")
    print(f"down     median/max over {d['runs']}: {d['median']:6.1f} / {d['max']:.1f} s   (target <= 10 s)")
    for name, s in per_service.items():
        if s["runs"]:
            print(f"  {name:<10} healthy after median {s['median']:5.1f} s (max {s['max']:.1f})")
    for name, mib in rss.items():
        print(f"RSS {name:<10} {mib:8.1f} MiB")
    print(f"RSS total      {result['rss_total_mib']:8.1f} MiB")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
