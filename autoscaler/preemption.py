"""Recognises that a spot replica is about to disappear, from its node or from the pod itself.

Clouds announce reclamation differently; the node termination handlers and Karpenter translate the notice into
a taint, kubelet's graceful node shutdown and the taint manager mark the pod with a DisruptionTarget condition.
Any of these means: stop sending new requests there now, while in-flight ones may still finish.
"""

from fleetserve.api.labels import CAPACITY_LABEL, INSTANCE_LABEL, SERVING_LABEL, SPOT

PREEMPTION_TAINTS = frozenset({
    "aws-node-termination-handler/spot-itn",  # AWS spot interruption notice (2 minutes ahead)
    "aws-node-termination-handler/rebalance-recommendation",
    "cloud.google.com/impending-node-termination",  # GKE spot/preemptible (30 s ahead)
    "karpenter.sh/disrupted",
    "karpenter.sh/disruption",
    "fleetserve.io/spot-termination",  # set by hand or by custom tooling (and by our tests)
})
PREEMPTION_NODE_CONDITIONS = frozenset({"TerminationImminent", "PreemptionNotice", "SpotInterruption"})
PREEMPTION_DISRUPTION_REASONS = frozenset({"TerminationByKubelet", "DeletionByTaintManager", "DeletionByPodGC"})


def node_preemption_signal(node: dict) -> str | None:
    """Why this node is about to be reclaimed, or None."""
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("key") in PREEMPTION_TAINTS:
            return f"node taint {taint['key']}"
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") in PREEMPTION_NODE_CONDITIONS and condition.get("status") == "True":
            return f"node condition {condition['type']}"
    return None


def pod_preemption_signal(pod: dict) -> str | None:
    """Why this pod is going away involuntarily (not a scale-down), or None."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            if condition.get("reason") in PREEMPTION_DISRUPTION_REASONS:
                return f"pod DisruptionTarget {condition['reason']}"
    return None


def is_serving(pod: dict) -> bool:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(SERVING_LABEL) == "true"


def is_spot(pod: dict) -> bool:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(CAPACITY_LABEL) == SPOT


def owner_instance(pod: dict) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(INSTANCE_LABEL)


def serving_replicas(pods: list[dict], pods_per_replica: int) -> int:
    """Replicas among `pods` that serve: ready, still in the Service and not being deleted. A replica on a node
    being reclaimed stays ready in its workload's count until the node goes, yet serves nothing from the notice on.
    A multi-node group counts by whole groups' worth of pods (the workload's own count bounds it from above)."""
    def serves(pod: dict) -> bool:
        conditions = (pod.get("status") or {}).get("conditions") or []
        return (is_serving(pod) and not pod["metadata"].get("deletionTimestamp")
                and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions))
    return sum(map(serves, pods)) // pods_per_replica


def stop_serving_patch() -> dict:
    """Merge patch that drops the pod from the Service's endpoints (the Service selects serving=true)."""
    return {"metadata": {"labels": {SERVING_LABEL: None}}}
