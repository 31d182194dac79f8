"""Azure client factories: the only place that decides how tickcast authenticates to Azure.

* profile ``local``: Blob through a connection string (Azurite's development account).
* profile ``cloud``: Blob through the account URL and ``DefaultAzureCredential``, which resolves
  to the managed identity of the host (Function App, AML, VM). No key, SAS or connection string
  is read on this path.

Every other module asks here for its clients, so swapping Azurite for real Blob is a profile change.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import TYPE_CHECKING

from tickcast.settings import Settings, get_settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import BlobServiceClient, ContainerClient


def credential(settings: Settings | None = None) -> TokenCredential:
    """The token credential of profile ``cloud`` (managed identity first, via DefaultAzureCredential).

    One credential per identity for the whole process, so its token cache is shared by every client.
    """
    s = settings or get_settings()
    return _credential(s.azure.managed_identity_client_id)


@lru_cache(maxsize=4)
def _credential(client_id: str | None) -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    if client_id:
        return DefaultAzureCredential(managed_identity_client_id=client_id)
    return DefaultAzureCredential()


# What an Azure Pipelines AzureCLI@2 task exposes of a workload-identity service connection, plus the job's token.
PIPELINES_VARIABLES = (
    "AZURESUBSCRIPTION_TENANT_ID",
    "AZURESUBSCRIPTION_CLIENT_ID",
    "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
    "SYSTEM_ACCESSTOKEN",
)


def control_plane_credential(settings: Settings | None = None) -> TokenCredential:
    """The credential ``deploy-cloud``/``destroy-cloud`` reach Azure Resource Manager with.

    Inside an Azure Pipelines task of a workload-identity service connection (:data:`PIPELINES_VARIABLES` set,
    ``SYSTEM_ACCESSTOKEN`` mapped into the task's environment): ``AzurePipelinesCredential``, which asks Azure
    DevOps for a fresh federated token whenever it needs an access token. The Azure CLI's own login in such a task
    cannot renew itself, so a deployment waited on for more than about an hour would fail with AADSTS700024
    (docs/decisions/0025). Anywhere else: :func:`credential` (``az login``, a service principal, a managed identity).
    """
    import os

    values = [os.environ.get(name, "").strip() for name in PIPELINES_VARIABLES]
    if all(values):
        from azure.identity import AzurePipelinesCredential

        tenant, client, connection, token = values
        return AzurePipelinesCredential(
            tenant_id=tenant, client_id=client, service_connection_id=connection, system_access_token=token
        )
    return credential(settings)


def blob_service(settings: Settings | None = None) -> BlobServiceClient:
    """A Blob service client for the configured profile."""
    from azure.storage.blob import BlobServiceClient

    s = settings or get_settings()
    if s.profile == "local":
        return BlobServiceClient.from_connection_string(s.blob_connection_string())
    return BlobServiceClient(account_url=s.blob_account_url, credential=credential(s))


def container(name: str, settings: Settings | None = None, *, create: bool = False) -> ContainerClient:
    """A container client; with ``create=True`` the container is created when missing."""
    from azure.core.exceptions import ResourceExistsError

    client = blob_service(settings).get_container_client(name)
    if create:
        with contextlib.suppress(ResourceExistsError):
            client.create_container()
    return client


def lake_container(settings: Settings | None = None, *, create: bool = False) -> ContainerClient:
    """The container that holds the Parquet lake."""
    s = settings or get_settings()
    return container(s.storage.lake_container, s, create=create)
