"""Pure rendering: an LLMDeployment (spec plus replica counts) becomes the manifests of all its children.

`fleetserve render` prints exactly this list and the operator applies exactly this list.
"""

from dataclasses import dataclass

from fleetserve.api import group_env
from fleetserve.api.labels import (
    CAPACITY_LABEL, ENGINE_NAME, GROUP_LABEL, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL, ON_DEMAND,
    PART_OF, PART_OF_LABEL, SERVING_LABEL, SPOT,
)
from fleetserve.api.placement import GroupShape, ReplicaSplit, group_shape
from fleetserve.api.spec import API_VERSION, KIND, LLMDeploymentSpec
from fleetserve.operator import pod_template as pods


@dataclass(frozen=True)
class ClusterFeatures:
    """Optional APIs found in the cluster; children for absent ones are simply not rendered."""

    pod_monitor: bool = False
    leader_worker_set: bool = False


def child_labels(name: str) -> dict:
    return {
        NAME_LABEL: ENGINE_NAME,
        INSTANCE_LABEL: name,
        MANAGED_BY_LABEL: MANAGED_BY,
        PART_OF_LABEL: PART_OF,
    }


def serving_selector(name: str) -> str:
    return f"{NAME_LABEL}={ENGINE_NAME},{INSTANCE_LABEL}={name},{SERVING_LABEL}=true"


def endpoint_url(name: str, namespace: str, spec: LLMDeploymentSpec) -> str:
    return f"http://{name}.{namespace}.svc.cluster.local:{spec.serving.port}/v1"


def owner_reference(body: dict) -> dict:
    meta = body["metadata"]
    return {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def _meta(body: dict, name: str, capacity: str | None = None) -> dict:
    labels = child_labels(body["metadata"]["name"])
    if capacity:
        labels[CAPACITY_LABEL] = capacity  # on workloads, so status can tell the pools apart
    meta = {"name": name, "namespace": body["metadata"]["namespace"], "labels": labels}
    if body["metadata"].get("uid"):
        meta["ownerReferences"] = [owner_reference(body)]
    return meta


def _deployment(body: dict, spec: LLMDeploymentSpec, capacity: str, replicas: int, shape: GroupShape) -> dict:
    name = body["metadata"]["name"]
    # With GPUs a surge pod would wait for a free GPU, so roll one replica down first; on CPU surge instead.
    rolling = {"maxSurge": 0, "maxUnavailable": 1} if shape.gpus_per_pod else {"maxSurge": 1, "maxUnavailable": 0}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(body, f"{name}-{capacity}", capacity),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": pods.selector_labels(name, capacity)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": rolling},
            "template": pods.pod_template(name, spec, capacity, shape.gpus_per_pod),
        },
    }


def group_service_name(name: str, capacity: str) -> str:
    return f"{name}-{capacity}-group"


def group_name(name: str, capacity: str, index: int) -> str:
    return f"{name}-{capacity}-{index}"


def _group_headless_service(body: dict, capacity: str) -> dict:
    name = body["metadata"]["name"]
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(body, group_service_name(name, capacity)),
        "spec": {
            "clusterIP": "None",
            # Members must find the leader before any of them is ready: readiness needs the whole group.
            "publishNotReadyAddresses": True,
            "selector": pods.selector_labels(name, capacity),
            "ports": [{"name": "rendezvous", "port": group_env.RENDEZVOUS_PORT, "targetPort": "rendezvous"}],
        },
    }


def _group_statefulset(body: dict, spec: LLMDeploymentSpec, capacity: str, index: int, shape: GroupShape) -> dict:
    """One replica = one StatefulSet whose pod 0 is the leader; its pods start together (Parallel)."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    sts_name = group_name(name, capacity, index)
    leader = f"{sts_name}-0.{group_service_name(name, capacity)}.{namespace}.svc.cluster.local"
    env = group_env.group_env(shape.pods, shape.ranks_per_pod, leader)
    template = pods.pod_template(name, spec, capacity, shape.gpus_per_pod, env)
    template["metadata"]["labels"][GROUP_LABEL] = sts_name
    selector = {**pods.selector_labels(name, capacity), GROUP_LABEL: sts_name}
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": _meta(body, sts_name, capacity),
        "spec": {
            "replicas": shape.pods,
            "serviceName": group_service_name(name, capacity),
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector},
            "template": template,
        },
    }


def _leader_worker_set(body: dict, spec: LLMDeploymentSpec, capacity: str, groups: int, shape: GroupShape) -> dict:
    """All replicas of one pool as one LeaderWorkerSet: it restarts a whole group when any member fails."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    lws_name = f"{name}-{capacity}"
    env = group_env.leader_worker_set_env(shape.pods, shape.ranks_per_pod, lws_name, namespace)
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
        "metadata": _meta(body, lws_name, capacity),
        "spec": {
            "replicas": groups,
            "startupPolicy": "LeaderCreated",
            "leaderWorkerTemplate": {
                "size": shape.pods,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "workerTemplate": pods.pod_template(name, spec, capacity, shape.gpus_per_pod, env),
            },
        },
    }


def _service(body: dict, spec: LLMDeploymentSpec, shape: GroupShape, features: ClusterFeatures) -> dict:
    name = body["metadata"]["name"]
    selector = {NAME_LABEL: ENGINE_NAME, INSTANCE_LABEL: name, SERVING_LABEL: "true"}
    if shape.multi_node:  # only group leaders serve the OpenAI API
        rank_label = group_env.LWS_WORKER_INDEX_LABEL if features.leader_worker_set else group_env.POD_INDEX_LABEL
        selector[rank_label] = "0"
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(body, name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": spec.serving.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _engine_pod_selector(name: str) -> dict:
    return {"matchLabels": {NAME_LABEL: ENGINE_NAME, INSTANCE_LABEL: name}}


def _pod_disruption_budget(body: dict, shape: GroupShape) -> dict:
    # Evicting any member stops its whole group, so allow one group's worth of pods at a time.
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": _meta(body, body["metadata"]["name"]),
        "spec": {"maxUnavailable": shape.pods, "selector": _engine_pod_selector(body["metadata"]["name"])},
    }


def _network_policy(body: dict, spec: LLMDeploymentSpec) -> dict:
    name = body["metadata"]["name"]
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta(body, name),
        "spec": {
            "podSelector": _engine_pod_selector(name),
            "policyTypes": ["Ingress"],
            "ingress": [
                # Clients (and Prometheus) reach only the HTTP port...
                {"ports": [{"port": "http", "protocol": "TCP"}]},
                # ...while members of one deployment talk freely (rendezvous and NCCL use dynamic ports).
                {"from": [{"podSelector": _engine_pod_selector(name)}]},
            ],
        },
    }


def _pod_monitor(body: dict) -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
        "metadata": _meta(body, body["metadata"]["name"]),
        "spec": {
            "selector": _engine_pod_selector(body["metadata"]["name"]),
            "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }


def capacity_types(spec: LLMDeploymentSpec) -> list[str]:
    return [ON_DEMAND, SPOT] if spec.capacity.spot.enabled else [ON_DEMAND]


def render_children(body: dict, spec: LLMDeploymentSpec, split: ReplicaSplit, features: ClusterFeatures) -> list[dict]:
    """All children, in apply order. Raises ImpossibleShape when a replica can't be placed on whole nodes."""
    shape = group_shape(spec)
    counts = {ON_DEMAND: split.on_demand, SPOT: split.spot}
    workloads: list[dict] = []
    for capacity in capacity_types(spec):
        if shape.multi_node and features.leader_worker_set:
            workloads.append(_leader_worker_set(body, spec, capacity, counts[capacity], shape))
        elif shape.multi_node:
            workloads.append(_group_headless_service(body, capacity))
            workloads += [_group_statefulset(body, spec, capacity, i, shape) for i in range(counts[capacity])]
        else:
            workloads.append(_deployment(body, spec, capacity, counts[capacity], shape))
    children = [*workloads, _service(body, spec, shape, features), _pod_disruption_budget(body, shape), _network_policy(body, spec)]
    if features.pod_monitor:
        children.append(_pod_monitor(body))
    return children
