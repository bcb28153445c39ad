"""Pure status: gang readiness, applied counts and condition transitions."""

from fleetserve.api.conditions import merge_conditions
from fleetserve.api.placement import GroupShape, ReplicaSplit
from fleetserve.operator.status import applied_split, observed_conditions, replica_status

GROUP = GroupShape(pods=2, gpus_per_pod=8)
SINGLE = GroupShape(pods=1, gpus_per_pod=1)


def workload(kind: str, capacity: str, replicas: int, ready: int) -> dict:
    return {"kind": kind, "metadata": {"labels": {"fleetserve.io/capacity": capacity}, "generation": 1},
            "spec": {"replicas": replicas}, "status": {"observedGeneration": 1, "readyReplicas": ready, "updatedReplicas": replicas}}


def pod(capacity: str, phase: str, serving: bool = True) -> dict:
    labels = {"fleetserve.io/capacity": capacity, **({"fleetserve.io/serving": "true"} if serving else {})}
    return {"metadata": {"name": f"p-{capacity}-{phase}-{serving}", "labels": labels}, "status": {"phase": phase}}


def test_group_counts_only_when_every_member_is_ready():
    workloads = [workload("StatefulSet", "on-demand", 2, 2), workload("StatefulSet", "on-demand", 2, 1)]
    split = applied_split(workloads, GROUP)
    assert split == ReplicaSplit(on_demand=2, spot=0)
    replicas = replica_status(split, workloads, [pod("on-demand", "Pending")], GROUP)
    assert (replicas.desired, replicas.ready, replicas.summary) == (2, 1, "1/2")
    assert replicas.on_demand.pending == 1


def test_conditions_in_plain_words():
    workloads = [workload("Deployment", "on-demand", 1, 1), workload("Deployment", "spot", 3, 2)]
    pods = [pod("spot", "Running", serving=False), pod("spot", "Pending")]
    replicas = replica_status(applied_split(workloads, SINGLE), workloads, pods, SINGLE)
    conditions = {c["type"]: c for c in observed_conditions(replicas, workloads, pods, autoscaling=False, previous=[])}
    assert conditions["Ready"]["status"] == "False" and conditions["Ready"]["message"] == "3/4 replicas ready"
    assert conditions["Degraded"]["status"] == "True" and conditions["Progressing"]["status"] == "True"
    assert conditions["InsufficientCapacity"]["reason"] == "PodsPending"
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
