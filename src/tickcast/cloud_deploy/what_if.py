"""``--what-if``: ARM's what-if result as one line per resource, with property deltas."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

from tickcast.cloud_deploy.login import CloudDeployError

log = logging.getLogger(__name__)


# --- what-if ------------------------------------------------------------------------------------------------

_CHANGE_SYMBOLS = {
    "Create": "+",
    "Delete": "-",
    "Modify": "~",
    "Deploy": "!",
    "Unsupported": "x",
    "NoChange": "=",
    "Ignore": "*",
}
_PROPERTY_SYMBOLS = {"Create": "+", "Delete": "-", "Modify": "~", "Array": "~", "NoEffect": "x"}
_SUMMARY_WORDS = {
    "Create": "to create",
    "Modify": "to modify",
    "Delete": "to delete",
    "Deploy": "to deploy",
    "Unsupported": "unsupported",
    "NoChange": "no change",
    "Ignore": "to ignore",
}
_VALUE_CHARS = 100


def enum_text(value: Any) -> str:
    """An enum member or a string -> its plain value (``ChangeType.CREATE`` -> ``"Create"``)."""
    return str(getattr(value, "value", value))


def _fmt(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


def _delta_lines(changes: Iterable[Any], indent: int) -> list[str]:
    lines: list[str] = []
    pad = " " * indent
    for change in sorted(changes, key=lambda c: str(getattr(c, "path", ""))):
        kind = enum_text(getattr(change, "property_change_type", ""))
        sym = _PROPERTY_SYMBOLS.get(kind, "?")
        path = getattr(change, "path", "")
        before, after = getattr(change, "before", None), getattr(change, "after", None)
        children = list(getattr(change, "children", None) or [])
        if kind == "Create":
            lines.append(f"{pad}{sym} {path}: {_fmt(after)}")
        elif kind == "Delete":
            lines.append(f"{pad}{sym} {path}: {_fmt(before)}")
        elif kind == "NoEffect":
            lines.append(f"{pad}{sym} {path}: {_fmt(after)} (no effect)")
        elif children:
            lines.append(f"{pad}{sym} {path}: [")
            lines.extend(_delta_lines(children, indent + 4))
            lines.append(f"{pad}  ]")
        else:
            lines.append(f"{pad}{sym} {path}: {_fmt(before)} => {_fmt(after)}")
    return lines


def _resource_lines(change: Any, scope: str) -> list[str]:
    kind = enum_text(getattr(change, "change_type", ""))
    rid = str(getattr(change, "resource_id", None) or getattr(change, "symbolic_name", None) or "?")
    shown = rid[len(scope) :].lstrip("/") if scope and rid.lower().startswith(scope.lower()) else rid
    shown = shown.removeprefix("providers/")
    line = f"  {_CHANGE_SYMBOLS.get(kind, '?')} {shown}"
    if kind == "Unsupported" and getattr(change, "unsupported_reason", None):
        line += f" ({change.unsupported_reason})"
    lines = [line]
    if kind == "Modify":
        lines.extend(_delta_lines(getattr(change, "delta", None) or [], 6))
    return lines


def render_what_if(result: Any, scope: str = "") -> str:
    """A readable plan from a ``WhatIfOperationResult``: one line per resource, property deltas for Modify."""
    error = getattr(result, "error", None)
    if error is not None:
        raise CloudDeployError(f"what-if failed: {getattr(error, 'code', '')}: {getattr(error, 'message', error)}")
    order = list(_CHANGE_SYMBOLS)
    changes = sorted(
        getattr(result, "changes", None) or [],
        key=lambda c: (
            order.index(enum_text(c.change_type)) if enum_text(c.change_type) in order else len(order),
            str(c.resource_id or ""),
        ),
    )
    legend = "  ".join(f"{sym} {kind}" for kind, sym in _CHANGE_SYMBOLS.items())
    lines = ["Resource and property changes are indicated with these symbols:", f"  {legend}", ""]
    if scope:
        lines.append(f"Scope: {scope}")
    for change in changes:
        lines.extend(_resource_lines(change, scope))
    potential = list(getattr(result, "potential_changes", None) or [])
    if potential:
        lines += ["", "Potential changes (what-if could not evaluate them fully):"]
        for change in potential:
            lines.extend(_resource_lines(change, scope))
    for diag in getattr(result, "diagnostics", None) or []:
        lines.append(f"{enum_text(getattr(diag, 'level', 'Info'))}: {getattr(diag, 'code', '')} {diag.message}".strip())
    counts: dict[str, int] = {}
    for change in changes:
        kind = enum_text(change.change_type)
        counts[kind] = counts.get(kind, 0) + 1
    summary = ", ".join(f"{counts[k]} {_SUMMARY_WORDS[k]}" for k in order if counts.get(k))
    lines += ["", f"Resource changes: {summary or 'none'}."]
    return "\n".join(lines)
