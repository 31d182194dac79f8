"""Airflow for the process stack: its schema when needed, then its components side by side.

``python -m tickcast_dev.stack.airflow_launcher`` is the ``airflow`` service's command in local/stack.toml
(run with the service's ``AIRFLOW_*`` environment, cwd = ``AIRFLOW_HOME``). It replaces ``airflow standalone``,
which on every start imports Airflow, checks the whole schema and only then starts its components, and
which starts log servers listening on every interface. Here:

1. **Schema.** ``airflow db migrate`` runs when the database's Alembic revision is not the one recorded
   after the last successful migration by this Airflow version (:data:`STAMP`), or ``airflow.cfg`` is
   missing: always on a fresh database (cold start), after an Airflow upgrade or a database reset; a warm
   start costs one query. ``db migrate`` also writes ``airflow.cfg`` (with its generated secrets) before
   any component starts, so the components never race to write it.
2. **Components**, all started at once: the API server, the DAG processor, and the scheduler (the
   triggerer only when ``TICKCAST_AIRFLOW__TRIGGERER=true``; no tickcast DAG defers). The scheduler imports
   its modules right away but begins scheduling only once the API server accepts connections (or after
   :data:`API_WAIT_S`): tasks talk to the API server's execution API, and a scheduler that ran first
   launched tasks that failed with "connection refused" and went to retry (:func:`preload_then_run`). The
   scheduler and triggerer run with ``--skip-serve-logs``; instead one task log server listens on loopback
   (``stack.airflow_log_server_port``) at low priority shortly after the API server is up (:data:`AFTER_API`),
   for the UI's view of running tasks.
   Every component runs through this module (``--run`` / ``--preload``) with Python's cyclic garbage collector
   tuned for start-up (:func:`tune_gc`): building the API server's ~800 FastAPI routes and pydantic schemas
   allocates millions of objects, and the default thresholds collected ~20 % of its start-up CPU away.
3. **Life.** Their output goes to this service's log. When one of them exits on its own, the others are
   stopped and the launcher exits non-zero (the supervisor reports the log tail instead of waiting for a
   health deadline). SIGTERM/SIGINT stop them all (SIGKILL after :data:`STOP_GRACE_S`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from types import FrameType

import psycopg2

from tickcast.settings import Settings, load_settings

MODULE = "tickcast_dev.stack.airflow_launcher"
STAMP = "tickcast-migrated.json"
STOP_GRACE_S = 5.0
POLL_S = 0.1
API_WAIT_S = 120.0
# gen-0 threshold while a component starts (default 700): far fewer collections of objects that all survive
GC_START_THRESHOLD = (50_000, 20, 100)
GC_SETTLE_S = 60.0  # then back to Python's defaults for the long run


def _say(message: str) -> None:
    print(f"tickcast airflow launcher | {message}", flush=True)


def _airflow() -> str:
    return str(Path(sys.executable).parent / "airflow")


def database_revision(settings: Settings) -> str | None:
    """The Alembic revision of Airflow's database, or None when it has no schema yet."""
    s = settings.stack
    conn = psycopg2.connect(
        host=s.host,
        port=s.postgres_port,
        user=s.postgres_user,
        password=s.postgres_password.get_secret_value(),
        dbname="airflow",
        connect_timeout=5,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL")
            row = cur.fetchone()
            if not row or not row[0]:
                return None
            cur.execute("SELECT version_num FROM alembic_version")
            rev = cur.fetchone()
            return str(rev[0]) if rev else None
    finally:
        conn.close()


def _stamp_matches(home: Path, revision: str | None) -> bool:
    try:
        stamp = json.loads((home / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(
        revision is not None
        and stamp.get("revision") == revision
        and stamp.get("airflow") == version("apache-airflow")
        and (home / "airflow.cfg").is_file()
    )


def ensure_schema(settings: Settings, home: Path) -> bool:
    """Run ``airflow db migrate`` unless the stamp says this database is current; True when it ran."""
    if _stamp_matches(home, database_revision(settings)):
        return False
    _say("migrating the Airflow database (fresh database, new Airflow version, or no airflow.cfg yet)")
    t0 = time.monotonic()
    subprocess.run([_airflow(), "db", "migrate"], check=True, stdin=subprocess.DEVNULL)
    revision = database_revision(settings)
    (home / STAMP).write_text(json.dumps({"airflow": version("apache-airflow"), "revision": revision}) + "\n")
    _say(f"database at revision {revision} after {time.monotonic() - t0:.1f}s")
    return True


# Started by the launcher itself this many seconds after the API server accepts connections: the task log
# server only shows running tasks' logs in the UI, and its ~1 s of start-up CPU would otherwise compete with
# the scheduler's and DAG processor's first heartbeats, which the stack's health check waits for.
AFTER_API: dict[str, float] = {"log-server": 15.0}

# Modules a component needs, imported before it waits for the API server (most of its start-up cost).
PRELOAD = {
    "scheduler": ("airflow.cli.cli_parser", "airflow.jobs.scheduler_job_runner", "airflow.executors.local_executor"),
    "triggerer": ("airflow.cli.cli_parser", "airflow.jobs.triggerer_job_runner"),
}


def components(settings: Settings) -> dict[str, list[str]]:
    """name -> argv of each process to run; the ones in :data:`AFTER_API` start after the API server is up."""
    api = f"{settings.stack.host}:{settings.stack.airflow_port}"

    def after_api(component: str) -> list[str]:
        return [sys.executable, "-m", MODULE, "--preload", component, "--wait-for", api, "--", component]

    out = {
        "api-server": [sys.executable, "-m", MODULE, "--run", "--", "api-server"],
        "dag-processor": [sys.executable, "-m", MODULE, "--run", "--", "dag-processor"],
        "scheduler": [*after_api("scheduler"), "--skip-serve-logs"],
    }
    if settings.airflow.triggerer:
        out["triggerer"] = [*after_api("triggerer"), "--skip-serve-logs"]
    code = (
        "import uvicorn; uvicorn.run('airflow.utils.serve_logs.log_server:get_app', factory=True, "
        f"host={settings.stack.host!r}, port={settings.stack.airflow_log_server_port}, "
        "log_config=None, access_log=False)"
    )
    out["log-server"] = ["nice", "-n", "10", sys.executable, "-c", code]
    return out


def _accepts(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def tune_gc() -> None:
    """Collect less often while the process starts (:data:`GC_START_THRESHOLD`), and return to Python's default
    thresholds :data:`GC_SETTLE_S` later (a daemon timer; forked task processes inherit whichever is current)."""
    import gc
    import threading

    default = gc.get_threshold()
    gc.set_threshold(*GC_START_THRESHOLD)
    settle = threading.Timer(GC_SETTLE_S, gc.set_threshold, args=default)
    settle.daemon = True
    settle.start()


def run_airflow(args: list[str]) -> None:
    """``airflow <args>`` in this process."""
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *args]
    airflow_main()  # type: ignore[no-untyped-call]


def preload_then_run(component: str, wait_for: str, args: list[str]) -> None:
    """Import ``component``'s modules, wait until ``wait_for`` (host:port) accepts connections, then run
    ``airflow <args>`` in this process: the import overlaps the API server's start, the work waits for it."""
    import importlib

    for module in PRELOAD.get(component, ()):
        importlib.import_module(module)
    host, _, port = wait_for.rpartition(":")
    t0 = time.monotonic()
    while not _accepts(host, int(port)) and time.monotonic() - t0 < API_WAIT_S:
        time.sleep(POLL_S)
    _say(f"{component}: modules loaded, API server up; starting")
    run_airflow(args)


class _Stop(Exception):
    pass


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _terminate(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in children.values():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(settings: Settings, home: Path) -> int:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        ensure_schema(settings, home)
        waiting = components(settings)
        api_since = time.monotonic()
        api_up_at: float | None = None
        while True:
            if (
                api_up_at is None
                and "api-server" in children
                and (
                    _accepts(settings.stack.host, settings.stack.airflow_port)
                    or time.monotonic() - api_since > API_WAIT_S
                )
            ):
                api_up_at = time.monotonic()
            for name in [
                n
                for n in waiting
                if n not in AFTER_API or (api_up_at is not None and time.monotonic() - api_up_at >= AFTER_API[n])
            ]:
                children[name] = subprocess.Popen(waiting.pop(name), stdin=subprocess.DEVNULL)
                _say(f"started {name} (pid {children[name].pid})")
            for name, proc in children.items():
                code = proc.poll()
                if code is not None:
                    _say(f"{name} exited with status {code}: stopping the others")
                    _terminate(children)
                    return 1
            time.sleep(POLL_S)
    except _Stop as stop:
        _say(f"{stop}: stopping {', '.join(children) or 'nothing'}")
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _terminate(children)
        return 0
    except (subprocess.CalledProcessError, OSError, psycopg2.Error) as err:
        _say(f"cannot start Airflow: {err}")
        _terminate(children)
        return 1


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--preload"]:  # --preload COMPONENT --wait-for HOST:PORT -- AIRFLOW ARGS...
        tune_gc()
        preload_then_run(args[1], args[3], args[5:])
        return
    if args[:2] == ["--run", "--"]:  # --run -- AIRFLOW ARGS...
        tune_gc()
        run_airflow(args[2:])
        return
    home = Path(os.environ.get("AIRFLOW_HOME", ".")).resolve()
    raise SystemExit(run(load_settings(), home))


if __name__ == "__main__":
    main()
