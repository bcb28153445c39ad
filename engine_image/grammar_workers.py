"""Grammar matchers in processes of their own. xgrammar's `accept_token` holds the GIL (on the GPU machine's CPU
about 45 µs a token for a JSON schema at a 152k vocabulary): 64 constrained requests cost the engine's thread ~3 ms
a step, in series with its own per-token work, and every request in the batch waited for it
(benchmarks/results/structured-output-gpu.md). Here the matchers accept the step's tokens and fill the next masks
in worker processes while the engine's thread reads the step back; the masks land in shared memory.

Workers are plain child processes (`python -m fleetserve.engine.grammar_workers FD`), not multiprocessing's spawn,
which would import the user's main script again in each worker. Each worker owns the matchers of the requests given
to it (the least loaded one gets a new request) and fills the rows it is given of one shared int32 bitmask [rows,
words], never a row of another worker. On a GPU machine the shared memory is pinned (registered with CUDA), so the
masks go to the device straight from it. Matchers are keyed by a number given per request, never by request id: tokens drawn for a request that has since
ended must not reach a new request under the same id.
"""

import itertools
import logging
import os
import socket
import subprocess
import sys
import weakref
from multiprocessing import shared_memory
from multiprocessing.connection import Connection

import torch

log = logging.getLogger(__name__)


def default_processes() -> int:
    """One worker per 4 cores, 1 to 4 (a batch's constrained rows split between them; more buys little)."""
    return max(1, min(4, (os.cpu_count() or 1) // 4))


class GrammarWorkers:
    def __init__(self, tokenizer_info_json: str, processes: int, pin: bool = False):
        self._pin = pin
        self._conns, self._procs = [], []
        for _ in range(processes):
            parent, child = socket.socketpair()
            proc = subprocess.Popen([sys.executable, "-m", __name__, str(child.fileno())], pass_fds=[child.fileno()])
            child.close()
            self._conns.append(Connection(parent.detach()))
            self._procs.append(proc)
        self._load = [0] * processes
        self._owner: dict[int, int] = {}  # key -> worker
        self._keys = itertools.count()
        self._shm: shared_memory.SharedMemory | None = None
        self._view: torch.Tensor | None = None  # the bitmask [rows, words] in self._shm
        self._shape = (0, 0)
        self._waiting: list[int] = []  # workers whose reply to the last step is not read yet
        self.alive = True
        self._finalizer = weakref.finalize(self, _shut_down, self._conns, self._procs, None, False)
        for worker in range(processes):
            self._send(worker, ("tokenizer", tokenizer_info_json))

    def add(self, ebnf: str) -> int:
        """A new matcher for a grammar (its EBNF text: a compiled grammar does not pickle); returns its key."""
        key = next(self._keys)
        worker = min(range(len(self._load)), key=self._load.__getitem__)
        self._send(worker, ("add", key, ebnf))
        self._owner[key] = worker
        self._load[worker] += 1
        return key

    def remove(self, key: int) -> None:
        """Never raises: a request ends whether or not its worker is still there."""
        worker = self._owner.pop(key, None)
        if worker is not None and self.alive:
            self._load[worker] -= 1
            try:
                self._send(worker, ("remove", key))
            except RuntimeError:
                pass

    def start_step(self, accepts: list[tuple[int, int]], fills: list[tuple[int, int]], rows: int, words: int
                   ) -> None:
        """Sends each worker its matchers' new tokens (key, token id), to accept first, then the rows to fill
        (key, row) of a bitmask of at least [rows, words]. Returns at once; `finish_step` collects the result."""
        if rows > self._shape[0] or words != self._shape[1]:
            self._new_buffer(max(rows, self._shape[0]), words)
        by_worker: dict[int, tuple[list, list]] = {}
        for kind, items in ((0, accepts), (1, fills)):
            for key, value in items:
                worker = self._owner.get(key)
                if worker is not None:
                    by_worker.setdefault(worker, ([], []))[kind].append((key, value))
        for worker, (worker_accepts, worker_fills) in by_worker.items():
            self._send(worker, ("step", worker_accepts, worker_fills))
        self._waiting = sorted(by_worker)

    def finish_step(self) -> tuple[list[int], torch.Tensor]:
        """Waits for the workers: the rows filled (those of matchers that have not ended), sorted, and the bitmask
        in shared memory (valid until the next step starts)."""
        live = []
        waiting, self._waiting = self._waiting, []
        for worker in waiting:
            filled, rejected, error = self._receive(worker)
            if error:
                raise RuntimeError(f"grammar worker: {error}")
            for key, token in rejected:
                log.error("grammar %d rejected token %d", key, token)
            live += filled
        return sorted(live), self._view

    def close(self) -> None:
        self.alive = False
        self._view = None
        self._finalizer()

    def _new_buffer(self, rows: int, words: int) -> None:
        old, self._view = self._shm, None  # no view may outlive its buffer: closing it would fail
        self._shm = shared_memory.SharedMemory(create=True, size=max(1, rows * words * 4))
        self._view = torch.frombuffer(self._shm.buf, dtype=torch.int32, count=rows * words).view(rows, words)
        if self._pin:
            _check(torch.cuda.cudart().cudaHostRegister(self._view.data_ptr(), self._shm.size, 0), "register")
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _shut_down, self._conns, self._procs, self._shm, self._pin)
        self._shape = (rows, words)
        for worker in range(len(self._conns)):
            self._send(worker, ("buffer", self._shm.name, rows, words))
        if old is not None:
            _release(old, self._pin)

    def _send(self, worker: int, message) -> None:
        try:
            self._conns[worker].send(message)
        except (OSError, EOFError, ValueError) as exc:
            self._died(worker, exc)

    def _receive(self, worker: int):
        conn, proc = self._conns[worker], self._procs[worker]
        try:
            while not conn.poll(1.0):  # a worker that is gone, or stuck, must not hang the engine
                if proc.poll() is not None:
                    raise EOFError
            return conn.recv()
        except (OSError, EOFError) as exc:
            self._died(worker, exc)

    def _died(self, worker: int, exc: Exception):
        self.alive = False
        code = self._procs[worker].poll()
        raise RuntimeError(f"grammar worker {worker} exited (code {code}): {type(exc).__name__}") from exc


def _check(error, what: str) -> None:
    if error != 0:
        raise RuntimeError(f"cudaHost{what.capitalize()} of the grammar masks' shared memory failed: error {error}")


def _release(shm: shared_memory.SharedMemory, pinned: bool) -> None:
    if pinned:
        _check(torch.cuda.cudart().cudaHostUnregister(_address(shm)), "unregister")
    try:
        shm.close()
    except BufferError:  # a view of it is still alive (collected along with the pool): unlink alone
        pass
    shm.unlink()


def _address(shm: shared_memory.SharedMemory) -> int:
    view = torch.frombuffer(shm.buf, dtype=torch.uint8, count=1)
    return view.data_ptr()


def _shut_down(conns, procs, shm, pinned: bool) -> None:
    for conn in conns:
        conn.close()  # a worker's recv then ends: it exits
    for proc in procs:
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if shm is not None:
        _release(shm, pinned)


def serve(conn: Connection) -> None:
    """A worker's loop, until the engine closes its end of the connection. The first message is the tokenizer's."""
    import xgrammar as xgr

    try:
        _, tokenizer_info_json = conn.recv()
    except (EOFError, OSError):
        return
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.deserialize_json(tokenizer_info_json), max_threads=1)
    matchers: dict[int, xgr.GrammarMatcher] = {}
    shm, bitmask = None, None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "add":
            try:
                matchers[message[1]] = xgr.GrammarMatcher(compiler.compile_grammar(message[2]))
            except Exception as exc:  # reported with the next step; the engine compiled this text already
                matchers[message[1]] = exc
        elif kind == "remove":
            matchers.pop(message[1], None)
        elif kind == "buffer":
            bitmask = None
            if shm is not None:
                shm.close()
            shm = _attach(message[1])
            bitmask = torch.frombuffer(shm.buf, dtype=torch.int32, count=message[2] * message[3]).view(
                message[2], message[3])
        elif kind == "step":
            conn.send(_step(matchers, bitmask, message[1], message[2]))


def _attach(name: str) -> shared_memory.SharedMemory:
    """The engine's shared memory, which the engine unlinks: this process's resource tracker must not (before
    Python 3.13 attaching registers it, and the tracker would unlink it when this worker exits)."""
    try:
        return shared_memory.SharedMemory(name=name, track=False)
    except TypeError:
        from multiprocessing import resource_tracker

        shm = shared_memory.SharedMemory(name=name)
        resource_tracker.unregister(shm._name, "shared_memory")
        return shm


def _step(matchers, bitmask, accepts, fills):
    rejected, filled = [], []
    for key, token in accepts:
        matcher = matchers.get(key)
        if matcher is not None and not isinstance(matcher, Exception) and not matcher.is_terminated() \
                and not matcher.accept_token(token):
            rejected.append((key, token))
    for key, row in fills:
        matcher = matchers.get(key)
        if isinstance(matcher, Exception):
            return [], rejected, f"grammar {key} did not compile: {matcher}"
        if matcher is not None and not matcher.is_terminated():
            matcher.fill_next_token_bitmask(bitmask, row)
            filled.append(row)
    return filled, rejected, None


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
