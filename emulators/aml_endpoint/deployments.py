"""Deployments of the endpoint stand-in: model copies on disk, one in-process score.py per deployment, traffic.

A deployment is created from an MLflow model version: the version's ``model/`` folder is fetched (by default
with MLflow's own client, :func:`emulators.aml_endpoint.app.registry_loader`; tests inject ``model_loader``) and
copied into ``<state_dir>/deployments/<name>/model/``, ``version.txt`` is written beside it, and score.py is
imported for that deployment ALONE — by file path, under a unique module name, like azmlinfsrv does, so every
deployment has its own module globals (its own model) — and its ``init()`` runs with ``AZUREML_MODEL_DIR`` set
to the deployment's folder (only during the call, under a process-wide lock).

States: ``Succeeded`` (loaded, may take traffic) or ``Failed`` (``error`` says why; never routed to).
A failed CREATE leaves a Failed deployment. A failed UPDATE of a deployment that is serving leaves it
serving its previous model (AML rolls an update out beside the old pods) and records the failure in
``error``/``last_failed_model_version``; the PUT still answers Failed.

State (deployments + traffic) is written atomically to ``<state_dir>/state.json`` after every change; at
start every Succeeded deployment is re-initialised from its local copy (no MLflow needed), so a ``kill -9``
and a restart serve the same models. One that no longer loads becomes Failed and its traffic share is
skipped by routing (the remaining shares are renormalised).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import random
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

log = logging.getLogger("emulators.aml_endpoint")

ModelLoader = Callable[[str], Path]
ProvisioningState = Literal["Succeeded", "Failed"]

SCORE_SCRIPT = Path(__file__).resolve().parents[2] / "src" / "tickcast" / "scoring" / "score.py"
STATE_FILE = "state.json"
STATE_VERSION = 1
MODEL_DIR_ENV = "AZUREML_MODEL_DIR"
VERSION_FILE = "version.txt"  # read by score.py (see its docstring)
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")  # AML: 3-32 chars, letter first, no '-' last
VERSION_RE = re.compile(r"^[0-9]{1,9}$")

_ENV_LOCK = threading.Lock()  # AZUREML_MODEL_DIR is process-wide: one init() at a time


class EndpointError(Exception):
    """A management or routing request the stand-in refuses: HTTP ``status`` and a message saying why."""

    def __init__(self, status: int, message: str, code: str = "BadRequest") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


@dataclass
class Deployment:
    """One deployment's record (what ``GET /deployments/{name}`` shows and state.json keeps)."""

    name: str
    model_version: str
    provisioning_state: ProvisioningState
    error: str | None = None
    last_failed_model_version: str | None = None
    updated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def public(self, traffic: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "model_version": self.model_version,
            "provisioning_state": self.provisioning_state,
            "traffic": traffic,
            "updated_at": self.updated_at,
        }
        if self.error is not None:
            out["error"] = self.error
        if self.last_failed_model_version is not None:
            out["last_failed_model_version"] = self.last_failed_model_version
        return out


def load_score_module(script: Path, name: str, model_dir: Path) -> ModuleType:
    """Import ``script`` as a fresh module (not registered in ``sys.modules``) and run its ``init()``."""
    module_name = f"aml_endpoint_score_{re.sub(r'[^0-9A-Za-z_]', '_', name)}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, script)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the scoring script {script}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for fn in ("init", "run"):
        if not callable(getattr(module, fn, None)):
            raise ImportError(f"the scoring script {script} has no {fn}() function")
    with _ENV_LOCK:
        saved = os.environ.get(MODEL_DIR_ENV)
        os.environ[MODEL_DIR_ENV] = str(model_dir)
        try:
            module.init()
        finally:
            if saved is None:
                os.environ.pop(MODEL_DIR_ENV, None)
            else:
                os.environ[MODEL_DIR_ENV] = saved
    return module


def _describe(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class Deployments:
    """The endpoint's deployments, their loaded score modules and the traffic split (thread-safe)."""

    def __init__(
        self,
        state_dir: Path,
        model_loader: ModelLoader,
        *,
        score_script: Path = SCORE_SCRIPT,
        seed: int | None = None,
        downloads_dir: Path | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.root = state_dir / "deployments"
        self.downloads_dir = downloads_dir
        self.model_loader = model_loader
        self.score_script = score_script
        self.records: dict[str, Deployment] = {}
        self.traffic: dict[str, int] = {}
        self.modules: dict[str, ModuleType] = {}
        self._lock = threading.RLock()  # short: reads and swaps of records/traffic/modules (routing takes it)
        self._manage = threading.Lock()  # long: one management operation at a time (download + init)
        self._rng = random.Random(seed)  # noqa: S311 - traffic routing, not cryptography
        self.root.mkdir(parents=True, exist_ok=True)
        self._restore()

    # --- persistence ------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    def _save(self) -> None:
        data = {
            "version": STATE_VERSION,
            "deployments": {n: asdict(d) for n, d in self.records.items()},
            "traffic": {n: w for n, w in self.traffic.items() if n in self.records},
        }
        tmp = self.state_dir / f".{STATE_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.state_file)

    def _restore(self) -> None:
        for leftover in self.root.glob(".*"):  # staging/trash folders of an interrupted PUT
            shutil.rmtree(leftover, ignore_errors=True)
        if not self.state_file.is_file():
            return
        data = json.loads(self.state_file.read_text(encoding="utf-8"))
        fields = set(Deployment.__dataclass_fields__)
        for name, rec in dict(data.get("deployments") or {}).items():
            self.records[name] = Deployment(**{k: v for k, v in rec.items() if k in fields})
        self.traffic = {n: int(w) for n, w in dict(data.get("traffic") or {}).items() if n in self.records}
        changed = False
        for name, rec in self.records.items():
            if rec.provisioning_state != "Succeeded":
                continue
            try:
                self.modules[name] = load_score_module(self.score_script, name, self.root / name)
                log.info("deployment %s: reloaded model version %s from %s", name, rec.model_version, self.root / name)
            except Exception as err:
                rec.provisioning_state = "Failed"
                rec.error = f"reloading the local copy after a restart failed: {_describe(err)}"
                changed = True
                log.error("deployment %s: %s", name, rec.error)
        if changed:
            self._save()

    # --- management -------------------------------------------------------------------------------

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [d.public(self.traffic.get(n, 0)) for n, d in sorted(self.records.items())]

    def get(self, name: str) -> dict[str, Any]:
        with self._lock:
            rec = self.records.get(name)
            if rec is None:
                raise self._not_found(name)
            return rec.public(self.traffic.get(name, 0))

    def _not_found(self, name: str) -> EndpointError:
        known = ", ".join(sorted(self.records)) or "none"
        return EndpointError(404, f"deployment {name!r} not found (deployments: {known})", "NotFound")

    def put(self, name: str, model_version: str) -> tuple[dict[str, Any], bool]:
        """Create or update ``name`` from ``model_version`` synchronously; returns (record, created)."""
        if not NAME_RE.match(name):
            raise EndpointError(
                400,
                f"deployment name {name!r} is invalid: 3-32 letters, digits or '-', starting with a letter and "
                "not ending with '-' (e.g. blue, green)",
            )
        if not VERSION_RE.match(model_version):
            raise EndpointError(
                400, f'model_version {model_version!r} must be an MLflow model version number, e.g. "3"'
            )
        with self._manage:
            return self._put(name, model_version)

    def _put(self, name: str, model_version: str) -> tuple[dict[str, Any], bool]:
        with self._lock:
            existing = self.records.get(name)
        staging = self.root / f".staging-{name}-{uuid.uuid4().hex[:8]}"
        try:
            module = self._stage(name, model_version, staging)  # slow: no _lock, so scoring goes on
        except Exception as err:
            shutil.rmtree(staging, ignore_errors=True)
            error = f"model version {model_version} could not be deployed: {_describe(err)}"
            log.error("deployment %s: %s", name, error)
            with self._lock:
                if existing is not None and name in self.modules:
                    # keep serving the previous model, as an AML rolling update that fails does
                    existing.error = f"{error}; still serving model version {existing.model_version}"
                    existing.last_failed_model_version = model_version
                    existing.updated_at = datetime.now(UTC).isoformat()
                    self._save()
                    result = existing.public(self.traffic.get(name, 0))
                    result["provisioning_state"] = "Failed"
                    return result, False
                rec = Deployment(name, model_version, "Failed", error)
                self.records[name] = rec
                self._save()
                return rec.public(self.traffic.get(name, 0)), existing is None
        with self._lock:
            final = self.root / name
            trash = self.root / f".trash-{name}-{uuid.uuid4().hex[:8]}"
            if final.exists():
                final.rename(trash)
            staging.rename(final)
            shutil.rmtree(trash, ignore_errors=True)
            self.modules[name] = module
            rec = Deployment(name, model_version, "Succeeded")
            self.records[name] = rec
            self.traffic.setdefault(name, 0)
            self._save()
            log.info("deployment %s: serving model version %s", name, model_version)
            return rec.public(self.traffic.get(name, 0)), existing is None

    def _stage(self, name: str, model_version: str, staging: Path) -> ModuleType:
        source = Path(self.model_loader(model_version))
        try:
            if not source.is_dir():
                raise FileNotFoundError(f"the model loader returned {source}, which is not a folder")
            staging.mkdir(parents=True)
            shutil.copytree(source, staging / "model")
        finally:
            self._drop_download(source)
        (staging / VERSION_FILE).write_text(model_version + "\n", encoding="utf-8")
        return load_score_module(self.score_script, name, staging)

    def _drop_download(self, source: Path) -> None:
        """Remove what the default loader downloaded under ``downloads_dir`` (never an injected folder)."""
        if self.downloads_dir is None:
            return
        try:
            relative = source.resolve().relative_to(self.downloads_dir.resolve())
        except ValueError:
            return
        if relative.parts:
            shutil.rmtree(self.downloads_dir / relative.parts[0], ignore_errors=True)

    def delete(self, name: str) -> None:
        with self._manage, self._lock:
            if name not in self.records:
                raise self._not_found(name)
            share = self.traffic.get(name, 0)
            if share > 0:
                raise EndpointError(
                    409,
                    f"deployment {name!r} still has {share}% of the traffic; move it to other deployments with "
                    "PUT /traffic first",
                    "Conflict",
                )
            self.records.pop(name)
            self.traffic.pop(name, None)
            self.modules.pop(name, None)
            self._save()
            shutil.rmtree(self.root / name, ignore_errors=True)

    def get_traffic(self) -> dict[str, int]:
        with self._lock:
            return {n: self.traffic.get(n, 0) for n in sorted(self.records)}

    def set_traffic(self, weights: Mapping[str, Any]) -> dict[str, int]:
        """Replace the split; deployments not named get 0. Sum 100 (or 0 to stop routing), Succeeded only."""
        with self._manage, self._lock:
            unknown = sorted(set(weights) - set(self.records))
            if unknown:
                known = ", ".join(sorted(self.records)) or "none"
                raise EndpointError(400, f"traffic names unknown deployment(s) {unknown} (deployments: {known})")
            bad = {
                n: w for n, w in weights.items() if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= 100
            }
            if bad:
                raise EndpointError(400, f"traffic weights must be whole percentages 0-100; got {bad}")
            total = sum(weights.values())
            if total not in (0, 100):
                raise EndpointError(
                    400, f"traffic weights sum to {total}; they must sum to 100 (or all be 0 to stop routing)"
                )
            not_ready = {
                n: f"{self.records[n].provisioning_state}: {self.records[n].error}"
                for n, w in weights.items()
                if w > 0 and n not in self.modules
            }
            if not_ready:
                raise EndpointError(
                    400,
                    "traffic can only go to deployments in state Succeeded; "
                    + "; ".join(f"{n} is {why}" for n, why in sorted(not_ready.items())),
                )
            self.traffic = {n: int(weights.get(n, 0)) for n in self.records}
            self._save()
            return self.get_traffic()

    # --- routing ------------------------------------------------------------------------------------

    def route(self, header: str | None) -> tuple[str, ModuleType]:
        """The deployment that scores a request: the one named in the header, else a weighted draw."""
        with self._lock:
            if header:
                name = header.strip()
                if name not in self.records:
                    raise self._not_found(name)
                module = self.modules.get(name)
                if module is None:
                    rec = self.records[name]
                    raise EndpointError(
                        404, f"deployment {name!r} is {rec.provisioning_state} ({rec.error}); it cannot score"
                    )
                return name, module
            candidates = [(n, w) for n, w in sorted(self.traffic.items()) if w > 0 and n in self.modules]
            if not candidates:
                raise EndpointError(
                    404,
                    "No valid deployments to route to. Please check that the endpoint has at least one deployment "
                    "with positive weight values or use a deployment specific header to route.",
                    "NotFound",
                )
            name = self._rng.choices([n for n, _ in candidates], weights=[w for _, w in candidates])[0]
            return name, self.modules[name]
