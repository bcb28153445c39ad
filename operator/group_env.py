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


def group_env(pods: int, gpus_per_pod: int, leader_address: str) -> list[dict]:
    """Container env for every member of one group; the rank comes from the pod's own index label."""
    return [
        {"name": NNODES, "value": str(pods)},
        {"name": NODE_RANK, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}}},
        {"name": GPUS_PER_NODE, "value": str(gpus_per_pod)},
        {"name": LEADER_ADDR, "value": leader_address},
        {"name": LEADER_PORT, "value": str(RENDEZVOUS_PORT)},
    ]
