"""The deployment's outputs as ``TICKCAST_*`` settings: the dotenv file and the raw JSON under ``.tickcast/cloud``."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickcast.settings import ARM_OUTPUT_SETTINGS, env_name

if TYPE_CHECKING:
    pass

from tickcast.cloud_deploy.login import CloudDeployError

log = logging.getLogger(__name__)


# --- outputs -> settings ------------------------------------------------------------------------------------


def output_values(outputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """ARM's ``{"name": {"type": "String", "value": v}}`` (or plain ``{"name": v}``) -> ``{"name": v}``."""
    values: dict[str, Any] = {}
    for name, entry in (outputs or {}).items():
        values[name] = entry.get("value") if isinstance(entry, Mapping) and "value" in entry else entry
    return values


def outputs_to_env(outputs: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """``TICKCAST_*`` variables from the outputs (:data:`ARM_OUTPUT_SETTINGS`), and the mapped outputs missing."""
    values = output_values(outputs)
    env = {env_name("profile"): "cloud"}
    missing: list[str] = []
    for output, loc in ARM_OUTPUT_SETTINGS.items():
        value = values.get(output)
        if value is None or value == "":
            missing.append(output)
            continue
        env[env_name(*loc)] = value if isinstance(value, str) else json.dumps(value)
    return env, missing


_BARE = re.compile(r"^[A-Za-z0-9_./:@,+=%-]*$")


def dotenv_text(env: Mapping[str, str], header: Sequence[str] = ()) -> str:
    """A dotenv file that both python-dotenv (pydantic-settings) and ``set -a; . file`` read the same way."""
    lines = [f"# {line}" for line in header]
    for name, value in env.items():
        if "'" in value or "\n" in value:
            raise CloudDeployError(f"cannot write {name}: its value contains a quote or a newline: {value!r}")
        lines.append(f"{name}={value}" if _BARE.match(value) else f"{name}='{value}'")
    return "\n".join(lines) + "\n"


def write_outputs(outputs: Mapping[str, Any], env: str, directory: Path) -> tuple[Path, Path, list[str]]:
    """Write ``<env>.env`` (TICKCAST_* settings) and ``<env>.json`` (every output); also return missing outputs."""
    variables, missing = outputs_to_env(outputs)
    directory.mkdir(parents=True, exist_ok=True)
    header = [
        f"written by `tickcast deploy-cloud --env {env}` at {datetime.now(UTC).isoformat(timespec='seconds')}",
        "ARM outputs -> settings (tickcast.settings.ARM_OUTPUT_SETTINGS). Use: set -a; . THIS_FILE; set +a",
    ]
    env_path = directory / f"{env}.env"
    json_path = directory / f"{env}.json"
    env_path.write_text(dotenv_text(variables, header), encoding="utf-8")
    json_path.write_text(json.dumps(output_values(outputs), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return env_path, json_path, missing
