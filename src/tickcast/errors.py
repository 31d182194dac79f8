"""One error model for the whole product: what went wrong, what to do, and how each front end reports it.

Every error tickcast raises on purpose subclasses :class:`TickcastError`. It carries:

* ``message`` — one sentence a person can act on (what failed and what to do about it);
* ``exit_code`` — what ``tickcast`` exits with when the error reaches the CLI (one handler in
  :mod:`tickcast.cli` prints ``message`` in red and exits with it);
* ``http_status`` — what the public API answers when the error reaches it (one handler in
  :mod:`tickcast.api.app` turns it into the ``{"error", "code", "detail"}`` body);
* ``code`` — a stable machine-readable code (API bodies, logs, tests).

The subclasses here are the kinds a caller branches on; modules define their own specific errors on top
(``EndpointError``, ``RegistryError``, ``DeployError``, ...), so ``except TickcastError`` catches every one.
A failure we did not foresee is NOT a TickcastError: it propagates with its traceback, as it should.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigurationError",
    "NotFoundError",
    "RefusedError",
    "TickcastError",
    "UnavailableError",
]


class TickcastError(Exception):
    """Base of every deliberate tickcast error (see the module docstring)."""

    exit_code: int = 1
    http_status: int = 500
    default_code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code: str | None = code or self.default_code
        self.detail = detail

    def __str__(self) -> str:
        return self.message


class ConfigurationError(TickcastError):
    """A setting is missing or wrong: the message names the variable to set."""

    exit_code = 2
    http_status = 503
    default_code = "misconfigured"


class NotFoundError(TickcastError):
    """The thing asked for does not exist (a symbol, a model version, a deployment)."""

    exit_code = 3
    http_status = 404
    default_code = "not_found"


class RefusedError(TickcastError):
    """The input was understood and refused: the message says what to change."""

    exit_code = 4
    http_status = 422
    default_code = "refused"


class UnavailableError(TickcastError):
    """A service we depend on did not answer (or answered 5xx): try again later."""

    exit_code = 5
    http_status = 503
    default_code = "unavailable"
