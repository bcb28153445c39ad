"""Pure status: observed workloads and pods become replica counts and plain-words conditions."""

from fleetserve.api.conditions import condition
from fleetserve.api.labels import CAPACITY_LABEL, ON_DEMAND, SERVING_LABEL, SPOT
from fleetserve.api.placement import GroupShape, ReplicaSplit
from fleetserve.api.spec import CapacityReplicas, ReplicaStatus


def ready_replicas(workloads: list[dict], capacity: str, shape: GroupShape) -> int:
    """A Deployment counts its ready pods; a group counts only when every member is ready (gang semantics)."""
    mine = [w for w in workloads if w["metadata"]["labels"].get(CAPACITY_LABEL) == capacity]
    if shape.multi_node:
        # A LeaderWorkerSet counts ready groups itself; a StatefulSet is one group.
        groups = sum((w.get("status") or {}).get("readyReplicas", 0) for w in mine if w["kind"] == "LeaderWorkerSet")
        return groups + sum(1 for w in mine if w["kind"] == "StatefulSet"
                            and (w.get("status") or {}).get("readyReplicas", 0) >= shape.pods)
    return sum((w.get("status") or {}).get("readyReplicas", 0) for w in mine if w["kind"] == "Deployment")


def _pod_condition(pod: dict, kind: str) -> dict:
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


def unschedulable(pod: dict) -> bool:
    """kube-scheduler found no node for the pod: PodScheduled=False, reason Unschedulable. A missing or unbound
    PersistentVolumeClaim is reported the same way, but no node would fix it, so it is not a capacity shortfall."""
    scheduled = _pod_condition(pod, "PodScheduled")
    return (scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
            and "persistentvolumeclaim" not in (scheduled.get("message") or "").lower())


def not_running_reason(pod: dict) -> str | None:
    """Why a pod that has (or needs no) node isn't ready yet, in the scheduler's or kubelet's words (a container's
    waiting reason such as ContainerCreating, ImagePullBackOff or CreateContainerConfigError). None for pods that
    are ready, wait for capacity, are finished or are being deleted."""
    status = pod.get("status") or {}
    if (pod["metadata"].get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed")
            or _pod_condition(pod, "Ready").get("status") == "True" or unschedulable(pod)):
        return None
    scheduled = _pod_condition(pod, "PodScheduled")
    if scheduled.get("status") == "False":
        return f"{scheduled.get('reason')}: {scheduled.get('message', '')}"
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            return waiting.get("reason", "Waiting") + (f": {waiting['message']}" if waiting.get("message") else "")
    # Scheduled but not reported on by the kubelet yet, or running and not ready (loading the model).
    return "Pending" if status.get("phase", "Pending") == "Pending" else "NotReady"


def pending_replicas(pod_list: list[dict], capacity: str, shape: GroupShape) -> int:
    """Replicas waiting for capacity (an unschedulable pod), in replica units: a multi-node group's unschedulable
    pods are rounded up to whole groups. Pods pulling images or missing a Secret are not counted."""
    pending = sum(1 for p in pod_list if p["metadata"]["labels"].get(CAPACITY_LABEL) == capacity and unschedulable(p))
    return -(-pending // shape.pods)


def _scheduler_message(pod: dict) -> str | None:
    return (_pod_condition(pod, "PodScheduled").get("message") or "Unschedulable") if unschedulable(pod) else None


def _pods_in_words(pod_list: list[dict], describe, most: int = 3) -> str:
    """'name: why' for the first `most` pods that `describe` has words for, and how many more there are."""
    described = sorted((p["metadata"]["name"], why) for p in pod_list if (why := describe(p)))
    words = "; ".join(f"{name}: {why[:200]}" for name, why in described[:most])
    return words + (f"; and {len(described) - most} more" if len(described) > most else "")


def preempted_pods(pod_list: list[dict]) -> list[str]:
    """Spot pods whose serving label the autoscaler removed because their node is being reclaimed."""
    return sorted(p["metadata"]["name"] for p in pod_list
                  if p["metadata"]["labels"].get(CAPACITY_LABEL) == SPOT
                  and p["metadata"]["labels"].get(SERVING_LABEL) != "true")


def rolling_out(workloads: list[dict]) -> bool:
    for w in workloads:
        status = w.get("status") or {}
        if w["kind"] not in ("Deployment", "StatefulSet", "LeaderWorkerSet"):
            continue
        if status.get("observedGeneration", 0) < w["metadata"].get("generation", 0):
            return True
        if status.get("updatedReplicas", w["spec"].get("replicas", 0)) < w["spec"].get("replicas", 0):
            return True
    return False


def applied_split(workloads: list[dict], shape: GroupShape) -> ReplicaSplit:
    """Replica counts the workloads are set to now (not what a newer plan asks for before it is applied)."""
    counts = {ON_DEMAND: 0, SPOT: 0}
    for w in workloads:
        capacity = w["metadata"]["labels"].get(CAPACITY_LABEL)
        if capacity not in counts:
            continue
        if w["kind"] == "LeaderWorkerSet":
            counts[capacity] += w["spec"].get("replicas", 0)
        elif shape.multi_node:
            counts[capacity] += w["kind"] == "StatefulSet"
        elif w["kind"] == "Deployment":
            counts[capacity] += w["spec"].get("replicas", 0)
    return ReplicaSplit(on_demand=counts[ON_DEMAND], spot=counts[SPOT])


def replica_status(split: ReplicaSplit, workloads: list[dict], pod_list: list[dict], shape: GroupShape) -> ReplicaStatus:
    on_demand, spot = (
        CapacityReplicas(desired=desired, ready=min(desired, ready_replicas(workloads, capacity, shape)),
                         pending=pending_replicas(pod_list, capacity, shape))
        for capacity, desired in ((ON_DEMAND, split.on_demand), (SPOT, split.spot))
    )
    ready = on_demand.ready + spot.ready
    return ReplicaStatus(desired=split.total, ready=ready, summary=f"{ready}/{split.total}", on_demand=on_demand, spot=spot)


def scaling_condition(autoscaling: bool, previous: list[dict]) -> list[dict]:
    """The autoscaler owns ScalingActive while autoscaling is on; the operator only fills the gaps."""
    if not autoscaling:
        return [condition("ScalingActive", False, "AutoscalingDisabled", "replica counts come from spec.replicas.min")]
    if any(c["type"] == "ScalingActive" for c in previous):
        return []
    return [condition("ScalingActive", False, "WaitingForAutoscaler", "no autoscaler plan yet; using spec.replicas.min")]


def observed_conditions(replicas: ReplicaStatus, workloads: list[dict], pod_list: list[dict], autoscaling: bool,
                        previous: list[dict]) -> list[dict]:
    desired, ready = replicas.desired, replicas.ready
    pending = replicas.on_demand.pending + replicas.spot.pending
    preempted = preempted_pods(pod_list)
    progressing = rolling_out(workloads) or ready < desired
    not_running = _pods_in_words(pod_list, not_running_reason)
    progress = f"{ready}/{desired} replicas ready" + (f"; not running yet: {not_running}" if not_running else "")
    if desired == 0:
        ready_condition = condition("Ready", True, "ScaledToZero", "no replicas are desired")
    elif ready >= desired:
        ready_condition = condition("Ready", True, "AllReplicasReady", f"{ready}/{desired} replicas ready")
    else:
        ready_condition = condition("Ready", False, "WaitingForReplicas", f"{ready}/{desired} replicas ready")
    return [
        ready_condition,
        condition("Progressing", progressing, "RollingOut" if progressing else "Stable",
                  progress if progressing else "all workloads are up to date"),
        condition("Degraded", 0 < ready < desired, "PartiallyReady" if 0 < ready < desired else "AsDesired",
                  f"serving with {ready} of {desired} replicas" if 0 < ready < desired else ""),
        condition("InsufficientCapacity", pending > 0, "Unschedulable" if pending else "Scheduled",
                  f"{pending} replicas wait for a node: {_pods_in_words(pod_list, _scheduler_message, most=1)}"
                  if pending else "no pod waits for capacity"),
        condition("SpotPreempted", bool(preempted), "SpotNodesReclaimed" if preempted else "NoPreemption",
                  ("spot pods leaving: " + ", ".join(preempted)) if preempted else ""),
        *scaling_condition(autoscaling, previous),
    ]


def failure_conditions(reason: str, message: str) -> list[dict]:
    """Conditions for a spec that can't be rendered (invalid or impossible): nothing new is applied."""
    return [
        condition("Ready", False, reason, message),
        condition("Progressing", False, reason, "fix the spec to continue"),
        condition("Degraded", True, reason, message),
        condition("InsufficientCapacity", reason == "ImpossibleShape", reason, message if reason == "ImpossibleShape" else ""),
    ]
