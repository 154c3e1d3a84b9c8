"""infra/bicep: every file parses (pycep-parser) and the resources are wired the way the app expects."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from shared.core.config import Settings
from shared.domain.registry import all_queues

REPO = Path(__file__).resolve().parents[3]
BICEP_DIR = REPO / "infra" / "bicep"
MAIN = BICEP_DIR / "main.bicep"

# Built-in role definition ids, from the Azure RBAC built-in roles reference. A wrong GUID would
# deploy a different role without any error, so the ids are pinned here independently of Bicep.
BUILT_IN_ROLES = {
    "serviceBusDataSender": "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",
    "serviceBusDataReceiver": "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",
    "serviceBusDataOwner": "090c5cfd-751d-490a-894a-3ce6f1109419",
    "storageBlobDataContributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "storageBlobDelegator": "db58b8e5-c6ad-4a2a-8342-4190687cbf4a",
    "keyVaultSecretsUser": "4633458b-17de-408a-b874-0445c86b69e6",
    "cognitiveServicesOpenAiUser": "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
    "acrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "monitoringDataReader": "b0d8363b-8ddd-447d-831f-62ca05bff136",
}


# --- helpers (also used by test_deploy_consistency.py) ------------------------------------------


@cache
def parse_bicep(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


def module(name: str) -> dict[str, Any]:
    return parse_bicep(BICEP_DIR / "modules" / f"{name}.bicep")


def main() -> dict[str, Any]:
    return parse_bicep(MAIN)


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's properties object, looking through a `[for ...]` loop."""
    config = resource["config"]
    return config["config"] if "loop_type" in config else config


def resources_of_type(doc: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in doc.get("resources", {}).items() if r["type"] == resource_type}


def only(doc: dict[str, Any], resource_type: str) -> dict[str, Any]:
    found = resources_of_type(doc, resource_type)
    assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
    return next(iter(found.values()))


def resolve(doc: dict[str, Any], value: Any) -> Any:
    """A bare identifier's value: a variable's value or a parameter's default; else the value itself."""
    if isinstance(value, str):
        if value in doc.get("variables", {}):
            return doc["variables"][value]["value"]
        parameter = doc.get("parameters", {}).get(value)
        if parameter is not None and parameter["default"] is not None:
            return parameter["default"]
    return value


def accessor(value: Any) -> str:
    """`a.b.c` for a parsed property-accessor chain, so wiring can be compared as text."""
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "property_accessor":
        operands = value["operator"]["operands"]
        return f"{accessor(operands['operand_1'])}.{accessor(operands['operand_2'])}"
    return str(value)


def main_param_default(name: str) -> Any:
    return main()["parameters"][name]["default"]


def module_arguments(symbol: str) -> dict[str, Any]:
    return main()["modules"][symbol]["config"]["params"]


def iso_duration_seconds(duration: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", duration)
    assert match, f"not an ISO-8601 time duration: {duration}"
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def bicep_files() -> list[Path]:
    return sorted(BICEP_DIR.rglob("*.bicep"))


def walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


# --- parsing and module wiring ------------------------------------------------------------------


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(BICEP_DIR)))
def test_every_bicep_file_parses(path: Path) -> None:
    doc = parse_bicep(path)
    assert doc.get("resources") or doc.get("modules"), f"{path.name} declares nothing"


def test_there_is_a_module_per_area() -> None:
    names = {p.stem for p in (BICEP_DIR / "modules").glob("*.bicep")}
    expected = {"servicebus", "storage", "postgres", "aks", "openai", "keyvault", "monitoring", "identity"}
    assert expected <= names
    assert {Path(m["detail"]["path"]).stem for m in main()["modules"].values()} == names


@pytest.mark.parametrize("symbol", sorted(main()["modules"]))
def test_main_passes_exactly_the_parameters_each_module_declares(symbol: str) -> None:
    declared = main()["modules"][symbol]
    target = parse_bicep(BICEP_DIR / declared["detail"]["path"])
    passed = set(declared["config"]["params"])
    parameters = target.get("parameters", {})
    required = {name for name, p in parameters.items() if p["default"] is None}
    assert passed <= set(parameters), f"{symbol}: unknown parameters {passed - set(parameters)}"
    assert required <= passed, f"{symbol}: required parameters not passed {required - passed}"


def test_every_module_output_main_reads_is_declared() -> None:
    text = MAIN.read_text()
    modules = main()["modules"]
    reads = set(re.findall(r"\b(\w+)\.outputs\.(\w+)", text))
    assert reads, "main.bicep reads no module outputs"
    for symbol, output in reads:
        target = parse_bicep(BICEP_DIR / modules[symbol]["detail"]["path"])
        assert output in target.get("outputs", {}), f"{symbol} has no output {output}"


def test_bicepparam_sets_declared_parameters_and_every_required_one() -> None:
    text = (BICEP_DIR / "main.bicepparam").read_text()
    assert re.search(r"^using 'main\.bicep'$", text, re.MULTILINE)
    assigned = set(re.findall(r"^param (\w+) =", text, re.MULTILINE))
    parameters = main()["parameters"]
    required = {name for name, p in parameters.items() if p["default"] is None}
    assert assigned <= set(parameters)
    assert required <= assigned
    # The password never sits in the file.
    assert re.search(r"^param postgresAdminPassword = readEnvironmentVariable\(", text, re.MULTILINE)
    assert {"secure"} <= {d["type"] for d in parameters["postgresAdminPassword"]["decorators"]}


# --- Service Bus --------------------------------------------------------------------------------


def test_the_four_queues_come_from_settings_names() -> None:
    assert resolve(main(), "queueNames") == all_queues(Settings())
    assert module_arguments("serviceBus")["queueNames"] == "queueNames"
    queues = only(module("servicebus"), "Microsoft.ServiceBus/namespaces/queues")
    assert queues["config"]["loop_type"]["detail"]["array_name"] == "queueNames"


def test_queue_settings_match_the_app() -> None:
    settings = Settings()
    arguments = module_arguments("serviceBus")
    properties = body(only(module("servicebus"), "Microsoft.ServiceBus/namespaces/queues"))["properties"]
    assert properties["lockDuration"] == "lockDuration"
    assert iso_duration_seconds(arguments["lockDuration"]) == settings.lock_duration_seconds
    assert properties["maxDeliveryCount"] == "maxDeliveryCount"
    assert arguments["maxDeliveryCount"] == settings.max_delivery_count
    assert properties["deadLetteringOnMessageExpiration"] is True
    assert properties["requiresDuplicateDetection"] is True
    assert properties["duplicateDetectionHistoryTimeWindow"] == "duplicateDetectionWindow"
    assert iso_duration_seconds(arguments["duplicateDetectionWindow"]) == settings.duplicate_detection_seconds


def test_namespace_tier_supports_duplicate_detection_and_refuses_keys() -> None:
    namespace = body(only(module("servicebus"), "Microsoft.ServiceBus/namespaces"))
    assert namespace["sku"]["name"] in {"Standard", "Premium"}
    assert namespace["properties"]["disableLocalAuth"] is True


# --- Storage ------------------------------------------------------------------------------------


def test_both_containers_come_from_settings_names() -> None:
    settings = Settings()
    assert resolve(main(), "audioContainerName") == settings.audio_container
    assert resolve(main(), "resultsContainerName") == settings.results_container
    assert resolve(main(), "containerNames") == ["audioContainerName", "resultsContainerName"]
    containers = only(module("storage"), "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert containers["config"]["loop_type"]["detail"]["array_name"] == "containerNames"
    assert body(containers)["properties"]["publicAccess"] == "None"


def test_lifecycle_rules_expire_audio_and_results() -> None:
    policy = body(only(module("storage"), "Microsoft.Storage/storageAccounts/managementPolicies"))
    rules = {r["definition"]["filters"]["prefixMatch"][0]: r for r in policy["properties"]["policy"]["rules"]}
    assert set(rules) == {"${audioContainerName}/", "${resultsContainerName}/"}
    audio = rules["${audioContainerName}/"]["definition"]["actions"]["baseBlob"]
    assert audio["delete"]["daysAfterModificationGreaterThan"] == "audioRetentionDays"
    results = rules["${resultsContainerName}/"]["definition"]["actions"]["baseBlob"]
    assert results["delete"]["daysAfterModificationGreaterThan"] == "resultsRetentionDays"
    assert all(r["enabled"] is True for r in rules.values())


def test_lifecycle_backstops_never_delete_before_the_app_retention() -> None:
    # The retention timer (shared/jobs/retention.py) honours AUDIO_RETENTION_SECONDS and RESULT_RETENTION_SECONDS
    # first; Blob Storage's lifecycle rule only catches what it missed, so it may not expire earlier.
    settings = Settings()
    parameters = module("storage")["parameters"]

    def minimum(name: str) -> int:
        (decorator,) = [d for d in parameters[name]["decorators"] if d["type"] == "min_value"]
        return int(decorator["argument"])

    assert minimum("audioRetentionDays") * 86400 > settings.audio_retention_seconds
    assert minimum("resultsRetentionDays") * 86400 > settings.result_retention_seconds
    assert int(resolve(main(), "audioRetentionDays")) >= minimum("audioRetentionDays")
    assert int(resolve(main(), "resultsRetentionDays")) >= minimum("resultsRetentionDays")


def test_cors_lets_browsers_put_with_an_upload_url() -> None:
    service = body(only(module("storage"), "Microsoft.Storage/storageAccounts/blobServices"))
    (rule,) = service["properties"]["cors"]["corsRules"]
    assert {"PUT", "OPTIONS"} <= set(rule["allowedMethods"])
    # The client sends x-ms-blob-type: BlockBlob exactly as for an Azure SAS URL (DESIGN.md).
    assert "x-ms-blob-type" in rule["allowedHeaders"]
    assert rule["allowedOrigins"] == "corsAllowedOrigins"
    assert module_arguments("storage")["corsAllowedOrigins"] == "corsAllowedOrigins"


def test_storage_account_allows_identity_access_only() -> None:
    account = body(only(module("storage"), "Microsoft.Storage/storageAccounts"))["properties"]
    assert account["allowSharedKeyAccess"] is False
    assert account["allowBlobPublicAccess"] is False
    assert account["minimumTlsVersion"] == "TLS1_2"


# --- PostgreSQL, OpenAI, Key Vault, monitoring --------------------------------------------------


def test_postgres_server_and_database() -> None:
    postgres = module("postgres")
    server = body(only(postgres, "Microsoft.DBforPostgreSQL/flexibleServers"))
    assert server["properties"]["administratorLoginPassword"] == "adminPassword"
    secure = {d["type"] for d in postgres["parameters"]["adminPassword"]["decorators"]}
    assert "secure" in secure
    database = body(only(postgres, "Microsoft.DBforPostgreSQL/flexibleServers/databases"))
    assert database["parent"] == "server"
    assert module_arguments("postgres")["databaseName"] == "databaseName"


def test_openai_has_the_gpt_41_deployment_the_app_calls() -> None:
    openai = module("openai")
    assert body(only(openai, "Microsoft.CognitiveServices/accounts"))["kind"] == "OpenAI"
    deployment = body(only(openai, "Microsoft.CognitiveServices/accounts/deployments"))
    arguments = module_arguments("openAi")
    assert deployment["name"] == "deploymentName"
    assert resolve(main(), arguments["deploymentName"]) == Settings().llm.azure_openai_deployment
    assert deployment["properties"]["model"]["format"] == "OpenAI"
    assert arguments["modelName"] == "gpt-4.1"


def test_key_vault_uses_rbac_and_holds_the_app_secrets() -> None:
    keyvault = module("keyvault")
    vault = body(only(keyvault, "Microsoft.KeyVault/vaults"))["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True
    secrets = resources_of_type(keyvault, "Microsoft.KeyVault/vaults/secrets")
    names = {body(s)["name"] for s in secrets.values()}
    assert names == {"databaseUrlSecretName", "openAiKeySecretName", "liveSigningKeySecretName"}
    arguments = module_arguments("keyVault")
    assert {resolve(main(), arguments[n]) for n in names} == {
        "database-url",
        "azure-openai-api-key",
        "live-signing-key",
    }


def test_the_live_signing_key_is_a_secure_parameter_written_to_key_vault() -> None:
    # SPEECHFLOW_SIGNING_KEY: one secret shared by the API (signs client secrets) and the live component
    # (checks them); a key generated per pod would refuse every client secret another pod issued.
    parameter = main()["parameters"]["liveSigningKey"]
    assert "secure" in {d["type"] for d in parameter["decorators"]}
    assert parameter["default"] == {"function": {"type": "new_guid"}}
    arguments = module_arguments("keyVault")
    assert arguments["liveSigningKey"] == "liveSigningKey"
    assert arguments["liveSigningKeySecretName"] == module_arguments("access")["liveSigningKeySecretName"]
    keyvault = module("keyvault")
    assert "secure" in {d["type"] for d in keyvault["parameters"]["liveSigningKey"]["decorators"]}
    (secret,) = [
        s
        for s in resources_of_type(keyvault, "Microsoft.KeyVault/vaults/secrets").values()
        if body(s)["name"] == "liveSigningKeySecretName"
    ]
    assert body(secret)["properties"]["value"] == "liveSigningKey"


def test_log_analytics_feeds_app_insights_and_the_cluster() -> None:
    monitoring = module("monitoring")
    only(monitoring, "Microsoft.OperationalInsights/workspaces")
    insights = body(only(monitoring, "Microsoft.Insights/components"))
    assert accessor(insights["properties"]["WorkspaceResourceId"]) == "workspace.id"
    cluster = body(only(module("aks"), "Microsoft.ContainerService/managedClusters"))
    oms = cluster["properties"]["addonProfiles"]["omsagent"]
    assert oms["enabled"] is True
    assert oms["config"]["logAnalyticsWorkspaceResourceID"] == "logAnalyticsWorkspaceId"
    assert accessor(module_arguments("aks")["logAnalyticsWorkspaceId"]) == "monitoring.outputs.workspaceId"
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in main()["outputs"]


def test_managed_prometheus_feeds_the_azure_monitor_workspace_keda_queries() -> None:
    monitoring = module("monitoring")
    only(monitoring, "Microsoft.Monitor/accounts")
    assert accessor(monitoring["outputs"]["prometheusQueryEndpoint"]["value"]) == (
        "prometheusWorkspace.properties.metrics.prometheusQueryEndpoint"
    )
    aks = module("aks")
    cluster = body(only(aks, "Microsoft.ContainerService/managedClusters"))
    assert cluster["properties"]["azureMonitorProfile"]["metrics"]["enabled"] is True
    assert accessor(module_arguments("aks")["prometheusWorkspaceId"]) == "monitoring.outputs.prometheusWorkspaceId"
    rule = body(only(aks, "Microsoft.Insights/dataCollectionRules"))["properties"]
    (destination,) = rule["destinations"]["monitoringAccounts"]
    assert destination["accountResourceId"] == "prometheusWorkspaceId"
    (flow,) = rule["dataFlows"]
    assert flow["streams"] == ["Microsoft-PrometheusMetrics"] and flow["destinations"] == [destination["name"]]
    assert accessor(rule["dataCollectionEndpointId"]) == "prometheusEndpoint.id"
    association = body(only(aks, "Microsoft.Insights/dataCollectionRuleAssociations"))
    assert association["scope"] == "cluster"
    assert accessor(association["properties"]["dataCollectionRuleId"]) == "prometheusRule.id"
    # The KEDA ScaledObject of the live component reads this output (k8s/10-live.yaml).
    output = main()["outputs"]["AZURE_MONITOR_PROMETHEUS_ENDPOINT"]
    assert accessor(output["value"]) == "monitoring.outputs.prometheusQueryEndpoint"


# --- AKS ----------------------------------------------------------------------------------------


def aks_pools() -> dict[str, dict[str, Any]]:
    cluster = body(only(module("aks"), "Microsoft.ContainerService/managedClusters"))
    return {p["name"]: p for p in cluster["properties"]["agentPoolProfiles"]}


def test_aks_has_the_seed_node_pools() -> None:
    pools = aks_pools()
    assert set(pools) == {"system", "default", "gpu"}
    assert pools["system"]["mode"] == "System"
    assert pools["default"]["mode"] == pools["gpu"]["mode"] == "User"
    assert {name: main_param_default(p["vmSize"]) for name, p in pools.items()} == {
        "system": "Standard_DS2_v2",
        "default": "Standard_D4s_v3",
        "gpu": "Standard_NC6s_v3",
    }
    arguments = module_arguments("aks")
    assert all(arguments[p["vmSize"]] == p["vmSize"] for p in pools.values())


def test_gpu_pool_is_tainted_and_scales_to_zero() -> None:
    aks = module("aks")
    gpu = aks_pools()["gpu"]
    taints = [resolve(aks, t) for t in gpu["nodeTaints"]]
    assert any(t.endswith(":NoSchedule") and t.startswith("nvidia.com/gpu") for t in taints)
    assert gpu["minCount"] == 0
    assert gpu["enableAutoScaling"] is True
    assert "nodeTaints" not in aks_pools()["default"]


def test_aks_enables_keda_workload_identity_and_the_key_vault_csi_driver() -> None:
    properties = body(only(module("aks"), "Microsoft.ContainerService/managedClusters"))["properties"]
    assert properties["workloadAutoScalerProfile"]["keda"]["enabled"] is True
    # The application routing add-on runs the ingress controller of k8s/10-live.yaml's Ingress.
    assert properties["ingressProfile"]["webAppRouting"]["enabled"] is True
    assert properties["oidcIssuerProfile"]["enabled"] is True
    assert properties["securityProfile"]["workloadIdentity"]["enabled"] is True
    assert properties["addonProfiles"]["azureKeyvaultSecretsProvider"]["enabled"] is True


def test_identities_are_federated_with_the_kubernetes_service_accounts() -> None:
    identity = module("identity")
    credentials = resources_of_type(
        identity, "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
    )
    subjects = {body(c)["parent"]: resolve(identity, body(c)["properties"]["subject"]) for c in credentials.values()}
    assert subjects == {
        "functionsIdentity": "system:serviceaccount:${kubernetesNamespace}:${functionsServiceAccount}",
        "workersIdentity": "system:serviceaccount:${kubernetesNamespace}:${workersServiceAccount}",
        "kedaIdentity": "system:serviceaccount:kube-system:keda-operator",
    }
    for credential in credentials.values():
        assert body(credential)["properties"]["issuer"] == "oidcIssuerUrl"
    assert accessor(module_arguments("identities")["oidcIssuerUrl"]) == "aks.outputs.oidcIssuerUrl"


# --- role assignments ---------------------------------------------------------------------------


def role_assignments() -> set[tuple[str, str, str]]:
    """(role, scope resource type, identity) for every assignment in access.bicep."""
    access = module("access")
    found = set()
    for resource in resources_of_type(access, "Microsoft.Authorization/roleAssignments").values():
        properties = body(resource)["properties"]
        role_id = properties["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        role = accessor(role_id).removeprefix("roleIds.")
        scope_type = access["resources"][body(resource)["scope"]]["type"]
        loop = resource["config"].get("loop_type")
        if loop:
            assert properties["principalId"] == loop["detail"]["item_name"]
            principals = resolve(access, loop["detail"]["array_name"])
        else:
            principals = [properties["principalId"]]
        for principal in principals:
            found.add((role, scope_type, principal.removesuffix("PrincipalId")))
    return found


def test_role_ids_are_the_built_in_roles() -> None:
    assert resolve(module("access"), "roleIds") == BUILT_IN_ROLES


def test_role_assignments_are_exactly_the_least_privilege_set() -> None:
    sb, storage = "Microsoft.ServiceBus/namespaces", "Microsoft.Storage/storageAccounts"
    secret = "Microsoft.KeyVault/vaults/secrets"
    expected = {
        ("serviceBusDataSender", sb, "functions"),
        ("serviceBusDataSender", sb, "workers"),
        ("serviceBusDataReceiver", sb, "functions"),
        ("serviceBusDataReceiver", sb, "workers"),
        ("serviceBusDataOwner", sb, "keda"),
        # KEDA reads the live component's session count from managed Prometheus (k8s/10-live.yaml).
        ("monitoringDataReader", "Microsoft.Monitor/accounts", "keda"),
        ("storageBlobDataContributor", storage, "functions"),
        ("storageBlobDataContributor", storage, "workers"),
        ("storageBlobDelegator", storage, "functions"),
        ("keyVaultSecretsUser", secret, "functions"),
        ("keyVaultSecretsUser", secret, "workers"),
        ("cognitiveServicesOpenAiUser", "Microsoft.CognitiveServices/accounts", "functions"),
        ("acrPull", "Microsoft.ContainerRegistry/registries", "kubelet"),
    }
    assert role_assignments() == expected


def test_each_identity_reads_only_the_secrets_it_mounts() -> None:
    access = module("access")
    readers: dict[str, set[str]] = {}
    for resource in resources_of_type(access, "Microsoft.Authorization/roleAssignments").values():
        scope = body(resource)["scope"]
        if access["resources"][scope]["type"] != "Microsoft.KeyVault/vaults/secrets":
            continue
        loop = resource["config"].get("loop_type")
        principals = (
            resolve(access, loop["detail"]["array_name"]) if loop else [body(resource)["properties"]["principalId"]]
        )
        readers.setdefault(body(access["resources"][scope])["name"], set()).update(principals)
    assert readers == {
        "databaseUrlSecretName": {"functionsPrincipalId", "workersPrincipalId"},
        "openAiKeySecretName": {"functionsPrincipalId"},
        # The API signs live client secrets and the live component (a worker) checks them.
        "liveSigningKeySecretName": {"functionsPrincipalId", "workersPrincipalId"},
    }


def test_access_module_gets_the_identities_principal_ids() -> None:
    arguments = module_arguments("access")
    for name in ("functions", "workers", "keda"):
        assert accessor(arguments[f"{name}PrincipalId"]) == f"identities.outputs.{name}PrincipalId"
    assert accessor(arguments["kubeletPrincipalId"]) == "aks.outputs.kubeletPrincipalId"
    assert accessor(arguments["prometheusWorkspaceName"]) == "monitoring.outputs.prometheusWorkspaceName"


def test_role_assignment_names_are_deterministic() -> None:
    access = module("access")
    for name, resource in resources_of_type(access, "Microsoft.Authorization/roleAssignments").items():
        assert body(resource)["name"]["function"]["type"] == "guid", name
        assert body(resource)["properties"]["principalType"] == "ServicePrincipal", name
