"""The stand-ins' settings (:mod:`emulators.settings`) that agree with a product :class:`Settings`: the same keys,
ports, MLflow server and AML coordinates, as the shared ``TICKCAST_*`` variables give both sides in the stack.
"""

from __future__ import annotations

from typing import Any

from emulators.settings import StandInSettings, load_stand_in_settings
from tickcast.settings import Settings


def stand_in_settings(settings: Settings, **overrides: Any) -> StandInSettings:
    """What the stand-ins would read next to ``settings``; ``overrides`` are merged into each group."""
    key, admin = settings.serving.endpoint_key, settings.serving.endpoint_admin_key
    groups: dict[str, Any] = {
        "symbols": settings.symbols,
        "stack": {
            "home": settings.stack.home,
            "host": settings.stack.host,
            "yahoo_port": settings.stack.yahoo_port,
            "endpoint_port": settings.stack.endpoint_port,
            "gateway_port": settings.stack.gateway_port,
            "function_port": settings.stack.function_port,
            "mlflow_port": settings.stack.mlflow_port,
        },
        "serving": {
            "endpoint_key": key.get_secret_value() if key is not None else None,
            "endpoint_admin_key": admin.get_secret_value() if admin is not None else None,
            "request_timeout_ms": settings.serving.request_timeout_ms,
        },
        "mlflow": {"tracking_uri": settings.mlflow.tracking_uri, "model_name": settings.mlflow.model_name},
        "aml": {
            "subscription_id": settings.aml.subscription_id,
            "resource_group": settings.aml.resource_group,
            "workspace": settings.aml.workspace,
            "endpoint_name": settings.aml.endpoint_name,
        },
        "gateway": {
            "subscription_keys": [k.get_secret_value() for k in settings.gateway.subscription_keys],
            "policy_file": settings.gateway.policy_file,
        },
    }
    for name, value in overrides.items():
        current = groups.get(name)
        groups[name] = {**current, **value} if isinstance(current, dict) and isinstance(value, dict) else value
    return load_stand_in_settings(_env_file=None, **groups)
