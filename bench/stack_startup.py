"""Benchmark: how fast the local stack comes up and goes down, and what each service costs in memory.

    python bench/stack_startup.py [--rounds N] [--out bench/results/stack_startup.json]

Measures, in a fresh temporary home on free ports (a running developer stack is not touched):
* cold up: first start with empty data directories (database migrations included), installs cached;
* warm up: later starts on the same data (what `just up` costs day to day), N rounds;
* down: time for `down` to stop every service and its children;
* RSS per service: the resident memory of each service's whole process tree once healthy.
Prints a table and writes the figures (with the machine they ran on) to a JSON file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench.common import stack_ports
from tickcast.settings import load_settings
from tickcast_dev.stack import procs
from tickcast_dev.stack.supervisor import Supervisor


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="warm up/down rounds")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stack_startup.json")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="tickcast-bench-") as home:
        ports = stack_ports()
        settings = load_settings(_env_file=None, stack={"home": home, "start_timeout_s": 300, **ports})
        os.environ.update(settings.to_env())
        sup = Supervisor(settings)
        try:
            cold = timed(sup.up)
            rss = rss_by_service(sup)
            downs = [timed(sup.down)]
            warms = []
            for _ in range(args.rounds):
                warms.append(timed(sup.up))
                downs.append(timed(sup.down))
        finally:
            sup.down()

    result: dict[str, Any] = {
        "benchmark": "stack_startup",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "cold_up_s": round(cold, 1),
        "warm_up_s": {"median": round(statistics.median(warms), 1), "max": round(max(warms), 1), "runs": len(warms)},
        "down_s": {"median": round(statistics.median(downs), 1), "max": round(max(downs), 1), "runs": len(downs)},
        "rss_mib": rss,
        "rss_total_mib": round(sum(rss.values()), 1),
        "targets": {"warm_up_s": 30, "down_s": 10},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    m = result["machine"]
    print(f"machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['platform']}")
    print(f"cold up (fresh data, installs cached): {result['cold_up_s']:6.1f} s")
    w, d = result["warm_up_s"], result["down_s"]
    print(f"warm up  median/max over {w['runs']}:        {w['median']:6.1f} / {w['max']:.1f} s   (target <= 30 s)")
    print(f"down     median/max over {d['runs']}:        {d['median']:6.1f} / {d['max']:.1f} s   (target <= 10 s)")
    for name, mib in rss.items():
        print(f"RSS {name:<10} {mib:8.1f} MiB")
    print(f"RSS total      {result['rss_total_mib']:8.1f} MiB")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
