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
exception: ``status`` is what people run when something is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from tickcast.settings import Settings

__all__ = [
    "EndpointView",
    "LakeView",
    "ModelView",
    "PipelineSnapshot",
    "Problem",
    "SymbolFreshness",
    "snapshot",
]

PROBE_TIMEOUT_S = 5.0
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
        return self.age_s is not None and self.age_s <= 180


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


def _ask(part: str, probe: Callable[[], T]) -> T | Problem:
    try:
        return probe()
    except Exception as err:  # any failure of a probe is reported, never raised
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return Problem(part, f"{type(err).__name__}: {text[:200]}")


# --- probes -------------------------------------------------------------------------------------


def source_now(settings: Settings) -> tuple[str, datetime]:
    """The clock bars are produced on: the emulator's when it answers, else the wall clock."""
    import httpx

    try:
        r = httpx.get(f"{settings.yahoo_base_url}/_emulator/clock", timeout=2.0)
        if r.status_code == 200:
            return "emulator", datetime.fromtimestamp(float(r.json()["epoch"]), UTC)
    except (httpx.HTTPError, KeyError, ValueError):
        pass
    return "wall", datetime.now(UTC)


def lake_view(settings: Settings) -> LakeView:
    from typing import cast

    from azure.storage.blob import ContainerClient

    from tickcast.azure import lake_container
    from tickcast.lake.fast_fail import FastFailContainer
    from tickcast.lake.store import Lake

    clock, now = source_now(settings)
    lake = Lake(cast("ContainerClient", FastFailContainer(lake_container(settings))))
    rows = []
    for symbol in settings.symbols:
        last = lake.last_ts(symbol)
        age = None if last is None else (now - last).total_seconds() - 60.0  # the minute closes at ts + 60 s
        rows.append(SymbolFreshness(symbol, last, None if age is None else max(age, 0.0)))
    return LakeView(clock, now, rows)


def consumer_lag(settings: Settings) -> int:
    """Messages of the bars topic not yet committed by the ingest consumer group."""
    from kafka import TopicPartition

    from tickcast.ingest import kafka

    topic = settings.kafka.bars_topic
    # a consumer that never subscribes: it only reads the group's committed offsets and the end offsets
    probe = kafka.consumer(settings, request_timeout_ms=10_000)  # must exceed the session timeout
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

    with EndpointClient(settings) as client:
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


def snapshot(settings: Settings) -> PipelineSnapshot:
    """Ask every part at once (threads; each probe bounded by its own timeouts)."""
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="status") as pool:
        lake = pool.submit(_ask, "lake", lambda: lake_view(settings))
        lag = pool.submit(_ask, "kafka", lambda: consumer_lag(settings))
        model = pool.submit(_ask, "mlflow", lambda: model_view(settings))
        endpoint = pool.submit(_ask, "endpoint", lambda: endpoint_view(settings))
        return PipelineSnapshot(lake.result(), lag.result(), model.result(), endpoint.result(), settings.gateway_url)


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
    out.append(f"gateway: [bold]{snap.gateway_url}[/bold]  (try: tickcast predict SPY)")
    return out
