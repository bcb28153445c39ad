"""A tensor-parallel rank other than 0: joins the group, loads its shard of the model and of the KV cache, and runs
the steps rank 0 broadcasts until rank 0 stops the group. It never sees text, so it loads no tokenizer."""

import ctypes
import logging
import signal

from fleetserve.engine import distributed, loader
from fleetserve.engine.config import EngineConfig
from fleetserve.engine.group_layout import GroupLayout
from fleetserve.engine.llm_engine import build_runner
from fleetserve.engine.startup_heap import freeze_startup_heap
from fleetserve.engine.step_broadcast import follow_steps

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def run_rank(layout: GroupLayout, rank: int, config: EngineConfig, store_port: int) -> None:
    """Returns when rank 0 stops the group; raises (and the caller exits non-zero) when the group breaks."""
    store = distributed.open_store(layout, rank, store_port)
    distributed.join(layout, rank, config.resolved_device(), store)
    distributed.start_heartbeat(layout.leader_addr)
    loaded = loader.load(config, with_tokenizer=False)
    runner = build_runner(loaded.model, config)
    freeze_startup_heap()
    follow_steps(runner)
    distributed.leave()


def spawned_rank_main(layout: GroupLayout, rank: int, config: EngineConfig, store_port: int) -> None:
    """Entry point of a local rank that `fleetserve serve` spawns next to itself."""
    # Dies with the process that spawned it (even by SIGKILL), so no rank outlives its replica.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent drains first
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s rank{rank} %(name)s: %(message)s")
    try:
        run_rank(layout, rank, config, store_port)
    except Exception:
        log.exception("rank %d failed", rank)
        distributed.exit_process(1)
