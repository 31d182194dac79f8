"""The ARM control plane the deployer drives: a protocol (tests pass a recorded fake) and its Azure SDK
implementation."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential


log = logging.getLogger(__name__)


# --- the control plane --------------------------------------------------------------------------------------


class ArmControlPlane(Protocol):
    """What the deployer calls on Azure Resource Manager (tests pass a stand-in)."""

    @property
    def resource_groups(self) -> Any: ...

    @property
    def deployments(self) -> Any: ...

    @property
    def deployment_operations(self) -> Any: ...

    def request(
        self, method: str, path: str, api_version: str, params: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        """One ARM REST call on ``path`` (from ``/subscriptions/...``): (HTTP status, decoded JSON body or None)."""
        ...

    def delete_by_id(self, resource_id: str, api_version: str, params: Mapping[str, str] | None = None) -> None:
        """DELETE a resource and wait for the operation to end (raises on failure)."""
        ...


class AzureControlPlane:
    """The real control plane: ``ResourceManagementClient`` + ``DeploymentsMgmtClient`` on one credential."""

    def __init__(self, credential: TokenCredential, subscription_id: str) -> None:
        from azure.mgmt.resource.deployments import DeploymentsMgmtClient
        from azure.mgmt.resource.resources import ResourceManagementClient

        self._resources = ResourceManagementClient(credential, subscription_id)
        self._deployments = DeploymentsMgmtClient(credential, subscription_id)

    @property
    def resource_groups(self) -> Any:
        return self._resources.resource_groups

    @property
    def deployments(self) -> Any:
        return self._deployments.deployments

    @property
    def deployment_operations(self) -> Any:
        return self._deployments.deployment_operations

    def request(
        self, method: str, path: str, api_version: str, params: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        from azure.core.rest import HttpRequest

        response = self._resources.send_request(
            HttpRequest(method, path, params={"api-version": api_version, **dict(params or {})})
        )
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        return response.status_code, body

    def delete_by_id(self, resource_id: str, api_version: str, params: Mapping[str, str] | None = None) -> None:
        poller = self._resources.resources.begin_delete_by_id(resource_id, api_version=api_version, params=params or {})
        poller.result()


# AADSTS codes of a login that worked once and has run out: a refresh token expired or revoked (700082, 50173,
# 70043) or a federated workload-identity assertion past its lifetime (700024, Azure Pipelines after ~1 hour).
