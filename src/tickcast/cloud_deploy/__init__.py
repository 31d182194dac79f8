"""``tickcast deploy-cloud`` / ``destroy-cloud``: the ARM template of ``cloud/arm`` into one resource group.

:class:`CloudDeployer` is the whole flow; the CLI only prints. Steps of ``deploy-cloud``:

1. **parameters** (:func:`assemble_parameters`, offline): ``cloud/arm/parameters/<env>.json`` (a standard
   deploymentParameters file), plus what it must not hold: ``apimPolicyXml`` (the text of
   ``settings.gateway.policy_file``, the policy the local gateway enforces), ``sshPublicKey`` (the file at
   ``TICKCAST_CLOUD_DEPLOY__SSH_PUBLIC_KEY_PATH``), ``apimPublisherEmail`` / ``apimPublisherName``
   (``TICKCAST_CLOUD_DEPLOY__APIM_PUBLISHER_*``), ``env``, ``location`` and ``namePrefix``. Only parameters
   the template declares are passed; a required one that nothing supplies stops here, naming the variable
   and the option.
2. **login** (:func:`check_login`): a token for :data:`MANAGEMENT_SCOPE` from the shared
   :func:`tickcast.azure.credential` (``DefaultAzureCredential``: ``az login``, a service principal or
   workload identity in ``AZURE_*``, or a managed identity). Not logged in -> :class:`NotLoggedInError`
   saying how to log in; nothing has been called on Azure.
3. **resource group**: created in ``location`` when missing (idempotent; ``--what-if`` never creates it).
4. ``--what-if``: ``deployments.begin_what_if`` (incremental), rendered by :func:`render_what_if` as one line
   per resource (``+`` Create, ``~`` Modify with its property deltas, ``-`` Delete, ``=`` NoChange, ...).
   Changes nothing.
5. otherwise ``deployments.begin_create_or_update`` (incremental mode, deployment name ``tickcast-<env>``),
   reporting each resource operation as it finishes, then the outputs, written by :func:`write_outputs` to
   ``.tickcast/cloud/<env>.env`` (``TICKCAST_*`` variables, via :data:`tickcast.settings.ARM_OUTPUT_SETTINGS`)
   and ``<env>.json`` (every output, raw). ``--outputs-only`` re-reads the outputs of the last deployment
   (a CI stage on a fresh agent, a colleague's machine) without deploying.

A deployment outlives the login that started it: when the credential can no longer get a token while waiting
(an expired ``az login``, or the ~1 hour workload-identity token of an Azure Pipelines task, AADSTS700024), the
wait stops with one line saying so (:class:`LoginLostError`) and ``deploy-cloud --resume`` waits again, with a
fresh login, for the same deployment. In Azure Pipelines the control-plane credential is
:func:`tickcast.azure.control_plane_credential` (it renews the federated token itself).

``destroy-cloud`` deletes the resource group (the CLI asks to type its name first) and clears what would block a
redeploy of the same environment (:meth:`CloudDeployer.destroy`, :class:`DestroyReport`): it purges the AML
workspace before the group goes (a soft-deleted workspace keeps its name for 14 days), then purges the
soft-deleted API Management service and deletes the custom role; a Key Vault with purge protection cannot be
purged, so the report says until when it stays soft-deleted, and the next ``deploy-cloud`` to the same resource
group recovers it (``keyVaultCreateMode=recover``) instead of failing on its name.

The Azure control plane is reached through :class:`ArmControlPlane` (``resource_groups`` of azure-mgmt-resource's
``ResourceManagementClient``; ``deployments`` and ``deployment_operations`` of azure-mgmt-resource-deployments'
``DeploymentsMgmtClient``, where they moved in azure-mgmt-resource 25). Tests pass a stand-in for it. Nothing
here imports ``azure.mgmt`` at module import, so ``tickcast --help`` stays fast.
"""

from __future__ import annotations

from tickcast.cloud_deploy.control_plane import ArmControlPlane, AzureControlPlane
from tickcast.cloud_deploy.deployer import CloudDeployer, DeployPlan, DestroyReport, OperationStatus
from tickcast.cloud_deploy.login import (
    MANAGEMENT_SCOPE,
    PER_USER_PARAMETERS,
    CloudDeployError,
    LoginLostError,
    NotLoggedInError,
    check_login,
    login_problem,
)
from tickcast.cloud_deploy.outputs import dotenv_text, outputs_to_env, write_outputs
from tickcast.cloud_deploy.parameters import assemble_parameters
from tickcast.cloud_deploy.what_if import render_what_if

__all__ = [
    "MANAGEMENT_SCOPE",
    "PER_USER_PARAMETERS",
    "ArmControlPlane",
    "AzureControlPlane",
    "CloudDeployError",
    "CloudDeployer",
    "DeployPlan",
    "DestroyReport",
    "LoginLostError",
    "NotLoggedInError",
    "OperationStatus",
    "assemble_parameters",
    "check_login",
    "dotenv_text",
    "login_problem",
    "outputs_to_env",
    "render_what_if",
    "write_outputs",
]
