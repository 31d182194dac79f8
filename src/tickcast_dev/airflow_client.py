"""A small client for the Airflow 3 REST API (``/api/v2``): DAGs, import errors, triggering and waiting.

The local Airflow runs with the simple auth manager in all-admins mode, so no token is needed there;
for a secured Airflow pass ``token``.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from tickcast.errors import UnavailableError
from tickcast.settings import Settings, get_settings
from tickcast_dev.http import ssl_context

TERMINAL_STATES = {"success", "failed"}


class AirflowError(UnavailableError):
    """The Airflow API refused a request or a run did not finish as expected."""


class AirflowClient:
    def __init__(self, settings: Settings | None = None, token: str | None = None, timeout_s: float = 60.0) -> None:
        s = settings or get_settings()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=f"{s.airflow_url}/api/v2", headers=headers, timeout=timeout_s, verify=ssl_context()
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, attempts: int = 4, **kwargs: Any) -> Any:
        """One API call; a 5xx (local Airflow on SQLite: a busy write lock) is retried with backoff."""
        for attempt in range(attempts):
            resp = self._http.request(method, path, **kwargs)
            if resp.status_code < 500 or attempt == attempts - 1:
                break
            time.sleep(1.0 * 2**attempt)
        if resp.status_code >= 400:
            raise AirflowError(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json() if resp.content else None

    def dag_ids(self) -> list[str]:
        return sorted(d["dag_id"] for d in self._call("GET", "/dags", params={"limit": 1000})["dags"])

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/importErrors", params={"limit": 1000})["import_errors"])

    def unpause(self, dag_id: str) -> None:
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def pause(self, dag_id: str) -> None:
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": True})

    def task_instances(self, dag_id: str, run_id: str = "~", state: str | None = None) -> list[dict[str, Any]]:
        """Task instances (``task_id``, ``dag_run_id``, ``state``, ``try_number``, ``pid``, ...) of one run, or of
        every run with ``run_id="~"``; ``state`` filters (e.g. ``"running"``)."""
        params = {"state": state} if state else None
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return list(self._call("GET", path, params=params)["task_instances"])

    def runs(self, dag_id: str, state: str | None = None) -> list[dict[str, Any]]:
        """The DAG's runs (``dag_run_id``, ``state``, ...), newest first; ``state`` filters."""
        params: dict[str, Any] = {"order_by": "-run_after", "limit": 100}
        if state:
            params["state"] = state
        return list(self._call("GET", f"/dags/{dag_id}/dagRuns", params=params)["dag_runs"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> Any:
        """A task try's log: ``{"content": [...]}`` (structured events in Airflow 3) or text."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        return self._call(
            "GET", path, attempts=1, params={"full_content": "true"}, headers={"Accept": "application/json"}
        )

    def mark_run(self, dag_id: str, run_id: str, state: str) -> None:
        """Set a run's state (``success`` / ``failed`` / ``queued``), as the UI's "mark as" does."""
        self._call("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", json={"state": state})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        body = {"logical_date": None, "conf": conf or {}}
        return str(self._call("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_for_dag(self, dag_id: str, timeout_s: float = 60.0) -> None:
        """Poll until the DAG processor has parsed ``dag_id`` (or raise with the import errors)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if dag_id in self.dag_ids():
                return
            time.sleep(0.5)
        raise AirflowError(f"DAG {dag_id!r} not parsed within {timeout_s:.0f}s; import errors: {self.import_errors()}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 120.0) -> str:
        """Poll a run until it ends; returns its final state."""
        deadline = time.monotonic() + timeout_s
        state = "unknown"
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL_STATES:
                return state
            time.sleep(0.5)
        raise AirflowError(f"run {run_id} of {dag_id} still {state!r} after {timeout_s:.0f}s")
