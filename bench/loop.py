"""Benchmark: the inner loop a developer feels, command by command.

    python bench/loop.py [--figures bootstrap help status test_fast] [--rounds N] [--out bench/results/loop.json]

Figures (each one a function in FIGURES; pick with --figures, default all):
* bootstrap: `./just --list`, i.e. the overhead every `./just RECIPE` pays when nothing changed
  (local/bootstrap.sh plus just itself), and `local/bootstrap.sh` alone; median and max of N rounds;
* help: `tickcast --help` (CLI import time);
* status: `tickcast status` against the stack the settings point at (TICKCAST_* variables included;
  the figure records how many services were healthy);
* test_fast: one run of `./just test-fast` (wall time, and whether it passed).
More figures (a warm stack start, for instance) are one function each: ``def figure_x(args) -> dict``,
registered in FIGURES, and they land in the same JSON file.

Every timed figure has its wall time and its CPU time (user + system of the command and its children):
on a machine shared with other work the wall time grows with the load, the CPU time much less.
Prints a table and merges the figures it measured into the JSON file (figures not measured this time
keep their earlier value, each with its own date and machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
TARGETS_S = {"bootstrap": 0.3, "status": 1.5, "test_fast": 30.0}


def machine() -> dict[str, Any]:
    from bench.common import machine as describe

    return describe()


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float  # user + system of the command and its children
    rc: int
    output: str


def run_timed(cmd: list[str], *, timeout: float = 600, env: dict[str, str] | None = None) -> Run:
    """One run of ``cmd`` from the checkout's root."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=env or dict(os.environ)
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu, proc.returncode, proc.stdout + proc.stderr)


def summary(runs: list[Run]) -> dict[str, Any]:
    walls = [r.wall_s for r in runs]
    return {
        "median_s": round(statistics.median(walls), 3),
        "max_s": round(max(walls), 3),
        "cpu_median_s": round(statistics.median(r.cpu_s for r in runs), 3),
        "runs": len(runs),
    }


def repeated(
    cmd: list[str], rounds: int, *, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)
) -> tuple[dict[str, Any], Run]:
    """One warm-up run (not counted), then ``rounds`` timed runs; their summary and the warm-up run."""
    first = run_timed(cmd, env=env)
    if first.rc not in ok:
        raise SystemExit(f"{' '.join(cmd)} failed ({first.rc}):\n{first.output[-2000:]}")
    return summary([run_timed(cmd, env=env) for _ in range(rounds)]), first


def figure_bootstrap(args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "TICKCAST_BOOTSTRAPPED"}
    return {
        "just_list": repeated([str(ROOT / "just"), "--list"], args.rounds, env=env)[0],
        "bootstrap_sh": repeated([str(ROOT / "local" / "bootstrap.sh")], args.rounds, env=env)[0],
    }


def figure_help(args: argparse.Namespace) -> dict[str, Any]:
    return repeated([str(BIN / "tickcast"), "--help"], args.rounds)[0]


def figure_status(args: argparse.Namespace) -> dict[str, Any]:
    """Against the stack the settings point at (TICKCAST_* variables included); exit 1 = not all healthy."""
    env = {**os.environ, "COLUMNS": "200"}
    result, first = repeated([str(BIN / "tickcast"), "status"], args.rounds, env=env, ok=(0, 1))
    rows = [[c.strip() for c in line.split("│")] for line in first.output.splitlines()]
    marks = [cells[4] for cells in rows if len(cells) == 8 and cells[4] in ("yes", "no")]  # the process table
    return {**result, "services_healthy": f"{marks.count('yes')}/{len(marks)}"}


def figure_test_fast(args: argparse.Namespace) -> dict[str, Any]:
    run = run_timed([str(ROOT / "just"), "test-fast", "-q", "-p", "no:cacheprovider"], timeout=1800)
    line = next((x for x in reversed(run.output.splitlines()) if " in " in x and "passed" in x), "")
    return {
        "wall_s": round(run.wall_s, 1),
        "cpu_s": round(run.cpu_s, 1),
        "passed": run.rc == 0,
        "summary": line.strip("= "),
    }


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
        text = (
            f"./just --list {j['median_s']:.3f} s (max {j['max_s']:.3f}, CPU {j['cpu_median_s']:.3f}); "
            f"bootstrap.sh {b['median_s']:.3f} s"
        )
        value = j["median_s"]
    elif name == "test_fast":
        state = "passed" if fig["passed"] else "FAILED"
        text = f"{fig['wall_s']:.1f} s (CPU {fig['cpu_s']:.1f} s), {state} ({fig['summary']})"
        value = fig["wall_s"]
    else:
        text = f"{fig['median_s']:.3f} s (max {fig['max_s']:.3f}, CPU {fig['cpu_median_s']:.3f})"
        if "services_healthy" in fig:
            text += f", {fig['services_healthy']} services healthy"
        value = fig["median_s"]
    target = TARGETS_S.get(name)
    verdict = f"   (target <= {target:g} s{'' if value <= target else ': missed'})" if target else ""
    return f"{name:<10} {text}{verdict}"


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
