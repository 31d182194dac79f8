"""One HTTP client for the harness's probes and checks (``tickcast status``, health checks, the Airflow client).

Every ``httpx.Client()`` (and every ``httpx.get``, which builds one) loads the CA bundle into a new TLS
context: 25-50 ms of CPU each, and ``tickcast status`` made seven of them per call. Here the TLS context is
built once per process and the probes share one thread-safe pooled client; each call passes its own timeout.
"""

from __future__ import annotations

import ssl
import threading
from functools import cache

import httpx

_client: httpx.Client | None = None
_lock = threading.Lock()


@cache
def ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context (certifi's CA bundle), built once."""
    return httpx.create_ssl_context()


def shared() -> httpx.Client:
    """The process's probe client: no base URL, no default timeout worth relying on (pass ``timeout=``)."""
    global _client
    with _lock:
        if _client is None:
            _client = httpx.Client(verify=ssl_context())
        return _client
