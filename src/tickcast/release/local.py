"""Blue/green on the local AML endpoint stand-in (``emulators/aml_endpoint``) through the endpoint client."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tickcast.endpoint.client import EndpointError
from tickcast.settings import Settings

if TYPE_CHECKING:
    from tickcast.endpoint.client import EndpointClient

from tickcast.release.bluegreen import BlueGreenDeployer
from tickcast.release.state import (
    SMOKE_MAX_MOVE,
    DeploymentState,
    EndpointState,
    RegistryLike,
    ScoreFailure,
    SmokeBars,
    validate_traffic,
)

log = logging.getLogger(__name__)


# --- local: the endpoint stand-in -------------------------------------------------------------------------


class LocalEndpointDeployer(BlueGreenDeployer):
    """Blue/green on the local AML endpoint stand-in, through :class:`EndpointClient` (one pooled client).

    ``registry`` defaults to ``Registry(settings)``, ``client`` to ``EndpointClient(settings)``,
    ``smoke_bars`` to :class:`LakeSmokeBars` (a ``{symbol: bars}`` mapping or a ``symbol -> bars`` callable).
    """

    target = "local"

    def __init__(
        self,
        settings: Settings | None = None,
        registry: RegistryLike | None = None,
        client: EndpointClient | None = None,
        smoke_bars: SmokeBars | None = None,
        *,
        smoke_max_move: float = SMOKE_MAX_MOVE,
    ) -> None:
        super().__init__(settings, registry=registry, smoke_bars=smoke_bars, smoke_max_move=smoke_max_move)
        self._client = client

    @property
    def client(self) -> EndpointClient:
        if self._client is None:
            from tickcast.endpoint.client import EndpointClient

            self._client = EndpointClient(self.settings)
        return self._client

    def _state(self) -> EndpointState:
        deployments = {
            d.name: DeploymentState(d.name, d.model_version, d.provisioning_state, d.error)
            for d in self.client.deployments()
        }
        return EndpointState(deployments, self.client.traffic())

    def _create(self, colour: str, version: str) -> DeploymentState:
        d = self.client.put_deployment(colour, version)
        return DeploymentState(d.name, d.model_version, d.provisioning_state, d.error)

    def _score(self, colour: str, body: dict[str, Any]) -> dict[str, Any]:

        try:
            return self.client.score(body, deployment=colour).body
        except EndpointError as err:
            detail = err.body.get("detail") if isinstance(err.body, Mapping) else None
            raise ScoreFailure(
                err.message, status=err.status, model_status=err.model_status, code=err.code, detail=detail
            ) from err

    def _set_traffic(self, weights: Mapping[str, int]) -> dict[str, int]:
        return self.client.set_traffic(validate_traffic(weights))
