"""MLflow lineage and the model registry: one run per training, one registered version, three aliases.

A training run logs its params, metrics (model AND persistence AND, where known, the oracle), the
artifacts a deployment needs under ``model/`` (``model.onnx``, ``preprocessing.json``, ``model.keras``),
the plots, and tags: data window, dataset hash, git commit. The version is registered under
``settings.mlflow.model_name`` from that ``model/`` folder and gets the alias ``challenger``.

Aliases: ``production`` (what the endpoint serves), ``previous`` (what it served before: rollback
target), ``challenger`` (the latest candidate). Stages are deprecated in MLflow and not used.

A baseline (:mod:`tickcast.model.baseline`) is registered the same way by :meth:`Registry.log_baseline`:
a run with its params and the same ``model/`` files (no ``model.keras``: it has no Keras side). Every version
carries the tag ``model_kind`` (``baseline`` or ``lstm-attention``).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickcast.errors import UnavailableError
from tickcast.registry.vocabulary import (
    ALIASES,
    CHALLENGER,
    DATA_WINDOW_END,
    DATA_WINDOW_START,
    DATASET_HASH,
    GIT_COMMIT,
    LIVE_EVALUATION,
    MODEL_KIND,
    PREVIOUS,
    PRODUCTION,
    PROMOTED_AT,
    PROMOTION_VERDICT,
    ROLLBACK_REASON,
    SKILL_VS_PERSISTENCE,
    SYMBOLS,
    TRAIN_END,
)
from tickcast.settings import PROJECT_ROOT, Settings, get_settings

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from tickcast.model.preprocessing import Preprocessing
    from tickcast.model.training import TrainingResult
    from tickcast.validation.gate import Verdict

ARTIFACT_DIR = "model"


class RegistryError(UnavailableError):
    """MLflow refused or could not be reached; the message says which call and why."""

    default_code = "registry_error"


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    version: str
    artifact_uri: str


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


class Registry:
    """The ONLY owner of MLflow in tickcast: runs, registered versions, their tags and the aliases."""

    def __init__(self, settings: Settings | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.settings = settings or get_settings()
        self.name = self.settings.mlflow.model_name
        self.uri = self.settings.mlflow_tracking_uri
        self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def check_reachable(self) -> None:
        """Fail fast with a clear message when the tracking server is down (before any training)."""
        import httpx

        try:
            httpx.get(f"{self.uri.rstrip('/')}/health", timeout=5).raise_for_status()
        except httpx.HTTPError as err:
            raise RegistryError(f"MLflow at {self.uri} is not reachable ({err}); nothing was registered") from None

    # --- logging a training ----------------------------------------------------------------------

    def log_training(self, result: TrainingResult) -> LoggedModel:
        """One run with everything needed to audit and deploy the model, then a registered version."""
        import mlflow

        from tickcast.model.kinds import LSTM_ATTENTION

        self._use_experiment()
        tags = {
            MODEL_KIND: LSTM_ATTENTION,
            DATA_WINDOW_START: result.data_window[0].isoformat(),
            DATA_WINDOW_END: result.data_window[1].isoformat(),
            TRAIN_END: result.train_end.isoformat(),
            DATASET_HASH: result.dataset_hash,
            GIT_COMMIT: git_commit(),
            SYMBOLS: ",".join(result.preprocessing.symbols),
        }
        with mlflow.start_run(tags=tags) as run:
            mlflow.log_params(result.params)
            mlflow.log_metrics({k: float(v) for k, v in result.metrics.items()})
            for epoch, (loss, val) in enumerate(zip(result.history["loss"], result.history["val_loss"], strict=False)):
                mlflow.log_metrics({"train_loss": float(loss), "val_loss": float(val)}, step=epoch)
            for name, fig in result.figures.items():
                mlflow.log_figure(fig, f"plots/{name}.png")
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / ARTIFACT_DIR
                folder.mkdir()
                (folder / "model.onnx").write_bytes(result.onnx_model)
                (folder / "preprocessing.json").write_text(result.preprocessing.to_json())
                result.keras_model.save(folder / "model.keras")
                (folder / "metrics.json").write_text(json.dumps(result.metrics, indent=2))
                mlflow.log_artifacts(str(folder), ARTIFACT_DIR)
                result.test_frame.to_csv(Path(tmp) / "test_predictions.csv", index=False)
                mlflow.log_artifact(str(Path(tmp) / "test_predictions.csv"), "evaluation")
            artifact_uri = f"{run.info.artifact_uri}/{ARTIFACT_DIR}"
        version = self.register(run.info.run_id, artifact_uri, tags)
        self._client.set_registered_model_alias(self.name, CHALLENGER, version)
        return LoggedModel(run_id=run.info.run_id, version=version, artifact_uri=artifact_uri)

    def _use_experiment(self) -> None:
        import mlflow

        self.check_reachable()
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        mlflow.set_experiment(self.settings.mlflow.experiment)

    def log_baseline(
        self, onnx_model: bytes, preprocessing: Preprocessing, *, params: dict[str, Any], challenger: bool = False
    ) -> LoggedModel:
        """Register a baseline version (no training: params, ``model.onnx`` + ``preprocessing.json``).

        ``challenger`` also points the ``challenger`` alias at it (a fresh stack deploys it directly instead).
        """
        import mlflow

        from tickcast.model.kinds import BASELINE

        self._use_experiment()
        tags = {
            MODEL_KIND: BASELINE,
            DATA_WINDOW_START: preprocessing.data_window["start"],
            DATA_WINDOW_END: preprocessing.data_window["end"],
            GIT_COMMIT: git_commit(),
            SYMBOLS: ",".join(preprocessing.symbols),
        }
        with mlflow.start_run(run_name="baseline", tags=tags) as run:
            mlflow.log_params(params)
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / ARTIFACT_DIR
                folder.mkdir()
                (folder / "model.onnx").write_bytes(onnx_model)
                (folder / "preprocessing.json").write_text(preprocessing.to_json())
                mlflow.log_artifacts(str(folder), ARTIFACT_DIR)
            artifact_uri = f"{run.info.artifact_uri}/{ARTIFACT_DIR}"
        version = self.register(run.info.run_id, artifact_uri, tags)
        if challenger:
            self._client.set_registered_model_alias(self.name, CHALLENGER, version)
        return LoggedModel(run_id=run.info.run_id, version=version, artifact_uri=artifact_uri)

    def kind(self, version: str) -> str:
        """The version's ``model_kind`` tag (``lstm-attention`` for versions registered before the tag)."""
        from tickcast.model.kinds import LSTM_ATTENTION

        return self.version_tags(version).get(MODEL_KIND, LSTM_ATTENTION)

    def register(self, run_id: str, source: str, tags: dict[str, str]) -> str:
        """A new version of the registered model from ``source`` (a run's ``model/`` folder); creates the
        registered model on first use. Returns the version number."""
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_registered_model(self.name)
        except MlflowException:
            self._client.create_registered_model(
                self.name,
                description=(
                    "Next-minute close forecasters with an interval (ONNX): the baseline (persistence + realized "
                    "volatility) and the LSTM + attention (Gaussian head); tag model_kind says which."
                ),
            )
        mv = self._client.create_model_version(self.name, source=source, run_id=run_id, tags=tags)
        return str(mv.version)

    # --- reading ---------------------------------------------------------------------------------

    def version(self, alias: str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None

    def model_version(self, version: str) -> ModelVersion:
        """The registered version ``version`` (tags, source, run id)."""
        return self._client.get_model_version(self.name, version)

    def versions(self) -> list[ModelVersion]:
        """Every registered version of the model (newest first as MLflow returns them)."""
        return list(self._client.search_model_versions(f"name='{self.name}'"))

    def version_tags(self, version: str) -> dict[str, str]:
        return dict(self.model_version(version).tags or {})

    def tag_version(self, version: str, tags: dict[str, str]) -> None:
        """Set version tags (names from :mod:`tickcast.registry.vocabulary`)."""
        for key, value in tags.items():
            self._client.set_model_version_tag(self.name, version, key, value)

    def run(self, run_id: str) -> Any:
        """The MLflow run (params, metrics, tags) behind a version."""
        return self._client.get_run(run_id)

    def artifact_paths(self, run_id: str, path: str) -> set[str]:
        """The artifact paths of a run under ``path`` (e.g. ``model``, ``plots``)."""
        return {a.path for a in self._client.list_artifacts(run_id, path)}

    def download(self, version: str, dest: Path | None = None) -> Path:
        """The version's ``model/`` folder (model.onnx, preprocessing.json, model.keras) on local disk."""
        import mlflow

        mv = self._client.get_model_version(self.name, version)
        target = dest or Path(tempfile.mkdtemp(prefix=f"tickcast-v{version}-"))
        path = mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(target), tracking_uri=self.uri)
        return Path(path)

    # --- verdicts and aliases --------------------------------------------------------------------

    def record_verdict(self, version: str, verdict: Verdict) -> None:
        self._client.update_model_version(self.name, version, description=verdict.description())
        self._client.set_model_version_tag(
            self.name, version, PROMOTION_VERDICT, "promote" if verdict.promote else "keep_production"
        )
        self._client.set_model_version_tag(self.name, version, SKILL_VS_PERSISTENCE, f"{verdict.skill:.6f}")
        numbers = verdict.gate_metrics()
        for key in ("gate_coverage", "gate_interval_score_bp", "gate_dm_p_point", "gate_dm_p_interval"):
            if key in numbers:
                self._client.set_model_version_tag(self.name, version, key, f"{numbers[key]:.6f}")
        run_id = self.model_version(version).run_id
        if run_id:
            for key, value in numbers.items():
                self._client.log_metric(run_id, key, value)

    def log_live_evaluation(self, version: str, metrics: dict[str, float], summary: str) -> None:
        """Live-evaluation metrics of ``version`` (``live_*``, a new point each time) and a one-line tag."""
        import time

        run_id = self.model_version(version).run_id
        if run_id:
            stamp = int(time.time() * 1000)
            for key, value in metrics.items():
                self._client.log_metric(run_id, f"live_{key}", float(value), timestamp=stamp)
        self._client.set_model_version_tag(self.name, version, LIVE_EVALUATION, summary)

    def record_rollback(self, version: str, reason: str) -> None:
        """Why ``version`` lost production (tag + description line), e.g. after live evaluation."""
        self._client.set_model_version_tag(self.name, version, ROLLBACK_REASON, reason)
        mv = self.model_version(version)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        text = (mv.description or "").rstrip() + f"\n\nRolled back {stamp}: {reason}"
        self._client.update_model_version(self.name, version, description=text.strip())

    def promote(self, version: str) -> str | None:
        """Move ``production`` to ``version``; the old production becomes ``previous``. Returns the old one."""
        current = self.version(PRODUCTION)
        old = str(current.version) if current is not None else None
        if old == version:
            return old
        if old is not None:
            self._client.set_registered_model_alias(self.name, PREVIOUS, old)
        self._client.set_registered_model_alias(self.name, PRODUCTION, version)
        self._stamp_promoted(version)
        return old

    def _stamp_promoted(self, version: str) -> None:
        """Aliases carry no time in MLflow: record when ``version`` became production as a version tag."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self._client.set_model_version_tag(self.name, version, PROMOTED_AT, now)

    def rollback(self) -> tuple[str, str]:
        """``production`` back to ``previous`` (which then points at the rolled-back version)."""
        prod, prev = self.version(PRODUCTION), self.version(PREVIOUS)
        if prod is None or prev is None:
            raise RegistryError("rollback needs both a 'production' and a 'previous' version")
        self._client.set_registered_model_alias(self.name, PRODUCTION, str(prev.version))
        self._client.set_registered_model_alias(self.name, PREVIOUS, str(prod.version))
        self._stamp_promoted(str(prev.version))
        return str(prod.version), str(prev.version)

    def aliases(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for alias in ALIASES:
            mv = self.version(alias)
            out[alias] = (
                None
                if mv is None
                else {"version": str(mv.version), "run_id": mv.run_id, "created": mv.creation_timestamp}
            )
        return out
