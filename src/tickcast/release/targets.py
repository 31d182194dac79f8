"""The deployer for the profile (the local stand-in, or Azure ML in profile cloud), and what it should serve."""

from __future__ import annotations

import logging
from typing import Any

from tickcast.registry.vocabulary import BASELINE_KIND, MODEL_KIND, PRODUCTION
from tickcast.release.aml import AzureMLDeployer
from tickcast.release.local import LocalEndpointDeployer
from tickcast.release.state import Deployment
from tickcast.settings import Settings, get_settings

log = logging.getLogger(__name__)


# --- choice by profile ------------------------------------------------------------------------------------


def deployer_for(settings: Settings | None = None) -> Deployment:
    """:class:`LocalEndpointDeployer` in profile local; in profile cloud :class:`AzureMLDeployer` on the workspace,
    endpoint and compute of ``settings.aml`` (``TICKCAST_AML__*``, from the ARM outputs)."""
    s = settings or get_settings()
    if s.profile == "cloud":
        return AzureMLDeployer(s)
    return LocalEndpointDeployer(s)


# --- what should serve ------------------------------------------------------------------------------------


def version_to_serve(registry: Any) -> tuple[str, str] | None:
    """(version, why) the endpoint should serve: the ``production`` alias, else the newest version tagged
    ``model_kind=baseline`` (the first model of a new environment); None when the registry has neither.

    ``registry`` is a :class:`tickcast.registry.mlflow_registry.Registry` (``check_reachable``, ``version``,
    ``versions``); an unreachable registry raises its own error, not None."""
    check_reachable = getattr(registry, "check_reachable", None)
    if check_reachable is not None:
        check_reachable()
    current = registry.version(PRODUCTION)
    if current is not None:
        return str(current.version), "the production alias"
    baselines = [int(v.version) for v in registry.versions() if (v.tags or {}).get(MODEL_KIND) == BASELINE_KIND]
    if baselines:
        return str(max(baselines)), "the newest baseline version: nothing is in production yet"
    return None
