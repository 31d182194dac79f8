"""Who deploys: the management-plane login, its errors, and telling an expired login from a missing one."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from tickcast.errors import TickcastError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential


log = logging.getLogger(__name__)


MANAGEMENT_SCOPE = "https://management.azure.com/.default"
POLICY_PARAMETER = "apimPolicyXml"

# template parameter -> (setting of cloud_deploy, CLI option): values that differ per person, never in a file
PER_USER_PARAMETERS: dict[str, tuple[str, str]] = {
    "sshPublicKey": ("ssh_public_key_path", "--ssh-public-key"),
    "apimPublisherEmail": ("apim_publisher_email", "--apim-publisher-email"),
    "apimPublisherName": ("apim_publisher_name", "--apim-publisher-name"),
}

_LOGIN_HELP = (
    "not logged in to Azure: run `az login` (and `az account set --subscription <id>`), or set "
    "AZURE_CLIENT_ID / AZURE_TENANT_ID with AZURE_CLIENT_SECRET or AZURE_FEDERATED_TOKEN_FILE for a service "
    "principal or workload identity, or run where a managed identity is assigned "
    "(TICKCAST_AZURE__MANAGED_IDENTITY_CLIENT_ID for a user-assigned one)"
)


class CloudDeployError(TickcastError):
    """The deploy or destroy cannot go on; the message says why and what to do."""


class NotLoggedInError(CloudDeployError):
    """No Azure credential could get a token for Azure Resource Manager."""


class LoginLostError(CloudDeployError):
    """The login expired while waiting for a deployment that goes on in Azure (``--resume`` waits again)."""


EXPIRED_LOGIN_CODES = ("AADSTS700082", "AADSTS50173", "AADSTS70043", "AADSTS700024")


def login_problem(err: BaseException) -> str:
    """One line: whether the login is missing or has expired, what the credential said, how to log in."""
    text = " ".join(str(getattr(err, "message", None) or err).split())
    code = re.search(r"AADSTS\d+", text)
    said = f" (the credential said: {text[:300]})" if text else ""
    if (code and code.group(0) in EXPIRED_LOGIN_CODES) or "expired" in text.lower():
        which = f" ({code.group(0)})" if code else ""
        return (
            f"your Azure login has expired{which}: run `az login` again (in Azure Pipelines: map SYSTEM_ACCESSTOKEN)"
            + said
        )
    return _LOGIN_HELP + said


def check_login(credential: TokenCredential) -> None:
    """Get a token for Azure Resource Manager, or raise :class:`NotLoggedInError` saying how to log in."""
    from azure.core.exceptions import ClientAuthenticationError

    try:
        credential.get_token(MANAGEMENT_SCOPE)
    except ClientAuthenticationError as err:  # CredentialUnavailableError is one
        raise NotLoggedInError(login_problem(err)) from err


def _is_auth_error(err: BaseException) -> bool:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    if isinstance(err, ClientAuthenticationError):
        return True
    return isinstance(err, HttpResponseError) and getattr(err, "status_code", None) == 401
