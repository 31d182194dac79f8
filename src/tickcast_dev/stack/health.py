"""Health checks for stack services, as declared by the ``ready`` table of each service in stack.toml.

* ``{http = URL, status = [..], healthy_keys = [..]}``: an HTTP GET answering one of the statuses;
  with ``healthy_keys`` the JSON body must report ``{"<key>": {"status": "healthy"}}`` for each key
  (Airflow's ``/api/v2/monitor/health``). Given ``since`` (the service's start, epoch seconds), every
  ``latest_*_heartbeat`` timestamp of those keys must be at or after it: a heartbeat left in the database
  by the components of a previous run (killed less than a threshold ago) does not count as healthy.
* ``{kafka = "host:port"}``: the broker answers a metadata request.
* ``{command = [argv...]}``: the command exits 0 (e.g. PostgreSQL's ``pg_isready``).

Every check is one short attempt returning ``(healthy, detail)``; callers poll with a deadline.
"""

from __future__ import annotations

import subprocess
from datetime import datetime
from typing import Any

import httpx

from tickcast_dev.http import shared as shared_http

CLOCK_SKEW_S = 1.0  # heartbeats are written by other processes: allow this much before `since`


def check(ready: dict[str, Any], timeout_s: float = 2.0, since: float | None = None) -> tuple[bool, str]:
    if "http" in ready:
        return _check_http(ready, timeout_s, since)
    if "kafka" in ready:
        return _check_kafka(str(ready["kafka"]), timeout_s)
    if "command" in ready:
        return _check_command([str(a) for a in ready["command"]], timeout_s)
    raise ValueError(f"unknown health check {sorted(ready)}: use 'http', 'kafka' or 'command'")


def _check_command(argv: list[str], timeout_s: float) -> tuple[bool, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 1, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"{type(err).__name__}: {err}"
    output = (proc.stdout + proc.stderr).strip().splitlines()
    detail = output[-1] if output else f"exit {proc.returncode}"
    return proc.returncode == 0, detail


def _stale_heartbeats(body: dict[str, Any], keys: list[str], since: float) -> list[str]:
    """Keys whose ``latest_*_heartbeat`` is missing or older than ``since`` (a previous run's component)."""
    stale = []
    for key in keys:
        part = body.get(key) or {}
        beats = [v for k, v in part.items() if k.startswith("latest_") and k.endswith("_heartbeat")]
        for beat in beats:
            try:
                at = datetime.fromisoformat(str(beat)).timestamp()
            except ValueError:
                at = None
            if at is None or at < since - CLOCK_SKEW_S:
                stale.append(key)
                break
    return stale


def _check_http(ready: dict[str, Any], timeout_s: float, since: float | None = None) -> tuple[bool, str]:
    url = str(ready["http"])
    try:
        resp = shared_http().get(url, timeout=timeout_s)
    except httpx.HTTPError as err:
        return False, f"{type(err).__name__}: {err}"
    wanted = [int(s) for s in ready.get("status", [200])]
    if resp.status_code not in wanted:
        return False, f"HTTP {resp.status_code} (want {wanted})"
    keys = ready.get("healthy_keys") or []
    if keys:
        try:
            body = resp.json()
        except ValueError:
            return False, "health body is not JSON"
        bad = [k for k in keys if (body.get(k) or {}).get("status") != "healthy"]
        if bad:
            return False, "not healthy yet: " + ", ".join(bad)
        stale = _stale_heartbeats(body, keys, since) if since is not None else []
        if stale:
            return False, "no heartbeat since start yet: " + ", ".join(stale)
    return True, f"HTTP {resp.status_code}"


def _check_kafka(address: str, timeout_s: float) -> tuple[bool, str]:
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        return False, f"connect: {err}"
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(bootstrap_servers=address, request_timeout_ms=ms)
    except (KafkaError, OSError, ValueError) as err:
        return False, f"{type(err).__name__}: {err}"
    try:
        topics = admin.list_topics()
    except (KafkaError, OSError) as err:
        return False, f"{type(err).__name__}: {err}"
    finally:
        admin.close()
    return True, f"{len(topics)} topics"
