"""This process's membership in a tensor-parallel group: the rendezvous on rank 0's TCP store, the torch.distributed
process group (NCCL on GPUs, gloo on CPU) that the model's layers all-reduce over, the control channel on which
rank 0 broadcasts every step, and the liveness of the other ranks.

Without a group (tensor_parallel_size 1) nothing here runs: `tp_rank()` is 0, `tp_size()` is 1 and the model never
calls a collective.
"""

import datetime
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from fleetserve.engine.group_layout import GroupLayout

log = logging.getLogger(__name__)

RENDEZVOUS_TIMEOUT = datetime.timedelta(minutes=10)  # pods of a group start (and pull images) at different times
# The first collective waits for the slowest rank to load its shard; later ones are in lockstep. Health never waits
# for this: the watchdog below reports a lost rank within seconds.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)
IDLE_TIMEOUT = datetime.timedelta(days=365)  # workers wait on the control channel for as long as rank 0 is idle
HEARTBEAT_SECONDS = 0.5
HEARTBEAT_TIMEOUT_SECONDS = 5.0  # a rank silent this long is lost


@dataclass
class TPGroup:
    rank: int
    world_size: int
    store: dist.TCPStore
    control: dist.ProcessGroup  # gloo on every device: step messages are small Python objects
    failure: str | None = None  # set once, by the watchdog or a failed step; the group never recovers
    stopping: threading.Event = field(default_factory=threading.Event)


_group: TPGroup | None = None


class GroupError(RuntimeError):
    """The group did not form."""


def tp_rank() -> int:
    return _group.rank if _group else 0


def tp_size() -> int:
    return _group.world_size if _group else 1


def group_failure() -> str | None:
    """Why this process's group can no longer run steps; None while it can (or when there is no group)."""
    return _group.failure if _group else None


def fail_group(reason: str) -> None:
    if _group is not None and _group.failure is None:
        _group.failure = reason
        log.error("tensor-parallel group failed: %s", reason)


def open_store(layout: GroupLayout, rank: int, port: int) -> dist.TCPStore:
    """Rank 0 hosts the rendezvous store (port 0: any free port, read back from `.port`); the other ranks connect
    to it, retrying until the rendezvous timeout while rank 0's pod is still starting."""
    return dist.TCPStore(layout.leader_addr, port, layout.world_size, rank == 0, timeout=RENDEZVOUS_TIMEOUT,
                         wait_for_workers=False)


def join(layout: GroupLayout, rank: int, device: str, store: dist.TCPStore,
         local_failure: Callable[[], str | None] = lambda: None) -> TPGroup:
    """Joins the group as `rank` and returns once every rank has joined; `local_failure` reports a local rank that
    died before joining, so rank 0 gives up at once instead of waiting out the rendezvous timeout."""
    global _group
    if device == "cuda":
        torch.cuda.set_device(layout.local_index(rank))
    else:  # the node's cores are shared by its ranks
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // layout.ranks_per_node))
    store.add("fleetserve/joined", 1)
    _wait_for_ranks(store, layout.world_size, local_failure)
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.PrefixStore("pg", store), rank=rank, world_size=layout.world_size,
                            timeout=COLLECTIVE_TIMEOUT)
    control = dist.new_group(backend="gloo", timeout=IDLE_TIMEOUT)
    _group = TPGroup(rank, layout.world_size, store, control)
    log.info("joined the tensor-parallel group as rank %d of %d (%s)", rank, layout.world_size, backend)
    return _group


def _wait_for_ranks(store: dist.TCPStore, world_size: int, local_failure: Callable[[], str | None]) -> None:
    # Polled rather than a store barrier, so a local rank that dies early ends the wait instead of a timeout.
    deadline = time.monotonic() + RENDEZVOUS_TIMEOUT.total_seconds()
    while (joined := store.add("fleetserve/joined", 0)) < world_size:
        if (failure := local_failure()) is not None:
            raise GroupError(f"tensor-parallel group did not form: {failure}")
        if time.monotonic() > deadline:
            raise GroupError(f"tensor-parallel group did not form: {joined} of {world_size} ranks joined within "
                             f"{RENDEZVOUS_TIMEOUT}")
        time.sleep(0.1)


def stop_group() -> bool:
    """Rank 0: tells the other ranks to exit; False when the group had failed or a rank died just now (the ranks
    then end by their own failure detection)."""
    if _group.failure is not None:
        return False
    _group.stopping.set()  # ranks exiting from here on are no failure
    try:
        broadcast_step(None)
        return True
    except Exception as exc:  # noqa: BLE001
        log.warning("could not stop the other ranks cleanly: %s", exc)
        return False


def leave() -> None:
    global _group
    if _group is None:
        return
    _group.stopping.set()
    if _group.failure is None:
        dist.destroy_process_group()
    _group = None


def min_over_ranks(value: int) -> int:
    """Each rank sizes its own KV cache; the block manager must only hand out blocks that every rank has."""
    tensor = torch.tensor([value], dtype=torch.long)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN, group=_group.control)
    return int(tensor.item())


def broadcast_step(message: object) -> None:
    """Rank 0: sends the step (None: stop) to every other rank."""
    dist.broadcast_object_list([message], src=0, group=_group.control)


def receive_step() -> object:
    """Other ranks: blocks until rank 0 sends the next step; raises when rank 0 is gone."""
    box = [None]
    dist.broadcast_object_list(box, src=0, group=_group.control)
    return box[0]


def exit_process(code: int) -> None:
    """Ends a process that took part in a group with exactly `code`. A normal interpreter exit can turn it into
    SIGABRT: threads still inside torch.distributed's C++ calls (gloo, TCPStore clients) make the runtime call
    std::terminate at finalisation. Logs and standard streams are flushed first."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# --- liveness --------------------------------------------------------------------------------------------------

def start_heartbeat(leader_addr: str) -> None:
    """Non-leader ranks: count up a key in rank 0's store; if the store is unreachable rank 0 is gone, and this
    process exits so that its pod restarts and rejoins the next group."""
    rank, port, world_size, stopping = _group.rank, _group.store.port, _group.world_size, _group.stopping

    def beat() -> None:
        try:
            client = dist.TCPStore(leader_addr, port, world_size, False,
                                   timeout=datetime.timedelta(seconds=HEARTBEAT_TIMEOUT_SECONDS))
            while not stopping.is_set():
                client.add(f"fleetserve/heartbeat/{rank}", 1)
                stopping.wait(HEARTBEAT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - any failure means the leader is unreachable
            if stopping.is_set():  # rank 0 stopped the group and may be gone already
                return
            log.error("rank %d lost rank 0 (%s); exiting", rank, exc)
            exit_process(1)

    threading.Thread(target=beat, name=f"tp-heartbeat-{rank}", daemon=True).start()


def start_watchdog(local_failure: Callable[[], str | None]) -> None:
    """Rank 0: fails the group as soon as a local rank process exits or any rank's heartbeat stops."""
    group = _group
    client = dist.TCPStore("127.0.0.1", group.store.port, group.world_size, False,
                           timeout=datetime.timedelta(seconds=HEARTBEAT_TIMEOUT_SECONDS))
    counts = {rank: -1 for rank in range(1, group.world_size)}
    last_change = {rank: time.monotonic() for rank in counts}

    def watch() -> None:
        while not group.stopping.wait(HEARTBEAT_SECONDS) and group.failure is None:
            if (failure := local_failure()) is not None:
                fail_group(failure)
                return
            now = time.monotonic()
            for rank in counts:
                try:
                    count = client.add(f"fleetserve/heartbeat/{rank}", 0)
                except Exception as exc:  # noqa: BLE001 - without the store no rank can be watched
                    fail_group(f"the watchdog cannot read the store: {exc}")
                    return
                if count != counts[rank]:
                    counts[rank], last_change[rank] = count, now
                elif now - last_change[rank] > HEARTBEAT_TIMEOUT_SECONDS:
                    fail_group(f"rank {rank} sent no heartbeat for {HEARTBEAT_TIMEOUT_SECONDS:.0f}s")
                    return

    threading.Thread(target=watch, name="tp-watchdog", daemon=True).start()
