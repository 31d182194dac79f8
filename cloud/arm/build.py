"""Generate ``cloud/arm/main.json``, the one self-contained ARM template of the tickcast Azure system.

The template is written here in Python rather than by hand because it repeats patterns (a private endpoint always
comes with its DNS zone group, a peering with its reverse, a role assignment with a managed identity's principal)
that are easier to keep right as small functions. ``main.json`` is committed and is what gets deployed; the unit
test ``tests/unit/test_arm_templates.py`` fails when it differs from what this script generates.

    python cloud/arm/build.py           # rewrite main.json
    python cloud/arm/build.py --check   # exit 1 if main.json is out of date

Standard library only. See cloud/arm/README.md for what the template contains and why.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MAIN = HERE / "main.json"

Json = dict[str, Any]

# API versions: GA versions known to the Azure SDK models of cloud/validate/requirements.txt (the property check
# reads them) and under two years old, since arm-ttk's "apiVersions Should Be Recent" fails an older one unless it is
# the newest of its type. Where no newer GA version exists, the newest GA one is kept (insights, authz, apim, dns, msi;
# k8sext: 2024-11-01, whose extension schema is that of the SDK's 2023-05-01; diagnostics: Microsoft.Insights/
# diagnosticSettings has no GA version newer than its 2021-05-01-preview). Last bumped 2026-12.
API = {
    "storage": "2026-09-01",
    "network": "2026-03-01",
    "dns": "2024-06-01",
    "keyvault": "2026-05-15",
    "logs": "2025-07-01",
    "insights": "2020-02-02",
    "acr": "2025-11-01",
    "ml": "2025-12-01",
    "aks": "2026-08-01",
    "k8sext": "2024-11-01",
    "msi": "2024-11-30",
    "compute": "2026-04-01",
    "web": "2025-05-01",
    "apim": "2024-05-01",
    "authz": "2022-04-01",
    "diagnostics": "2021-05-01-preview",
}

# Built-in role definition GUIDs (Azure built-in roles reference); the variable names say which role each is.
ROLES = {
    "roleStorageBlobDataContributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "roleStorageBlobDataReader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    "roleStorageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "roleAcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "roleAcrPush": "8311e382-0749-4cb8-b61a-304f252e45ec",
    "roleNetworkContributor": "4d97b98b-1d4f-4787-a291-c67834d212e7",
    "roleAzureMLDataScientist": "f6c7c914-8db3-469d-8ca1-694a8f32e121",
}

# Fixed private addresses of the hosts (the outputs give them to the application as bootstrap/tracking URLs)
HOST_IPS = {"broker": "10.20.4.10", "airflow": "10.20.4.11", "mlflow": "10.20.4.12"}

# Private DNS zones: key -> zone name. The storage zones follow the cloud's storage suffix (arm-ttk: no
# hardcoded core.windows.net); the others have no environment() counterpart.
ZONES = {
    "blob": "[format('privatelink.blob.{0}', environment().suffixes.storage)]",
    "file": "[format('privatelink.file.{0}', environment().suffixes.storage)]",
    "vault": "privatelink.vaultcore.azure.net",
    "acr": "privatelink.azurecr.io",
    "amlApi": "privatelink.api.azureml.ms",
    "amlNotebooks": "privatelink.notebooks.azure.net",
}


def skip(*reasons: str) -> Json:
    """checkov inline suppressions: ``checkov:skip=<ID>:<reason>`` (ARM ignores a resource's metadata object)."""
    return {"checkov": [f"checkov:skip={r}" for r in reasons]}


def var(name: str) -> str:
    return f"variables('{name}')"


def rid(type_: str, *names: str) -> str:
    """``resourceId('type', name...)`` (names are ARM expression texts, e.g. ``variables('x')`` or ``'lake'``)."""
    return f"resourceId('{type_}', {', '.join(names)})"


def ref(expression: str, api: str, full: bool = False) -> str:
    full_arg = ", 'Full'" if full else ""
    return f"reference({expression}, '{api}'{full_arg})"


def resource(type_: str, api: str, name: str, properties: Json | None = None, **extra: Any) -> Json:
    body: Json = {"type": type_, "apiVersion": API[api], "name": name}
    if "location" not in extra and not type_.count("/") > 1 and type_ not in NO_LOCATION:
        body["location"] = "[parameters('location')]"
    for key in ("location", "kind", "sku", "identity", "scope", "zones", "metadata"):
        if key in extra:
            body[key] = extra.pop(key)
    if taggable(type_):
        body["tags"] = dict(TAGS)
    if properties is not None:
        body["properties"] = properties
    depends = extra.pop("depends", None)
    if depends:
        body["dependsOn"] = [f"[{d}]" for d in depends]
    if extra:
        raise TypeError(f"unknown keys {sorted(extra)}")
    return body


NO_LOCATION = {
    "Microsoft.Authorization/roleAssignments",
    "Microsoft.Authorization/roleDefinitions",
    "Microsoft.KubernetesConfiguration/extensions",
    "Microsoft.Insights/diagnosticSettings",
}

# Every tracked resource carries these tags (PSRule: Azure.Resource.UseTags); proxy resources (children, role
# assignments and definitions, extensions, diagnostic settings) take none.
TAGS = {"app": "tickcast", "env": "[parameters('env')]"}
UNTAGGED_TOP_LEVEL = {
    "Microsoft.Authorization/roleAssignments",
    "Microsoft.Authorization/roleDefinitions",
    "Microsoft.KubernetesConfiguration/extensions",
    "Microsoft.Insights/diagnosticSettings",
}
TAGGED_CHILDREN = {
    "Microsoft.MachineLearningServices/workspaces/computes",
    "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
    "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
}


def taggable(type_: str) -> bool:
    return type_ in TAGGED_CHILDREN or (type_.count("/") == 1 and type_ not in UNTAGGED_TOP_LEVEL)


SUBNET = "Microsoft.Network/virtualNetworks/subnets"


def role_assignment_id(scope_id: str, name_var: str) -> str:
    """The id of a role assignment declared with ``scope`` (an extension resource), for dependsOn."""
    return f"extensionResourceId({scope_id}, 'Microsoft.Authorization/roleAssignments', variables('{name_var}'))"


def subnet_id(vnet: str, subnet: str) -> str:
    return rid(SUBNET, var(vnet), f"'{subnet}'")


# --- parameters, variables, outputs --------------------------------------------------------------------------------


def parameters() -> Json:
    def p(type_: str, description: str, **more: Any) -> Json:
        return {"type": type_, **more, "metadata": {"description": description}}

    return {
        "env": p("string", "Environment; part of every name.", allowedValues=["dev", "test", "prod"]),
        "location": p("string", "Region of every resource.", defaultValue="[resourceGroup().location]"),
        "namePrefix": p(
            "string",
            "Prefix of the resource names: lowercase letters, digits and hyphens.",
            defaultValue="tickcast",
            minLength=2,
            maxLength=12,
        ),
        "apimPolicyXml": p(
            "string",
            "The API policy: the content of cloud/apim/policy.xml (the deploy command passes the file).",
        ),
        "sshPublicKey": p("string", "OpenSSH public key of the hosts' admin user (no passwords)."),
        "adminUsername": p("string", "Admin user of the hosts (SSH key only).", defaultValue="tickcast"),
        "apimPublisherEmail": p("string", "API Management publisher email (per user; from the deploy command)."),
        "apimPublisherName": p("string", "API Management publisher name.", defaultValue="tickcast"),
        "apimSku": p(
            "string",
            "API Management tier; the policy's rate-limit-by-key and quota-by-key need a classic tier.",
            defaultValue="Developer",
            allowedValues=["Developer", "Basic", "Standard", "Premium"],
        ),
        "vmSizeBroker": p("string", "VM size of the Kafka-compatible broker host.", defaultValue="Standard_D2s_v5"),
        "vmSizeAirflow": p("string", "VM size of the Airflow host (runs training).", defaultValue="Standard_D4s_v5"),
        "vmSizeMlflow": p("string", "VM size of the MLflow host.", defaultValue="Standard_D2s_v5"),
        "aksNodeVmSize": p(
            "string",
            "VM size of the AKS nodes (needs a cache for ephemeral OS disks).",
            defaultValue="Standard_D4ds_v5",
        ),
        "aksNodeCount": p("int", "AKS nodes at least (autoscaler minimum).", defaultValue=2, minValue=1, maxValue=10),
        "aksNodeMaxCount": p("int", "AKS nodes at most (autoscaler maximum).", defaultValue=4, minValue=1, maxValue=20),
        "vmSizeImageBuild": p(
            "string",
            "VM size of the AML compute cluster that builds environment images (scales to zero).",
            defaultValue="Standard_D2s_v3",
        ),
        "availabilityZones": p(
            "array",
            "Availability zones of the AKS nodes and the NAT gateway's address; empty in a region without zones.",
            defaultValue=["1", "2", "3"],
        ),
        "keyVaultCreateMode": p(
            "string",
            "default, or recover: the deploy command passes recover when this vault is soft-deleted (after "
            "destroy-cloud; purge protection keeps its name for 90 days).",
            defaultValue="default",
            allowedValues=["default", "recover"],
        ),
        "amlEndpointAuthMode": p(
            "string",
            "Auth mode of the Kubernetes online endpoint: AMLToken (a short-lived token the caller's managed identity "
            "fetches through ARM) or Key. Kubernetes endpoints do not support AADToken.",
            defaultValue="AMLToken",
            allowedValues=["AMLToken", "Key"],
        ),
        "symbols": p("array", "Symbols the public API serves.", defaultValue=["SPY", "IBM", "AIG", "BAC"]),
    }


def variables() -> Json:
    v: Json = {
        "base": "[format('{0}-{1}', parameters('namePrefix'), parameters('env'))]",
        # globally unique, lowercase alphanumeric storage names: 'tc' + env (allowedValues) + 13 chars <= 21
        "lakeAccountName": "[concat('tc', parameters('env'), uniqueString(resourceGroup().id))]",
        "mlStorageName": "[concat('tc', parameters('env'), 'ml', uniqueString(resourceGroup().id))]",
        "funcStorageName": "[concat('tc', parameters('env'), 'fn', uniqueString(resourceGroup().id))]",
        "acrName": "[concat('tc', parameters('env'), 'acr', uniqueString(resourceGroup().id))]",
        "keyVaultName": "[concat('kv-', parameters('env'), '-', uniqueString(resourceGroup().id))]",
        "lakeContainer": "lake",
        "mlflowContainer": "mlflow",
        "funcDeployContainer": "app-package",
        "logAnalyticsName": "[format('{0}-logs', variables('base'))]",
        "appInsightsName": "[format('{0}-appi', variables('base'))]",
        "amlWorkspaceName": "[format('{0}-mlw', variables('base'))]",
        "amlComputeName": "[format('{0}-aks', parameters('namePrefix'))]",
        "amlImageBuildComputeName": "image-build",
        "amlEndpointName": "[format('{0}-{1}', variables('base'), take(uniqueString(resourceGroup().id), 6))]",
        "aksName": "[format('{0}-aks', variables('base'))]",
        "vnetDataName": "[format('{0}-vnet-data', variables('base'))]",
        "vnetComputeName": "[format('{0}-vnet-compute', variables('base'))]",
        "natName": "[format('{0}-nat', variables('base'))]",
        "natIpName": "[format('{0}-nat-ip', variables('base'))]",
        "idAirflowName": "[format('{0}-id-airflow', variables('base'))]",
        "idMlflowName": "[format('{0}-id-mlflow', variables('base'))]",
        "idEndpointName": "[format('{0}-id-endpoint', variables('base'))]",
        "idAksName": "[format('{0}-id-aks', variables('base'))]",
        "planName": "[format('{0}-plan', variables('base'))]",
        "funcName": "[format('{0}-func-{1}', variables('base'), uniqueString(resourceGroup().id))]",
        "apimName": "[format('{0}-apim-{1}', variables('base'), uniqueString(resourceGroup().id))]",
        "apiName": "tickcast",
        "productName": "tickcast",
        "kafkaBootstrapServers": f"{HOST_IPS['broker']}:9092",
        "mlflowTrackingUri": f"http://{HOST_IPS['mlflow']}:5000",
        "airflowUrl": f"http://{HOST_IPS['airflow']}:8080",
        "invokerRoleName": "[guid(resourceGroup().id, 'tickcast-endpoint-invoker')]",
    }
    for host in HOST_IPS:
        v[f"{host}VmName"] = f"[format('{{0}}-vm-{host}', variables('base'))]"
        v[f"{host}NicName"] = f"[format('{{0}}-nic-{host}', variables('base'))]"
    for key, zone in ZONES.items():
        v[f"zone_{key}"] = zone
    v.update(ROLES)
    v.update(cloud_init_variables())
    return v


def outputs() -> Json:
    def o(value: str) -> Json:
        return {"type": "string", "value": value}

    endpoint = rid("Microsoft.MachineLearningServices/workspaces/onlineEndpoints", *ENDPOINT)
    return {
        "lakeAccountUrl": o(f"[{LAKE_URL}]"),
        "lakeContainer": o("[variables('lakeContainer')]"),
        "kafkaBootstrapServers": o("[variables('kafkaBootstrapServers')]"),
        "mlflowTrackingUri": o("[variables('mlflowTrackingUri')]"),
        "airflowUrl": o("[variables('airflowUrl')]"),
        "amlWorkspaceName": o("[variables('amlWorkspaceName')]"),
        "amlEndpointName": o("[variables('amlEndpointName')]"),
        # a Kubernetes endpoint's URI is the AzureML inference router's internal load balancer address; it exists
        # once the endpoint is provisioned, which the template waits for
        "amlScoringUri": o(f"[{ref(endpoint, API['ml'])}.scoringUri]"),
        "amlComputeName": o("[variables('amlComputeName')]"),
        "functionAppName": o("[variables('funcName')]"),
        "functionAppUrl": o(
            f"[uri(format('https://{{0}}/', {ref(rid('Microsoft.Web/sites', FUNC), API['web'])}.defaultHostName), '')]"
        ),
        "apimGatewayUrl": o(f"[{ref(rid('Microsoft.ApiManagement/service', APIM), API['apim'])}.gatewayUrl]"),
        "apimServiceName": o("[variables('apimName')]"),
        "subscriptionId": o("[subscription().subscriptionId]"),
        "resourceGroupName": o("[resourceGroup().name]"),
        "location": o("[parameters('location')]"),
    }


# --- names used in several places -----------------------------------------------------------------------------------

LAKE = "variables('lakeAccountName')"
MLST = "variables('mlStorageName')"
FNST = "variables('funcStorageName')"
ACR = "variables('acrName')"
KV = "variables('keyVaultName')"
WS = "variables('amlWorkspaceName')"
AKS = "variables('aksName')"
FUNC = "variables('funcName')"
APIM = "variables('apimName')"
ENDPOINT = (WS, "variables('amlEndpointName')")
COMPUTE = (WS, "variables('amlComputeName')")
IMAGE_BUILD = (WS, "variables('amlImageBuildComputeName')")

LAW_NAME = "variables('logAnalyticsName')"
LAW_ID = "resourceId('Microsoft.OperationalInsights/workspaces', variables('logAnalyticsName'))"
STORAGE_SUFFIX = "environment().suffixes.storage"
DEPLOY_C = "variables('funcDeployContainer')"
ROLE_DEF_T = "'Microsoft.Authorization/roleDefinitions'"
AUTHORIZED_KEYS = "[format('/home/{0}/.ssh/authorized_keys', parameters('adminUsername'))]"
NAT_NAME = "variables('natName')"
NAT_IP_NAME = "variables('natIpName')"
APPI_NAME = "variables('appInsightsName')"
STORAGE_T = "Microsoft.Storage/storageAccounts"
UAI_T = "Microsoft.ManagedIdentity/userAssignedIdentities"
VNET_T = "Microsoft.Network/virtualNetworks"
ZONE_T = "Microsoft.Network/privateDnsZones"


# The public address API Management's gateway calls its backends from (Developer/Basic/Standard: one address).
APIM_IP = f"reference({rid('Microsoft.ApiManagement/service', APIM)}, '{API['apim']}').publicIPAddresses[0]"

# The lake's Blob endpoint as Azure reports it ("https://<account>.blob.<storage suffix>/"): no URL is assembled
# with format() (arm-ttk: URIs Should Be Properly Constructed) or with a hardcoded host name.
LAKE_URL = f"reference({rid(STORAGE_T, LAKE)}, '{API['storage']}').primaryEndpoints.blob"


def uai_id(var: str) -> str:
    return rid(UAI_T, f"variables('{var}')")


# --- identities and monitoring ----------------------------------------------------------------------------------------


def identities() -> list[Json]:
    return [
        resource(UAI_T, "msi", f"[variables('{var}')]")
        for var in ("idAirflowName", "idMlflowName", "idEndpointName", "idAksName")
    ]


def monitoring() -> list[Json]:
    return [
        resource(
            "Microsoft.OperationalInsights/workspaces",
            "logs",
            "[variables('logAnalyticsName')]",
            {"sku": {"name": "PerGB2018"}, "retentionInDays": 30},
        ),
        resource(
            "Microsoft.Insights/components",
            "insights",
            "[variables('appInsightsName')]",
            {
                "Application_Type": "web",
                "WorkspaceResourceId": f"[{rid('Microsoft.OperationalInsights/workspaces', LAW_NAME)}]",
                "DisableLocalAuth": True,  # telemetry only with Entra ID, no instrumentation-key ingestion
            },
            kind="web",
            depends=[rid("Microsoft.OperationalInsights/workspaces", LAW_NAME)],
        ),
    ]


# --- network ----------------------------------------------------------------------------------------------------------

NSG_RULES: dict[str, list[tuple[str, int, str]]] = {
    # name -> [(rule name, priority, destination port)] allowed from inside the VNets only
    "pe": [("allow-vnet-https", 100, "443"), ("allow-vnet-smb", 110, "445")],
    "hosts": [
        ("allow-vnet-kafka", 100, "9092"),
        ("allow-vnet-airflow", 110, "8080"),
        ("allow-vnet-mlflow", 120, "5000"),
        ("allow-vnet-ssh", 130, "22"),
    ],
    "aks": [],
    "func": [],
    "ml": [],
}


def nsg_name(key: str) -> str:
    return f"[format('{{0}}-nsg-{key}', variables('base'))]"


def nsg_id(key: str) -> str:
    return rid("Microsoft.Network/networkSecurityGroups", f"format('{{0}}-nsg-{key}', variables('base'))")


def nsgs() -> list[Json]:
    out = []
    for key, allowed in NSG_RULES.items():
        rules: list[Json] = [
            {
                "name": name,
                "properties": {
                    "priority": priority,
                    "direction": "Inbound",
                    "access": "Allow",
                    "protocol": "Tcp",
                    "sourceAddressPrefix": "VirtualNetwork",
                    "sourcePortRange": "*",
                    "destinationAddressPrefix": "VirtualNetwork",
                    "destinationPortRange": port,
                },
            }
            for name, priority, port in allowed
        ]
        # no remote-desktop hop from any subnet (nothing here runs Windows; PSRule: Azure.NSG.LateralTraversal);
        # every NSG therefore has at least one rule of its own
        rules.append(
            {
                "name": "deny-outbound-rdp",
                "properties": {
                    "priority": 4000,
                    "direction": "Outbound",
                    "access": "Deny",
                    "protocol": "Tcp",
                    "sourceAddressPrefix": "*",
                    "sourcePortRange": "*",
                    "destinationAddressPrefix": "VirtualNetwork",
                    "destinationPortRange": "3389",
                },
            }
        )
        if allowed:  # everything else from the VNets is refused (the default rules would allow it)
            rules.append(
                {
                    "name": "deny-vnet-other",
                    "properties": {
                        "priority": 4000,
                        "direction": "Inbound",
                        "access": "Deny",
                        "protocol": "*",
                        "sourceAddressPrefix": "VirtualNetwork",
                        "sourcePortRange": "*",
                        "destinationAddressPrefix": "*",
                        "destinationPortRange": "*",
                    },
                }
            )
        out.append(
            resource("Microsoft.Network/networkSecurityGroups", "network", nsg_name(key), {"securityRules": rules})
        )
    return out


def subnet(name: str, prefix: str, nsg: str, *, nat: bool = False, delegation: str | None = None) -> Json:
    props: Json = {
        "addressPrefix": prefix,
        "networkSecurityGroup": {"id": f"[{nsg_id(nsg)}]"},
        "privateEndpointNetworkPolicies": "Enabled",
        "defaultOutboundAccess": False,
    }
    if nat:
        props["natGateway"] = {"id": f"[{rid('Microsoft.Network/natGateways', NAT_NAME)}]"}
    if delegation:
        props["delegations"] = [{"name": "delegation", "properties": {"serviceName": delegation}}]
    return {"name": name, "properties": props}


def network() -> list[Json]:
    nat_ip = resource(
        "Microsoft.Network/publicIPAddresses",
        "network",
        "[variables('natIpName')]",
        {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"},
        sku={"name": "Standard"},
        zones="[parameters('availabilityZones')]",
        metadata={"comments": "Outbound-only address of the NAT gateway; attached to no host or load balancer."},
    )
    nat = resource(
        "Microsoft.Network/natGateways",
        "network",
        "[variables('natName')]",
        {
            "idleTimeoutInMinutes": 4,
            "publicIpAddresses": [{"id": f"[{rid('Microsoft.Network/publicIPAddresses', NAT_IP_NAME)}]"}],
        },
        sku={"name": "Standard"},
        depends=[rid("Microsoft.Network/publicIPAddresses", NAT_IP_NAME)],
    )
    vnet_data = resource(
        VNET_T,
        "network",
        "[variables('vnetDataName')]",
        {
            "addressSpace": {"addressPrefixes": ["10.10.0.0/16"]},
            "subnets": [subnet("snet-pe", "10.10.1.0/24", "pe")],
        },
        depends=[nsg_id("pe")],
    )
    vnet_compute = resource(
        VNET_T,
        "network",
        "[variables('vnetComputeName')]",
        {
            "addressSpace": {"addressPrefixes": ["10.20.0.0/16"]},
            "subnets": [
                subnet("snet-aks", "10.20.0.0/22", "aks", nat=True),
                subnet("snet-hosts", "10.20.4.0/24", "hosts", nat=True),
                # NAT: the Function calls Azure Resource Manager for its AML tokens (all of its outbound traffic goes
                # through the VNet integration, and no subnet here has default outbound access)
                subnet("snet-func", "10.20.5.0/24", "func", nat=True, delegation="Microsoft.App/environments"),
                subnet("snet-ml", "10.20.6.0/24", "ml", nat=True),
            ],
        },
        depends=[nsg_id(k) for k in ("aks", "hosts", "func", "ml")] + [rid("Microsoft.Network/natGateways", NAT_NAME)],
    )
    peerings = [
        peering("vnetDataName", "vnetComputeName", "data-to-compute"),
        peering("vnetComputeName", "vnetDataName", "compute-to-data"),
    ]
    zones: list[Json] = []
    for key in ZONES:
        zones.append(resource(ZONE_T, "dns", f"[variables('zone_{key}')]", {}, location="global"))
        for vnet in ("vnetDataName", "vnetComputeName"):
            zones.append(
                resource(
                    "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
                    "dns",
                    f"[format('{{0}}/{{1}}', variables('zone_{key}'), variables('{vnet}'))]",
                    {
                        "registrationEnabled": False,
                        "virtualNetwork": {"id": f"[{rid(VNET_T, var(vnet))}]"},
                    },
                    location="global",
                    depends=[rid(ZONE_T, var("zone_" + key)), rid(VNET_T, var(vnet))],
                )
            )
    return [nat_ip, nat, *nsgs(), vnet_data, vnet_compute, *peerings, *zones]


def peering(local: str, remote: str, name: str) -> Json:
    return resource(
        "Microsoft.Network/virtualNetworks/virtualNetworkPeerings",
        "network",
        f"[format('{{0}}/{name}', variables('{local}'))]",
        {
            "remoteVirtualNetwork": {"id": f"[{rid(VNET_T, var(remote))}]"},
            "allowVirtualNetworkAccess": True,
            "allowForwardedTraffic": False,
            "allowGatewayTransit": False,
            "useRemoteGateways": False,
        },
        depends=[rid(VNET_T, f"variables('{local}')"), rid(VNET_T, var(remote))],
    )


def private_endpoint(key: str, target_type: str, target: str, group: str, zone_keys: list[str]) -> list[Json]:
    """A private endpoint in the data VNet AND its DNS zone group (one record per zone)."""
    name = f"format('{{0}}-pe-{key}', variables('base'))"
    endpoint = resource(
        "Microsoft.Network/privateEndpoints",
        "network",
        f"[{name}]",
        {
            "subnet": {"id": f"[{subnet_id('vnetDataName', 'snet-pe')}]"},
            "privateLinkServiceConnections": [
                {
                    "name": f"{key}",
                    "properties": {"privateLinkServiceId": f"[{rid(target_type, target)}]", "groupIds": [group]},
                }
            ],
        },
        depends=[rid(VNET_T, "variables('vnetDataName')"), rid(target_type, target)],
    )
    group_resource = resource(
        "Microsoft.Network/privateEndpoints/privateDnsZoneGroups",
        "network",
        f"[format('{{0}}/default', {name})]",
        {
            "privateDnsZoneConfigs": [
                {
                    "name": zone_key,
                    "properties": {"privateDnsZoneId": f"[{rid(ZONE_T, var('zone_' + zone_key))}]"},
                }
                for zone_key in zone_keys
            ]
        },
        depends=[rid("Microsoft.Network/privateEndpoints", name)] + [rid(ZONE_T, var("zone_" + z)) for z in zone_keys],
    )
    return [endpoint, group_resource]


# --- storage, key vault, registry -------------------------------------------------------------------------------------


def diagnostic_settings(key: str, scope: str, target_id: str, *, logs: list[Json], metrics: bool = False) -> Json:
    """Diagnostic settings of the resource at ``scope`` (relative id) into the Log Analytics workspace."""
    props: Json = {"workspaceId": f"[{LAW_ID}]", "logs": logs}
    if metrics:
        props["metrics"] = [{"category": "AllMetrics", "enabled": True}]
    return resource(
        "Microsoft.Insights/diagnosticSettings",
        "diagnostics",
        f"to-logs-{key}",
        props,
        scope=f"[{scope}]",
        depends=[target_id, LAW_ID],
    )


def storage_account(var: str, purpose: str, **more: Any) -> Json:
    return resource(
        STORAGE_T,
        "storage",
        f"[variables('{var}')]",
        {
            "accessTier": "Hot",
            "minimumTlsVersion": "TLS1_2",
            "supportsHttpsTrafficOnly": True,
            "allowBlobPublicAccess": False,
            "allowSharedKeyAccess": False,  # Entra ID (managed identities) only: no account keys, no SAS
            "defaultToOAuthAuthentication": True,
            "allowCrossTenantReplication": False,
            "publicNetworkAccess": "Disabled",
            "networkAcls": {"defaultAction": "Deny", "bypass": "AzureServices"},
            "encryption": {
                "keySource": "Microsoft.Storage",
                "requireInfrastructureEncryption": True,
                "services": {
                    "blob": {"enabled": True, "keyType": "Account"},
                    "file": {"enabled": True, "keyType": "Account"},
                },
            },
        },
        kind="StorageV2",
        sku={"name": "Standard_GRS"},
        metadata={
            "description": purpose,
            **skip(
                "CKV_AZURE_43:the name is concat('tc', env, [purpose,] uniqueString(resourceGroup().id)) which checkov "
                "cannot evaluate; cloud/validate/arm_checks.py (check_names) proves it is 3-24 lowercase alphanumerics"
            ),
        },
        **more,
    )


def blob_service(account: str) -> Json:
    return resource(
        "Microsoft.Storage/storageAccounts/blobServices",
        "storage",
        f"[format('{{0}}/default', {account})]",
        {
            "deleteRetentionPolicy": {"enabled": True, "days": 7},
            "containerDeleteRetentionPolicy": {"enabled": True, "days": 7},
        },
        depends=[rid(STORAGE_T, account)],
    )


def container(account: str, name: str) -> Json:
    return resource(
        "Microsoft.Storage/storageAccounts/blobServices/containers",
        "storage",
        f"[format('{{0}}/default/{{1}}', {account}, {name})]",
        {"publicAccess": "None"},
        depends=[rid("Microsoft.Storage/storageAccounts/blobServices", account, "'default'")],
    )


def data() -> list[Json]:
    out = [
        storage_account(
            "lakeAccountName", "The Parquet lake (container lake) and MLflow artifacts (container mlflow)."
        ),
        blob_service(LAKE),
        container(LAKE, "variables('lakeContainer')"),
        container(LAKE, "variables('mlflowContainer')"),
        *private_endpoint("lake-blob", STORAGE_T, LAKE, "blob", ["blob"]),
        storage_account("mlStorageName", "Default storage of the AML workspace (identity-based datastores)."),
        blob_service(MLST),
        *private_endpoint("ml-blob", STORAGE_T, MLST, "blob", ["blob"]),
        *private_endpoint("ml-file", STORAGE_T, MLST, "file", ["file"]),
        storage_account("funcStorageName", "Functions host storage and the Flex Consumption deployment container."),
        blob_service(FNST),
        container(FNST, "variables('funcDeployContainer')"),
        *private_endpoint("func-blob", STORAGE_T, FNST, "blob", ["blob"]),
        resource(
            "Microsoft.KeyVault/vaults",
            "keyvault",
            f"[{KV}]",
            {
                "tenantId": "[subscription().tenantId]",
                "createMode": "[parameters('keyVaultCreateMode')]",
                "sku": {"family": "A", "name": "standard"},
                "enableRbacAuthorization": True,
                "enableSoftDelete": True,
                "softDeleteRetentionInDays": 90,
                "enablePurgeProtection": True,
                "publicNetworkAccess": "Disabled",
                "networkAcls": {"defaultAction": "Deny", "bypass": "AzureServices"},
            },
        ),
        diagnostic_settings(
            "kv",
            f"format('Microsoft.KeyVault/vaults/{{0}}', {KV})",
            rid("Microsoft.KeyVault/vaults", KV),
            logs=[{"categoryGroup": "audit", "enabled": True}],
        ),
        *private_endpoint("kv", "Microsoft.KeyVault/vaults", KV, "vault", ["vault"]),
        resource(
            "Microsoft.ContainerRegistry/registries",
            "acr",
            f"[{ACR}]",
            {
                "adminUserEnabled": False,
                "anonymousPullEnabled": False,
                "publicNetworkAccess": "Disabled",
                "networkRuleBypassOptions": "AzureServices",
                "dataEndpointEnabled": False,
                # no `az acr import/export` out of the private registry (PSRule: Azure.ACR.ExportPolicy)
                "policies": {"exportPolicy": {"status": "disabled"}},
            },
            sku={"name": "Premium"},  # Premium: private endpoints
            metadata=skip(
                "CKV_AZURE_166:quarantine would hold back every image AML builds until something marks it verified; "
                "nothing in this system scans and releases images",
            ),
        ),
        *private_endpoint("acr", "Microsoft.ContainerRegistry/registries", ACR, "registry", ["acr"]),
    ]
    return out


# --- Azure ML and AKS -------------------------------------------------------------------------------------------------


def machine_learning() -> list[Json]:
    ws_id = rid("Microsoft.MachineLearningServices/workspaces", WS)
    aks_id = rid("Microsoft.ContainerService/managedClusters", AKS)
    workspace = resource(
        "Microsoft.MachineLearningServices/workspaces",
        "ml",
        f"[{WS}]",
        {
            "friendlyName": "[variables('amlWorkspaceName')]",
            "description": "tickcast: model registry mirror and the Kubernetes online endpoint",
            "storageAccount": f"[{rid(STORAGE_T, MLST)}]",
            "keyVault": f"[{rid('Microsoft.KeyVault/vaults', KV)}]",
            "applicationInsights": f"[{rid('Microsoft.Insights/components', APPI_NAME)}]",
            "containerRegistry": f"[{rid('Microsoft.ContainerRegistry/registries', ACR)}]",
            "publicNetworkAccess": "Disabled",
            "imageBuildCompute": "[variables('amlImageBuildComputeName')]",
            "systemDatastoresAuthMode": "identity",
            "hbiWorkspace": False,
            "v1LegacyMode": False,
        },
        identity={"type": "SystemAssigned"},
        sku={"name": "Basic", "tier": "Basic"},
        metadata=skip(
            "CKV_AZURE_243:the workspace is in a customer-managed VNet with its own private endpoint (resource "
            "<base>-pe-aml with a DNS zone group); checkov only recognises managed-VNet outbound rules",
        ),
        depends=[
            rid(STORAGE_T, MLST),
            rid("Microsoft.KeyVault/vaults", KV),
            rid("Microsoft.Insights/components", APPI_NAME),
            rid("Microsoft.ContainerRegistry/registries", ACR),
        ],
    )
    aks = resource(
        "Microsoft.ContainerService/managedClusters",
        "aks",
        f"[{AKS}]",
        {
            "dnsPrefix": "[variables('aksName')]",
            "enableRBAC": True,
            "disableLocalAccounts": False,
            "aadProfile": {"managed": True, "enableAzureRBAC": True},
            "apiServerAccessProfile": {"enablePrivateCluster": True, "privateDNSZone": "system"},
            "agentPoolProfiles": [
                {
                    "name": "system",
                    "mode": "System",
                    "type": "VirtualMachineScaleSets",
                    "osType": "Linux",
                    "count": "[parameters('aksNodeCount')]",
                    "enableAutoScaling": True,
                    "minCount": "[parameters('aksNodeCount')]",
                    "maxCount": "[parameters('aksNodeMaxCount')]",
                    "availabilityZones": "[parameters('availabilityZones')]",
                    "vmSize": "[parameters('aksNodeVmSize')]",
                    "osDiskType": "Ephemeral",
                    "osDiskSizeGB": 64,
                    "maxPods": 110,
                    "enableEncryptionAtHost": True,
                    "vnetSubnetID": f"[{subnet_id('vnetComputeName', 'snet-aks')}]",
                }
            ],
            "networkProfile": {
                "networkPlugin": "azure",
                "networkPluginMode": "overlay",
                "networkPolicy": "calico",
                "podCidr": "192.168.0.0/16",
                "serviceCidr": "10.100.0.0/16",
                "dnsServiceIP": "10.100.0.10",
                "outboundType": "userAssignedNATGateway",
                "loadBalancerSku": "standard",
            },
            "addonProfiles": {
                "omsagent": {
                    "enabled": True,
                    "config": {
                        "logAnalyticsWorkspaceResourceID": f"[{LAW_ID}]",
                        "useAADAuth": "true",
                    },
                },
                "azurepolicy": {"enabled": True},
            },
            "autoUpgradeProfile": {"upgradeChannel": "stable", "nodeOSUpgradeChannel": "NodeImage"},
        },
        identity={"type": "UserAssigned", "userAssignedIdentities": {f"[{uai_id('idAksName')}]": {}}},
        sku={"name": "Base", "tier": "Free"},
        metadata=skip(
            "CKV_AZURE_141:the Azure ML extension does not support AKS clusters with local accounts disabled (AML "
            "docs, Kubernetes extension limitations); Azure RBAC is on and the API server is private",
            "CKV_AZURE_6:the API server is private (enablePrivateCluster); authorized IP ranges apply to public "
            "API servers only",
            "CKV_AZURE_8:the Kubernetes dashboard add-on no longer exists on supported AKS versions",
            "CKV_AZURE_172:no Key Vault secrets are mounted into pods (the Secrets Store CSI add-on is not enabled)",
        ),
        depends=[
            rid(VNET_T, "variables('vnetComputeName')"),
            role_assignment_id(subnet_id("vnetComputeName", "snet-aks"), "aksSubnetRoleName"),
        ],
    )
    extension = resource(
        "Microsoft.KubernetesConfiguration/extensions",
        "k8sext",
        "azureml",
        {
            "extensionType": "Microsoft.AzureML.Kubernetes",
            "autoUpgradeMinorVersion": True,
            "releaseTrain": "stable",
            "scope": {"cluster": {"releaseNamespace": "azureml"}},
            "configurationSettings": {
                "enableTraining": "False",
                "enableInference": "True",
                "inferenceRouterServiceType": "LoadBalancer",
                "internalLoadBalancerProvider": "azure",
                "inferenceRouterHA": "False",
                "allowInsecureConnections": "True",
            },
        },
        identity={"type": "SystemAssigned"},
        scope=f"[format('Microsoft.ContainerService/managedClusters/{{0}}', {AKS})]",
        depends=[aks_id],
    )
    maintenance = [
        resource(
            "Microsoft.ContainerService/managedClusters/maintenanceConfigurations",
            "aks",
            f"[format('{{0}}/{name}', {AKS})]",
            {
                "maintenanceWindow": {
                    "schedule": {"weekly": {"dayOfWeek": "Sunday", "intervalWeeks": 1}},
                    "durationHours": 4,
                    "startTime": start,
                    "utcOffset": "+00:00",
                }
            },
            depends=[aks_id],
        )
        # Kubernetes upgrades and node-image updates on Sunday mornings (UTC), when no market is open
        for name, start in (("aksManagedAutoUpgradeSchedule", "02:00"), ("aksManagedNodeOSUpgradeSchedule", "06:00"))
    ]
    aks_logs = diagnostic_settings(
        "aks",
        f"format('Microsoft.ContainerService/managedClusters/{{0}}', {AKS})",
        aks_id,
        logs=[
            {"category": category, "enabled": True}
            for category in (
                "kube-audit-admin",
                "guard",
                "cluster-autoscaler",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
            )
        ],
        metrics=True,
    )
    kubernetes_compute = resource(
        "Microsoft.MachineLearningServices/workspaces/computes",
        "ml",
        f"[format('{{0}}/{{1}}', {COMPUTE[0]}, {COMPUTE[1]})]",
        {
            "computeType": "Kubernetes",
            "computeLocation": "[parameters('location')]",
            "resourceId": f"[{aks_id}]",
            "description": "AKS cluster of the online endpoint (Azure ML extension, internal load balancer)",
            # "default" exists in every cluster: nothing here can create a namespace in a private cluster
            "properties": {"namespace": "default", "defaultInstanceType": "defaultinstancetype"},
        },
        location="[parameters('location')]",
        depends=[ws_id, f"extensionResourceId({aks_id}, 'Microsoft.KubernetesConfiguration/extensions', 'azureml')"],
    )
    image_build = resource(
        "Microsoft.MachineLearningServices/workspaces/computes",
        "ml",
        f"[format('{{0}}/{{1}}', {IMAGE_BUILD[0]}, {IMAGE_BUILD[1]})]",
        {
            "computeType": "AmlCompute",
            "computeLocation": "[parameters('location')]",
            "description": "Builds environment images: the registry has no public access, so ACR Tasks cannot",
            "disableLocalAuth": True,
            "properties": {
                "vmSize": "[parameters('vmSizeImageBuild')]",
                "vmPriority": "Dedicated",
                "osType": "Linux",
                "scaleSettings": {"minNodeCount": 0, "maxNodeCount": 1, "nodeIdleTimeBeforeScaleDown": "PT10M"},
                "subnet": {"id": f"[{subnet_id('vnetComputeName', 'snet-ml')}]"},
                "enableNodePublicIp": False,
                "remoteLoginPortPublicAccess": "Disabled",
            },
        },
        identity={"type": "SystemAssigned"},
        location="[parameters('location')]",
        depends=[ws_id, rid(VNET_T, "variables('vnetComputeName')")],
    )
    endpoint = resource(
        "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
        "ml",
        f"[format('{{0}}/{{1}}', {ENDPOINT[0]}, {ENDPOINT[1]})]",
        {
            "authMode": "[parameters('amlEndpointAuthMode')]",
            "compute": f"[{rid('Microsoft.MachineLearningServices/workspaces/computes', *COMPUTE)}]",
            "description": "tickcast next-close predictions; deployments (blue/green) are created by the retrain DAG",
        },
        kind="K8s",
        location="[parameters('location')]",
        identity={"type": "UserAssigned", "userAssignedIdentities": {f"[{uai_id('idEndpointName')}]": {}}},
        depends=[
            rid("Microsoft.MachineLearningServices/workspaces/computes", *COMPUTE),
            role_assignment_id(rid("Microsoft.ContainerRegistry/registries", ACR), "endpointAcrRoleName"),
            role_assignment_id(rid(STORAGE_T, MLST), "endpointStorageRoleName"),
        ],
    )
    invoker = resource(
        "Microsoft.Authorization/roleDefinitions",
        "authz",
        "[variables('invokerRoleName')]",
        {
            "roleName": "[format('{0} endpoint invoker ({1})', variables('base'), resourceGroup().name)]",
            "description": "Call the tickcast online endpoint: read it, get an AML token, score. Nothing else.",
            "type": "CustomRole",
            "permissions": [
                {
                    "actions": [
                        "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/read",
                        "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/token/action",
                        "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/score/action",
                    ],
                }
            ],
            "assignableScopes": ["[resourceGroup().id]"],
        },
    )
    return [
        workspace,
        *private_endpoint(
            "aml", "Microsoft.MachineLearningServices/workspaces", WS, "amlworkspace", ["amlApi", "amlNotebooks"]
        ),
        aks,
        *maintenance,
        aks_logs,
        extension,
        kubernetes_compute,
        image_build,
        endpoint,
        invoker,
    ]


# --- hosts: broker, Airflow, MLflow -------------------------------------------------------------------------------

CLOUD_INIT_COMMON = """#cloud-config
package_update: true
package_upgrade: true
packages:
  - python3-venv
  - unattended-upgrades
"""

DATA_DISK = """disk_setup:
  /dev/disk/azure/scsi1/lun0:
    table_type: gpt
    layout: true
    overwrite: false
fs_setup:
  - device: /dev/disk/azure/scsi1/lun0
    partition: 1
    filesystem: ext4
    label: data
    overwrite: false
mounts:
  - [LABEL=data, MOUNTPOINT, ext4, "defaults,nofail", "0", "2"]
"""

# ARM format(): {0}... are filled from the template; the cloud-init texts contain no other braces.
MLFLOW_SERVER = " ".join(
    [
        "/opt/mlflow/bin/mlflow server --host 0.0.0.0 --port 5000",
        "--backend-store-uri sqlite:////var/lib/mlflow/mlflow.db",
        "--serve-artifacts --artifacts-destination wasbs://{2}@{3}/artifacts",
        "--allowed-hosts {0},{0}:5000 --workers 2",
    ]
)

# The Airflow host's Airflow settings: those of the local stack's airflow service (local/stack.toml) with the host's
# paths and addresses; a unit test keeps the two in step. New DAGs start unpaused: nothing else would unpause
# ingest and retrain on the host (the local stack's `unpause_dags` hook does it there). {2} is the MLflow URL,
# {9} the host's address (ARM format() arguments of custom_data).
# Its metadata database is PostgreSQL on the host (Ubuntu's package), as in the local stack (decision 0061: SQLite's
# write lock failed starts and API calls there). Reached over the Unix socket with peer authentication: the service
# runs as root, the role of that name owns the `airflow` database, and no password exists anywhere.
AIRFLOW_HOME = "/var/lib/airflow"
AIRFLOW_DB_ROLE = "root"
AIRFLOW_DB_URL = "postgresql+psycopg2:///airflow?host=/var/run/postgresql"
AIRFLOW_CLOUD_ENV: dict[str, str] = {
    "AIRFLOW_HOME": AIRFLOW_HOME,
    "AIRFLOW__CORE__DAGS_FOLDER": "/opt/tickcast/dags",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": AIRFLOW_DB_URL,
    "AIRFLOW__API__HOST": "0.0.0.0",  # reachable from the VNets only (NSG hosts: 8080 from VirtualNetwork)
    "AIRFLOW__API__PORT": "8080",
    "AIRFLOW__API__BASE_URL": "http://{9}:8080",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://127.0.0.1:8080/execution/",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
    # Airflow's side servers listen on loopback only, as in the local stack (nothing off the host reads them)
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": "8974",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "8793",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "8794",
    "MLFLOW_TRACKING_URI": "{2}",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}

CLOUD_INIT = {
    "broker": CLOUD_INIT_COMMON
    + DATA_DISK.replace("MOUNTPOINT", "/var/lib/redpanda")
    + """runcmd:
  - curl -1sLf https://dl.redpanda.com/nzMJHHXyvSwlY6mv/redpanda/cfg/setup/bash.deb.sh | bash
  - apt-get install -y redpanda
  - chown -R redpanda:redpanda /var/lib/redpanda
  - rpk redpanda mode production
  - rpk redpanda config bootstrap --self {0} --advertised-kafka {0} --ips {0}
  - systemctl enable --now redpanda
""",
    "mlflow": CLOUD_INIT_COMMON
    + DATA_DISK.replace("MOUNTPOINT", "/var/lib/mlflow")
    + """write_files:
  - path: /etc/systemd/system/mlflow.service
    permissions: "0644"
    content: |
      [Unit]
      Description=MLflow tracking server (artifacts in Blob through the host's managed identity)
      After=network-online.target
      [Service]
      Environment=AZURE_CLIENT_ID={1}
      Environment=MLFLOW_DISABLE_TELEMETRY=true
      Environment=DO_NOT_TRACK=true
      ExecStart=MLFLOW_SERVER
      Restart=always
      [Install]
      WantedBy=multi-user.target
runcmd:
  - python3 -m venv /opt/mlflow
  - /opt/mlflow/bin/pip install mlflow==3.17.2 azure-storage-blob azure-identity
  - systemctl daemon-reload
  - systemctl enable --now mlflow
""".replace("MLFLOW_SERVER", MLFLOW_SERVER),
    "airflow": CLOUD_INIT_COMMON.replace("  - unattended-upgrades\n", "  - unattended-upgrades\n  - postgresql\n")
    + """write_files:
  - path: /etc/tickcast/env
    permissions: "0644"
    content: |
      TICKCAST_PROFILE=cloud
      TICKCAST_STORAGE__ACCOUNT_URL={0}
      TICKCAST_KAFKA__BOOTSTRAP_SERVERS={1}
      TICKCAST_MLFLOW__TRACKING_URI={2}
      TICKCAST_AZURE__MANAGED_IDENTITY_CLIENT_ID={3}
      AZURE_CLIENT_ID={3}
      TICKCAST_AML__SUBSCRIPTION_ID={4}
      TICKCAST_AML__RESOURCE_GROUP={5}
      TICKCAST_AML__WORKSPACE={6}
      TICKCAST_AML__ENDPOINT_NAME={7}
      TICKCAST_AML__COMPUTE={8}
  - path: /etc/tickcast/airflow.env
    permissions: "0644"
    content: |
AIRFLOW_ENV_LINES
  - path: /etc/systemd/system/tickcast-airflow.service
    permissions: "0644"
    content: |
      [Unit]
      Description=Airflow (ingest and retrain DAGs) once the deploy step installed /opt/tickcast
      After=network-online.target postgresql.service
      Requires=postgresql.service
      ConditionPathExists=/opt/tickcast/.venv/bin/airflow
      [Service]
      EnvironmentFile=/etc/tickcast/env
      EnvironmentFile=/etc/tickcast/airflow.env
      WorkingDirectory=/opt/tickcast
      ExecStart=/opt/tickcast/.venv/bin/airflow standalone
      Restart=always
      [Install]
      WantedBy=multi-user.target
  - path: /etc/systemd/system/tickcast-producer.service
    permissions: "0644"
    content: |
      [Unit]
      Description=tickcast producer (chart API to Kafka every minute) once the deploy step installed /opt/tickcast
      After=network-online.target
      ConditionPathExists=/opt/tickcast/.venv/bin/tickcast
      [Service]
      EnvironmentFile=/etc/tickcast/env
      WorkingDirectory=/opt/tickcast
      ExecStart=/opt/tickcast/.venv/bin/tickcast produce
      Restart=always
      [Install]
      WantedBy=multi-user.target
runcmd:
  - mkdir -p /opt/tickcast AIRFLOW_HOME_DIR
  - systemctl enable --now postgresql
  - runuser -u postgres -- psql -v ON_ERROR_STOP=1 -c "CREATE ROLE AIRFLOW_DB_ROLE LOGIN"
  - runuser -u postgres -- createdb --owner AIRFLOW_DB_ROLE airflow
  - systemctl daemon-reload
  - systemctl enable tickcast-airflow tickcast-producer
""".replace("AIRFLOW_ENV_LINES", "\n".join(f"      {k}={v}" for k, v in AIRFLOW_CLOUD_ENV.items()))
    .replace("AIRFLOW_HOME_DIR", AIRFLOW_HOME)
    .replace("AIRFLOW_DB_ROLE", AIRFLOW_DB_ROLE),
}


def cloud_init_variables() -> Json:
    return {f"cloudInit_{host}": text for host, text in CLOUD_INIT.items()}


def custom_data(host: str) -> str:
    ip = f"'{HOST_IPS[host]}'"
    args: list[str]
    if host == "broker":
        args = [ip]
    elif host == "mlflow":
        args = [
            ip,
            f"{ref(uai_id('idMlflowName'), API['msi'])}.clientId",
            "variables('mlflowContainer')",
            f"format('{{0}}.blob.{{1}}', {LAKE}, environment().suffixes.storage)",
        ]
    else:
        args = [
            LAKE_URL,
            "variables('kafkaBootstrapServers')",
            "variables('mlflowTrackingUri')",
            f"{ref(uai_id('idAirflowName'), API['msi'])}.clientId",
            "subscription().subscriptionId",
            "resourceGroup().name",
            "variables('amlWorkspaceName')",
            "variables('amlEndpointName')",
            "variables('amlComputeName')",
            ip,
        ]
    return f"[base64(format(variables('cloudInit_{host}'), {', '.join(args)}))]"


HOST_IDENTITY = {"broker": None, "airflow": "idAirflowName", "mlflow": "idMlflowName"}
HOST_DATA_DISK_GB = {"broker": 128, "airflow": 0, "mlflow": 32}


def hosts() -> list[Json]:
    out: list[Json] = []
    for host, ip in HOST_IPS.items():
        nic = f"variables('{host}NicName')"
        out.append(
            resource(
                "Microsoft.Network/networkInterfaces",
                "network",
                f"[{nic}]",
                {
                    "enableAcceleratedNetworking": True,  # every host size here (Dsv5) supports it
                    "ipConfigurations": [
                        {
                            "name": "ipconfig1",
                            "properties": {
                                "privateIPAllocationMethod": "Static",
                                "privateIPAddress": ip,
                                "subnet": {"id": f"[{subnet_id('vnetComputeName', 'snet-hosts')}]"},
                            },
                        }
                    ],
                },
                depends=[rid(VNET_T, "variables('vnetComputeName')")],
            )
        )
        identity_var = HOST_IDENTITY[host]
        identity: Json = (
            {"type": "UserAssigned", "userAssignedIdentities": {f"[{uai_id(identity_var)}]": {}}}
            if identity_var
            else {"type": "SystemAssigned"}
        )
        disk_gb = HOST_DATA_DISK_GB[host]
        storage: Json = {
            "imageReference": {
                "publisher": "Canonical",
                "offer": "ubuntu-24_04-lts",
                "sku": "server",
                "version": "latest",
            },
            "osDisk": {
                "createOption": "FromImage",
                "caching": "ReadWrite",
                "diskSizeGB": 64,
                "deleteOption": "Delete",
                "managedDisk": {"storageAccountType": "Premium_LRS"},
            },
        }
        if disk_gb:
            storage["dataDisks"] = [
                {
                    "lun": 0,
                    "createOption": "Empty",
                    "caching": "ReadOnly",  # reads cached, writes go straight to the Premium SSD
                    "diskSizeGB": disk_gb,
                    "deleteOption": "Detach",
                    "managedDisk": {"storageAccountType": "Premium_LRS"},
                }
            ]
        depends = [rid("Microsoft.Network/networkInterfaces", nic)]
        if identity_var:
            depends.append(uai_id(identity_var))
        if host == "airflow":
            depends.append(rid("Microsoft.MachineLearningServices/workspaces/onlineEndpoints", *ENDPOINT))
        out.append(
            resource(
                "Microsoft.Compute/virtualMachines",
                "compute",
                f"[variables('{host}VmName')]",
                {
                    "hardwareProfile": {"vmSize": f"[parameters('vmSize{host.capitalize()}')]"},
                    "storageProfile": storage,
                    "osProfile": {
                        "computerName": host,
                        "adminUsername": "[parameters('adminUsername')]",
                        "customData": custom_data(host),
                        "allowExtensionOperations": False,
                        "linuxConfiguration": {
                            "disablePasswordAuthentication": True,
                            "provisionVMAgent": True,
                            "ssh": {
                                "publicKeys": [
                                    {
                                        "path": AUTHORIZED_KEYS,
                                        "keyData": "[parameters('sshPublicKey')]",
                                    }
                                ]
                            },
                            "patchSettings": {"patchMode": "ImageDefault"},
                        },
                    },
                    "networkProfile": {
                        "networkInterfaces": [
                            {
                                "id": f"[{rid('Microsoft.Network/networkInterfaces', nic)}]",
                                "properties": {"deleteOption": "Delete"},
                            }
                        ]
                    },
                    "securityProfile": {
                        "encryptionAtHost": True,
                        "securityType": "TrustedLaunch",
                        "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True},
                    },
                    "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
                },
                identity=identity,
                depends=depends,
            )
        )
    return out


# --- Function app and API Management ------------------------------------------------------------------------------


def function_app() -> list[Json]:
    plan_id = rid("Microsoft.Web/serverfarms", "variables('planName')")
    endpoint_id = rid("Microsoft.MachineLearningServices/workspaces/onlineEndpoints", *ENDPOINT)
    settings = {
        "AzureWebJobsStorage__accountName": f"[{FNST}]",
        "TICKCAST_PROFILE": "cloud",
        "TICKCAST_STORAGE__ACCOUNT_URL": f"[{LAKE_URL}]",
        "TICKCAST_STORAGE__LAKE_CONTAINER": "[variables('lakeContainer')]",
        "TICKCAST_SERVING__ENDPOINT_URL": f"[{ref(endpoint_id, API['ml'])}.scoringUri]",
        "TICKCAST_AML__SUBSCRIPTION_ID": "[subscription().subscriptionId]",
        "TICKCAST_AML__RESOURCE_GROUP": "[resourceGroup().name]",
        "TICKCAST_AML__WORKSPACE": "[variables('amlWorkspaceName')]",
        "TICKCAST_AML__ENDPOINT_NAME": "[variables('amlEndpointName')]",
        # where the Function gets the endpoint's AML tokens (this cloud's Azure Resource Manager)
        "TICKCAST_AML__MANAGEMENT_URL": "[environment().resourceManager]",
        "TICKCAST_SYMBOLS": "[string(parameters('symbols'))]",
        "TICKCAST_KAFKA__BOOTSTRAP_SERVERS": "[variables('kafkaBootstrapServers')]",
        "TICKCAST_MLFLOW__TRACKING_URI": "[variables('mlflowTrackingUri')]",
    }
    plan = resource(
        "Microsoft.Web/serverfarms",
        "web",
        "[variables('planName')]",
        {"reserved": True},
        kind="functionapp",
        sku={"name": "FC1", "tier": "FlexConsumption"},
        metadata=skip(
            "CKV_AZURE_225:dev runs on one Flex Consumption plan without zone redundancy; prod sets zoneRedundant "
            "where the region supports it",
        ),
    )
    site = resource(
        "Microsoft.Web/sites",
        "web",
        f"[{FUNC}]",
        {
            "serverFarmId": f"[{plan_id}]",
            "httpsOnly": True,
            "clientAffinityEnabled": False,  # stateless API: no ARR affinity cookie
            "publicNetworkAccess": "Enabled",
            "virtualNetworkSubnetId": f"[{subnet_id('vnetComputeName', 'snet-func')}]",
            "functionAppConfig": {
                "deployment": {
                    "storage": {
                        "type": "blobContainer",
                        "value": f"[format('https://{{0}}.blob.{{1}}/{{2}}', {FNST}, {STORAGE_SUFFIX}, {DEPLOY_C})]",
                        "authentication": {"type": "SystemAssignedIdentity"},
                    }
                },
                "scaleAndConcurrency": {"maximumInstanceCount": 40, "instanceMemoryMB": 2048},
                "runtime": {"name": "python", "version": "3.11"},
            },
            "siteConfig": {
                "minTlsVersion": "1.2",
                "scmMinTlsVersion": "1.2",
                "ftpsState": "Disabled",
                "http20Enabled": True,
                "remoteDebuggingEnabled": False,
                "healthCheckPath": "/api/health",
                "ipSecurityRestrictionsDefaultAction": "Deny",
                "ipSecurityRestrictions": [
                    {
                        # the ApiManagement service tag covers APIM's control plane, not this instance's gateway:
                        # the gateway calls from its own public address (docs/decisions/0021)
                        "name": "apim-gateway-only",
                        "description": "Only this API Management instance's gateway reaches the anonymous HTTP trigger",
                        "action": "Allow",
                        "priority": 100,
                        "ipAddress": f"[concat({APIM_IP}, '/32')]",
                    }
                ],
                "appSettings": [{"name": k, "value": v} for k, v in settings.items()],
            },
        },
        kind="functionapp,linux",
        identity={"type": "SystemAssigned"},
        metadata=skip(
            "CKV_AZURE_222:API Management (not VNet-injected in dev) calls the Function over its public endpoint; "
            "access restrictions admit only that API Management instance's public address",
            "CKV_AZURE_17:callers are authenticated by APIM's subscription key; client certificates would need a "
            "certificate secret in APIM",
            "CKV_AZURE_212:Flex Consumption scales by instances (functionAppConfig.scaleAndConcurrency), not "
            "siteConfig.numberOfWorkers",
            "CKV_AZURE_82:Flex Consumption sets the runtime in functionAppConfig.runtime (python 3.11), not "
            "siteConfig.pythonVersion",
        ),
        depends=[
            plan_id,
            rid(
                "Microsoft.Storage/storageAccounts/blobServices/containers",
                FNST,
                "'default'",
                "variables('funcDeployContainer')",
            ),
            rid(VNET_T, "variables('vnetComputeName')"),
            endpoint_id,
            rid("Microsoft.ApiManagement/service", APIM),
        ],
    )
    no_basic_auth = [
        resource(
            "Microsoft.Web/sites/basicPublishingCredentialsPolicies",
            "web",
            f"[format('{{0}}/{kind}', {FUNC})]",
            {"allow": False},
            depends=[rid("Microsoft.Web/sites", FUNC)],
        )
        for kind in ("ftp", "scm")
    ]
    return [plan, site, *no_basic_auth]


def api_management() -> list[Json]:
    apim_id = rid("Microsoft.ApiManagement/service", APIM)
    func_host = f"{ref(rid('Microsoft.Web/sites', FUNC), API['web'])}.defaultHostName"
    api_id = rid("Microsoft.ApiManagement/service/apis", APIM, "variables('apiName')")
    product_id = rid("Microsoft.ApiManagement/service/products", APIM, "variables('productName')")
    tls_off = {
        f"Microsoft.WindowsAzure.ApiManagement.Gateway.Security.{side}.{proto}": "False"
        for side in ("Protocols", "Backend.Protocols")
        for proto in ("Tls10", "Tls11", "Ssl30")
    }
    tls_off["Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Ciphers.TripleDes168"] = "False"
    service = resource(
        "Microsoft.ApiManagement/service",
        "apim",
        f"[{APIM}]",
        {
            "publisherEmail": "[parameters('apimPublisherEmail')]",
            "publisherName": "[parameters('apimPublisherName')]",
            "customProperties": tls_off,
            # control-plane clients older than 2021-08-01 could read secrets through the ARM API
            "apiVersionConstraint": {"minApiVersion": "2021-08-01"},
        },
        sku={"name": "[parameters('apimSku')]", "capacity": 1},
        identity={"type": "SystemAssigned"},
        metadata=skip(
            "CKV_AZURE_107:API Management is the public entry point; dev does not inject it into a VNet (its "
            "backend, the Function, admits only the ApiManagement service tag)",
            "CKV_AZURE_174:API Management is the public API gateway: public network access is its purpose",
            "CKV_AZURE_173:customProperties set TLS 1.0/1.1 and SSL 3.0 to the string 'False' (disabled) for both "
            "client and backend sides; checkov reads any non-empty string as enabled",
        ),
    )
    operation = "Microsoft.ApiManagement/service/apis/operations"
    api = resource(
        "Microsoft.ApiManagement/service/apis",
        "apim",
        f"[format('{{0}}/{{1}}', {APIM}, variables('apiName'))]",
        {
            "displayName": "tickcast predictions",
            "description": "Next-minute close predictions (the Function app's FastAPI behind this gateway)",
            "path": "api",
            "protocols": ["https"],
            "serviceUrl": f"[uri(format('https://{{0}}/', {func_host}), 'api')]",
            "subscriptionRequired": True,
            "subscriptionKeyParameterNames": {"header": "Ocp-Apim-Subscription-Key", "query": "subscription-key"},
            "apiType": "http",
        },
        depends=[apim_id, rid("Microsoft.Web/sites", FUNC)],
    )
    operations = [
        resource(
            operation,
            "apim",
            "[format('{0}/{1}/get-prediction', variables('apimName'), variables('apiName'))]",
            {
                "displayName": "Prediction from the latest bars in the lake",
                "method": "GET",
                "urlTemplate": "/predictions/{symbol}",
                "templateParameters": [{"name": "symbol", "type": "string", "required": True}],
            },
            depends=[api_id],
        ),
        resource(
            operation,
            "apim",
            "[format('{0}/{1}/predict', variables('apimName'), variables('apiName'))]",
            {"displayName": "Prediction from the caller's bars", "method": "POST", "urlTemplate": "/predict"},
            depends=[api_id],
        ),
    ]
    policy = resource(
        "Microsoft.ApiManagement/service/apis/policies",
        "apim",
        f"[format('{{0}}/{{1}}/policy', {APIM}, variables('apiName'))]",
        {"format": "rawxml", "value": "[parameters('apimPolicyXml')]"},
        depends=[api_id],
    )
    product = resource(
        "Microsoft.ApiManagement/service/products",
        "apim",
        f"[format('{{0}}/{{1}}', {APIM}, variables('productName'))]",
        {
            "displayName": "tickcast",
            "description": "Access to the tickcast prediction API; every call needs a subscription key",
            "subscriptionRequired": True,
            "approvalRequired": True,
            "subscriptionsLimit": 10,
            "state": "published",
        },
        depends=[apim_id],
    )
    product_api = resource(
        "Microsoft.ApiManagement/service/products/apis",
        "apim",
        f"[format('{{0}}/{{1}}/{{2}}', {APIM}, variables('productName'), variables('apiName'))]",
        None,
        depends=[product_id, api_id],
    )
    subscription = resource(
        "Microsoft.ApiManagement/service/subscriptions",
        "apim",
        f"[format('{{0}}/{{1}}', {APIM}, format('{{0}}-client', parameters('env')))]",
        {
            "displayName": "[format('tickcast {0} client', parameters('env'))]",
            "scope": f"[{product_id}]",
            "state": "active",
            "allowTracing": False,
        },
        depends=[product_id],
    )
    return [service, api, *operations, policy, product, product_api, subscription]


# --- role assignments ---------------------------------------------------------------------------------------------


def principal_of_uai(var: str) -> str:
    return f"[{ref(uai_id(var), API['msi'])}.principalId]"


def principal_of_system(type_: str, *names: str, api: str) -> str:
    return f"[{ref(rid(type_, *names), API[api], full=True)}.identity.principalId]"


def assignment(
    name_var: str, role: str, scope: str, principal: str, principal_key: str, depends: list[str], why: str
) -> tuple[Json, tuple[str, str]]:
    """A role assignment to a managed identity at a resource's scope (``scope`` is a relative resource id)."""
    body = resource(
        "Microsoft.Authorization/roleAssignments",
        "authz",
        f"[variables('{name_var}')]",
        {
            "roleDefinitionId": f"[subscriptionResourceId({ROLE_DEF_T}, variables('{role}'))]",
            "principalId": principal,
            "principalType": "ServicePrincipal",
            "description": why,
        },
        scope=f"[{scope}]",
        depends=depends,
    )
    name = f"[guid({scope}, {principal_key}, variables('{role}'))]"
    return body, (name_var, name)


def role_assignments() -> tuple[list[Json], Json]:
    container_path = "'Microsoft.Storage/storageAccounts/{0}/blobServices/default/containers/{1}'"
    lake_container = f"format({container_path}, {LAKE}, variables('lakeContainer'))"
    mlflow_container = f"format({container_path}, {LAKE}, variables('mlflowContainer'))"
    ml_storage = f"format('Microsoft.Storage/storageAccounts/{{0}}', {MLST})"
    func_storage = f"format('Microsoft.Storage/storageAccounts/{{0}}', {FNST})"
    acr = f"format('Microsoft.ContainerRegistry/registries/{{0}}', {ACR})"
    workspace = f"format('Microsoft.MachineLearningServices/workspaces/{{0}}', {WS})"
    endpoint_path = "'Microsoft.MachineLearningServices/workspaces/{0}/onlineEndpoints/{1}'"
    endpoint = f"format({endpoint_path}, {ENDPOINT[0]}, {ENDPOINT[1]})"
    aks_subnet = "format('Microsoft.Network/virtualNetworks/{0}/subnets/snet-aks', variables('vnetComputeName'))"

    lake_c = rid(
        "Microsoft.Storage/storageAccounts/blobServices/containers", LAKE, "'default'", "variables('lakeContainer')"
    )
    mlflow_c = rid(
        "Microsoft.Storage/storageAccounts/blobServices/containers", LAKE, "'default'", "variables('mlflowContainer')"
    )
    ws_id = rid("Microsoft.MachineLearningServices/workspaces", WS)
    aks_id = rid("Microsoft.ContainerService/managedClusters", AKS)
    site_id = rid("Microsoft.Web/sites", FUNC)
    endpoint_id = rid("Microsoft.MachineLearningServices/workspaces/onlineEndpoints", *ENDPOINT)
    image_build_id = rid("Microsoft.MachineLearningServices/workspaces/computes", *IMAGE_BUILD)

    def uai(var: str) -> tuple[str, str, str]:
        return principal_of_uai(var), uai_id(var), uai_id(var)

    airflow, mlflow, endpoint_uai, aks_uai = (
        uai("idAirflowName"),
        uai("idMlflowName"),
        uai("idEndpointName"),
        uai("idAksName"),
    )
    func = (principal_of_system("Microsoft.Web/sites", FUNC, api="web"), site_id, site_id)
    build = (
        principal_of_system("Microsoft.MachineLearningServices/workspaces/computes", *IMAGE_BUILD, api="ml"),
        image_build_id,
        image_build_id,
    )
    kubelet = (f"[{ref(aks_id, API['aks'])}.identityProfile.kubeletidentity.objectId]", aks_id, aks_id)

    specs: list[tuple[str, str, str, tuple[str, str, str], list[str], str]] = [
        # (name variable, role, scope, (principalId, principal key for the name, principal dependency), deps, why)
        (
            "airflowLakeRoleName",
            "roleStorageBlobDataContributor",
            lake_container,
            airflow,
            [lake_c],
            "Airflow identity: the ingest DAG upserts Parquet files; the retrain DAG reads them (same workers)",
        ),
        (
            "airflowAmlRoleName",
            "roleAzureMLDataScientist",
            workspace,
            airflow,
            [ws_id],
            "Airflow identity: the retrain DAG registers models and creates blue/green deployments",
        ),
        (
            "airflowAmlStorageRoleName",
            "roleStorageBlobDataContributor",
            ml_storage,
            airflow,
            [rid(STORAGE_T, MLST)],
            "Airflow identity: azure-ai-ml uploads the scoring code and registers models on the workspace's "
            "identity-based datastore with the caller's own token",
        ),
        (
            "mlflowArtifactsRoleName",
            "roleStorageBlobDataContributor",
            mlflow_container,
            mlflow,
            [mlflow_c],
            "MLflow host identity: the tracking server writes run artifacts (--serve-artifacts)",
        ),
        (
            "funcLakeRoleName",
            "roleStorageBlobDataReader",
            lake_container,
            func,
            [lake_c],
            "Function identity: the public API reads the latest bars",
        ),
        (
            "funcHostStorageRoleName",
            "roleStorageBlobDataOwner",
            func_storage,
            func,
            [rid(STORAGE_T, FNST)],
            "Function identity: the Functions host's own storage and the deployment package container",
        ),
        (
            "imageBuildAcrRoleName",
            "roleAcrPush",
            acr,
            build,
            [rid("Microsoft.ContainerRegistry/registries", ACR)],
            "Image-build compute identity: pushes the images it builds",
        ),
        (
            "imageBuildStorageRoleName",
            "roleStorageBlobDataReader",
            ml_storage,
            build,
            [rid(STORAGE_T, MLST)],
            "Image-build compute identity: reads the build context",
        ),
        (
            "endpointAcrRoleName",
            "roleAcrPull",
            acr,
            endpoint_uai,
            [rid("Microsoft.ContainerRegistry/registries", ACR)],
            "Endpoint identity: pulls the deployment image",
        ),
        (
            "endpointStorageRoleName",
            "roleStorageBlobDataReader",
            ml_storage,
            endpoint_uai,
            [rid(STORAGE_T, MLST)],
            "Endpoint identity: downloads the registered model",
        ),
        (
            "kubeletAcrRoleName",
            "roleAcrPull",
            acr,
            kubelet,
            [rid("Microsoft.ContainerRegistry/registries", ACR)],
            "AKS kubelet identity: pulls images on the nodes",
        ),
        (
            "aksSubnetRoleName",
            "roleNetworkContributor",
            aks_subnet,
            aks_uai,
            [rid(VNET_T, "variables('vnetComputeName')")],
            "AKS control-plane identity: joins the node subnet and manages the internal load balancer",
        ),
    ]
    resources: list[Json] = []
    names: Json = {}
    for name_var, role, scope, (principal, key, principal_dep), deps, why in specs:
        body, (var, name) = assignment(name_var, role, scope, principal, key, [*deps, principal_dep], why)
        resources.append(body)
        names[var] = name
    # the Function may call the endpoint: the custom invoker role, on the endpoint only
    body = resource(
        "Microsoft.Authorization/roleAssignments",
        "authz",
        "[variables('funcInvokeRoleName')]",
        {
            "roleDefinitionId": "[resourceId('Microsoft.Authorization/roleDefinitions', variables('invokerRoleName'))]",
            "principalId": func[0],
            "principalType": "ServicePrincipal",
            "description": "Function identity: gets an AML token for, and scores on, the online endpoint",
        },
        scope=f"[{endpoint}]",
        depends=[endpoint_id, site_id, rid("Microsoft.Authorization/roleDefinitions", "variables('invokerRoleName')")],
    )
    resources.append(body)
    names["funcInvokeRoleName"] = f"[guid({endpoint}, {site_id}, variables('invokerRoleName'))]"
    return resources, names


# --- assembly -------------------------------------------------------------------------------------------------------


def template() -> Json:
    assignments, assignment_names = role_assignments()
    variables_ = variables()
    variables_.update(assignment_names)
    return {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "metadata": {
            "description": "tickcast on Azure: Blob lake, AML workspace with a Kubernetes online endpoint on AKS, "
            "broker/Airflow/MLflow hosts, Function app behind API Management. Generated by cloud/arm/build.py.",
        },
        "parameters": parameters(),
        "variables": variables_,
        "resources": [
            *identities(),
            *monitoring(),
            *network(),
            *data(),
            *machine_learning(),
            *hosts(),
            *function_app(),
            *api_management(),
            *assignments,
        ],
        "outputs": outputs(),
    }


def render() -> str:
    return json.dumps(template(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if main.json is not what this script generates")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not MAIN.is_file() or MAIN.read_text() != text:
            print(f"{MAIN} is out of date: run python cloud/arm/build.py", file=sys.stderr)
            return 1
        return 0
    MAIN.write_text(text)
    print(f"wrote {MAIN} ({len(template()['resources'])} resources)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
