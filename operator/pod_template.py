"""The engine pod: command line, probes, security context, volumes and placement for one capacity type."""

from fleetserve.api import group_env
from fleetserve.api.labels import (
    CAPACITY_LABEL, COMPONENT_LABEL, ENGINE_COMPONENT, ENGINE_NAME, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL,
    NAME_LABEL, ON_DEMAND, SERVING_LABEL, SPOT,
)
from fleetserve.api.spec import LLMDeploymentSpec, Toleration

MODEL_CACHE_DIR = "/var/cache/fleetserve"
PVC_MOUNT_ROOT = "/models"
API_KEY_DIR = "/var/run/fleetserve/api-key"
PRESTOP_SLEEP_SECONDS = 5  # lets endpoint controllers drop the pod before SIGTERM starts the drain
GRACE_MARGIN_SECONDS = 10
ENGINE_UID = 10001
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


def selector_labels(name: str, capacity: str) -> dict:
    """Workload selectors; never includes the serving label, which the autoscaler removes from doomed pods."""
    return {NAME_LABEL: ENGINE_NAME, INSTANCE_LABEL: name, CAPACITY_LABEL: capacity}


def served_model_name(name: str, spec: LLMDeploymentSpec) -> str:
    return spec.engine.served_model_name or name


def model_argument(source: str, revision: str | None = None) -> str:
    """pvc://claim/path becomes the path where the claim is mounted; hf:// takes the revision as `@revision`."""
    if source.startswith("pvc://"):
        claim, _, path = source.removeprefix("pvc://").partition("/")
        return f"{PVC_MOUNT_ROOT}/{claim}/{path}"
    return f"{source}@{revision}" if revision else source


def engine_args(name: str, spec: LLMDeploymentSpec) -> list[str]:
    engine = spec.engine
    args = [
        "serve",
        "--model", model_argument(spec.model.source, spec.model.revision),
        "--host", "0.0.0.0",
        "--port", str(spec.serving.port),
        "--served-model-name", served_model_name(name, spec),
        "--max-num-seqs", str(engine.max_num_seqs),
        "--max-model-len", str(engine.max_model_len),
        "--gpu-memory-utilization", str(engine.gpu_memory_utilization),
        "--tensor-parallel-size", str(spec.parallelism.tensor),
        "--drain-seconds", str(engine.drain_seconds),
    ]
    if spec.serving.api_key_secret_ref:
        args += ["--api-key-file", f"{API_KEY_DIR}/{spec.serving.api_key_secret_ref.key}"]
    return args + list(engine.extra_args)


def grace_period_seconds(spec: LLMDeploymentSpec) -> int:
    return PRESTOP_SLEEP_SECONDS + spec.engine.drain_seconds + GRACE_MARGIN_SECONDS


def _volumes(spec: LLMDeploymentSpec, gpus_per_pod: int) -> tuple[list[dict], list[dict]]:
    shm_gi = max(1, gpus_per_pod)  # NCCL needs shared memory that grows with the ranks on the node
    volumes = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_gi}Gi"}},
        {"name": "model-cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "model-cache", "mountPath": MODEL_CACHE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if spec.model.source.startswith("pvc://"):
        claim = spec.model.source.removeprefix("pvc://").partition("/")[0]
        volumes.append({"name": "model-pvc", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": "model-pvc", "mountPath": f"{PVC_MOUNT_ROOT}/{claim}", "readOnly": True})
    if spec.serving.api_key_secret_ref:
        ref = spec.serving.api_key_secret_ref
        volumes.append({"name": "api-key", "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": ref.key}]}})
        mounts.append({"name": "api-key", "mountPath": API_KEY_DIR, "readOnly": True})
    return volumes, mounts


def _resources(spec: LLMDeploymentSpec, gpus_per_pod: int) -> dict:
    requests = {"cpu": spec.resources.cpu, "memory": spec.resources.memory}
    limits = {"memory": spec.resources.memory}
    if gpus_per_pod:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(gpus_per_pod)
    return {"requests": requests, "limits": limits}


def _probes() -> dict:
    def health() -> dict:
        return {"httpGet": {"path": "/health", "port": "http"}}
    return {
        # Downloading and loading weights can take long; the startup probe holds liveness off until then.
        "startupProbe": {**health(), "periodSeconds": 10, "failureThreshold": 180},
        "readinessProbe": {**health(), "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**health(), "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
    }


def _tolerations(items: list[Toleration], gpus: int) -> list[dict]:
    out = [t.model_dump(by_alias=True, exclude_none=True) for t in items]
    if gpus:
        out.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return out


def placement(spec: LLMDeploymentSpec, capacity: str, name: str, gpus_per_pod: int) -> dict:
    """Node selectors, tolerations and affinity of one capacity type."""
    pool = spec.capacity.spot if capacity == SPOT else spec.capacity.on_demand
    node_selector = dict(pool.node_selector)
    if gpus_per_pod and spec.resources.gpu and spec.resources.gpu.type:
        node_selector[GPU_PRODUCT_LABEL] = spec.resources.gpu.type
    affinity: dict = {
        # Spread replicas over nodes so one lost node (a spot reclaim above all) takes as few as possible.
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {NAME_LABEL: ENGINE_NAME, INSTANCE_LABEL: name}},
            },
        }]},
    }
    if capacity == ON_DEMAND and spec.capacity.spot.node_selector:
        # On-demand replicas must stay off spot nodes even where spot nodes carry no taint.
        affinity["nodeAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
            "matchExpressions": [
                {"key": key, "operator": "NotIn", "values": [value]}
                for key, value in sorted(spec.capacity.spot.node_selector.items())
            ],
        }]}}
    out = {"affinity": affinity, "tolerations": _tolerations(pool.tolerations, gpus_per_pod)}
    if capacity == SPOT:
        # Spot capacity is reclaimed per zone (and per pool); spreading keeps one reclaim from taking every replica.
        out["topologySpreadConstraints"] = [{
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector_labels(name, capacity)},
        }]
    if node_selector:
        out["nodeSelector"] = node_selector
    return out


def pod_template(name: str, spec: LLMDeploymentSpec, capacity: str, gpus_per_pod: int,
                 group_vars: list[dict] | None = None) -> dict:
    """`group_vars` is the group_env contract for members of a multi-node tensor-parallel group."""
    volumes, mounts = _volumes(spec, gpus_per_pod)
    env = [
        {"name": "HF_HOME", "value": f"{MODEL_CACHE_DIR}/huggingface"},
        {"name": "HOME", "value": "/tmp"},  # the root filesystem is read-only
    ]
    env += group_vars or []
    container = {
        "name": "engine",
        "image": spec.engine.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["fleetserve"],
        "args": engine_args(name, spec),
        "ports": [{"name": "http", "containerPort": spec.serving.port, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(spec, gpus_per_pod),
        **_probes(),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_SECONDS)]}}},
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    if group_vars:
        container["ports"].append({"name": "rendezvous", "containerPort": group_env.RENDEZVOUS_PORT, "protocol": "TCP"})
    labels = {**selector_labels(name, capacity), SERVING_LABEL: "true", COMPONENT_LABEL: ENGINE_COMPONENT,
              MANAGED_BY_LABEL: MANAGED_BY}
    return {
        "metadata": {"labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": grace_period_seconds(spec),
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": ENGINE_UID, "runAsGroup": ENGINE_UID, "fsGroup": ENGINE_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": volumes,
            **placement(spec, capacity, name, gpus_per_pod),
        },
    }
