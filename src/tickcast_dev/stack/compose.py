"""Render ``local/stack.toml`` as ``docker-compose.local.yml`` (the container flavour of the stack).

Every service's ``[services.X.container]`` table gives the image, command and healthcheck; its
``env`` is the same as for the process stack but filled from :func:`container_context`, so the
containers reach each other by service name while the variable names stay identical. Ports are
published on loopback with the same numbers as the settings, so host-side clients (tests, the
CLI, DAG code run locally) use the same endpoints whichever flavour is running.

The output is deterministic (file order, fixed key order) so the committed file can be checked
for drift: ``tickcast stack compose --check`` and ``tests/unit/test_compose.py``.
"""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from tickcast.settings import Settings
from tickcast_dev.stack.definition import (
    ServiceSpec,
    StackDefinitionError,
    container_context,
    fill,
    load_stack,
    topological_order,
)

PROJECT_NAME = "tickcast"
DATA_MOUNT = "/data"

HEADER = """\
# GENERATED FILE - DO NOT EDIT BY HAND.
# Generated from local/stack.toml by `tickcast stack compose`; edit local/stack.toml and
# re-run that command (tests/unit/test_compose.py fails when this file is out of date).
# Ports are published on 127.0.0.1 with the same numbers as the process stack.
"""

HEALTHCHECK_TIMING = {"interval": "5s", "timeout": "3s", "retries": 30}


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes ``None`` as an empty value (``azurite-data:``), the usual compose style."""


def _represent_none(dumper: yaml.SafeDumper, _: None) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:null", "")


_Dumper.add_representer(type(None), _represent_none)


def _escape(value: str) -> str:
    """Keep compose from interpolating ``$VAR`` in a rendered value."""
    return value.replace("$", "$$")


def _service(spec: ServiceSpec, settings: Settings, base: dict[str, str]) -> dict[str, Any]:
    where = f"service {spec.name!r} (container)"
    container = spec.container
    if container is None:
        raise StackDefinitionError(f"service {spec.name!r} has no [services.{spec.name}.container] table")
    if not container.healthcheck:
        raise StackDefinitionError(f"{where}: a healthcheck is required (dependents wait for it)")
    port = spec.port(settings)
    ctx = base | {"port": str(port), "data": DATA_MOUNT}

    service: dict[str, Any] = {"image": container.image}
    if container.user:
        service["user"] = container.user
    if container.command:
        service["command"] = [_escape(a) for a in shlex.split(fill(container.command, ctx, where))]
    env = spec.env | container.env  # container-only variables (e.g. the postgres image's POSTGRES_*) last
    if env:
        service["environment"] = {k: _escape(fill(v, ctx, where)) for k, v in env.items()}
    service["ports"] = [f"127.0.0.1:{port}:{port}"]
    for volume in container.volumes:
        if not volume.startswith("./") or "{" in volume:
            raise StackDefinitionError(f"{where}: volume {volume!r} must be ./<repo-relative path>:<target>")
    service["volumes"] = [f"{spec.name}-data:{DATA_MOUNT}", *container.volumes]
    service["healthcheck"] = {
        "test": ["CMD-SHELL", _escape(fill(container.healthcheck, ctx, where))],
        **HEALTHCHECK_TIMING,
        "start_period": f"{int(settings.stack.start_timeout_s)}s",
    }
    if spec.after:
        service["depends_on"] = {dep: {"condition": "service_healthy"} for dep in spec.after}
    service["restart"] = "unless-stopped"
    return service


def compose_document(settings: Settings) -> dict[str, Any]:
    """The compose file as a mapping (services in start order)."""
    specs = load_stack()
    base = container_context(settings)
    order = topological_order(specs)
    return {
        "name": PROJECT_NAME,
        "services": {name: _service(specs[name], settings, base) for name in order},
        "volumes": {f"{name}-data": None for name in order},
    }


def render_compose(settings: Settings) -> str:
    """docker-compose.local.yml for these settings, header comment included."""
    body = yaml.dump(
        compose_document(settings),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=1000,
        allow_unicode=True,
    )
    return HEADER + body
