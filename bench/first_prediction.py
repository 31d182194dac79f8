"""Benchmark: from `just up` to the first prediction through the gateway, and the install on an empty cache.

    python bench/first_prediction.py [--install] [--out bench/results/first_prediction.json]

1. **Up to first prediction** (installs cached): exactly what `./just up` runs after its bootstrap —
   ``tickcast up`` (start and health-check the nine services) then ``tickcast run`` (backfill 7 days, the
   ``ingest`` DAG, the baseline registered and deployed, a prediction per symbol through the gateway, then
   the ``retrain`` DAG with its judge and deploy) — as subprocesses in a fresh temporary home on free ports,
   so a running developer stack is not touched. The stages' own timings and the first prediction's time
   (seconds after the stack was up) are read from ``tickcast run``'s output. Target: first prediction
   <= 45 s after the stack is up.
2. **Install on an empty cache** (``--install``): a clone of this checkout's HEAD in a temporary folder with
   empty pip, uv and stack caches: ``local/bootstrap.sh`` (uv, just, ``uv sync`` of the locked venv) and
   the stack's own installs (``tickcast_dev.stack.install``: Node packages such as Azurite), timed separately.
   Needs the package indexes; takes minutes.

``--tape`` runs the same on the real tape (``tickcast up --tape``). ``--live-minutes N`` keeps the stack
serving N more minutes, asking every symbol's forecast through the gateway every 20 s, then runs
``tickcast evaluate`` (the live evaluation the ``evaluate`` DAG runs every 5 minutes) before ``status``.

Prints a table and writes the figures (with the machine they ran on) to a JSON file, with what ``tickcast run``,
``tickcast evaluate`` and ``tickcast status`` printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine, stack_ports
from tickcast.settings import PROJECT_ROOT, load_settings

TARGET_S = 45.0  # first prediction through the gateway, seconds after the stack is up
FIRST = re.compile(r"first prediction through the gateway (\d+)s after the job started")
STAGE = re.compile(r"^\[(\d)\] (.+?) \.\.\.$")
DONE = re.compile(r"^\s+done in ([\d.]+)s: (.*)$")


def clean_env() -> dict[str, str]:
    """The caller's environment without TICKCAST_* (a developer's settings must not leak into the run)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[float, str]:
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return took, done.stdout


def stages_of(output: str) -> list[dict[str, Any]]:
    stages: list[dict[str, Any]] = []
    for line in output.splitlines():
        if m := STAGE.match(line):
            stages.append({"stage": m.group(2), "seconds": None, "detail": ""})
        elif (m := DONE.match(line)) and stages:
            stages[-1] |= {"seconds": float(m.group(1)), "detail": m.group(2)}
    return stages


def serve_for(settings: Any, minutes: float) -> dict[str, int]:
    """Ask every symbol's forecast through the gateway every 20 s for ``minutes`` (status code counts)."""
    import httpx

    counts: dict[str, int] = {}
    key = settings.gateway_client_key()
    deadline = time.monotonic() + 60 * minutes
    with httpx.Client(timeout=10, headers={"Ocp-Apim-Subscription-Key": key} if key else {}) as client:
        while time.monotonic() < deadline:
            for sym in settings.symbols:
                try:
                    code = str(client.get(f"{settings.gateway_url}/api/predictions/{sym}").status_code)
                except httpx.HTTPError as err:
                    code = type(err).__name__
                counts[code] = counts.get(code, 0) + 1
            time.sleep(20)
    return counts


def up_to_first_prediction(*, tape: bool = False, live_minutes: float = 0) -> dict[str, Any]:
    bin_dir = PROJECT_ROOT / ".venv" / "bin"
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tickcast-bench-") as home:
        settings = load_settings(_env_file=None, stack={"home": home, "start_timeout_s": 300, **stack_ports()})
        env = {**clean_env(), **settings.to_env(), "COLUMNS": "160"}
        if tape:  # the Yahoo emulator's own setting (emulators.settings)
            env["TICKCAST_EMULATOR__MODE"] = "tape"
        if "TICKCAST_STACK__CACHE" in os.environ:  # the installs stay cached where the caller keeps them
            env["TICKCAST_STACK__CACHE"] = os.environ["TICKCAST_STACK__CACHE"]
        try:
            up_s, _ = run([str(bin_dir / "tickcast"), "up"], env, PROJECT_ROOT, 600)
            run_s, out = run([str(bin_dir / "tickcast"), "run"], env, PROJECT_ROOT, 900)
            if live_minutes:
                extra["served_status_codes"] = serve_for(settings, live_minutes)
                extra["evaluate_output"] = subprocess.run(
                    [str(bin_dir / "tickcast"), "evaluate"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True
                ).stdout.splitlines()
            status = subprocess.run(
                [str(bin_dir / "tickcast"), "status"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True
            ).stdout
        finally:
            subprocess.run([str(bin_dir / "tickcast"), "down"], env=env, cwd=PROJECT_ROOT, capture_output=True)
    predicted = re.search(r"(\d+)/(\d+) symbols predicted", out)
    first = FIRST.search(out)
    return {
        "stack_up_s": round(up_s, 1),
        "main_job_s": round(run_s, 1),
        "first_prediction_after_up_s": float(first.group(1)) if first else None,
        "up_to_first_prediction_s": round(up_s + float(first.group(1)), 1) if first else None,
        "stages": stages_of(out),
        "symbols_predicted": predicted.group(0) if predicted else None,
        "main_job_output": out.splitlines(),
        "status_output": status.splitlines(),
        "target_s": TARGET_S,
        "mode": "tape" if tape else "synthetic",
        **extra,
    }


def install_on_empty_cache() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tickcast-install-") as tmp:
        root = Path(tmp)
        clone = root / "tickcast"
        subprocess.run(["git", "clone", "--quiet", "--local", str(PROJECT_ROOT), str(clone)], check=True)
        env = {
            **clean_env(),
            "PIP_CACHE_DIR": str(root / "pip-cache"),
            "UV_CACHE_DIR": str(root / "uv-cache"),
            "TICKCAST_STACK__CACHE": str(root / "stack-cache"),
        }
        bootstrap_s, _ = run(["bash", "local/bootstrap.sh"], env, clone, 3600)
        code = (
            "from tickcast.settings import load_settings; from tickcast_dev.stack.install import INSTALLERS, "
            "ensure_installed; print(ensure_installed(set(INSTALLERS), load_settings()))"
        )
        stack_s, _ = run([str(clone / ".venv" / "bin" / "python"), "-c", code], env, clone, 3600)
    return {
        "bootstrap_s": round(bootstrap_s, 1),
        "stack_installs_s": round(stack_s, 1),
        "total_s": round(bootstrap_s + stack_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--install", action="store_true", help="also time the install on empty caches (minutes)")
    ap.add_argument("--tape", action="store_true", help="replay the real tape (tickcast up --tape)")
    ap.add_argument("--live-minutes", type=float, default=0, help="serve this long, then run tickcast evaluate")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "first_prediction.json")
    args = ap.parse_args()

    result: dict[str, Any] = {"benchmark": "first_prediction", "date": time.strftime("%Y-%m-%d"), "machine": machine()}
    if args.install:
        result["install_empty_cache"] = install_on_empty_cache()
    result["up"] = up_to_first_prediction(tape=args.tape, live_minutes=args.live_minutes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    m, up = result["machine"], result["up"]
    print(f"machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['platform']}")
    if "install_empty_cache" in result:
        i = result["install_empty_cache"]
        print(f"install on empty caches: bootstrap {i['bootstrap_s']} s + stack {i['stack_installs_s']} s")
        print(f"                         = {i['total_s']} s")
    print(f"tickcast up (nine services healthy)   {up['stack_up_s']:7.1f} s")
    for st in up["stages"]:
        print(f"  {st['stage']:<50} {st['seconds'] if st['seconds'] is not None else '-':>7} s")
    first = up["first_prediction_after_up_s"]
    if first is None:
        print("no prediction came through the gateway")
    else:
        ok = "ok" if first <= TARGET_S else "MISSED"
        print(f"stack up -> first prediction          {first:7.1f} s   (target <= {TARGET_S:.0f} s: {ok})")
        print(f"tickcast up + first prediction        {up['up_to_first_prediction_s']:7.1f} s")
    print(f"{up['symbols_predicted']}; written to {args.out}")


if __name__ == "__main__":
    main()
