"""Where replicas go: the spot/on-demand split and the shape of one replica's tensor-parallel group.

Pure functions; the autoscaler imports `split_replicas` so a plan and a spec-only deployment split alike.
"""

import math
from dataclasses import dataclass

from fleetserve.api.spec import AutoscalerPlan, LLMDeploymentSpec


@dataclass(frozen=True)
class ReplicaSplit:
    on_demand: int
    spot: int

    @property
    def total(self) -> int:
        return self.on_demand + self.spot


def split_replicas(total: int, on_demand_floor: int, spot_enabled: bool, spot_max_share: float) -> ReplicaSplit:
    """Keep `on_demand_floor` replicas on on-demand nodes and put the rest on spot, up to `spot_max_share` of all."""
    if not spot_enabled:
        return ReplicaSplit(on_demand=total, spot=0)
    # The epsilon keeps 0.8 * 5 from flooring to 3 through float error.
    spot_cap = math.floor(total * spot_max_share + 1e-9)
    spot = max(0, min(total - min(on_demand_floor, total), spot_cap))
    return ReplicaSplit(on_demand=total - spot, spot=spot)


def spec_split(spec: LLMDeploymentSpec) -> ReplicaSplit:
    """Replica counts without an autoscaler plan: replicas.min, split by the capacity rules."""
    capacity = spec.capacity
    return split_replicas(spec.replicas.min, capacity.on_demand.min_replicas, capacity.spot.enabled, capacity.spot.max_share)


def desired_split(spec: LLMDeploymentSpec, autoscaler_plan: AutoscalerPlan | None) -> ReplicaSplit:
    """The autoscaler's plan wins while autoscaling is on; spot is never used when the spec disables it."""
    if not spec.autoscaling.enabled or autoscaler_plan is None:
        return spec_split(spec)
    spot = autoscaler_plan.desired_spot if spec.capacity.spot.enabled else 0
    return ReplicaSplit(on_demand=autoscaler_plan.desired_on_demand, spot=spot)


class ImpossibleShape(ValueError):
    """The requested GPUs per replica can't be placed on whole nodes of this size."""


@dataclass(frozen=True)
class GroupShape:
    """One replica is `pods` pods with `gpus_per_pod` GPUs each; pods > 1 means a multi-node group.

    `ranks_per_pod` is how many tensor-parallel ranks each pod runs (FLEETSERVE_GPUS_PER_NODE).
    """

    pods: int
    gpus_per_pod: int
    ranks_per_pod: int = 1

    @property
    def multi_node(self) -> bool:
        return self.pods > 1


def group_shape(spec: LLMDeploymentSpec) -> GroupShape:
    gpus, per_node, tensor = spec.gpus_per_replica, spec.capacity.gpus_per_node, spec.parallelism.tensor
    if gpus <= per_node:
        return GroupShape(pods=1, gpus_per_pod=gpus, ranks_per_pod=tensor)
    if gpus % per_node:
        raise ImpossibleShape(
            f"{gpus} GPUs per replica (parallelism.tensor={tensor}) can't be split into whole nodes"
            f" of capacity.gpusPerNode={per_node}; use a multiple of {per_node} or at most {per_node}"
        )
    pods = gpus // per_node
    if tensor % pods:
        raise ImpossibleShape(f"parallelism.tensor={tensor} can't be spread evenly over the {pods} nodes"
                              f" that {gpus} GPUs per replica take")
    return GroupShape(pods=pods, gpus_per_pod=per_node, ranks_per_pod=tensor // pods)
