"""The live-evaluation section of ``tickcast status`` (kept apart from the pipeline snapshot on purpose).

Two questions, each bounded by a short timeout:

* **MLflow** — per alias (production, previous, challenger): the version, its kind, the one-line result of
  its latest live evaluation (the ``live_evaluation`` tag the ``evaluate`` job sets) and, for a version that
  was rolled back, why (``rollback_reason``);
* **the prediction API** — ``GET /api/health``'s prediction-log counts: forecasts recorded, written to the
  lake, pending, write failures (with the last error) and rows dropped.

A part that cannot be asked says so in one line instead of failing ``status``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tickcast.settings import Settings

TIMEOUT_S = 5.0


@dataclass
class LiveView:
    versions: list[dict[str, str]] = field(default_factory=list)  # alias, version, kind, live, rollback_reason
    prediction_log: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def live_view(settings: Settings) -> LiveView:
    """What the live evaluation says now (see the module docstring)."""
    from tickcast.model.kinds import LSTM_ATTENTION
    from tickcast.registry.vocabulary import ALIASES, LIVE_EVALUATION, MODEL_KIND, ROLLBACK_REASON
    from tickcast_dev.http import shared as shared_http

    view = LiveView()
    # MLflow's REST API with a short timeout: its Python client retries for minutes when the server is down
    url = f"{settings.mlflow_tracking_uri.rstrip('/')}/api/2.0/mlflow/registered-models/alias"
    try:
        for alias in ALIASES:
            r = shared_http().get(url, params={"name": settings.mlflow.model_name, "alias": alias}, timeout=TIMEOUT_S)
            if r.status_code in (400, 404):  # no such alias (or model) yet
                continue
            r.raise_for_status()
            mv = r.json().get("model_version", {})
            tags = {t["key"]: t.get("value", "") for t in mv.get("tags") or []}
            view.versions.append(
                {
                    "alias": alias,
                    "version": str(mv.get("version")),
                    "kind": tags.get(MODEL_KIND, LSTM_ATTENTION),
                    "live": tags.get(LIVE_EVALUATION, "not evaluated yet"),
                    "rollback_reason": tags.get(ROLLBACK_REASON, ""),
                }
            )
    except Exception as err:
        view.problems.append(f"mlflow: unreachable ({type(err).__name__}: {str(err)[:160]})")
    try:
        health = shared_http().get(f"{settings.function_url.rstrip('/')}/api/health", timeout=TIMEOUT_S)
        health.raise_for_status()
        view.prediction_log = dict(health.json().get("prediction_log") or {})
    except Exception as err:
        view.problems.append(f"prediction API: unreachable ({type(err).__name__}: {str(err)[:160]})")
    return view


def live_renderables(view: LiveView) -> list[Any]:
    """Rich renderables: the versions' live evaluation and the prediction log's counts."""
    from rich.table import Table

    out: list[Any] = []
    if view.versions:
        table = Table(title="live evaluation (evaluate DAG, every 5 min): served forecasts vs realized closes")
        for col in ("alias", "version", "kind", "latest live evaluation"):
            table.add_column(col)
        for v in view.versions:
            text = v["live"] + (f"\n[red]rolled back: {v['rollback_reason']}[/red]" if v["rollback_reason"] else "")
            table.add_row(v["alias"], v["version"], v["kind"], text)
        out.append(table)
    if view.prediction_log is not None:
        p = view.prediction_log
        failures = int(p.get("write_failures", 0))
        colour = "red" if failures or int(p.get("dropped", 0)) else "green"
        line = (
            f"prediction log: {p.get('recorded', 0)} recorded, {p.get('written', 0)} written to the lake, "
            f"{p.get('pending', 0)} pending, [{colour}]{failures} write failure(s), {p.get('dropped', 0)} dropped"
            f"[/{colour}]"
        )
        if p.get("last_error"):
            line += f" (last: {p['last_error']})"
        out.append(line)
    out.extend(f"[red]{problem}[/red]" for problem in view.problems)
    return out
