"""The deployer for the profile: the local stand-in, or Azure ML in profile cloud."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tickcast.settings import Settings, get_settings

if TYPE_CHECKING:
    pass

from tickcast.release.aml import AzureMLDeployer
from tickcast.release.local import LocalEndpointDeployer
from tickcast.release.state import Deployment

log = logging.getLogger(__name__)


# --- choice by profile ------------------------------------------------------------------------------------


def deployer_for(settings: Settings | None = None) -> Deployment:
    """:class:`LocalEndpointDeployer` in profile local; in profile cloud :class:`AzureMLDeployer` on the workspace,
    endpoint and compute of ``settings.aml`` (``TICKCAST_AML__*``, from the ARM outputs)."""
    s = settings or get_settings()
    if s.profile == "cloud":
        return AzureMLDeployer(s)
    return LocalEndpointDeployer(s)
