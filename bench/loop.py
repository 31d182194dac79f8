"""Benchmark: the inner loop a developer feels, command by command.

    python bench/loop.py [--figures bootstrap help status test_fast] [--rounds N] [--out bench/results/loop.json]

Figures (each one a function in FIGURES; pick with --figures, default all):
* bootstrap: `./just --list`, i.e. the overhead every `./just RECIPE` pays when nothing changed
  (local/bootstrap.sh plus just itself), and `local/bootstrap.sh` alone; median and max of N rounds;
* help: `tickcast --help` (CLI import time);
* status: `tickcast status` against whatever stack this checkout has (the figure records whether
  every service was healthy: the command's exit code);
* test_fast: one run of `./just test-fast` (wall time, and whether it passed).
More figures (a warm stack start, for instance) are one function each: ``def figure_x(args) -> dict``,
registered in FIGURES, and they land in the same JSON file.

Prints a table and merges the figures it measured into the JSON file (figures not measured this time
keep their earlier value, each with its own date and machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
TARGETS_S = {"bootstrap": 0.3, "status": 1.5, "test_fast": 30.0}


def machine() -> dict[str, Any]:
    from bench.common import machine as describe

    return describe()


def run_timed(cmd: list[str], *, timeout: float = 600, env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Wall seconds, exit code and combined output of one run of ``cmd`` from the checkout's root."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=env or dict(os.environ)
    )
    return time.perf_counter() - t0, proc.returncode, proc.stdout + proc.stderr


def repeated(cmd: list[str], rounds: int, *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One warm-up run (not counted), then ``rounds`` timed runs: median and max seconds."""
    _, rc, out = run_timed(cmd, env=env)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({rc}):\n{out[-2000:]}")
    times = [run_timed(cmd, env=env)[0] for _ in range(rounds)]
    return {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3), "runs": rounds}


def figure_bootstrap(args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "TICKCAST_BOOTSTRAPPED"}
    return {
        "just_list": repeated([str(ROOT / "just"), "--list"], args.rounds, env=env),
        "bootstrap_sh": repeated([str(ROOT / "local" / "bootstrap.sh")], args.rounds, env=env),
    }


def figure_help(args: argparse.Namespace) -> dict[str, Any]:
    return repeated([str(BIN / "tickcast"), "--help"], args.rounds)


def figure_status(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [str(BIN / "tickcast"), "status"]
    _, rc, _ = run_timed(cmd)
    times = [run_timed(cmd)[0] for _ in range(args.rounds)]
    return {
        "median_s": round(statistics.median(times), 3),
        "max_s": round(max(times), 3),
        "runs": args.rounds,
        # `tickcast status` exits 0 only when every service is healthy
        "stack": "healthy" if rc == 0 else "down or unhealthy",
    }


def figure_test_fast(args: argparse.Namespace) -> dict[str, Any]:
    seconds, rc, out = run_timed([str(ROOT / "just"), "test-fast", "-q", "-p", "no:cacheprovider"], timeout=1800)
    summary = next((line for line in reversed(out.splitlines()) if " in " in line and "passed" in line), "")
    return {"wall_s": round(seconds, 1), "passed": rc == 0, "summary": summary.strip("= ")}


FIGURES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "bootstrap": figure_bootstrap,
    "help": figure_help,
    "status": figure_status,
    "test_fast": figure_test_fast,
}


def headline(name: str, fig: dict[str, Any]) -> str:
    """One line per figure for the printed table."""
    if name == "bootstrap":
        j, b = fig["just_list"], fig["bootstrap_sh"]
        text = f"./just --list {j['median_s']:.3f} s (max {j['max_s']:.3f}); bootstrap.sh {b['median_s']:.3f} s"
        value = j["median_s"]
    elif name == "test_fast":
        text = f"{fig['wall_s']:.1f} s, {'passed' if fig['passed'] else 'FAILED'} ({fig['summary']})"
        value = fig["wall_s"]
    else:
        text = f"{fig['median_s']:.3f} s (max {fig['max_s']:.3f})" + (
            f", stack {fig['stack']}" if "stack" in fig else ""
        )
        value = fig["median_s"]
    target = TARGETS_S.get(name)
    return f"{name:<10} {text}" + (
        f"   (target <= {target:g} s{'' if value <= target else ': MISSED'})" if target else ""
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--figures", nargs="+", choices=list(FIGURES), default=list(FIGURES), help="which figures")
    ap.add_argument("--rounds", type=int, default=10, help="timed runs per repeated figure (after one warm-up)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "loop.json")
    args = ap.parse_args(argv)

    result: dict[str, Any] = {"benchmark": "loop", "figures": {}, "targets_s": TARGETS_S}
    if args.out.is_file():
        result["figures"].update(json.loads(args.out.read_text()).get("figures", {}))
    about = {"date": time.strftime("%Y-%m-%d"), "machine": machine()}
    for name in args.figures:
        fig = FIGURES[name](args)
        result["figures"][name] = {**fig, **about}
        print(headline(name, fig), flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"written to {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
