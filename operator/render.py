"""Pure rendering: an LLMDeployment (spec plus replica counts) becomes the manifests of all its children.

`fleetserve render` prints exactly this list and the operator applies exactly this list.
"""

from dataclasses import dataclass

from fleetserve.api import group_env
from fleetserve.api.labels import (
    CAPACITY_LABEL, ENGINE_NAME, GROUP_LABEL, INSTANCE_LABEL, NAME_LABEL, ON_DEMAND, ROUTER_NAME, SERVING_LABEL, SPOT,
)
from fleetserve.api.placement import GroupShape, ReplicaSplit, group_shape
from fleetserve.api.routing import engine_service_name, router_name
from fleetserve.api.spec import LLMDeploymentSpec
from fleetserve.operator import pod_template as pods
from fleetserve.operator.owned import child_labels, child_meta
from fleetserve.operator.router_render import router_children, router_selector


@dataclass(frozen=True)
class ClusterFeatures:
    """Optional APIs found in the cluster; children for absent ones are simply not rendered."""

    pod_monitor: bool = False
    leader_worker_set: bool = False


def serving_selector(name: str) -> str:
    return f"{NAME_LABEL}={ENGINE_NAME},{INSTANCE_LABEL}={name},{SERVING_LABEL}=true"


def endpoint_url(name: str, namespace: str, spec: LLMDeploymentSpec) -> str:
    """The Service `name`: the router's, or the engines' with the router off. `<svc>.<ns>.svc` resolves through
    every pod's DNS search path, whatever the cluster domain is."""
    return f"http://{name}.{namespace}.svc:{spec.serving.port}/v1"


def _meta(body: dict, name: str, capacity: str | None = None) -> dict:
    labels = child_labels(body["metadata"]["name"], ENGINE_NAME)
    if capacity:
        labels[CAPACITY_LABEL] = capacity  # on workloads, so status can tell the pools apart
    return child_meta(body, name, labels)


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
    leader = f"{sts_name}-0.{group_service_name(name, capacity)}.{namespace}.svc"
    member = pods.GroupMember(
        env=group_env.group_env(shape.pods, shape.ranks_per_pod, leader),
        rank_label=group_env.POD_INDEX_LABEL,
        group_term={"labelSelector": {"matchLabels": {GROUP_LABEL: sts_name}}},
        labels={GROUP_LABEL: sts_name},
    )
    template = pods.pod_template(name, spec, capacity, shape.gpus_per_pod, member)
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
    member = pods.GroupMember(
        env=group_env.leader_worker_set_env(shape.pods, shape.ranks_per_pod, lws_name, namespace),
        rank_label=group_env.LWS_WORKER_INDEX_LABEL,
        # One LWS per pool, so the pool's pods with this pod's group index are its group. (LWS's exclusive-topology
        # annotation would also keep other groups out of the zone: one replica per zone.)
        group_term={"labelSelector": {"matchLabels": pods.selector_labels(name, capacity)},
                    "matchLabelKeys": [group_env.LWS_GROUP_INDEX_LABEL]},
    )
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
        "metadata": _meta(body, lws_name, capacity),
        "spec": {
            "replicas": groups,
            "startupPolicy": "LeaderCreated",
            "leaderWorkerTemplate": {
                "size": shape.pods,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "workerTemplate": pods.pod_template(name, spec, capacity, shape.gpus_per_pod, member),
            },
        },
    }


def _leaders(labels: dict, shape: GroupShape, features: ClusterFeatures) -> dict:
    """`labels` narrowed to pods that serve HTTP: in multi-node groups only the leader does (workers answer 404)."""
    if not shape.multi_node:
        return labels
    rank_label = group_env.LWS_WORKER_INDEX_LABEL if features.leader_worker_set else group_env.POD_INDEX_LABEL
    return {**labels, rank_label: "0"}


def _service(body: dict, spec: LLMDeploymentSpec, name: str, selector: dict, app: str) -> dict:
    """Port serving.port onto the selected pods' port `http` (the router watches this port name too); `app`: whose
    pods they are."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": child_meta(body, name, child_labels(body["metadata"]["name"], app)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": spec.serving.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _services(body: dict, spec: LLMDeploymentSpec, shape: GroupShape, features: ClusterFeatures) -> list[dict]:
    """The Service `name` is what clients use: the router's when it is on, the engines' otherwise."""
    name = body["metadata"]["name"]
    engines = _leaders({NAME_LABEL: ENGINE_NAME, INSTANCE_LABEL: name, SERVING_LABEL: "true"}, shape, features)
    if not spec.router.enabled:
        return [_service(body, spec, name, engines, ENGINE_NAME)]
    return [_service(body, spec, engine_service_name(name), engines, ENGINE_NAME),
            _service(body, spec, name, router_selector(name), ROUTER_NAME)]


def _engine_pod_selector(name: str) -> dict:
    return {"matchLabels": {NAME_LABEL: ENGINE_NAME, INSTANCE_LABEL: name}}


def _pod_disruption_budget(body: dict, capacity: str) -> dict:
    """One per pool, so Pending spot pods (no spot capacity) never block draining on-demand nodes. One pod at a time:
    evicting any member stops its whole group, so one pod is one replica either way."""
    name = body["metadata"]["name"]
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": _meta(body, f"{name}-{capacity}", capacity),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": pods.selector_labels(name, capacity)},
            # A pod that isn't ready serves nothing, so evicting it costs nothing (and drains never wedge on it).
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
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
                # Clients (or the router) and Prometheus reach only the HTTP port...
                {"ports": [{"port": "http", "protocol": "TCP"}]},
                # ...while members of one deployment talk freely (rendezvous and NCCL use dynamic ports).
                {"from": [{"podSelector": _engine_pod_selector(name)}]},
            ],
        },
    }


def _pod_monitor(body: dict, spec: LLMDeploymentSpec, name: str, selector: dict, app: str) -> dict:
    """Scrapes port `http` of the pods `selector` picks (engines or routers; `app` is theirs)."""
    meta = child_meta(body, name, child_labels(body["metadata"]["name"], app))
    # The user's labels (e.g. `release` for kube-prometheus-stack's podMonitorSelector); ours win, the operator
    # finds its children by them.
    meta["labels"] = {**spec.monitoring.pod_monitor_labels, **meta["labels"]}
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": selector},
            # The autoscaler's queries select one deployment by this label (as app_kubernetes_io_instance).
            "podTargetLabels": [INSTANCE_LABEL],
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
    budgets = [_pod_disruption_budget(body, capacity) for capacity in capacity_types(spec)]
    children = [*workloads, *_services(body, spec, shape, features), *budgets, _network_policy(body, spec)]
    name = body["metadata"]["name"]
    if features.pod_monitor:
        engines = _leaders({NAME_LABEL: ENGINE_NAME, INSTANCE_LABEL: name}, shape, features)
        children.append(_pod_monitor(body, spec, name, engines, ENGINE_NAME))
    if spec.router.enabled:
        children += router_children(body, spec)
        if features.pod_monitor:
            children.append(_pod_monitor(body, spec, router_name(name), router_selector(name), ROUTER_NAME))
    return children
