"""Helpers for tests that run against the private local stack: which flavour runs, the processes it started,
and Airflow's dag.test() in the stack's environment.
"""

from __future__ import annotations

import os

import psutil
import pytest

from tickcast.settings import Settings

_choice: tuple[str, str] | None = None


def stack_flavour() -> tuple[str, str]:
    """('processes' | 'containers', reason) — decided once per session."""
    global _choice
    if _choice is None:
        forced = os.environ.get("TICKCAST_TEST_STACK")
        if forced == "processes":
            _choice = ("processes", "TICKCAST_TEST_STACK=processes")
        else:
            from tests.support.containers import docker_available

            ok, reason = docker_available()
            _choice = ("containers", reason) if ok else ("processes", reason)
    return _choice


def run_dag_test(
    settings: Settings,
    dag_file: str,
    dag_variable: str,
    *,
    timeout_s: float = 300,
    extra_env: dict[str, str] | None = None,
) -> None:
    """``dag.test()`` of ``dags/<dag_file>`` in a subprocess configured exactly like the stack's Airflow.

    Skips on the container stack (its Airflow home is inside a container).
    """
    import subprocess
    import sys

    from tickcast.settings import PROJECT_ROOT
    from tickcast_dev.stack.supervisor import Supervisor

    if stack_flavour()[0] != "processes":
        pytest.skip("dag.test() needs the process stack's Airflow home")
    sup = Supervisor(settings)
    env = sup._env(sup.services["airflow"])
    env.update(settings.to_env())
    env.update(extra_env or {})
    code = f"import runpy; runpy.run_path('dags/{dag_file}')['{dag_variable}'].test()"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def stack_processes(sup: object) -> list[psutil.Process]:
    """Every process the supervisor ``sup`` started and their whole trees (the process stack)."""
    from tickcast_dev.stack import procs
    from tickcast_dev.stack.supervisor import Supervisor

    assert isinstance(sup, Supervisor)
    out: list[psutil.Process] = []
    for name in sup.services:
        record = sup.pid_file(name).read()
        proc = procs.live_process(record) if record else None
        if proc is not None:
            out.extend(procs.process_tree(proc))
    return out
