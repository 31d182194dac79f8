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

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tickcast.settings import Settings, get_settings

if TYPE_CHECKING:
    pass

from tickcast.registry.vocabulary import PREVIOUS, PRODUCTION, SYMBOLS
from tickcast.release.smoke_bars import LakeSmokeBars, _as_source, _ts_key
from tickcast.release.state import (
    SMOKE_ATTEMPTS,
    SMOKE_MAX_MOVE,
    BarRows,
    DeployError,
    DeploymentState,
    DeployReport,
    EndpointState,
    RegistryLike,
    ScoreFailure,
    SmokeBars,
    StepName,
    StepRecord,
    _describe,
    _Refused,
    _routed,
    _StepFailed,
)

log = logging.getLogger(__name__)


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
                    report.version = report.aliases_before.get(PREVIOUS)
                    if report.version is None:
                        raise _Refused("there is no 'previous' version to roll back to")
                    if report.aliases_before.get(PRODUCTION) is None:
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
            tags = self.registry.version_tags(version)
            tagged = [s.strip() for s in str(tags.get(SYMBOLS, "")).split(",") if s.strip()]
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
        interval = answer.get("interval")
        if not isinstance(interval, Mapping):
            problems.append("the answer has no interval")
        elif isinstance(close, int | float) and not (
            isinstance(interval.get("lower"), int | float)
            and isinstance(interval.get("upper"), int | float)
            and interval["lower"] <= close <= interval["upper"]
        ):
            problems.append(f"interval {dict(interval)} does not contain predicted_close {close!r}")
        if problems:
            raise _Refused("the smoke answer is wrong: " + "; ".join(problems) + f" (answer {dict(answer)})")
