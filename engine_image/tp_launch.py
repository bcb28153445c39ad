"""How `fleetserve serve` starts a tensor-parallel replica on its node.

- The leader node (node rank 0, or the only node): this process is rank 0 and runs the scheduler and the HTTP
  server; it spawns the node's other ranks, which follow its steps (`leader_group`).
- A worker node of a multi-node group: this process is the node's first rank and spawns the others; all of them
  follow rank 0's steps, and /health answers the pod's probes while every rank on the node lives (`run_worker_node`).
"""

import contextlib
import http.server
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterator

from fleetserve.engine import distributed, tp_worker
from fleetserve.engine.config import EngineConfig
from fleetserve.engine.group_layout import GroupLayout

log = logging.getLogger(__name__)

STOP_SECONDS = 10.0


class LocalRanks:
    """The ranks this process spawns on its node: every local rank after the first, which is this process."""

    def __init__(self, layout: GroupLayout, config: EngineConfig, store_port: int):
        spawn = multiprocessing.get_context("spawn")  # never fork a process that holds threads or CUDA state
        ranks = range(layout.first_rank + 1, layout.first_rank + layout.ranks_per_node)
        self.processes = {
            rank: spawn.Process(target=tp_worker.spawned_rank_main, args=(layout, rank, config, store_port),
                                name=f"fleetserve-rank-{rank}", daemon=True)
            for rank in ranks
        }
        for process in self.processes.values():
            process.start()

    def first_exit(self) -> str | None:
        for rank, process in self.processes.items():
            if process.exitcode is not None:
                return f"rank {rank} (pid {process.pid}) exited with code {process.exitcode}"
        return None

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Waits for the ranks to end by themselves, then kills those that don't."""
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes.values():
            if process.is_alive():
                process.kill()
                process.join(STOP_SECONDS)


@contextlib.contextmanager
def leader_group(layout: GroupLayout, config: EngineConfig) -> Iterator[None]:
    """Rank 0's group for the duration of the block; nothing at all when there is one rank. A clean exit stops the
    other ranks; an exception or a failed group leaves them to their own failure detection (local ones are killed)."""
    if layout.world_size == 1:
        yield
        return
    store = distributed.open_store(layout, 0, layout.leader_port)
    local = LocalRanks(layout, config, store.port)
    clean = False
    try:
        distributed.join(layout, 0, config.resolved_device(), store, local.first_exit)
        distributed.start_watchdog(local.first_exit)
        yield
        clean = True
    finally:
        stopped = clean and distributed.stop_group()
        distributed.leave()
        local.stop(timeout=STOP_SECONDS if stopped else 0)


def run_worker_node(layout: GroupLayout, config: EngineConfig, host: str, port: int) -> int:
    """A worker node's whole life: 0 when rank 0 stopped the group, 1 when the group broke."""
    # Kubernetes stops every pod of the group at once, but rank 0 first drains its requests, which needs this node.
    signal.signal(signal.SIGTERM, lambda *_: log.info("SIGTERM: following rank 0 until it stops the group"))
    local = LocalRanks(layout, config, layout.leader_port)
    health = _serve_health(host, port, local.first_exit)
    try:
        tp_worker.run_rank(layout, layout.first_rank, config, layout.leader_port)
        local.stop()
        return 0
    except Exception:
        log.exception("rank %d failed; the group is broken", layout.first_rank)
        local.stop(timeout=0)
        return 1
    finally:
        health.shutdown()


def _serve_health(host: str, port: int, failure: Callable[[], str | None]) -> http.server.ThreadingHTTPServer:
    """GET /livez, /readyz and /health on the pod's API port, the probes rank 0's server answers too: all three are
    200 while every rank on this node lives and 503 once one has died (a worker has nothing to drain)."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's handler name
            if self.path not in ("/livez", "/readyz", "/health"):
                self.send_error(404, "a worker node serves only /livez, /readyz and /health; the API is on the "
                                     "group's rank 0")
                return
            reason = failure()
            self.send_response(200 if reason is None else 503)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write((reason or "ok").encode())

        def log_message(self, *args) -> None:  # probes every few seconds would flood the log
            pass

    server = http.server.ThreadingHTTPServer((host, port), Health)
    threading.Thread(target=server.serve_forever, name="worker-health", daemon=True).start()
    log.info("worker node: probes on %s:%d", host, port)
    return server
