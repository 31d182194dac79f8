"""The container flavour of the local stack, for machines that have Docker.

``docker_available()`` says whether a Docker engine answers (and ``docker compose`` exists);
``start_compose_stack()`` brings up ``docker-compose.local.yml`` (generated from local/stack.toml
by ``tickcast stack compose``), waits until every service's healthcheck passes and runs the same
``on_ready`` hooks as the supervisor. The services publish the same loopback ports as the process
stack, so tests use the same settings whichever flavour runs. tests/integration/conftest.py picks
containers or processes with these.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Protocol

from tickcast.settings import Settings, load_settings
from tickcast_dev.stack.compose import render_compose
from tickcast_dev.stack.definition import REPO_ROOT, load_stack, topological_order
from tickcast_dev.stack.hooks import HOOKS

COMPOSE_FILE = REPO_ROOT / "docker-compose.local.yml"
PING_TIMEOUT_S = 3


class RunningStack(Protocol):
    def stop(self) -> None: ...


def docker_available() -> tuple[bool, str]:
    """(True, "") when a Docker engine answers a ping and `docker compose` works, else (False, why)."""
    try:
        import docker  # type: ignore[import-untyped, unused-ignore]
        from docker.errors import DockerException  # type: ignore[import-untyped, unused-ignore]
    except ImportError as err:
        return False, f"docker SDK not installed: {err}"
    try:
        client = docker.from_env(timeout=PING_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()
    except (DockerException, OSError) as err:  # requests' errors are OSErrors
        return False, f"no Docker engine: {err}"
    try:
        proc = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"docker compose CLI not usable: {err}"
    if proc.returncode != 0:
        return False, f"docker compose CLI plugin missing: {(proc.stderr or proc.stdout).strip()}"
    return True, ""


def start_compose_stack(settings: Settings | None = None, compose_file: Path = COMPOSE_FILE) -> RunningStack:
    """`docker compose up --wait`, then the services' ``on_ready`` hooks (Blob containers, topics).

    ``settings`` (default: defaults plus TICKCAST_* variables, no .env) must be the ones the compose
    file was generated with, since the containers publish exactly those ports. Raises with the
    services' logs if one turns unhealthy. The returned ``stop()`` runs `docker compose down --volumes`.
    """
    from testcontainers.compose import DockerCompose

    settings = settings or load_settings(_env_file=None)
    if not compose_file.is_file():
        raise FileNotFoundError(f"{compose_file} not found: run `tickcast stack compose`")
    if compose_file.read_text(encoding="utf-8") != render_compose(settings):
        raise RuntimeError(
            f"{compose_file.name} does not match these settings (stale, or TICKCAST_STACK__* ports differ): "
            "run `tickcast stack compose` with the same TICKCAST_* variables"
        )
    compose = DockerCompose(
        context=compose_file.parent,
        compose_file_name=compose_file.name,
        wait=True,  # `up --wait`: returns when every healthcheck passes, fails if one turns unhealthy
    )
    try:
        compose.start()
    except subprocess.CalledProcessError as err:
        logs = ""
        with contextlib.suppress(subprocess.CalledProcessError):
            logs = "".join(compose.get_logs())
        with contextlib.suppress(subprocess.CalledProcessError):
            compose.stop(down=True)
        tail = "\n".join(logs.splitlines()[-80:])
        detail = (err.stderr or b"").decode(errors="replace").strip()
        raise RuntimeError(f"docker compose up failed: {detail}\n--- service logs ---\n{tail}") from err
    try:
        specs = load_stack()
        for name in topological_order(specs):  # what the supervisor runs once each service is ready
            for hook in specs[name].on_ready:
                HOOKS[hook](settings)
    except BaseException:
        with contextlib.suppress(subprocess.CalledProcessError):
            compose.stop(down=True)
        raise
    return compose
