"""Health checks for stack services, as declared by the ``ready`` table of each service in stack.toml.

* ``{http = URL, status = [..], healthy_keys = [..]}``: an HTTP GET answering one of the statuses;
  with ``healthy_keys`` the JSON body must report ``{"<key>": {"status": "healthy"}}`` for each key
  (Airflow's ``/api/v2/monitor/health``).
* ``{kafka = "host:port"}``: the broker answers a metadata request.

Every check is one short attempt returning ``(healthy, detail)``; callers poll with a deadline.
"""

from __future__ import annotations

from typing import Any

import httpx


def check(ready: dict[str, Any], timeout_s: float = 2.0) -> tuple[bool, str]:
    if "http" in ready:
        return _check_http(ready, timeout_s)
    if "kafka" in ready:
        return _check_kafka(str(ready["kafka"]), timeout_s)
    raise ValueError(f"unknown health check {sorted(ready)}: use 'http' or 'kafka'")


def _check_http(ready: dict[str, Any], timeout_s: float) -> tuple[bool, str]:
    url = str(ready["http"])
    try:
        resp = httpx.get(url, timeout=timeout_s)
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
