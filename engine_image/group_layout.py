"""Where one `fleetserve serve` process sits in its tensor-parallel group: from --tensor-parallel-size alone on a
single node, or from the environment the operator renders into every pod of a multi-node group
(fleetserve.api.group_env is that contract's one definition; this module only reads it)."""

from collections.abc import Mapping
from dataclasses import dataclass

from fleetserve.api import group_env

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class GroupLayout:
    nnodes: int
    node_rank: int
    ranks_per_node: int  # one rank per GPU; on CPU, processes sharing the node's cores
    leader_addr: str  # where rank 0's rendezvous store listens
    leader_port: int  # 0 on a single node: the leader picks a free port and hands it to its local ranks

    @property
    def world_size(self) -> int:
        return self.nnodes * self.ranks_per_node

    @property
    def first_rank(self) -> int:
        """The global rank of this node's first local rank; the node's other ranks follow it."""
        return self.node_rank * self.ranks_per_node

    def local_index(self, rank: int) -> int:
        """The rank's position on its node, which is also its GPU index there."""
        return rank - self.first_rank


def single_node(tensor_parallel_size: int) -> GroupLayout:
    return GroupLayout(nnodes=1, node_rank=0, ranks_per_node=tensor_parallel_size, leader_addr=LOOPBACK, leader_port=0)


def group_layout(tensor_parallel_size: int, environ: Mapping[str, str]) -> GroupLayout:
    """The layout from the group environment when the operator set it, else one node with every rank local.
    Raises ValueError naming the variable or flag that is wrong."""
    if tensor_parallel_size < 1:
        raise ValueError("--tensor-parallel-size must be >= 1")
    if group_env.NNODES not in environ:
        return single_node(tensor_parallel_size)
    nnodes = _integer(environ, group_env.NNODES, minimum=1)
    node_rank = _integer(environ, group_env.NODE_RANK, minimum=0)
    ranks_per_node = _integer(environ, group_env.GPUS_PER_NODE, minimum=1)
    leader_port = _integer(environ, group_env.LEADER_PORT, minimum=1)
    leader_addr = environ.get(group_env.LEADER_ADDR, "").strip()
    if node_rank >= nnodes:
        raise ValueError(f"{group_env.NODE_RANK}={node_rank} must be below {group_env.NNODES}={nnodes}")
    if leader_port > 65535:
        raise ValueError(f"{group_env.LEADER_PORT}={leader_port} must be a TCP port (1..65535)")
    if not leader_addr:
        raise ValueError(f"{group_env.LEADER_ADDR}: missing; it must name the group's rank-0 pod")
    if nnodes * ranks_per_node != tensor_parallel_size:
        raise ValueError(f"--tensor-parallel-size {tensor_parallel_size} must equal {group_env.NNODES} x "
                         f"{group_env.GPUS_PER_NODE} = {nnodes} x {ranks_per_node}")
    return GroupLayout(nnodes, node_rank, ranks_per_node, leader_addr, leader_port)


def _integer(environ: Mapping[str, str], name: str, minimum: int) -> int:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        raise ValueError(f"{name}: missing; the operator sets it together with {group_env.NNODES}")
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}")
    return value
