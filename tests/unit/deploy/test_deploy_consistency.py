"""Queue names, environment variable names, node pools and resource requests agree across Settings,
Bicep, k8s/, the Dockerfiles and the seed's tables (SEED.md sections 9 and 10)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from shared.core.config import Settings
from shared.domain.registry import all_queues
from tests.unit.deploy.test_bicep import main, main_param_default, module, resolve
from tests.unit.deploy.test_k8s_manifests import (
    GPU_WORKLOADS,
    LIVE,
    config_map,
    container,
    deployments,
    env_names,
    manifests,
    of_kind,
    pod_specs,
    queue_scaled_objects,
    render,
    scaled_objects,
)

REPO = Path(__file__).resolve().parents[3]
SEED = REPO.parent / "shared" / "SEED.md"

# Settings the Azure Functions host and the model runtimes read, not the app. Everything else a pod
# receives must be a Settings environment variable.
FUNCTIONS_HOST_SETTINGS = {"AzureWebJobsSecretStorageType", "SERVICE_BUS_CONNECTION_STRING__fullyQualifiedNamespace"}
RUNTIME_SETTINGS = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "HF_HOME"}
# The seed's connection strings, and the identity-based setting that replaces each in AKS.
IDENTITY_FORM = {
    "SERVICE_BUS_CONNECTION_STRING": "SERVICE_BUS_NAMESPACE",
    "AZURE_STORAGE_CONNECTION_STRING": "AZURE_STORAGE_ACCOUNT_NAME",
}
# Seed component names (9.3 and 10 "Used By") and the workloads that are those components.
COMPONENTS = {
    "API Gateway": {"speechflow-api"},
    "Router": {"speechflow-router"},
    "Dashboard": {"speechflow-dashboard"},
    "LID Worker": {"speechflow-worker-lid"},
    "Whisper Worker": {"speechflow-worker-whisper"},
    "Azure AI Worker": {"speechflow-worker-azure"},
}
USED_BY = {
    "All backend services": COMPONENTS["API Gateway"] | COMPONENTS["Router"] | COMPONENTS["Dashboard"],
    "All services": set().union(*COMPONENTS.values()),
    "API, Workers": COMPONENTS["API Gateway"]
    | COMPONENTS["LID Worker"]
    | COMPONENTS["Whisper Worker"]
    | COMPONENTS["Azure AI Worker"],
    "Azure AI Worker": COMPONENTS["Azure AI Worker"],
}
# Placeholders in k8s/ that are not Bicep outputs: chosen at deploy time.
DEPLOY_TIME_PLACEHOLDERS = {"IMAGE_TAG", "POSTGRES_PASSWORD"}


# --- the seed's tables --------------------------------------------------------------------------


@cache
def seed_text() -> str:
    if not SEED.is_file():
        pytest.fail(f"the seed document is expected beside the repository at {SEED}")
    return SEED.read_text()


def seed_section(heading: str) -> str:
    """The text under a markdown heading, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(heading)}\s*$(.*?)(?=^#+ )", seed_text(), re.MULTILINE | re.DOTALL)
    assert match, f"no section {heading!r} in SEED.md"
    return match.group(1)


def seed_table(heading: str) -> list[dict[str, str]]:
    rows = [line.strip() for line in seed_section(heading).splitlines() if line.strip().startswith("|")]
    header, _, *body = rows
    columns = [c.strip() for c in header.strip("|").split("|")]
    return [dict(zip(columns, (c.strip().strip("`") for c in row.strip("|").split("|")), strict=True)) for row in body]


# --- Settings -----------------------------------------------------------------------------------


def settings_env_names() -> set[str]:
    """Every environment variable Settings reads, nested groups (WHISPER_*, LID_*) included."""
    names: set[str] = set()

    def collect(model: type[BaseSettings]) -> None:
        prefix = str(model.model_config.get("env_prefix", ""))
        for field_name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
                collect(annotation)
            elif isinstance(field.validation_alias, str):
                names.add(field.validation_alias)
            elif isinstance(field.validation_alias, AliasChoices):
                names.update(c for c in field.validation_alias.choices if isinstance(c, str))
            else:
                names.add(f"{prefix}{field_name}".upper())

    collect(Settings)
    return names


def settings_default(env_name: str) -> Any:
    """The default of the Settings field read from a top-level environment variable."""
    for field_name, field in Settings.model_fields.items():
        if field.validation_alias == env_name:
            return getattr(Settings(), field_name)
    raise KeyError(env_name)


def test_settings_env_names_include_the_nested_groups() -> None:
    # Guards the derivation the tests below rely on.
    names = settings_env_names()
    assert {"DATABASE_URL", "WHISPER_MODEL", "WHISPER_COMPUTE_TYPE", "LID_MODEL", "SHUTDOWN_GRACE_SECONDS"} <= names
    assert "whisper" not in {n.lower() for n in names}


# --- queue and container names ------------------------------------------------------------------


def test_queue_names_agree_everywhere() -> None:
    seed = {row["Constant"]: row["Value"] for row in seed_table("Queue Names (Centralized in config.py)")}
    assert len(seed) == 4
    for constant, value in seed.items():
        assert settings_default(constant) == value, constant
        assert config_map()[constant] == value, constant
    # The seed's queues, and besides them only the queues of steps registered since (shared/steps).
    registered = set(all_queues(Settings()))
    bicep = resolve(main(), "queueNames")
    assert [name for name in bicep if name in seed.values()] == list(seed.values())
    assert set(bicep) - set(seed.values()) <= registered
    scaled = {s["spec"]["triggers"][0]["metadata"]["queueName"] for s in queue_scaled_objects().values()}
    assert set(seed.values()) <= scaled
    assert scaled - set(seed.values()) <= registered


def test_container_names_agree_everywhere() -> None:
    seed = {row["Constant"]: row["Value"] for row in seed_table("Container Names")}
    assert seed == {"AUDIO_CONTAINER_NAME": "audio-files", "RESULTS_CONTAINER_NAME": "results"}
    for constant, value in seed.items():
        assert settings_default(constant) == value
        assert config_map()[constant] == value
    containers = [resolve(main(), name) for name in resolve(main(), "containerNames")]
    assert containers == list(seed.values())


def test_queue_tuning_in_the_config_map_matches_bicep_and_settings() -> None:
    settings = Settings()
    assert float(config_map()["QUEUE_LOCK_DURATION_SECONDS"]) == settings.lock_duration_seconds
    assert int(config_map()["QUEUE_MAX_DELIVERY_COUNT"]) == settings.max_delivery_count
    assert float(config_map()["QUEUE_DUPLICATE_DETECTION_SECONDS"]) == settings.duplicate_detection_seconds
    assert int(config_map()["MAX_RETRIES"]) == settings.max_retries


# --- environment variables ----------------------------------------------------------------------


def test_seed_environment_variables_are_settings_names() -> None:
    seed = [row["Variable"] for row in seed_table("Environment Variables")]
    assert len(seed) == 6
    assert set(seed) <= settings_env_names()


@pytest.mark.parametrize("workload", sorted(pod_specs()))
def test_every_env_var_a_pod_gets_is_read_by_someone(workload: str) -> None:
    if workload == "postgres":
        return  # the postgres image's own variables
    allowed = settings_env_names() | FUNCTIONS_HOST_SETTINGS | RUNTIME_SETTINGS
    names = {n for n in env_names(pod_specs()[workload]) if not re.fullmatch(r"AzureWebJobs\.\w+\.Disabled", n)}
    assert names <= allowed, f"{workload}: {sorted(names - allowed)} are read by nothing"


def test_each_component_gets_the_seed_variables_it_uses() -> None:
    for row in seed_table("Environment Variables"):
        variable = row["Variable"]
        accepted = {variable, IDENTITY_FORM.get(variable, variable)}
        for workload in USED_BY[row["Used By"]]:
            names = env_names(deployments()[workload]["spec"]["template"]["spec"])
            assert accepted & names, f"{workload} lacks {variable} (seed: used by {row['Used By']})"


def test_the_openai_key_reaches_only_the_azure_ai_worker() -> None:
    holders = {name for name, spec in pod_specs().items() if "AZURE_OPENAI_API_KEY" in env_names(spec)}
    assert holders == COMPONENTS["Azure AI Worker"]


def test_bicep_outputs_fill_the_config_map_under_the_settings_names() -> None:
    outputs = set(main()["outputs"])
    for name in outputs & settings_env_names():
        assert config_map()[name] == f"${{{name}}}", name
    assert {"SERVICE_BUS_NAMESPACE", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_OPENAI_ENDPOINT"} <= outputs


def k8s_placeholders() -> set[str]:
    """Every placeholder in k8s/, the kustomize base and overlays included."""
    text = "\n".join(p.read_text() for p in sorted((REPO / "k8s").rglob("*.yaml")))
    return set(re.findall(r"\$\{(\w+)\}", text))


def test_the_rendered_manifests_keep_every_placeholder_for_envsubst() -> None:
    # kustomize passes ${NAME} through untouched, so the guide's envsubst still fills each one.
    assert set(re.findall(r"\$\{(\w+)\}", render())) == k8s_placeholders() - {"POSTGRES_PASSWORD"}


def test_every_k8s_placeholder_is_a_bicep_output() -> None:
    assert k8s_placeholders() - DEPLOY_TIME_PLACEHOLDERS <= set(main()["outputs"])


def test_the_deploy_guide_substitutes_every_placeholder_and_applies_every_file() -> None:
    guide = (REPO / "docs" / "DEPLOY.md").read_text()
    (block,) = re.findall(r"VARS='(.*?)'", guide, re.DOTALL)
    substituted = set(re.findall(r"\$\{(\w+)\}", block))
    # POSTGRES_PASSWORD only for the in-cluster PostgreSQL (the guide says to add it then).
    assert k8s_placeholders() - {"POSTGRES_PASSWORD"} <= substituted
    # The kustomization is rendered, filled in and applied; what it leaves out is applied by name.
    assert 'kubectl kustomize k8s/ | envsubst "$VARS" | kubectl apply -f -' in guide
    kustomized = set(yaml.safe_load((REPO / "k8s" / "kustomization.yaml").read_text())["resources"])
    for path in sorted((REPO / "k8s").iterdir()):
        if path.name not in kustomized | {"kustomization.yaml", "queue-consumer"}:
            assert f"k8s/{path.name}" in guide, path.name


def test_key_vault_secrets_map_to_settings_names() -> None:
    vault_secrets = {
        resolve(main(), "databaseUrlSecretName"),
        resolve(main(), "openAiKeySecretName"),
        resolve(main(), "liveSigningKeySecretName"),
    }
    for provider in of_kind("SecretProviderClass").values():
        objects = set(re.findall(r"objectName: ([\w-]+)", provider["spec"]["parameters"]["objects"]))
        assert objects <= vault_secrets
        for synced in provider["spec"]["secretObjects"]:
            for item in synced["data"]:
                assert item["objectName"] in objects
                assert item["key"] in settings_env_names()


# --- identities and namespace -------------------------------------------------------------------


def test_service_accounts_and_namespace_match_the_federated_credentials() -> None:
    accounts = of_kind("ServiceAccount")
    assert set(accounts) == {main_param_default("functionsServiceAccount"), main_param_default("workersServiceAccount")}
    assert {d["metadata"]["namespace"] for d in accounts.values()} == {main_param_default("kubernetesNamespace")}
    annotation = "azure.workload.identity/client-id"
    assert accounts["speechflow-functions"]["metadata"]["annotations"][annotation] == "${FUNCTIONS_IDENTITY_CLIENT_ID}"
    assert accounts["speechflow-workers"]["metadata"]["annotations"][annotation] == "${WORKERS_IDENTITY_CLIENT_ID}"
    # Service Bus queue lengths and the live sessions in managed Prometheus: both read as KEDA.
    authentications = of_kind("TriggerAuthentication").values()
    assert {a["spec"]["podIdentity"]["identityId"] for a in authentications} == {"${KEDA_IDENTITY_CLIENT_ID}"}


# --- node pools, KEDA, resource requests --------------------------------------------------------


def test_node_pools_agree_with_the_seed() -> None:
    seed = {row["Pool"]: row["Instance Type"].split()[0] for row in seed_table("9.1 Node Pools")}
    cluster = module("aks")["resources"]["cluster"]["config"]
    pools = {p["name"]: main_param_default(p["vmSize"]) for p in cluster["properties"]["agentPoolProfiles"]}
    assert pools == seed
    placed = {name: spec.get("nodeSelector", {}).get("speechflow.io/pool") for name, spec in pod_specs().items()}
    # The Whisper worker, and the live component that holds its own Whisper model, on the gpu pool.
    for workload in GPU_WORKLOADS:
        assert placed.pop(workload) == "gpu", workload
    # Seed: the default pool runs the backend services and the LID worker.
    assert set(placed.values()) == {"default"}


def test_gpu_toleration_matches_the_pool_taint() -> None:
    aks = module("aks")
    gpu = next(
        p for p in aks["resources"]["cluster"]["config"]["properties"]["agentPoolProfiles"] if p["name"] == "gpu"
    )
    (taint,) = (resolve(aks, t) for t in gpu["nodeTaints"])
    key, effect = taint.split("=")[0], taint.split(":")[1]
    for workload in GPU_WORKLOADS:
        tolerations = deployments()[workload]["spec"]["template"]["spec"]["tolerations"]
        assert {"key": key, "operator": "Exists", "effect": effect} in tolerations
        # One GPU per pod: neither can ask for more pods than the pool has nodes.
        assert scaled_objects()[workload]["spec"]["maxReplicaCount"] <= main_param_default("gpuMaxCount")
    # The live component never scales to zero: the pool keeps a node for it.
    assert scaled_objects()[LIVE]["spec"]["minReplicaCount"] <= main_param_default("gpuMaxCount")


def test_keda_message_count_is_the_seed_value() -> None:
    (block,) = re.findall(r"```yaml\n(.*?)```", seed_section("9.2 KEDA Scaling"), re.DOTALL)
    (seed_trigger,) = yaml.safe_load(block)["triggers"]
    for scaled in queue_scaled_objects().values():
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == seed_trigger["type"]
        assert trigger["metadata"]["messageCount"] == seed_trigger["metadata"]["messageCount"]


def millicores(cpu: str | int) -> int:
    text = str(cpu)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def test_resource_requests_agree_with_the_seed() -> None:
    rows = seed_table("9.3 Resource Limits")
    assert {row["Component"] for row in rows} == set(COMPONENTS)
    for row in rows:
        (workload,) = COMPONENTS[row["Component"]]
        resources = container(workload)["resources"]
        assert millicores(resources["requests"]["cpu"]) == millicores(row["CPU Request"]), workload
        assert resources["requests"]["memory"] == row["Memory Request"], workload
        gpus = resources.get("limits", {}).get("nvidia.com/gpu")
        assert gpus == (None if row["GPU"] == "-" else int(row["GPU"])), workload


# --- images -------------------------------------------------------------------------------------


IMAGE_DOCKERFILE = {
    "speechflow-functions": REPO / "Dockerfile",
    "speechflow-worker-whisper": REPO / "gpu_worker" / "Dockerfile",
    "speechflow-worker-lid": REPO / "gpu_worker" / "Dockerfile.cpu",
}


def test_every_image_has_a_dockerfile_that_runs_as_non_root() -> None:
    images = set()
    for _, document in manifests():
        if document["kind"] in {"Deployment", "Job"}:
            for c in document["spec"]["template"]["spec"]["containers"]:
                images.add(c["image"].split("/")[-1].split(":")[0])
    assert images == set(IMAGE_DOCKERFILE)
    for dockerfile in IMAGE_DOCKERFILE.values():
        users = re.findall(r"^USER (\S+)", dockerfile.read_text(), re.MULTILINE)
        assert users and users[-1].split(":")[0] not in {"root", "0"}, dockerfile


def test_functions_image_is_the_python_311_functions_host_with_the_app() -> None:
    text = IMAGE_DOCKERFILE["speechflow-functions"].read_text()
    assert re.search(r"^FROM mcr\.microsoft\.com/azure-functions/python:4-python3\.11$", text, re.MULTILINE)
    assert "AzureWebJobsScriptRoot=/home/site/wwwroot" in text
    assert "requirements.txt" in text
    for copied in ("function_app.py", "host.json", "alembic.ini", "shared", "functions", "migrations"):
        assert re.search(rf"^COPY .*\b{re.escape(copied)}\b", text, re.MULTILINE), copied


def test_worker_images_start_the_worker_the_deployment_asks_for() -> None:
    for image, step in (("speechflow-worker-whisper", "whisper"), ("speechflow-worker-lid", "lid")):
        text = IMAGE_DOCKERFILE[image].read_text()
        assert 'ENTRYPOINT ["python", "-m", "gpu_worker"]' in text
        assert f'CMD ["{step}"]' in text
        assert "requirements-worker.txt" in text
    gpu = IMAGE_DOCKERFILE["speechflow-worker-whisper"].read_text()
    assert re.search(r"^FROM nvidia/cuda:12\.[\d.]+-cudnn-runtime-", gpu, re.MULTILINE)
    cpu = IMAGE_DOCKERFILE["speechflow-worker-lid"].read_text()
    assert "download.pytorch.org/whl/cpu" in cpu
    assert "transformers" in cpu


def test_docker_context_keeps_out_what_the_images_do_not_need() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests", ".speechflow"} <= ignored
    copied = {"shared", "functions", "gpu_worker", "migrations", "dashboard"}
    assert not copied & ignored
