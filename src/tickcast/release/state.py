"""What a release is made of: endpoint and deployment states, the step-by-step report, the errors, and the
interfaces the deployers and their callers share (no I/O here)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from tickcast.endpoint.client import EndpointError
from tickcast.errors import TickcastError

if TYPE_CHECKING:
    pass


log = logging.getLogger(__name__)


log = logging.getLogger(__name__)

COLOURS: tuple[str, str] = ("blue", "green")
Action = Literal["deploy", "rollback"]
StepName = Literal["inspect", "create", "smoke", "traffic", "alias", "restore-traffic"]
BarRows = Sequence[Mapping[str, Any]]
SmokeBars = Callable[[str], BarRows | None] | Mapping[str, BarRows]

SMOKE_MAX_MOVE = 0.2  # a 1-minute forecast more than 20 % away from the last close is not a sane model
SMOKE_ATTEMPTS = 3  # symbols tried when the lake or the model refuses one (not_enough_bars / unknown_symbol)

T = TypeVar("T")


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


class DeployError(TickcastError):
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

    @property
    def registry(self) -> RegistryLike: ...

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

    @property
    def models(self) -> Any: ...


class RegistryLike(Protocol):
    """What the deployer needs of :class:`tickcast.registry.mlflow_registry.Registry`."""

    def version(self, alias: str) -> Any: ...

    def version_tags(self, version: str) -> dict[str, str]: ...

    def promote(self, version: str) -> str | None: ...

    def rollback(self) -> tuple[str, str]: ...


def validate_traffic(weights: Mapping[str, int]) -> dict[str, int]:
    """Whole percentages 0-100 summing to 100 (or all 0: stop routing), as AML requires."""
    bad = {k: v for k, v in weights.items() if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100}
    if bad:
        raise ValueError(f"traffic weights must be whole percentages 0-100; got {bad}")
    total = sum(weights.values())
    if total not in (0, 100):
        raise ValueError(f"traffic weights sum to {total}; they must sum to 100 (or all be 0)")
    return dict(weights)
