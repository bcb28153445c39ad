"""The engine pod: command line, probes, security context, volumes and placement for one capacity type."""

from dataclasses import dataclass, field

from fleetserve.api import group_env
from fleetserve.api.labels import (
    CAPACITY_LABEL, COMPONENT_LABEL, ENGINE_COMPONENT, ENGINE_NAME, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL,
    NAME_LABEL, ON_DEMAND, SERVING_LABEL, SPOT,
)
from fleetserve.api.spec import LLMDeploymentSpec, Toleration

# The engine release this operator ships with. It lives here, not as a CRD default (which the apiserver would
# store in every object), so upgrading the operator rolls every engine that doesn't pin spec.engine.image.
DEFAULT_ENGINE_IMAGE = "ghcr.io/fleetserve/engine:0.1.0"
MODEL_CACHE_DIR = "/var/cache/fleetserve"
PVC_MOUNT_ROOT = "/models"
API_KEY_DIR = "/var/run/fleetserve/api-key"
PRESTOP_SLEEP_SECONDS = 5  # lets endpoint controllers drop the pod before SIGTERM starts the drain
GRACE_MARGIN_SECONDS = 10
ENGINE_UID = 10001
GPU_RESOURCE = "nvidia.com/gpu"
ZONE_LABEL = "topology.kubernetes.io/zone"
# A replica on a dead node is replaced after this long, not the 300 s the apiserver adds by default.
DEAD_NODE_TOLERATION_SECONDS = 30
DEAD_NODE_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")


@dataclass(frozen=True)
class GroupMember:
    """What a pod of a multi-node tensor-parallel group adds: the group_env contract, the label holding its rank
    (0 = leader), extra pod labels, and a podAffinityTerm fragment that selects the pods of its own group."""

    env: list[dict]
    rank_label: str
    group_term: dict
    labels: dict = field(default_factory=dict)


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


def drain_seconds(spec: LLMDeploymentSpec, capacity: str) -> int:
    """Spot pods drain within the cloud's reclaim notice; on-demand pods take the engine's full drain."""
    return spec.capacity.spot.drain_seconds if capacity == SPOT else spec.engine.drain_seconds


def engine_image(spec: LLMDeploymentSpec) -> str:
    return spec.engine.image or DEFAULT_ENGINE_IMAGE


def api_key_file(spec: LLMDeploymentSpec) -> str:
    return f"{API_KEY_DIR}/{spec.serving.api_key_secret_ref.key}"


def api_key_volume(spec: LLMDeploymentSpec) -> tuple[dict, dict]:
    """The volume and mount of serving.apiKeySecretRef (only its key), at API_KEY_DIR."""
    ref = spec.serving.api_key_secret_ref
    return ({"name": "api-key", "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": ref.key}]}},
            {"name": "api-key", "mountPath": API_KEY_DIR, "readOnly": True})


def engine_args(name: str, spec: LLMDeploymentSpec, capacity: str, gpus_per_pod: int) -> list[str]:
    """Every flag here is in spec.OPERATOR_FLAGS, which extraArgs may not set."""
    engine = spec.engine
    args = [
        "serve",
        "--model", model_argument(spec.model.source, spec.model.revision),
        "--host", "0.0.0.0",
        "--port", str(spec.serving.port),
        "--served-model-name", served_model_name(name, spec),
        "--max-model-len", str(engine.max_model_len),
        "--tensor-parallel-size", str(spec.parallelism.tensor),
        # Explicit, so a pod that holds GPUs but can't see them fails instead of serving on the CPU.
        "--device", "cuda" if gpus_per_pod else "cpu",
        "--drain-seconds", str(drain_seconds(spec, capacity)),
    ]
    # Unset tunables are left to the engine, whose defaults follow its release.
    if engine.max_num_seqs is not None:
        args += ["--max-num-seqs", str(engine.max_num_seqs)]
    if engine.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", str(engine.gpu_memory_utilization)]
    if spec.serving.api_key_secret_ref:
        args += ["--api-key-file", api_key_file(spec)]
    return args + list(engine.extra_args)


def grace_period_seconds(spec: LLMDeploymentSpec, capacity: str) -> int:
    return PRESTOP_SLEEP_SECONDS + drain_seconds(spec, capacity) + GRACE_MARGIN_SECONDS


def _model_cache_volume(spec: LLMDeploymentSpec) -> dict:
    cache = spec.model.cache
    if cache.pvc_name:
        return {"name": "model-cache", "persistentVolumeClaim": {"claimName": cache.pvc_name}}
    return {"name": "model-cache", "emptyDir": {"sizeLimit": cache.size_limit} if cache.size_limit else {}}


def _volumes(spec: LLMDeploymentSpec, gpus_per_pod: int) -> tuple[list[dict], list[dict]]:
    shm_gi = max(1, gpus_per_pod)  # NCCL needs shared memory that grows with the ranks on the node
    volumes = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_gi}Gi"}},
        _model_cache_volume(spec),
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
        volume, mount = api_key_volume(spec)
        volumes.append(volume)
        mounts.append(mount)
    return volumes, mounts


def _env(spec: LLMDeploymentSpec, group: GroupMember | None) -> list[dict]:
    # No HF_HUB_OFFLINE: the engine turns it on for local sources only, so hf:// models download.
    env = [
        {"name": "HF_HOME", "value": f"{MODEL_CACHE_DIR}/huggingface"},
        {"name": "HOME", "value": "/tmp"},  # the root filesystem is read-only
    ]
    if spec.model.auth_secret_ref:
        ref = spec.model.auth_secret_ref
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    env += group.env if group else []
    return env + [e.model_dump(by_alias=True, exclude_none=True) for e in spec.env]


def _resources(spec: LLMDeploymentSpec, gpus_per_pod: int) -> dict:
    requests = {"cpu": spec.resources.cpu, "memory": spec.resources.memory}
    limits = {"memory": spec.resources.memory}
    if gpus_per_pod:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(gpus_per_pod)
    if spec.model.cache.size_limit:  # the download must fit on the node the scheduler picks
        requests["ephemeral-storage"] = spec.model.cache.size_limit
    return {"requests": requests, "limits": limits}


def _probes() -> dict:
    def probe(path: str) -> dict:
        return {"httpGet": {"path": path, "port": "http"}}
    return {
        # Downloading and loading weights can take long; the startup probe holds liveness off until then.
        "startupProbe": {**probe("/readyz"), "periodSeconds": 10, "failureThreshold": 180},
        # A busy Python event loop can answer late; 3 s keeps a loaded replica in the Service.
        "readinessProbe": {**probe("/readyz"), "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 2},
        # /livez fails only when the engine is broken for good, so a draining or busy pod is never restarted.
        "livenessProbe": {**probe("/livez"), "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
    }


def _tolerations(items: list[Toleration], gpus: int) -> list[dict]:
    out = [t.model_dump(by_alias=True, exclude_none=True) for t in items]
    if gpus:
        out.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    out += [{"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": DEAD_NODE_TOLERATION_SECONDS}
            for taint in DEAD_NODE_TAINTS]
    return out


def _zone_spread(name: str, capacity: str, group: GroupMember | None) -> dict:
    """Spread replicas, not pods, over zones: for a group only its leader counts (the members follow it)."""
    selector = selector_labels(name, capacity)
    if group:
        selector[group.rank_label] = "0"
    return {"maxSkew": 1, "topologyKey": ZONE_LABEL, "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector}}


def placement(spec: LLMDeploymentSpec, capacity: str, name: str, gpus_per_pod: int, group: GroupMember | None) -> dict:
    """Node selectors, tolerations and affinity of one capacity type."""
    pool = spec.capacity.spot if capacity == SPOT else spec.capacity.on_demand
    node_selector = dict(pool.node_selector)
    if gpus_per_pod and spec.resources.gpu and spec.resources.gpu.type:
        node_selector[spec.resources.gpu.node_label] = spec.resources.gpu.type
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
    if group:
        # A tensor-parallel group all-reduces every layer: its members must share a zone (the first one picks it).
        affinity["podAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": ZONE_LABEL, **group.group_term}]}
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
        out["topologySpreadConstraints"] = [_zone_spread(name, capacity, group)]
    if node_selector:
        out["nodeSelector"] = node_selector
    return out


def _pod_settings(spec: LLMDeploymentSpec) -> dict:
    """The optional pod fields the spec passes through."""
    settings = {
        "runtimeClassName": spec.runtime_class_name,
        "serviceAccountName": spec.service_account_name,
        "priorityClassName": spec.priority_class_name,
        "imagePullSecrets": [s.model_dump() for s in spec.image_pull_secrets],
    }
    return {key: value for key, value in settings.items() if value}


def container_security_context() -> dict:
    """Restricted (Pod Security Standards), for every container the operator renders."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict:
    return {
        "runAsNonRoot": True, "runAsUser": ENGINE_UID, "runAsGroup": ENGINE_UID, "fsGroup": ENGINE_UID,
        # Only a volume whose root isn't ours yet is chowned: never a recursive walk of a model PVC.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_template(name: str, spec: LLMDeploymentSpec, capacity: str, gpus_per_pod: int,
                 group: GroupMember | None = None) -> dict:
    """`group` is set for members of a multi-node tensor-parallel group."""
    volumes, mounts = _volumes(spec, gpus_per_pod)
    container = {
        "name": "engine",
        "image": engine_image(spec),
        "imagePullPolicy": "IfNotPresent",
        "command": ["fleetserve"],
        "args": engine_args(name, spec, capacity, gpus_per_pod),
        "ports": [{"name": "http", "containerPort": spec.serving.port, "protocol": "TCP"}],
        "env": _env(spec, group),
        "resources": _resources(spec, gpus_per_pod),
        **_probes(),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_SECONDS)]}}},
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    if spec.env_from:
        container["envFrom"] = [e.model_dump(by_alias=True, exclude_none=True) for e in spec.env_from]
    if group:
        container["ports"].append({"name": "rendezvous", "containerPort": group_env.RENDEZVOUS_PORT, "protocol": "TCP"})
    labels = {**selector_labels(name, capacity), SERVING_LABEL: "true", COMPONENT_LABEL: ENGINE_COMPONENT,
              MANAGED_BY_LABEL: MANAGED_BY, **(group.labels if group else {})}
    metadata: dict = {"labels": labels}
    if spec.pod_annotations:
        metadata["annotations"] = dict(spec.pod_annotations)
    return {
        "metadata": metadata,
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": grace_period_seconds(spec, capacity),
            "securityContext": pod_security_context(),
            **_pod_settings(spec),
            "containers": [container],
            "volumes": volumes,
            **placement(spec, capacity, name, gpus_per_pod, group),
        },
    }
