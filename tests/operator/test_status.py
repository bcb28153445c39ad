"""Pure status: gang readiness, applied counts and condition transitions."""

from fleetserve.api.conditions import merge_conditions
from fleetserve.api.placement import GroupShape, ReplicaSplit
from fleetserve.operator.status import applied_split, not_running_reason, observed_conditions, replica_status

GROUP = GroupShape(pods=2, gpus_per_pod=8)
SINGLE = GroupShape(pods=1, gpus_per_pod=1)


def workload(kind: str, capacity: str, replicas: int, ready: int) -> dict:
    return {"kind": kind, "metadata": {"labels": {"fleetserve.io/capacity": capacity}, "generation": 1},
            "spec": {"replicas": replicas}, "status": {"observedGeneration": 1, "readyReplicas": ready, "updatedReplicas": replicas}}


T0 = "2026-01-01T00:00:00Z"
# Pod statuses as kube-scheduler and the kubelet write them (condition and waiting-reason texts from real clusters).
NO_GPU = ("0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
          "2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for "
          "scheduling, 2 No preemption victims found for incoming pod.")
NO_PVC = ('0/3 nodes are available: persistentvolumeclaim "models" not found. preemption: 0/3 nodes are available: '
          '3 Preemption is not helpful for scheduling.')


def _condition(kind: str, status: str, reason: str | None = None, message: str | None = None) -> dict:
    found = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": T0}
    return {**found, **({"reason": reason} if reason else {}), **({"message": message} if message else {})}


def unscheduled(message: str) -> dict:
    """kube-scheduler's verdict on a pod it could not place."""
    return {"phase": "Pending", "qosClass": "Burstable",
            "conditions": [_condition("PodScheduled", "False", "Unschedulable", message)]}


def on_node(phase: str, container_state: dict, ready: bool) -> dict:
    """A pod bound to a node, as the kubelet reports it."""
    not_ready = ("ContainersNotReady", "containers with unready status: [engine]")
    return {
        "phase": phase, "hostIP": "10.0.0.7", "podIP": "10.8.1.4" if phase == "Running" else None, "startTime": T0,
        "qosClass": "Burstable",
        "conditions": [
            _condition("PodReadyToStartContainers", "True"), _condition("Initialized", "True"),
            _condition("Ready", "True") if ready else _condition("Ready", "False", *not_ready),
            _condition("ContainersReady", "True") if ready else _condition("ContainersReady", "False", *not_ready),
            _condition("PodScheduled", "True"),
        ],
        "containerStatuses": [{"name": "engine", "image": "ghcr.io/fleetserve/engine:0.1.0", "imageID": "",
                               "state": container_state, "lastState": {}, "ready": ready, "restartCount": 0,
                               "started": "running" in container_state}],
    }


RUNNING = {"running": {"startedAt": T0}}
STATUSES = {
    "ready": on_node("Running", RUNNING, ready=True),
    "loading": on_node("Running", RUNNING, ready=False),  # the startup probe waits for the model
    "no-gpu": unscheduled(NO_GPU),
    "no-pvc": unscheduled(NO_PVC),
    "creating": on_node("Pending", {"waiting": {"reason": "ContainerCreating"}}, ready=False),  # pulling, mounting
    "pull-backoff": on_node("Pending", {"waiting": {
        "reason": "ImagePullBackOff", "message": 'Back-off pulling image "ghcr.io/fleetserve/engine:0.1.0"'}}, ready=False),
    "no-secret": on_node("Pending", {"waiting": {"reason": "CreateContainerConfigError",
                                                 "message": 'secret "chat-key" not found'}}, ready=False),
}


def pod(capacity: str, state: str, serving: bool = True, name: str | None = None) -> dict:
    labels = {"fleetserve.io/capacity": capacity, **({"fleetserve.io/serving": "true"} if serving else {})}
    return {"metadata": {"name": name or f"p-{capacity}-{state}-{serving}", "labels": labels}, "status": STATUSES[state]}


def test_group_counts_only_when_every_member_is_ready():
    workloads = [workload("StatefulSet", "on-demand", 2, 2), workload("StatefulSet", "on-demand", 2, 1)]
    split = applied_split(workloads, GROUP)
    assert split == ReplicaSplit(on_demand=2, spot=0)
    replicas = replica_status(split, workloads, [pod("on-demand", "no-gpu")], GROUP)
    assert (replicas.desired, replicas.ready, replicas.summary) == (2, 1, "1/2")
    assert replicas.on_demand.pending == 1


def test_conditions_in_plain_words():
    workloads = [workload("Deployment", "on-demand", 1, 1), workload("Deployment", "spot", 3, 2)]
    pods = [pod("spot", "ready", serving=False), pod("spot", "no-gpu")]
    replicas = replica_status(applied_split(workloads, SINGLE), workloads, pods, SINGLE)
    conditions = {c["type"]: c for c in observed_conditions(replicas, workloads, pods, autoscaling=False, previous=[])}
    assert conditions["Ready"]["status"] == "False" and conditions["Ready"]["message"] == "3/4 replicas ready"
    assert conditions["Degraded"]["status"] == "True" and conditions["Progressing"]["status"] == "True"
    assert conditions["InsufficientCapacity"]["reason"] == "Unschedulable"
    assert "2 Insufficient nvidia.com/gpu" in conditions["InsufficientCapacity"]["message"]
    assert conditions["SpotPreempted"]["status"] == "True"
    assert conditions["ScalingActive"]["reason"] == "AutoscalingDisabled"


def test_the_autoscaler_keeps_its_scaling_condition():
    mine = observed_conditions(replica_status(ReplicaSplit(0, 0), [], [], SINGLE), [], [], autoscaling=True,
                               previous=[{"type": "ScalingActive", "status": "True", "reason": "MetricsAvailable"}])
    assert "ScalingActive" not in {c["type"] for c in mine}


def test_transition_time_moves_only_when_status_flips():
    before = [{"type": "Ready", "status": "False", "reason": "WaitingForReplicas", "message": "", "lastTransitionTime": "t0"},
              {"type": "ScalingActive", "status": "True", "reason": "MetricsAvailable", "message": "", "lastTransitionTime": "t0"}]
    same = merge_conditions(before, [{"type": "Ready", "status": "False", "reason": "WaitingForReplicas", "message": "1/2"}], "t1")
    assert same[0]["lastTransitionTime"] == "t0" and same[1]["reason"] == "MetricsAvailable"
    flipped = merge_conditions(before, [{"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": ""}], "t2")
    assert flipped[0]["lastTransitionTime"] == "t2"


def test_only_unschedulable_pods_count_as_waiting_for_capacity():
    """Image pulls, a missing Secret or PVC and a loading model are not a capacity shortfall: they are reported
    in Progressing, in the scheduler's and kubelet's words, and the autoscaler does not plan around them."""
    workloads = [workload("Deployment", "on-demand", 6, 1), workload("Deployment", "spot", 1, 0)]
    pods = [pod("on-demand", state, name=state)
            for state in ("ready", "loading", "creating", "pull-backoff", "no-secret", "no-pvc")]
    pods.append(pod("spot", "no-gpu", name="spot-no-gpu"))
    replicas = replica_status(applied_split(workloads, SINGLE), workloads, pods, SINGLE)
    assert (replicas.on_demand.pending, replicas.spot.pending) == (0, 1)
    conditions = {c["type"]: c for c in observed_conditions(replicas, workloads, pods, autoscaling=False, previous=[])}
    capacity = conditions["InsufficientCapacity"]
    assert capacity["status"] == "True" and capacity["message"].startswith("1 replicas wait for a node: spot-no-gpu: 0/3")
    progress = conditions["Progressing"]["message"]
    assert progress.startswith("1/7 replicas ready; not running yet: creating: ContainerCreating; ")
    assert 'loading: NotReady; no-pvc: Unschedulable: 0/3 nodes are available: persistentvolumeclaim "models"' in progress
    assert progress.endswith("; and 2 more")  # no-secret and pull-backoff: names sort, the first three are shown
    assert not_running_reason(pods[3]) == 'ImagePullBackOff: Back-off pulling image "ghcr.io/fleetserve/engine:0.1.0"'
    assert not_running_reason(pods[4]) == 'CreateContainerConfigError: secret "chat-key" not found'
    assert not_running_reason(pods[0]) is None and not_running_reason(pods[-1]) is None


def test_a_group_waits_for_capacity_as_one_replica():
    pods = [pod("on-demand", "no-gpu", name=f"g0-{i}") for i in range(2)] + [pod("on-demand", "creating", name="g1-0")]
    replicas = replica_status(ReplicaSplit(2, 0), [], pods, GROUP)
    assert replicas.on_demand.pending == 1
