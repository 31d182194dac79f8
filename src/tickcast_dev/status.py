"""What the pipeline is doing, not only which processes run: the data behind ``tickcast status``.

One :func:`snapshot` asks each part of the pipeline one question, in parallel and with short timeouts:

* **lake** — the newest bar per configured symbol and its age, measured on the SOURCE's clock (the Yahoo
  emulator's ``/_emulator/clock`` when it answers, else the wall clock): a bar is fresh when it closed at
  most a couple of minutes ago on the clock that produces bars;
* **Kafka** — the ingest consumer group's lag (end offset minus committed offset, summed over partitions);
* **MLflow** — the latest training run (when, model RMSE vs persistence, skill) and the ``production``
  version with the time it was promoted (the ``promoted_at`` tag the registry sets when the alias moves);
* **endpoint** — deployments with their model version and traffic share;
* **gateway** — the public URL.

A part that cannot be reached becomes a :class:`Problem` (what failed, in one line) instead of an
exception: ``status`` is what people run when something is wrong. It must also answer quickly then:
every probe first knocks on its service's port (a refused connection is a problem at once, not after a
client library's retries), each network call has a short timeout, MLflow is asked over its REST API
(importing the ``mlflow`` package alone costs ~2 s), and :func:`start_snapshot` gives up on whatever
has not answered by :data:`DEADLINE_S` (daemon threads: a stuck probe cannot hold the command).
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tickcast.settings import Settings
from tickcast_dev.airflow_client import AirflowClient
from tickcast_dev.http import shared as shared_http
from tickcast_dev.http import ssl_context
from tickcast_dev.pipeline_health import (
    STALE_AFTER_S,
    WATCHED_DAGS,
    DagHealth,
    LagHistory,
    MarketSession,
    dag_health,
    market_session,
    since,
    verdict,
)

__all__ = [
    "EndpointView",
    "LakeView",
    "ModelView",
    "PipelineSnapshot",
    "Problem",
    "SymbolFreshness",
    "snapshot",
    "start_snapshot",
]

KNOCK_TIMEOUT_S = 0.5  # TCP connect to a service's port (loopback answers in microseconds)
PROBE_TIMEOUT_S = 3.0  # one HTTP call or Kafka request (a loaded machine answers loopback slowly too)
DEADLINE_S = 5.0  # the whole snapshot: a part that has not answered by then is reported as such
T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """A part of the pipeline that could not be asked: which one and why."""

    part: str
    reason: str


@dataclass(frozen=True)
class SymbolFreshness:
    symbol: str
    last_bar: datetime | None  # start of the newest stored minute, UTC
    age_s: float | None  # source clock now - close of that minute

    @property
    def fresh(self) -> bool:
        return self.age_s is not None and self.age_s <= STALE_AFTER_S


@dataclass(frozen=True)
class LakeView:
    clock: str  # "emulator" or "wall"
    now: datetime
    symbols: list[SymbolFreshness]


@dataclass(frozen=True)
class ModelView:
    last_run_at: datetime | None = None
    last_run_id: str | None = None
    model_rmse: float | None = None
    persistence_rmse: float | None = None
    skill: float | None = None
    production_version: str | None = None
    promoted_at: str | None = None
    production_skill: str | None = None


@dataclass(frozen=True)
class EndpointView:
    url: str
    deployments: list[dict[str, Any]] = field(default_factory=list)  # name, model_version, state, traffic


@dataclass(frozen=True)
class PipelineSnapshot:
    lake: LakeView | Problem
    consumer_lag: int | Problem
    model: ModelView | Problem
    endpoint: EndpointView | Problem
    gateway_url: str
    runs: list[DagHealth] | Problem | None = None
    session: MarketSession | Problem | None = None
    stuck: list[str] = field(default_factory=list)  # why the pipeline is stuck (pipeline_health.verdict)


def _ask(part: str, probe: Callable[[], T]) -> T | Problem:
    try:
        return probe()
    except Exception as err:  # any failure of a probe is reported, never raised
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return Problem(part, f"{type(err).__name__}: {text[:200]}")


class NotListening(ConnectionError):
    """Nothing accepts connections on a service's port."""


def knock(url: str, default_port: int = 80) -> None:
    """Connect to ``url``'s host and port (``http://h:p/...`` or ``h:p``) and hang up; raise when refused."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else default_port)
    try:
        with socket.create_connection((host, port), timeout=KNOCK_TIMEOUT_S):
            pass
    except OSError as err:
        raise NotListening(f"nothing answers on {host}:{port} ({err.strerror or err}); is the stack up?") from None


# --- probes -------------------------------------------------------------------------------------


def source_now(settings: Settings) -> tuple[str, datetime]:
    """The clock bars are produced on: the emulator's when it answers, else the wall clock."""
    import httpx

    try:
        knock(settings.yahoo_base_url)
        r = shared_http().get(f"{settings.yahoo_base_url}/_emulator/clock", timeout=PROBE_TIMEOUT_S)
        if r.status_code == 200:
            return "emulator", datetime.fromtimestamp(float(r.json()["epoch"]), UTC)
    except (httpx.HTTPError, NotListening, KeyError, ValueError):
        pass
    return "wall", datetime.now(UTC)


BLOB_CALL_OPTIONS = {"retry_total": 0, "connection_timeout": PROBE_TIMEOUT_S, "read_timeout": PROBE_TIMEOUT_S}


def newest_minute(container: Any, symbol: str) -> datetime | None:
    """The newest ``ts`` stored for ``symbol``: the ``ts`` column of its last day file, read with pyarrow.

    The same answer as ``tickcast.lake.store.Lake.last_ts`` without importing pandas (~0.3 s of the
    command's CPU): the lake's layout ``bars/symbol=S/date=D.parquet`` is its published contract.
    """
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    prefix = f"bars/symbol={symbol}/date="
    names = sorted(
        n for n in container.list_blob_names(name_starts_with=prefix, **BLOB_CALL_OPTIONS) if n.endswith(".parquet")
    )
    if not names:
        return None
    data = container.get_blob_client(names[-1]).download_blob(**BLOB_CALL_OPTIONS).readall()
    ts = pq.ParquetFile(io.BytesIO(data)).read(columns=["ts"]).column("ts")
    # as integers, in Python: a tz-aware timestamp scalar's as_py() makes pyarrow import pandas (~0.4 s), and
    # pyarrow.compute costs ~0.3 s to import; a day file holds at most a few hundred minutes
    values = [v for v in ts.cast(pa.int64()).to_pylist() if v is not None]
    if not values:
        return None
    newest = max(values)
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[ts.type.unit]
    return datetime.fromtimestamp(newest / per_second, UTC)


def lake_view(settings: Settings) -> LakeView:
    from tickcast.azure import lake_container

    knock(settings.blob_account_url)
    clock, now = source_now(settings)
    container = lake_container(settings)
    with ThreadPoolExecutor(max_workers=len(settings.symbols) or 1, thread_name_prefix="status-lake") as pool:
        newest = list(pool.map(lambda symbol: newest_minute(container, symbol), settings.symbols))
    rows = []
    for symbol, last in zip(settings.symbols, newest, strict=True):
        age = None if last is None else (now - last).total_seconds() - 60.0  # the minute closes at ts + 60 s
        rows.append(SymbolFreshness(symbol, last, None if age is None else max(age, 0.0)))
    return LakeView(clock, now, rows)


def consumer_lag(settings: Settings) -> int:
    """Messages of the bars topic not yet committed by the ingest consumer group."""
    from kafka import TopicPartition

    from tickcast.ingest import kafka

    topic = settings.kafka.bars_topic
    knock(settings.kafka_bootstrap.split(",")[0], default_port=9092)
    # a consumer that never subscribes: it only reads the group's committed offsets and the end offsets
    # (kafka-python wants request_timeout_ms above session_timeout_ms, which matters only to members)
    probe = kafka.consumer(
        settings, session_timeout_ms=1000, heartbeat_interval_ms=300, request_timeout_ms=int(PROBE_TIMEOUT_S * 1000)
    )
    try:
        partitions = probe.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = probe.end_offsets(tps) if tps else {}
        lag = 0
        for tp, end in ends.items():
            done = probe.committed(tp)
            lag += max(int(end) - int(done or 0), 0)
    finally:
        probe.close(autocommit=False)
    return lag


def model_view(settings: Settings) -> ModelView:
    """The latest training run and the production version; over MLflow's REST API when it is HTTP."""
    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        return _model_view_rest(settings, uri.rstrip("/"))
    return _model_view_client(settings)


def _model_view_rest(settings: Settings, uri: str) -> ModelView:
    import httpx

    from tickcast.registry.vocabulary import PRODUCTION, PROMOTED_AT

    knock(uri)
    view: dict[str, Any] = {}
    with httpx.Client(base_url=f"{uri}/api/2.0/mlflow", timeout=PROBE_TIMEOUT_S, verify=ssl_context()) as http:
        r = http.get("/experiments/get-by-name", params={"experiment_name": settings.mlflow.experiment})
        if r.status_code != 404:  # 404 RESOURCE_DOES_NOT_EXIST: nothing trained yet
            r.raise_for_status()
            experiment_id = r.json()["experiment"]["experiment_id"]
            body = {"experiment_ids": [experiment_id], "order_by": ["attributes.start_time DESC"], "max_results": 1}
            found = http.post("/runs/search", json=body)
            found.raise_for_status()
            runs = found.json().get("runs") or []
            if runs:
                info, data = runs[0]["info"], runs[0].get("data") or {}
                metrics = {m["key"]: float(m["value"]) for m in data.get("metrics") or []}
                view |= {
                    "last_run_at": datetime.fromtimestamp(int(info["start_time"]) / 1000, UTC),
                    "last_run_id": info["run_id"],
                    "model_rmse": metrics.get("model_rmse"),
                    "persistence_rmse": metrics.get("persistence_rmse"),
                    "skill": metrics.get("skill"),
                }
        r = http.get("/registered-models/alias", params={"name": settings.mlflow.model_name, "alias": PRODUCTION})
        # no registered model yet: 404 RESOURCE_DOES_NOT_EXIST; no alias yet: 400 "alias ... not found"
        if r.status_code not in (400, 404) or "not found" not in r.text:
            r.raise_for_status()
            version = r.json()["model_version"]
            tags = {t["key"]: t["value"] for t in version.get("tags") or []}
            view |= {
                "production_version": str(version["version"]),
                "promoted_at": tags.get(PROMOTED_AT),
                "production_skill": tags.get("skill_vs_persistence"),
            }
    return ModelView(**view)


def _model_view_client(settings: Settings) -> ModelView:
    from mlflow.tracking import MlflowClient

    from tickcast.registry.vocabulary import PRODUCTION, PROMOTED_AT

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    view: dict[str, Any] = {}
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    if experiment is not None:
        runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            run = runs[0]
            metrics = run.data.metrics
            view |= {
                "last_run_at": datetime.fromtimestamp(run.info.start_time / 1000, UTC),
                "last_run_id": run.info.run_id,
                "model_rmse": metrics.get("model_rmse"),
                "persistence_rmse": metrics.get("persistence_rmse"),
                "skill": metrics.get("skill"),
            }
    try:
        production = client.get_model_version_by_alias(settings.mlflow.model_name, PRODUCTION)
    except Exception:  # no registered model or no alias yet
        production = None
    if production is not None:
        view |= {
            "production_version": str(production.version),
            "promoted_at": production.tags.get(PROMOTED_AT),
            "production_skill": production.tags.get("skill_vs_persistence"),
        }
    return ModelView(**view)


def endpoint_view(settings: Settings) -> EndpointView:
    from tickcast.endpoint.client import EndpointClient

    knock(settings.endpoint_url)
    with EndpointClient(settings, management_timeout_s=PROBE_TIMEOUT_S) as client:
        traffic = client.traffic()
        deployments = [
            {
                "name": d.name,
                "model_version": d.model_version,
                "state": d.provisioning_state,
                "traffic": traffic.get(d.name, 0),
            }
            for d in client.deployments()
        ]
    return EndpointView(settings.endpoint_url, deployments)


def airflow_runs(settings: Settings) -> list[DagHealth]:
    """The last success and the newest failure (task + first error line) of the ingest and retrain DAGs."""
    knock(settings.airflow_url)
    with AirflowClient(settings, timeout_s=PROBE_TIMEOUT_S) as client:
        return [dag_health(client, dag_id) for dag_id in WATCHED_DAGS]


PROBES: dict[str, Callable[[Settings], Any]] = {
    "lake": lake_view,
    "kafka": consumer_lag,
    "mlflow": model_view,
    "endpoint": endpoint_view,
    "airflow": airflow_runs,
    "session": market_session,
}


def judge(settings: Settings, snap: PipelineSnapshot) -> list[str]:
    """Why the pipeline is stuck (see :mod:`tickcast_dev.pipeline_health`); unreadable parts are not judged."""
    session = snap.session if isinstance(snap.session, MarketSession) else None
    lake = snap.lake if isinstance(snap.lake, LakeView) else None
    if session is None and lake is not None:
        session = MarketSession(lake.now)  # no session known: freshness is not judged, runs and lag still are
    if session is None:
        return []
    ages = {row.symbol: row.age_s for row in lake.symbols} if lake is not None else {}
    if lake is not None and lake.clock == "emulator":  # the emulator's clock is the source's: judge on it
        session = MarketSession(lake.now, session.start, session.end)
    history = None
    if isinstance(snap.consumer_lag, int):
        history = LagHistory.load(settings.stack.resolved_home() / "state" / "lag.json")
        history.add(session.now, snap.consumer_lag)
    runs = snap.runs if isinstance(snap.runs, list) else []
    return verdict(ages, session, runs, history, wall_now=datetime.now(UTC))


def start_snapshot(settings: Settings, deadline_s: float = DEADLINE_S) -> Callable[[], PipelineSnapshot]:
    """Start every probe now (one daemon thread each); the returned call collects them.

    The caller can do other work (the process table) while the probes run. Collecting waits until
    ``deadline_s`` after the start at most: a probe still running then is a :class:`Problem`.
    """
    answers: queue.Queue[tuple[str, Any]] = queue.Queue()
    started = time.monotonic()
    for part, probe in PROBES.items():

        def run(part: str = part, probe: Callable[[Settings], Any] = probe) -> None:
            answers.put((part, _ask(part, lambda: probe(settings))))

        threading.Thread(target=run, name=f"status-{part}", daemon=True).start()

    def collect() -> PipelineSnapshot:
        got: dict[str, Any] = {}
        while len(got) < len(PROBES):
            try:
                part, answer = answers.get(timeout=max(started + deadline_s - time.monotonic(), 0.0))
            except queue.Empty:
                break
            got[part] = answer
        for part in PROBES.keys() - got.keys():
            got[part] = Problem(part, f"no answer within {deadline_s:g} s")
        snap = PipelineSnapshot(
            got["lake"],
            got["kafka"],
            got["mlflow"],
            got["endpoint"],
            settings.gateway_url,
            runs=got["airflow"],
            session=got["session"],
        )
        return replace(snap, stuck=judge(settings, snap))

    return collect


def snapshot(settings: Settings, deadline_s: float = DEADLINE_S) -> PipelineSnapshot:
    """Ask every part at once; whatever has not answered within ``deadline_s`` is reported as a problem."""
    return start_snapshot(settings, deadline_s)()


# --- rendering ----------------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    ts = datetime.fromisoformat(value) if isinstance(value, str) else value
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(value: float | str | None, fmt: str) -> str:
    return "-" if value is None else format(float(value), fmt)


def renderables(snap: PipelineSnapshot) -> list[Any]:
    """Rich tables (or one-line problems) for the terminal, in pipeline order: lake, Kafka, model, serving."""
    from rich.markup import escape
    from rich.table import Table

    out: list[Any] = []

    def problem(p: Problem) -> str:
        return f"[red]{p.part}: unreachable[/red] ({p.reason})"

    def table(title: str, *columns: str) -> Table:
        t = Table(title=title)
        for col in columns:
            t.add_column(col)
        return t

    if isinstance(snap.lake, Problem):
        out.append(problem(snap.lake))
    else:
        title = f"lake: newest bar per symbol (age on the {snap.lake.clock} clock, {_when(snap.lake.now)})"
        lake = table(title, "symbol", "last bar", "age", "fresh")
        for row in snap.lake.symbols:
            fresh = "[green]yes[/green]" if row.fresh else "[yellow]no[/yellow]"
            lake.add_row(
                row.symbol, _when(row.last_bar), _age(row.age_s), fresh if row.last_bar else "[red]empty[/red]"
            )
        out.append(lake)
    if isinstance(snap.consumer_lag, Problem):
        out.append(problem(snap.consumer_lag))
    else:
        out.append(f"kafka: ingest consumer lag [bold]{snap.consumer_lag}[/bold] message(s)")
    if isinstance(snap.model, Problem):
        out.append(problem(snap.model))
    else:
        m = snap.model
        model = table("model", "", "version / run", "when", "RMSE model", "RMSE persistence", "skill vs persistence")
        model.add_row(
            "last training",
            (m.last_run_id or "-")[:12],
            _when(m.last_run_at),
            _num(m.model_rmse, ".5f"),
            _num(m.persistence_rmse, ".5f"),
            _num(m.skill, "+.2%"),
        )
        model.add_row(
            "production",
            m.production_version or "[yellow]none yet[/yellow]",
            f"promoted {_when(m.promoted_at)}",
            "",
            "",
            _num(m.production_skill, "+.2%"),
        )
        out.append(model)
    if isinstance(snap.endpoint, Problem):
        out.append(problem(snap.endpoint))
    else:
        endpoint = table(f"endpoint {snap.endpoint.url}", "deployment", "model version", "state", "traffic")
        for d in snap.endpoint.deployments:
            endpoint.add_row(d["name"], str(d["model_version"]), str(d["state"]), f"{d['traffic']} %")
        out.append(endpoint)
    if isinstance(snap.runs, Problem):
        out.append(problem(snap.runs))
    elif snap.runs:
        now = datetime.now(UTC)  # Airflow's times are wall-clock times
        runs = table("Airflow runs", "DAG", "last success", "last run")
        for dag in snap.runs:
            last = "[green]ok[/green]" if dag.failure is None else f"[red]failed[/red]: {escape(dag.failure.line)}"
            runs.add_row(dag.dag_id, since(dag.last_success, now), last)
        out.append(runs)
    out.append(f"gateway: [bold]{snap.gateway_url}[/bold]  (try: tickcast predict SPY)")
    if snap.stuck:
        out.append("[bold red]pipeline STUCK[/bold red]:")
        out.extend(f"  [red]- {escape(reason)}[/red]" for reason in snap.stuck)
    elif isinstance(snap.lake, Problem) or isinstance(snap.runs, Problem):
        out.append("[yellow]pipeline: not judged[/yellow] (the lake or Airflow did not answer)")
    else:
        out.append("[green]pipeline: moving[/green] (fresh lake in the session, last runs succeeded, lag not growing)")
    return out


def watch(console: Any, view: Callable[[], tuple[Any, bool]], interval_s: float, *, rounds: int | None = None) -> None:
    """Redraw ``view()``'s renderable in place every ``interval_s`` seconds (``tickcast status --watch``).

    Stops on Ctrl-C (or after ``rounds`` refreshes); the last view stays on the screen.
    """
    from rich.console import Group
    from rich.live import Live

    done = 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        try:
            while rounds is None or done < rounds:
                shown, healthy = view()
                stamp = datetime.now().astimezone().strftime("%H:%M:%S")
                state = "every service healthy" if healthy else "[/dim][red]not every service healthy[/red][dim]"
                footer = f"[dim]{stamp}: {state}; refreshed every {interval_s:g} s, Ctrl-C stops[/dim]"
                live.update(Group(shown, footer), refresh=True)
                done += 1
                if rounds is None or done < rounds:
                    time.sleep(interval_s)
        except KeyboardInterrupt:
            pass
