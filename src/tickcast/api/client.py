"""Scripted calls to the public API through the gateway: ``tickcast smoke`` / ``just smoke`` and ``tickcast predict``.

The same functions target the local stack (``settings.gateway_url`` + the local subscription key) and the cloud
(the APIM URL + a real subscription key): nothing here knows which one it talks to.

:func:`smoke` runs, through ONE synchronous ``httpx.Client``:

* per symbol, ``GET /api/predictions/{symbol}`` with ``Ocp-Apim-Subscription-Key`` → 200 with a
  :class:`~tickcast.api.schema.Prediction` whose ``predicted_close`` is finite and positive;
* the first symbol without a key → 401 (the gateway's subscription check);
* ``POST /api/predict`` with a whole session of valid bars (:data:`SESSION_BARS`) → 200: the model path, without
  the lake;
* ``POST /api/predict`` with 3 valid bars → 422 (too few bars; the model's message comes back);
* an unknown symbol → 404.

Three outcomes (:attr:`SmokeReport.status`), because a new environment is not a broken one:

* ``PASS`` — every check passed; a ``GET`` that finds no bars yet (404 ``no_bars`` / 422 ``not_enough_bars``:
  ingestion has not filled the lake) only *waits*, as long as the model answered the ``POST``;
* ``NO MODEL YET`` — nothing failed, but the API answers 503 ``no_model``: no model version is deployed on the
  endpoint yet (``tickcast smoke`` exits 3 for it, 1 for a failure);
* ``FAIL`` — anything else.

It never raises for a failed check: each becomes a :class:`SmokeCheck` of the :class:`SmokeReport`
(``report.ok``, ``report.rows()`` for a rich table, ``report.table()`` for plain text). :func:`predict` is one
``GET /api/predictions/{symbol}``: the body, or a :class:`GatewayError` whose message is the API's own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from tickcast.api.schema import Prediction
from tickcast.endpoint.errors import decode_body, error_parts
from tickcast.errors import UnavailableError

__all__ = [
    "KEY_HEADER",
    "NO_DATA_YET",
    "NO_MODEL_YET",
    "SESSION_BARS",
    "GatewayError",
    "SmokeCheck",
    "SmokeReport",
    "predict",
    "smoke",
]

KEY_HEADER: Final = "Ocp-Apim-Subscription-Key"
DEFAULT_TIMEOUT_S: Final = 10.0
UNKNOWN_SYMBOL: Final = "ZZZZZZ"
_DETAIL_CHARS = 200


class GatewayError(UnavailableError):
    """A call through the gateway that did not give a prediction: status (None: no answer), code, message."""

    def __init__(self, url: str, status: int | None, message: str, code: str | None = None) -> None:
        where = "no answer" if status is None else f"HTTP {status}"
        super().__init__(message, code=code)
        self.code = code
        self.text = f"{url}: {where}: {message}"
        self.url = url
        self.status = status

    def __str__(self) -> str:
        return self.text


NO_MODEL_YET: Final = "no model yet"
NO_DATA_YET: Final = "no data yet"
SESSION_BARS: Final = 390  # a regular US session: more than any model window needs


@dataclass(frozen=True)
class SmokeCheck:
    """One scripted call: what was expected, what came back, and why it failed (``detail``); ``waiting`` says
    that it is not a failure but the environment is not there yet (:data:`NO_MODEL_YET`, :data:`NO_DATA_YET`)."""

    name: str
    method: str
    path: str
    expected: int
    status: int | None
    ok: bool
    detail: str
    elapsed_ms: float
    waiting: str | None = None

    @property
    def result(self) -> str:
        return "PASS" if self.ok else ("WAIT" if self.waiting else "FAIL")


@dataclass
class SmokeReport:
    """Every check of one :func:`smoke` run, in order."""

    base_url: str
    checks: list[SmokeCheck] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``PASS``, ``NO MODEL YET`` or ``FAIL`` (see the module docstring)."""
        if not self.checks or any(c.result == "FAIL" for c in self.checks):
            return "FAIL"
        if any(c.waiting == NO_MODEL_YET for c in self.checks):
            return "NO MODEL YET"
        predicted = any(c.ok and c.expected == 200 for c in self.checks)
        return "PASS" if predicted else "FAIL"

    @property
    def ok(self) -> bool:
        return self.status == "PASS"

    @property
    def no_model(self) -> bool:
        return self.status == "NO MODEL YET"

    def rows(self) -> list[dict[str, Any]]:
        """One dict per check (name, method, path, expected, status, ok, detail, elapsed_ms)."""
        return [asdict(c) for c in self.checks]

    def table(self) -> str:
        """A plain-text table: result, check, expected, got, milliseconds, detail."""
        head = ("result", "check", "expected", "got", "ms", "detail")
        lines = [
            (
                c.result,
                c.name,
                str(c.expected),
                "-" if c.status is None else str(c.status),
                f"{c.elapsed_ms:.0f}",
                c.detail,
            )
            for c in self.checks
        ]
        widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head) - 1)]
        out = [f"smoke test of {self.base_url}: {self.status}"]
        for row in [head, *lines]:
            out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()


def _message(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) of an error answer, by the one error-body parser (the API's ``{error, code}`` or
    APIM's ``{statusCode, message}``), bounded for a terminal line."""
    message, code = error_parts(decode_body(response.content))
    return message[: _DETAIL_CHARS * 2], code


def _prediction_problem(response: httpx.Response, symbol: str) -> str | None:
    """Why a 200 body is not a usable prediction of ``symbol`` (None when it is)."""
    try:
        answer = Prediction.model_validate(response.json())
    except (ValueError, ValidationError) as err:
        return f"not a prediction: {str(err)[:_DETAIL_CHARS]}"
    if answer.symbol != symbol:
        return f"asked for {symbol}, got {answer.symbol}"
    if not (math.isfinite(answer.predicted_close) and answer.predicted_close > 0):
        return f"predicted_close {answer.predicted_close!r} is not a finite positive price"
    if not answer.interval.lower <= answer.predicted_close <= answer.interval.upper:
        return f"the interval {answer.interval.lower}..{answer.interval.upper} does not contain predicted_close"
    return None


def _few_bars(n: int = 3) -> list[dict[str, Any]]:
    """``n`` valid consecutive 1-minute bars ending a few minutes ago (3: fewer than any model window)."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    bars = []
    for i in range(n):
        ts = end - timedelta(minutes=n - 1 - i)
        price = 100.0 + 0.05 * math.sin(i / 7.0)  # a calm session: any sane model stays near 100
        bars.append(
            {
                "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "open": price,
                "high": price + 0.05,
                "low": price - 0.05,
                "close": price,
                "volume": 1000.0,
            }
        )
    return bars


@contextmanager
def _client(client: httpx.Client | None, timeout: float) -> Iterator[httpx.Client]:
    if client is not None:
        yield client
        return
    with httpx.Client(timeout=timeout, headers={"User-Agent": "tickcast-smoke"}) as own:
        yield own


def _call(
    client: httpx.Client, method: str, url: str, key: str | None, json_body: Any = None
) -> tuple[httpx.Response | None, float, str]:
    headers = {KEY_HEADER: key} if key else {}
    started = time.perf_counter()
    try:
        response = client.request(method, url, headers=headers, json=json_body)
    except httpx.HTTPError as err:
        return None, (time.perf_counter() - started) * 1000, f"{type(err).__name__}: {err}"
    return response, (time.perf_counter() - started) * 1000, ""


def smoke(
    base_url: str,
    key: str | None,
    symbols: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    client: httpx.Client | None = None,
) -> SmokeReport:
    """Run the scripted checks against the gateway at ``base_url`` (see the module docstring).

    ``client`` replaces the ``httpx.Client`` this function would open (tests pass a ``TestClient``).
    """
    base = base_url.rstrip("/")
    report = SmokeReport(base)
    served = [s.strip().upper() for s in symbols if s.strip()]
    if not served:
        raise ValueError("smoke needs at least one symbol")
    unknown = UNKNOWN_SYMBOL
    while unknown in served:
        unknown += "Z"

    def check(
        name: str,
        method: str,
        path: str,
        expected: int,
        *,
        send_key: bool = True,
        body: Any = None,
        symbol: str | None = None,
    ) -> None:
        response, elapsed_ms, failure = _call(http, method, base + path, key if send_key else None, body)
        if response is None:
            report.checks.append(SmokeCheck(name, method, path, expected, None, False, failure, elapsed_ms))
            return
        status = response.status_code
        waiting: str | None = None
        if status != expected:
            message, code = _message(response)
            detail = f"{code}: {message}" if code else message
            if send_key and not key and status == 401:
                detail += " (no subscription key was given)"
            if code == "no_model":
                waiting = NO_MODEL_YET
            elif expected == 200 and method == "GET" and code in ("no_bars", "not_enough_bars"):
                waiting = NO_DATA_YET
        elif expected == 200 and symbol is not None:
            problem = _prediction_problem(response, symbol)
            if problem:
                report.checks.append(SmokeCheck(name, method, path, expected, status, False, problem, elapsed_ms))
                return
            answer = response.json()
            iv = answer["interval"]
            detail = (
                f"predicted_close={answer['predicted_close']:.4f} "
                f"interval={iv['lower']:.4f}..{iv['upper']:.4f}@{iv['level']:g} as_of={answer['as_of']} "
                f"model_version={answer['model_version']} model_kind={answer['model_kind']}"
            )
        else:
            message, code = _message(response)
            detail = f"{code}: {message}" if code else message
        report.checks.append(
            SmokeCheck(
                name,
                method,
                path,
                expected,
                status,
                status == expected,
                detail[: _DETAIL_CHARS * 2],
                elapsed_ms,
                waiting,
            )
        )

    with _client(client, timeout) as http:
        for sym in served:
            path = f"/api/predictions/{quote(sym, safe='')}"
            check(f"GET {path}", "GET", path, 200, symbol=sym)
        first = f"/api/predictions/{quote(served[0], safe='')}"
        check("no subscription key", "GET", first, 401, send_key=False)
        check(
            "POST /api/predict with a session of bars",
            "POST",
            "/api/predict",
            200,
            body={"symbol": served[0], "bars": _few_bars(SESSION_BARS)},
            symbol=served[0],
        )
        check(
            "POST /api/predict with too few bars",
            "POST",
            "/api/predict",
            422,
            body={"symbol": served[0], "bars": _few_bars()},
        )
        check("unknown symbol", "GET", f"/api/predictions/{unknown}", 404)
    return report


def predict(
    base_url: str,
    key: str | None,
    symbol: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """``GET /api/predictions/{symbol}`` through the gateway: the 200 body, else :class:`GatewayError`."""
    sym = symbol.strip().upper()
    url = f"{base_url.rstrip('/')}/api/predictions/{quote(sym, safe='')}"
    with _client(client, timeout) as http:
        response, _, failure = _call(http, "GET", url, key)
    if response is None:
        raise GatewayError(
            url, None, f"cannot reach {base_url.rstrip('/')} ({failure}); is the stack up (tickcast up)?"
        )
    if response.status_code != 200:
        message, code = _message(response)
        if response.status_code == 401 and not key:
            message += " (no subscription key: set TICKCAST_GATEWAY__CLIENT_KEY)"
        raise GatewayError(url, response.status_code, message, code)
    problem = _prediction_problem(response, sym)
    if problem:
        raise GatewayError(url, 200, problem)
    body: dict[str, Any] = response.json()
    return body
