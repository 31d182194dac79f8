"""Blue/green deployment of a registered model version, with smoke test and rollback, behind one interface.

:class:`Deployment` is what callers use (the retrain DAG, the CLI); :func:`deployer_for` picks the
implementation for the profile:

* :class:`LocalEndpointDeployer` — the AML endpoint stand-in (``emulators/aml_endpoint``) through
  :class:`tickcast.endpoint.client.EndpointClient`;
* :class:`AzureMLDeployer` — an Azure ML Kubernetes online endpoint (AKS attached to the workspace)
  through ``azure-ai-ml`` v2, authenticated by :func:`tickcast.azure.credential` (managed identity).

Both run the SAME state machine (:class:`BlueGreenDeployer`). The colours are ``blue`` and ``green``; the
**live** colour is the deployment holding 100 % of the traffic (none before the first deploy), the
**idle** colour is the other one.

``deploy(version)``:

========== ====================================================================== =========================
step       does                                                                   a failure leaves
========== ====================================================================== =========================
inspect    reads deployments + traffic (refuses a split such as 90/10: finish or   nothing touched
           undo that canary first) and the registry aliases (fails fast when
           MLflow is down — the alias step would fail later anyway)
create     creates/updates the IDLE colour with ``version`` at 0 % traffic and     live colour keeps 100 %;
           checks it reports Succeeded at that version                            idle colour as the
                                                                                  endpoint left it
smoke      ``POST /score`` pinned to the idle colour (``azureml-model-deployment``) same
           with the newest real session of one of the model's symbols from the
           lake; the answer must be 200, for that symbol, from that version, with
           a finite, positive close within ``smoke_max_move`` of the last close
traffic    re-reads the split (must be unchanged: no concurrent deployer), then   the split as it was
           sets idle 100 / live 0                                                 before (restored)
alias      ``Registry.promote(version)``: production -> version, previous -> the  the split as it was
           old production                                                         before (restored);
                                                                                  aliases as MLflow left
                                                                                  them (see the report)
========== ====================================================================== =========================

``rollback()`` runs the same steps for the ``previous`` alias's version, with ``Registry.rollback()`` as the
alias step; when the idle colour still serves that version (the usual case: it is what was live before
the last deploy), the create step reuses it instead of re-creating it, so a rollback is a smoke test and a
traffic switch.

Failures: every step is recorded in a :class:`DeployReport` (step, ok, detail, seconds); the first failure
sets ``failed_step`` and ``error``, the traffic is restored when the traffic step had started (recorded
as step ``restore-traffic``), the report is logged and kept as ``last_report``, then :class:`DeployError`
is raised carrying the report. The alias never moves unless the endpoint already routes all traffic to a
colour that passed the smoke test.

The idle colour is **left as is** after a failure (not deleted): it has 0 % traffic, so it costs nothing
to route, its error stays readable (``GET /deployments/{colour}``, the AML studio), and the next deploy
overwrites it. After a success the idle colour keeps the old version: that is the instant rollback target.

Where the smoke bars come from: :class:`LakeSmokeBars` reads the newest session (UTC day) of a symbol from
the lake, going back up to ``max_days`` days for one with enough bars. The model's symbols come from the
registered version's ``symbols`` tag (``Registry.log_training`` sets it), else ``settings.symbols``; if
the model answers 422 ``unknown_symbol`` the symbols it lists are tried instead.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from tickcast.settings import PROJECT_ROOT, Settings, get_settings

if TYPE_CHECKING:
    from azure.ai.ml.entities import Environment, KubernetesOnlineDeployment, KubernetesOnlineEndpoint

    from tickcast.endpoint.client import EndpointClient
    from tickcast.lake.store import Lake

__all__ = [
    "COLOURS",
    "AzureMLDeployer",
    "AzureMLTarget",
    "BlueGreenDeployer",
    "DeployError",
    "DeployReport",
    "Deployment",
    "DeploymentState",
    "EndpointState",
    "LakeSmokeBars",
    "LocalEndpointDeployer",
    "MLClientLike",
    "ScoreFailure",
    "StepRecord",
    "build_deployment",
    "build_endpoint",
    "build_environment",
    "conda_spec",
    "deployer_for",
    "model_reference",
    "traffic_update",
    "validate_traffic",
]

log = logging.getLogger(__name__)

COLOURS: tuple[str, str] = ("blue", "green")
Action = Literal["deploy", "rollback"]
StepName = Literal["inspect", "create", "smoke", "traffic", "alias", "restore-traffic"]
BarRows = Sequence[Mapping[str, Any]]
SmokeBars = Callable[[str], BarRows | None] | Mapping[str, BarRows]

SMOKE_MAX_MOVE = 0.2  # a 1-minute forecast more than 20 % away from the last close is not a sane model
SMOKE_ATTEMPTS = 3  # symbols tried when the lake or the model refuses one (not_enough_bars / unknown_symbol)

T = TypeVar("T")


# --- results ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentState:
    """One colour on the endpoint: the model version it serves and whether it can take traffic."""

    name: str
    model_version: str | None
    provisioning_state: str
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.provisioning_state.lower() == "succeeded"


@dataclass(frozen=True)
class EndpointState:
    """Deployments and the traffic split; ``live`` is the deployment with 100 % (None: nothing is)."""

    deployments: Mapping[str, DeploymentState] = field(default_factory=dict)
    traffic: Mapping[str, int] = field(default_factory=dict)

    @property
    def live(self) -> str | None:
        return next((name for name, weight in self.traffic.items() if weight == 100), None)

    @property
    def split(self) -> bool:
        """Traffic is spread over more than one deployment (a canary in progress)."""
        return sum(1 for weight in self.traffic.values() if weight > 0) > 1

    @property
    def idle(self) -> str:
        """The colour a new version goes to: the one that is not live."""
        return next(c for c in COLOURS if c != self.live)

    def version(self, name: str | None) -> str | None:
        dep = self.deployments.get(name) if name else None
        return dep.model_version if dep else None

    def as_dict(self) -> dict[str, Any]:
        """``{"blue": "3", "green": "4", "traffic": {"blue": 0, "green": 100}}`` (colours that exist)."""
        out: dict[str, Any] = {name: dep.model_version for name, dep in sorted(self.deployments.items())}
        out["traffic"] = dict(self.traffic)
        return out


@dataclass
class StepRecord:
    step: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class DeployReport:
    """What one deploy or rollback did, step by step; ``failed_step``/``error`` say where and why it stopped."""

    action: Action
    version: str | None
    target: str  # "local" | "azureml"
    colour: str | None = None  # the idle colour that got (or was to get) the version
    live_before: str | None = None
    live_version_before: str | None = None
    ok: bool = False
    failed_step: str | None = None
    error: str | None = None
    steps: list[StepRecord] = field(default_factory=list)
    smoke: dict[str, Any] | None = None
    traffic_before: dict[str, int] = field(default_factory=dict)
    traffic_after: dict[str, int] | None = None
    aliases_before: dict[str, str | None] = field(default_factory=dict)
    aliases_after: dict[str, str | None] | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        what = f"{self.action} of model version {self.version or '?'} to {self.colour or '?'} ({self.target})"
        if self.ok:
            return f"{what}: done in {self.seconds:.1f}s; traffic {self.traffic_after}"
        return (
            f"{what}: FAILED at step {self.failed_step!r}: {self.error}; traffic {self.traffic_after}, "
            f"live colour {self.live_before or 'none'} (version {self.live_version_before or '-'}), aliases "
            f"{self.aliases_after if self.aliases_after is not None else self.aliases_before}"
        )


class DeployError(Exception):
    """A deploy or rollback stopped; ``report`` says at which step and why, and what the endpoint serves now."""

    def __init__(self, report: DeployReport) -> None:
        super().__init__(report.summary())
        self.report = report


class ScoreFailure(Exception):
    """A smoke request was not answered 200 (either host): status, score.py's own status and code, message."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        model_status: int | None = None,
        code: str | None = None,
        detail: Any = None,
    ) -> None:
        self.message = message
        self.status = status
        self.model_status = model_status
        self.code = code
        self.detail = detail
        where = "no answer" if status is None else f"HTTP {status}"
        if model_status is not None and model_status != status:
            where += f" (model answered {model_status})"
        super().__init__(f"{where}: {message}" + (f" [{code}]" if code else ""))


class _StepFailed(Exception):
    """A step failed (already recorded in the report)."""


class _Refused(RuntimeError):
    """A check of the state machine failed; the message is the whole explanation."""


def _describe(err: BaseException) -> str:
    from tickcast.endpoint.client import EndpointError

    text = str(err).strip()
    if isinstance(err, _Refused | _StepFailed | ScoreFailure | EndpointError) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _routed(traffic: Mapping[str, int]) -> dict[str, int]:
    """The deployments that get traffic (a 0 % entry and no entry mean the same)."""
    return {name: weight for name, weight in sorted(traffic.items()) if weight}


# --- interfaces -------------------------------------------------------------------------------------------


class Deployment(Protocol):
    """Blue/green deployment of registered model versions (satisfies :class:`tickcast.retrain.Deployer`)."""

    def current(self) -> EndpointState: ...

    def deploy(self, version: str) -> DeployReport: ...

    def rollback(self) -> DeployReport: ...

    def __call__(self, version: str) -> None: ...


class MLClientLike(Protocol):
    """The part of ``azure.ai.ml.MLClient`` the cloud deployer uses (tests pass a fake of the control plane)."""

    @property
    def online_endpoints(self) -> Any: ...

    @property
    def online_deployments(self) -> Any: ...


class RegistryLike(Protocol):
    """What the deployer needs of :class:`tickcast.registry.mlflow_registry.Registry`."""

    def version(self, alias: str) -> Any: ...

    def promote(self, version: str) -> str | None: ...

    def rollback(self) -> tuple[str, str]: ...


# --- smoke bars -------------------------------------------------------------------------------------------


def _bar_rows(frame: Any) -> list[dict[str, Any]]:
    """Lake rows as ``POST /score`` bars (ts ISO-8601 Z)."""
    rows = []
    for rec in frame.sort_values("ts").itertuples(index=False):
        rows.append(
            {
                "ts": rec.ts.isoformat().replace("+00:00", "Z"),
                "open": float(rec.open),
                "high": float(rec.high),
                "low": float(rec.low),
                "close": float(rec.close),
                "volume": float(rec.volume),
            }
        )
    return rows


class LakeSmokeBars:
    """``symbol -> bars``: the newest session in the lake with at least ``min_bars`` bars (or the longest seen).

    ``min_bars`` defaults to what a model with ``settings.model.window`` needs; up to ``max_days`` day
    files are read, newest first. ``None`` when the lake has no bars for the symbol.
    """

    def __init__(
        self, settings: Settings, lake: Lake | None = None, *, min_bars: int | None = None, max_days: int = 5
    ) -> None:
        from tickcast.features.indicators import bars_needed

        self.settings = settings
        self._lake = lake
        self.min_bars = min_bars if min_bars is not None else bars_needed(settings.model.window)
        self.max_days = max_days

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            from tickcast.lake.store import Lake

            self._lake = Lake.from_settings(self.settings)
        return self._lake

    def __call__(self, symbol: str) -> list[dict[str, Any]] | None:
        from tickcast.scoring.contract import MAX_BARS

        best: list[dict[str, Any]] = []
        for day in reversed(self.lake.days(symbol)[-self.max_days :]):
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            frame = self.lake.read(symbol, start, start + timedelta(days=1))
            rows = _bar_rows(frame)[-MAX_BARS:]
            if len(rows) >= self.min_bars:
                return rows
            if len(rows) > len(best):
                best = rows
        return best or None


def _ts_key(bar: Mapping[str, Any]) -> float:
    ts = bar["ts"]
    if isinstance(ts, int | float):
        return float(ts)
    if isinstance(ts, datetime):
        return ts.timestamp()
    return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()


def _as_source(smoke_bars: SmokeBars) -> Callable[[str], BarRows | None]:
    if isinstance(smoke_bars, Mapping):
        table = smoke_bars
        return lambda symbol: table.get(symbol)
    return smoke_bars


# --- the state machine ------------------------------------------------------------------------------------


class BlueGreenDeployer(ABC):
    """The deploy/rollback state machine of the module docstring; subclasses talk to one kind of endpoint."""

    target = "abstract"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: RegistryLike | None = None,
        smoke_bars: SmokeBars | None = None,
        smoke_max_move: float = SMOKE_MAX_MOVE,
    ) -> None:
        self.settings = settings or get_settings()
        self._registry = registry
        self._smoke_source = _as_source(smoke_bars) if smoke_bars is not None else None
        self.smoke_max_move = smoke_max_move
        self.last_report: DeployReport | None = None
        self._lock = threading.Lock()

    # --- what subclasses provide ----------------------------------------------------------------------

    @abstractmethod
    def _state(self) -> EndpointState:
        """Deployments and traffic as the endpoint reports them now."""

    @abstractmethod
    def _create(self, colour: str, version: str) -> DeploymentState:
        """Create or update ``colour`` to serve ``version`` at 0 % traffic; return its state when done."""

    @abstractmethod
    def _score(self, colour: str, body: dict[str, Any]) -> dict[str, Any]:
        """Score ``body`` on ``colour`` only; the 200 body, else raise :class:`ScoreFailure`."""

    @abstractmethod
    def _set_traffic(self, weights: Mapping[str, int]) -> dict[str, int]:
        """Replace the traffic split; return the split in force."""

    # --- collaborators --------------------------------------------------------------------------------

    @property
    def registry(self) -> RegistryLike:
        if self._registry is None:
            from tickcast.registry.mlflow_registry import Registry

            self._registry = Registry(self.settings)
        return self._registry

    @property
    def smoke_source(self) -> Callable[[str], BarRows | None]:
        if self._smoke_source is None:
            self._smoke_source = LakeSmokeBars(self.settings)
        return self._smoke_source

    # --- the interface --------------------------------------------------------------------------------

    def current(self) -> EndpointState:
        return self._state()

    def __call__(self, version: str) -> None:
        """:class:`tickcast.retrain.Deployer`: deploy, raising :class:`DeployError` on failure."""
        self.deploy(version)

    def deploy(self, version: str) -> DeployReport:
        """Serve ``version`` from the idle colour, switch all traffic to it, then move ``production``."""
        version = str(version).strip()
        report = DeployReport("deploy", version, self.target)
        with self._lock:
            return self._execute(report, reuse_idle=False)

    def rollback(self) -> DeployReport:
        """Serve the ``previous`` version again (idle colour, smoke, traffic), then swap the aliases."""
        report = DeployReport("rollback", None, self.target)
        with self._lock:
            return self._execute(report, reuse_idle=True)

    # --- steps ----------------------------------------------------------------------------------------

    @contextmanager
    def _step(self, report: DeployReport, name: StepName) -> Iterator[list[str]]:
        """Time one step; ``detail.append(...)`` says what it did. A failure marks the report and stops the run."""
        t0 = time.monotonic()
        detail: list[str] = []
        try:
            yield detail
        except Exception as err:
            message = _describe(err)
            report.steps.append(StepRecord(name, False, message, round(time.monotonic() - t0, 3)))
            if report.failed_step is None:
                report.failed_step, report.error = name, message
            raise _StepFailed(message) from err
        report.steps.append(StepRecord(name, True, "; ".join(detail), round(time.monotonic() - t0, 3)))

    def _aliases(self) -> dict[str, str | None]:
        from tickcast.registry.mlflow_registry import PREVIOUS, PRODUCTION

        out: dict[str, str | None] = {}
        for alias in (PRODUCTION, PREVIOUS):
            mv = self.registry.version(alias)
            out[alias] = None if mv is None else str(mv.version)
        return out

    def _execute(self, report: DeployReport, *, reuse_idle: bool) -> DeployReport:
        t0 = time.monotonic()
        before: EndpointState | None = None
        traffic_touched = False
        try:
            with self._step(report, "inspect") as detail:
                before = self._state()
                report.traffic_before = dict(before.traffic)
                if before.split:
                    raise _Refused(
                        f"the traffic is split {dict(before.traffic)}: finish or undo that rollout (one deployment "
                        "at 100) before a blue/green deploy"
                    )
                check_reachable = getattr(self.registry, "check_reachable", None)
                if callable(check_reachable):
                    check_reachable()  # seconds, not MLflow's minutes of retries, when it is down
                report.aliases_before = self._aliases()
                if report.action == "rollback":
                    report.version = report.aliases_before.get("previous")
                    if report.version is None:
                        raise _Refused("there is no 'previous' version to roll back to")
                    if report.aliases_before.get("production") is None:
                        raise _Refused("there is no 'production' version to roll back from")
                assert report.version is not None
                report.live_before, report.colour = before.live, before.idle
                report.live_version_before = before.version(before.live)
                detail.append(
                    f"live {before.live or 'none'} (version {report.live_version_before or '-'}), idle {before.idle}; "
                    f"aliases {report.aliases_before}"
                )
            version, idle = report.version, before.idle

            with self._step(report, "create") as detail:
                existing = before.deployments.get(idle)
                if reuse_idle and existing is not None and existing.succeeded and existing.model_version == version:
                    detail.append(f"reused: {idle} already serves version {version}")
                else:
                    state = self._create(idle, version)
                    if not state.succeeded or state.model_version != version:
                        raise _Refused(
                            f"{idle} is {state.provisioning_state} at version {state.model_version} after the "
                            f"update to {version}" + (f": {state.error}" if state.error else "")
                        )
                    detail.append(f"{idle} serves version {version} at 0% traffic")

            with self._step(report, "smoke") as detail:
                report.smoke = self._smoke(idle, version, detail)

            with self._step(report, "traffic") as detail:
                now = _routed(self._state().traffic)
                if now != _routed(before.traffic):
                    raise _Refused(
                        f"the traffic changed while deploying ({_routed(before.traffic)} -> {now}): another "
                        "deploy? nothing was switched; run it again"
                    )
                weights = {name: 0 for name in before.deployments} | {idle: 100}
                traffic_touched = True
                after = self._set_traffic(weights)
                if after.get(idle) != 100:
                    raise _Refused(f"asked for {weights}, the endpoint says {after}")
                detail.append(f"{after}")

            with self._step(report, "alias") as detail:
                if report.action == "deploy":
                    old = self.registry.promote(version)
                    detail.append(f"production -> {version}" + (f", previous -> {old}" if old else ""))
                else:
                    frm, to = self.registry.rollback()
                    detail.append(f"production {frm} -> {to}, previous -> {frm}")
            report.ok = True
        except _StepFailed:
            if traffic_touched and before is not None:
                self._restore(report, before)
        report.seconds = round(time.monotonic() - t0, 3)
        self._finish(report)  # raises DeployError when not ok
        return report

    def _restore(self, report: DeployReport, before: EndpointState) -> None:
        """Put the split back as it was (the old colour gets its 100 % back; or nothing when none was live)."""
        try:
            with self._step(report, "restore-traffic") as detail:
                names = [*before.deployments, *([report.colour] if report.colour else [])]
                weights = {name: 0 for name in names} | dict(before.traffic)
                detail.append(f"{self._set_traffic(weights)}")
        except _StepFailed:
            log.error("could not restore the traffic split %s: %s", dict(before.traffic), report.steps[-1].detail)

    def _finish(self, report: DeployReport) -> None:
        try:
            report.traffic_after = dict(self._state().traffic)
        except Exception as err:  # the endpoint may be what failed
            log.warning("reading the traffic after the %s failed: %s", report.action, err)
        if any(step.step == "alias" for step in report.steps):  # only that step moves aliases
            try:
                report.aliases_after = self._aliases()
            except Exception as err:
                log.warning("reading the aliases after the %s failed: %s", report.action, err)
        else:
            report.aliases_after = dict(report.aliases_before)
        self.last_report = report
        if report.ok:
            log.info("%s", report.summary())
            return
        log.error("%s", report.summary())
        raise DeployError(report)

    # --- smoke ----------------------------------------------------------------------------------------

    def _model_symbols(self, version: str) -> list[str]:
        """The version's ``symbols`` tag (set at registration), else the configured symbols."""
        try:
            registry: Any = self.registry
            mv = registry.client.get_model_version(registry.name, version)
            tagged = [s.strip() for s in str((mv.tags or {}).get("symbols", "")).split(",") if s.strip()]
        except Exception:  # a registry without tags (or a double): fall back to the settings
            tagged = []
        return tagged or list(self.settings.symbols)

    def _smoke(self, colour: str, version: str, detail: list[str]) -> dict[str, Any]:
        """One real request pinned to ``colour``; the checked answer. Raises on any doubt."""
        candidates = self._model_symbols(version)
        tried: list[str] = []
        reasons: list[str] = []
        while candidates and len(tried) < SMOKE_ATTEMPTS:
            symbol = candidates.pop(0)
            if symbol in tried:
                continue
            tried.append(symbol)
            bars = list(self.smoke_source(symbol) or [])
            if not bars:
                reasons.append(f"{symbol}: no bars in the lake")
                continue
            body = {"symbol": symbol, "bars": [dict(b) for b in bars]}
            try:
                answer = self._score(colour, body)
            except ScoreFailure as err:
                if err.code == "unknown_symbol" and isinstance(err.detail, Mapping):
                    known = [str(s) for s in err.detail.get("known") or []]
                    reasons.append(f"{symbol}: the model does not know it (knows {known})")
                    candidates = [s for s in known if s not in tried]
                    continue
                if err.code == "not_enough_bars":
                    reasons.append(f"{symbol}: {err.message}")
                    continue
                raise
            self._check_answer(answer, symbol, version, bars)
            detail.append(
                f"{symbol} on {colour}: predicted_close {answer['predicted_close']} (last close "
                f"{float(bars[-1]['close'])}) from version {answer.get('model_version')}, {len(bars)} bars"
            )
            return {"symbol": symbol, "bars": len(bars), "answer": answer}
        raise _Refused(
            "no smoke request could be made: " + ("; ".join(reasons) if reasons else "the model has no symbols")
        )

    def _check_answer(self, answer: Mapping[str, Any], symbol: str, version: str, bars: BarRows) -> None:
        close = answer.get("predicted_close")
        problems = []
        if answer.get("symbol") != symbol:
            problems.append(f"answered for symbol {answer.get('symbol')!r}, asked {symbol!r}")
        if str(answer.get("model_version")) != version:
            problems.append(f"answered from model version {answer.get('model_version')!r}, deployed {version!r}")
        if isinstance(close, bool) or not isinstance(close, int | float) or not math.isfinite(close):
            problems.append(f"predicted_close {close!r} is not a finite number")
        elif close <= 0:
            problems.append(f"predicted_close {close!r} is not positive")
        else:
            last = float(max(bars, key=_ts_key)["close"])
            if abs(close / last - 1) > self.smoke_max_move:
                problems.append(
                    f"predicted_close {close} is {abs(close / last - 1):.0%} away from the last close {last} "
                    f"(more than {self.smoke_max_move:.0%} in one minute)"
                )
        if problems:
            raise _Refused("the smoke answer is wrong: " + "; ".join(problems) + f" (answer {dict(answer)})")


# --- local: the endpoint stand-in -------------------------------------------------------------------------


class LocalEndpointDeployer(BlueGreenDeployer):
    """Blue/green on the local AML endpoint stand-in, through :class:`EndpointClient` (one pooled client).

    ``registry`` defaults to ``Registry(settings)``, ``client`` to ``EndpointClient(settings)``,
    ``smoke_bars`` to :class:`LakeSmokeBars` (a ``{symbol: bars}`` mapping or a ``symbol -> bars`` callable).
    """

    target = "local"

    def __init__(
        self,
        settings: Settings | None = None,
        registry: RegistryLike | None = None,
        client: EndpointClient | None = None,
        smoke_bars: SmokeBars | None = None,
        *,
        smoke_max_move: float = SMOKE_MAX_MOVE,
    ) -> None:
        super().__init__(settings, registry=registry, smoke_bars=smoke_bars, smoke_max_move=smoke_max_move)
        self._client = client

    @property
    def client(self) -> EndpointClient:
        if self._client is None:
            from tickcast.endpoint.client import EndpointClient

            self._client = EndpointClient(self.settings)
        return self._client

    def _state(self) -> EndpointState:
        deployments = {
            d.name: DeploymentState(d.name, d.model_version, d.provisioning_state, d.error)
            for d in self.client.deployments()
        }
        return EndpointState(deployments, self.client.traffic())

    def _create(self, colour: str, version: str) -> DeploymentState:
        d = self.client.put_deployment(colour, version)
        return DeploymentState(d.name, d.model_version, d.provisioning_state, d.error)

    def _score(self, colour: str, body: dict[str, Any]) -> dict[str, Any]:
        from tickcast.endpoint.client import EndpointError

        try:
            return self.client.score(body, deployment=colour).body
        except EndpointError as err:
            detail = err.body.get("detail") if isinstance(err.body, Mapping) else None
            raise ScoreFailure(
                err.message, status=err.status, model_status=err.model_status, code=err.code, detail=detail
            ) from err

    def _set_traffic(self, weights: Mapping[str, int]) -> dict[str, int]:
        return self.client.set_traffic(validate_traffic(weights))


# --- cloud: Azure ML on AKS -------------------------------------------------------------------------------

DEFAULT_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
ENVIRONMENT_NAME = "tickcast-serving"
REQUIREMENTS = PROJECT_ROOT / "cloud" / "aml" / "requirements.txt"
CODE_DIR = PROJECT_ROOT / "src"
SCORING_SCRIPT = "tickcast/scoring/score.py"  # relative to CODE_DIR
MODEL_VERSION_TAG = "model_version"
VERSION_ENV = "TICKCAST_MODEL_VERSION"  # score.py reports it as model_version (see its docstring)


def validate_traffic(weights: Mapping[str, int]) -> dict[str, int]:
    """Whole percentages 0-100 summing to 100 (or all 0: stop routing), as AML requires."""
    bad = {k: v for k, v in weights.items() if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100}
    if bad:
        raise ValueError(f"traffic weights must be whole percentages 0-100; got {bad}")
    total = sum(weights.values())
    if total not in (0, 100):
        raise ValueError(f"traffic weights sum to {total}; they must sum to 100 (or all be 0)")
    return dict(weights)


def conda_spec(requirements: Path = REQUIREMENTS, python: str = "3.11") -> dict[str, Any]:
    """The AML environment's conda file: python + pip + every requirement line of ``requirements``."""
    lines = [line.split("#", 1)[0].strip() for line in requirements.read_text(encoding="utf-8").splitlines()]
    pins = [line for line in lines if line]
    if not pins:
        raise ValueError(f"{requirements} lists no packages")
    return {
        "name": ENVIRONMENT_NAME,
        "channels": ["conda-forge"],
        "dependencies": [f"python={python}", "pip", {"pip": pins}],
    }


def build_environment(requirements: Path = REQUIREMENTS, image: str = DEFAULT_IMAGE) -> Environment:
    """The serving environment (image + conda/pip from ``requirements``), versioned by a hash of both.

    Same file and image -> same version, so AML reuses the built image; any change -> a new version
    (AML environment versions are immutable).
    """
    from azure.ai.ml.entities import Environment

    spec = conda_spec(requirements)
    digest = hashlib.sha256(json.dumps({"image": image, "conda": spec}, sort_keys=True).encode()).hexdigest()[:16]
    return Environment(
        name=ENVIRONMENT_NAME,
        version=digest,
        image=image,
        conda_file=spec,
        description=f"tickcast score.py under azmlinfsrv; pip from {requirements.name}",
    )


def model_reference(model_name: str, version: str) -> str:
    """The workspace model that the workspace's MLflow registry registered: ``azureml:<name>:<version>``."""
    return f"azureml:{model_name}:{version}"


def build_endpoint(
    name: str, compute: str, *, traffic: Mapping[str, int] | None = None, tags: Mapping[str, str] | None = None
) -> KubernetesOnlineEndpoint:
    """A Kubernetes online endpoint on the attached AKS ``compute``, called with Entra ID tokens (no keys)."""
    from azure.ai.ml.entities import KubernetesOnlineEndpoint

    return KubernetesOnlineEndpoint(
        name=name,
        compute=compute,
        auth_mode="aad_token",
        traffic=validate_traffic(traffic or {}),
        description="tickcast next-minute close forecaster (blue/green)",
        tags=dict(tags or {"app": "tickcast"}),
    )


def build_deployment(
    endpoint_name: str,
    colour: str,
    version: str,
    *,
    model_name: str,
    environment: Environment,
    instance_type: str,
    instance_count: int = 1,
    request_timeout_ms: int = 5000,
    code_dir: Path = CODE_DIR,
    scoring_script: str = SCORING_SCRIPT,
) -> KubernetesOnlineDeployment:
    """``colour`` serving registered ``version`` with score.py from ``code_dir`` in ``environment``."""
    from azure.ai.ml.entities import CodeConfiguration, KubernetesOnlineDeployment, OnlineRequestSettings

    if colour not in COLOURS:
        raise ValueError(f"deployment colour must be one of {COLOURS}, not {colour!r}")
    if not (code_dir / scoring_script).is_file():
        raise FileNotFoundError(f"the scoring script {code_dir / scoring_script} does not exist")
    return KubernetesOnlineDeployment(
        name=colour,
        endpoint_name=endpoint_name,
        model=model_reference(model_name, version),
        environment=environment,
        code_configuration=CodeConfiguration(code=str(code_dir), scoring_script=scoring_script),
        request_settings=OnlineRequestSettings(request_timeout_ms=request_timeout_ms),
        instance_type=instance_type,
        instance_count=instance_count,
        environment_variables={VERSION_ENV: str(version)},
        tags={MODEL_VERSION_TAG: str(version), "app": "tickcast"},
        description=f"{model_name} version {version}",
    )


def traffic_update(endpoint: KubernetesOnlineEndpoint, weights: Mapping[str, int]) -> KubernetesOnlineEndpoint:
    """A copy of ``endpoint`` (as read from AML, so nothing else changes) with ``traffic = weights``."""
    updated = copy.deepcopy(endpoint)
    updated.traffic = validate_traffic(weights)
    return updated


@dataclass(frozen=True)
class AzureMLTarget:
    """Where the cloud deployer works; :class:`AzureMLDeployer` fills it from the ``TICKCAST_AML__*`` settings."""

    subscription_id: str | None = None
    resource_group: str | None = None
    workspace: str | None = None
    compute: str = "tickcast-aks"
    instance_type: str = "defaultinstancetype"
    instance_count: int = 1
    image: str = DEFAULT_IMAGE
    requirements: Path = REQUIREMENTS
    code_dir: Path = CODE_DIR
    scoring_script: str = SCORING_SCRIPT
    operation_timeout_s: float = 1800.0


def _model_version_of(model: Any) -> str | None:
    """``azureml:name:3`` or ``…/models/name/versions/3`` -> ``"3"``."""
    text = str(model or "")
    if "/versions/" in text:
        return text.rsplit("/versions/", 1)[1].strip("/") or None
    parts = text.split(":")
    return parts[-1] if len(parts) >= 3 and parts[-1] else None


class AzureMLDeployer(BlueGreenDeployer):
    """Blue/green on an Azure ML Kubernetes online endpoint with ``azure-ai-ml`` v2.

    ``ml_client`` defaults to ``MLClient(tickcast.azure.credential(settings), subscription_id,
    resource_group, workspace)`` (built on first use). Every keyword left ``None`` comes from ``settings.aml``
    (``TICKCAST_AML__SUBSCRIPTION_ID``, ``__RESOURCE_GROUP``, ``__WORKSPACE``, ``__COMPUTE``,
    ``__INSTANCE_TYPE``, ``__INSTANCE_COUNT``, ``__OPERATION_TIMEOUT_S``; the ARM outputs). The endpoint is
    ``settings.aml.endpoint_name``; it is created (``auth_mode="aad_token"``, on ``compute``) by the first
    deploy. Smoke requests go through ``online_endpoints.invoke(deployment_name=colour)``.
    """

    target = "azureml"

    def __init__(
        self,
        settings: Settings | None = None,
        ml_client: MLClientLike | None = None,
        *,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        workspace: str | None = None,
        compute: str | None = None,
        instance_type: str | None = None,
        instance_count: int | None = None,
        image: str = DEFAULT_IMAGE,
        operation_timeout_s: float | None = None,
        registry: RegistryLike | None = None,
        smoke_bars: SmokeBars | None = None,
        smoke_max_move: float = SMOKE_MAX_MOVE,
    ) -> None:
        super().__init__(settings, registry=registry, smoke_bars=smoke_bars, smoke_max_move=smoke_max_move)
        aml = self.settings.aml
        self.aml = AzureMLTarget(
            subscription_id=subscription_id or aml.subscription_id,
            resource_group=resource_group or aml.resource_group,
            workspace=workspace or aml.workspace,
            compute=compute or aml.compute,
            instance_type=instance_type or aml.instance_type,
            instance_count=instance_count if instance_count is not None else aml.instance_count,
            image=image,
            operation_timeout_s=operation_timeout_s if operation_timeout_s is not None else aml.operation_timeout_s,
        )
        self.endpoint_name = aml.endpoint_name
        self._ml_client = ml_client

    @property
    def ml_client(self) -> MLClientLike:
        if self._ml_client is None:
            from azure.ai.ml import MLClient

            from tickcast.azure import credential

            missing = [k for k in ("subscription_id", "resource_group", "workspace") if not getattr(self.aml, k)]
            if missing:
                variables = ", ".join(f"TICKCAST_AML__{k.upper()}" for k in missing)
                raise ValueError(
                    f"AzureMLDeployer needs {', '.join(missing)} (the AML workspace to deploy to): set {variables} "
                    "from the ARM outputs (`tickcast deploy-cloud` writes them to .tickcast/cloud/<env>.env)"
                )
            self._ml_client = MLClient(
                credential(self.settings),
                subscription_id=self.aml.subscription_id,
                resource_group_name=self.aml.resource_group,
                workspace_name=self.aml.workspace,
            )
        return self._ml_client

    def _wait(self, poller: Any) -> Any:
        return poller.result(timeout=self.aml.operation_timeout_s)

    def _endpoint(self) -> Any | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.ml_client.online_endpoints.get(self.endpoint_name)
        except ResourceNotFoundError:
            return None

    def _state(self) -> EndpointState:
        endpoint = self._endpoint()
        if endpoint is None:
            return EndpointState()
        deployments = {}
        for d in self.ml_client.online_deployments.list(self.endpoint_name):
            version = (d.tags or {}).get(MODEL_VERSION_TAG) or _model_version_of(d.model)
            deployments[d.name] = DeploymentState(d.name, version, str(d.provisioning_state or "Unknown"))
        traffic = {str(k): int(v) for k, v in dict(endpoint.traffic or {}).items()}
        return EndpointState(deployments, traffic)

    def _create(self, colour: str, version: str) -> DeploymentState:
        if self._endpoint() is None:
            log.info("creating endpoint %s on compute %s", self.endpoint_name, self.aml.compute)
            self._wait(
                self.ml_client.online_endpoints.begin_create_or_update(
                    build_endpoint(self.endpoint_name, self.aml.compute)
                )
            )
        deployment = build_deployment(
            self.endpoint_name,
            colour,
            version,
            model_name=self.settings.mlflow.model_name,
            environment=build_environment(self.aml.requirements, self.aml.image),
            instance_type=self.aml.instance_type,
            instance_count=self.aml.instance_count,
            request_timeout_ms=self.settings.serving.request_timeout_ms,
            code_dir=self.aml.code_dir,
            scoring_script=self.aml.scoring_script,
        )
        done = self._wait(self.ml_client.online_deployments.begin_create_or_update(deployment))
        tags = getattr(done, "tags", None) or {}
        return DeploymentState(
            colour,
            tags.get(MODEL_VERSION_TAG) or _model_version_of(getattr(done, "model", None)),
            str(getattr(done, "provisioning_state", None) or "Unknown"),
        )

    def _score(self, colour: str, body: dict[str, Any]) -> dict[str, Any]:
        from azure.core.exceptions import AzureError

        from tickcast.scoring.contract import model_status

        with tempfile.TemporaryDirectory(prefix="tickcast-smoke-") as tmp:
            request_file = Path(tmp) / "request.json"
            request_file.write_text(json.dumps(body), encoding="utf-8")
            try:
                text = self.ml_client.online_endpoints.invoke(
                    endpoint_name=self.endpoint_name, request_file=str(request_file), deployment_name=colour
                )
            except AzureError as err:
                status = getattr(err, "status_code", None)
                response = getattr(err, "response", None)
                headers = dict(getattr(response, "headers", None) or {})
                code, detail, message = None, None, str(getattr(err, "message", None) or err)
                try:
                    answer = json.loads(response.text()) if response is not None else None
                except Exception:
                    answer = None
                if isinstance(answer, Mapping) and isinstance(answer.get("error"), str):  # score.py's ErrorBody
                    message, code, detail = answer["error"], answer.get("code"), answer.get("detail")
                elif isinstance(answer, Mapping) and answer.get("message"):  # AML's / azmlinfsrv's own errors
                    message = str(answer["message"])
                raise ScoreFailure(
                    message,
                    status=status,
                    model_status=model_status(status, headers) if status is not None else None,
                    code=code,
                    detail=detail,
                ) from err
            except Exception as err:
                # azure-ai-ml 1.35's validate_response() expects {"error": {...}} and raises AttributeError on
                # score.py's {"error": "<text>"} bodies: the request failed, the message is lost.
                raise ScoreFailure(f"invoke failed: {type(err).__name__}: {err}") from err
        try:
            answer = json.loads(text)
        except ValueError as err:
            raise ScoreFailure(f"the answer is not JSON: {str(text)[:200]!r}", status=200) from err
        if not isinstance(answer, dict):
            raise ScoreFailure(f"the answer is not a JSON object: {str(text)[:200]!r}", status=200)
        return answer

    def _set_traffic(self, weights: Mapping[str, int]) -> dict[str, int]:
        endpoint = self._endpoint()
        if endpoint is None:
            raise _Refused(f"endpoint {self.endpoint_name!r} does not exist")
        done = self._wait(self.ml_client.online_endpoints.begin_create_or_update(traffic_update(endpoint, weights)))
        return {str(k): int(v) for k, v in dict(getattr(done, "traffic", None) or {}).items()}


# --- choice by profile ------------------------------------------------------------------------------------


def deployer_for(settings: Settings | None = None) -> Deployment:
    """:class:`LocalEndpointDeployer` in profile local; in profile cloud :class:`AzureMLDeployer` on the workspace,
    endpoint and compute of ``settings.aml`` (``TICKCAST_AML__*``, from the ARM outputs)."""
    s = settings or get_settings()
    if s.profile == "cloud":
        return AzureMLDeployer(s)
    return LocalEndpointDeployer(s)
