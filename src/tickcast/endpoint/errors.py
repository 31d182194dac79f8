"""Errors of the online endpoint, and the ONE parser of every error body we meet.

:class:`EndpointError` is what the sync and the async endpoint client raise; :func:`error_parts` reads the
message and code out of ARM-style, score.py's / the public API's, AML's / azmlinfsrv's and APIM's error
bodies (the gateway client uses it too); :func:`retry_after_of` reads ``Retry-After``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from tickcast.errors import UnavailableError

__all__ = ["RETRY_AFTER_S", "EndpointError", "decode_body", "error_parts", "retry_after_of"]

RETRY_AFTER_S: Final = 5  # when the endpoint did not say how long to wait
MAX_RETRY_AFTER_S: Final = 300
_MAX_MESSAGE: Final = 2000


class EndpointError(UnavailableError):
    """The endpoint refused a call or could not be reached.

    ``status``: the HTTP status (``None`` when no answer came); ``message``: the server's own explanation
    (or the transport error); ``code``: the server's error code where it gave one; ``model_status``: for
    scoring, score.py's own status behind an AML 424; ``body``: the decoded answer (JSON or text);
    ``retry_after``: the seconds the endpoint asked to wait (429/503), else a default.
    """

    default_code = "endpoint_error"

    def __init__(
        self,
        operation: str,
        status: int | None,
        message: str,
        *,
        code: str | None = None,
        model_status: int | None = None,
        body: Any = None,
        retry_after: int = RETRY_AFTER_S,
    ) -> None:
        where = "no answer" if status is None else f"HTTP {status}"
        if model_status is not None and model_status != status:
            where += f" (model answered {model_status})"
        super().__init__(message, code=code)
        self.code = code  # the server's own code (None when it gave none)
        self.text = f"{operation}: {where}: {message}" + (f" [{code}]" if code else "")
        self.operation = operation
        self.status = status
        self.model_status = model_status
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.text


def decode_body(content: bytes | str) -> Any:
    """JSON when it parses, else the (bounded) text."""
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        text = content if isinstance(content, str) else content[:_MAX_MESSAGE].decode("utf-8", "replace")
        return text[:_MAX_MESSAGE]


def error_parts(body: Any) -> tuple[str, str | None]:
    """(message, code) from any error body we meet: ARM-style ``{"error": {"code", "message"}}``, score.py's
    and the public API's ``{"error", "code", "detail"}``, AML's / azmlinfsrv's / APIM's ``{"message"}``,
    APIM's ``{"statusCode", "message"}``, or plain text."""
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping):  # ARM style
            return str(err.get("message") or err), (str(err["code"]) if err.get("code") else None)
        if isinstance(err, str):  # score.py's ErrorBody, the public API's, or a Failed deployment record
            return err, (str(body["code"]) if body.get("code") else None)
        if body.get("message"):  # AML / azmlinfsrv / APIM
            return str(body["message"]), (str(body["code"]) if body.get("code") else None)
        return json.dumps(body)[:_MAX_MESSAGE], None
    text = str(body or "").strip()
    return (text[:_MAX_MESSAGE] or "(empty body)"), None


def retry_after_of(headers: Mapping[str, str]) -> int:
    """``Retry-After`` seconds (bounded), or :data:`RETRY_AFTER_S` when absent or not a number."""
    value = str(headers.get("retry-after") or "").strip()
    if value.isdigit():
        return max(1, min(int(value), MAX_RETRY_AFTER_S))
    return RETRY_AFTER_S
