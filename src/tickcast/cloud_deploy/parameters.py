"""The deployment's parameters: the environment's parameter file plus what it must not hold (policy, SSH
key, publisher)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickcast.settings import Settings, env_name

if TYPE_CHECKING:
    pass

from tickcast.cloud_deploy.login import PER_USER_PARAMETERS, POLICY_PARAMETER, CloudDeployError

log = logging.getLogger(__name__)


# --- parameters ---------------------------------------------------------------------------------------------


def load_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CloudDeployError(f"the {what} {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise CloudDeployError(f"the {what} {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise CloudDeployError(f"the {what} {path} is not a JSON object")
    return data


def _read_ssh_key(path: Path) -> str:
    resolved = path.expanduser()
    var = env_name("cloud_deploy", "ssh_public_key_path")
    if not resolved.is_file():
        raise CloudDeployError(
            f"template parameter sshPublicKey: no SSH public key at {resolved}; set {var} or pass --ssh-public-key "
            "(create one with `ssh-keygen -t rsa -b 4096`)"
        )
    text = resolved.read_text(encoding="utf-8").strip()
    if "PRIVATE KEY" in text:
        raise CloudDeployError(f"{resolved} is a PRIVATE key; point {var} / --ssh-public-key at the .pub file")
    if not re.match(r"^(ssh-(rsa|ed25519)|ecdsa-sha2-\S+|sk-\S+) \S+", text):
        raise CloudDeployError(f"{resolved} is not an OpenSSH public key (expected 'ssh-rsa AAAA...')")
    return text


def assemble_parameters(
    settings: Settings, template: Mapping[str, Any], parameters_file: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """The deployment's parameters (``{name: {"value": ...}}``): the file's, plus what the deploy supplies.

    Only parameters ``template`` declares are sent. Raises :class:`CloudDeployError` for a parameter the file
    has but the template does not declare, a per-user value nothing supplies, or any required parameter
    (no ``defaultValue``) left without a value.
    """
    cfg = settings.cloud_deploy
    declared: Mapping[str, Any] = template.get("parameters") or {}
    from_file: Mapping[str, Any] = parameters_file.get("parameters") or {}
    unknown = sorted(set(from_file) - set(declared))
    if unknown:
        raise CloudDeployError(
            f"cloud/arm/parameters/{cfg.env}.json sets {', '.join(unknown)}, which the template does not declare"
        )
    params: dict[str, dict[str, Any]] = {name: dict(entry) for name, entry in from_file.items()}

    supplied: dict[str, Any] = {"env": cfg.env}
    if "location" in cfg.model_fields_set or "location" not in params:
        supplied["location"] = cfg.location
    if cfg.name_prefix:
        supplied["namePrefix"] = cfg.name_prefix
    if POLICY_PARAMETER in declared:
        policy = settings.gateway.policy_file
        if not policy.is_file():
            raise CloudDeployError(
                f"template parameter {POLICY_PARAMETER}: the APIM policy {policy} does not exist "
                f"(set {env_name('gateway', 'policy_file')})"
            )
        supplied[POLICY_PARAMETER] = policy.read_text(encoding="utf-8")
    missing: list[str] = []
    for name, (setting, option) in PER_USER_PARAMETERS.items():
        if name not in declared:
            continue
        if name == "sshPublicKey":  # the key file: when configured, or when nothing else gives a value
            explicit = "ssh_public_key_path" in cfg.model_fields_set
            if explicit or (name not in params and "defaultValue" not in declared[name]):
                supplied[name] = _read_ssh_key(cfg.ssh_public_key_path)
            continue
        value = getattr(cfg, setting)
        if value:
            supplied[name] = value
        elif name not in params and "defaultValue" not in declared[name]:
            missing.append(
                f"template parameter {name}: set {env_name('cloud_deploy', setting)} or pass {option} "
                "(per-user values are never kept in the parameter files)"
            )
    if missing:
        raise CloudDeployError("\n".join(missing))
    for name, value in supplied.items():
        if name in declared:
            params[name] = {"value": value}
    required = [n for n, spec in declared.items() if "defaultValue" not in (spec or {}) and n not in params]
    if required:
        raise CloudDeployError(
            f"the template needs parameters that nothing supplies: {', '.join(sorted(required))} "
            f"(add them to cloud/arm/parameters/{cfg.env}.json)"
        )
    return params
