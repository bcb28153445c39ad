"""The environment contract of a multi-node tensor-parallel group, defined here and nowhere else.

The engine reads exactly these variables; world size = FLEETSERVE_NNODES * FLEETSERVE_GPUS_PER_NODE.
"""

NNODES = "FLEETSERVE_NNODES"
NODE_RANK = "FLEETSERVE_NODE_RANK"
GPUS_PER_NODE = "FLEETSERVE_GPUS_PER_NODE"
LEADER_ADDR = "FLEETSERVE_LEADER_ADDR"
LEADER_PORT = "FLEETSERVE_LEADER_PORT"
RENDEZVOUS_PORT = 29500

# StatefulSets (Kubernetes >= 1.28) label each pod with its ordinal, which is the pod's rank in its group.
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
# LeaderWorkerSet labels each pod with its index in the group (0 = leader) and the group's index.
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
LWS_GROUP_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/group-index"
# A helper for LeaderWorkerSet pods only: the leader's name contains the group index, read from a label.
GROUP_INDEX = "FLEETSERVE_GROUP_INDEX"


def _from_label(name: str, label: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{label}']"}}}


def group_env(pods: int, ranks_per_pod: int, leader_address: str, rank_label: str = POD_INDEX_LABEL) -> list[dict]:
    """Container env for every member of one group; the rank comes from the pod's own index label."""
    return [
        {"name": NNODES, "value": str(pods)},
        _from_label(NODE_RANK, rank_label),
        {"name": GPUS_PER_NODE, "value": str(ranks_per_pod)},
        {"name": LEADER_ADDR, "value": leader_address},
        {"name": LEADER_PORT, "value": str(RENDEZVOUS_PORT)},
    ]


def leader_worker_set_env(pods: int, ranks_per_pod: int, lws_name: str, namespace: str) -> list[dict]:
    """The same contract for LeaderWorkerSet pods: leader `<lws>-<group>` behind the headless Service `<lws>`."""
    # $(VAR) expands only variables defined earlier in the list, so the group index comes first.
    leader = f"{lws_name}-$({GROUP_INDEX}).{lws_name}.{namespace}.svc"
    return [_from_label(GROUP_INDEX, LWS_GROUP_INDEX_LABEL),
            *group_env(pods, ranks_per_pod, leader, rank_label=LWS_WORKER_INDEX_LABEL)]
