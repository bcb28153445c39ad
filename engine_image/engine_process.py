"""The engine core in a process of its own, as vLLM v1 splits its API server from its engine core. The API process
keeps the event loop: HTTP, parsing, chat templates, tokenising, rendering and writing the streams. The engine
process keeps the model and the step loop (`async_engine.StepLoop`, the same one `AsyncEngine` runs on a thread),
so hundreds of streams' per-chunk work and the engine's launches never compete for one GIL.

What crosses the boundary, a multiprocessing Pipe (a Unix socket pair) of pickled messages:
- at start, up: `EngineInfo` (the settings the engine derives from the model and the KV cache) once the weights are
  loaded, or the error that stopped it;
- down, one message per command: ("add", id, prompt ids, SamplingParams, arrival) with a grammar as its EBNF text
  (a compiled xgrammar grammar does not pickle; the engine process compiles the text again, from its compiler's
  cache after the first time), ("abort", id), ("shutdown",);
- up, one message per hand-over: (its RequestOutputs, the engine's stats, add commands taken so far).

The engine process ends when told to, when its step loop dies, or when the pipe reaches EOF because the API process
is gone, so it never outlives its server.
"""

import asyncio
import dataclasses
import logging
import multiprocessing
import signal
import sys
import threading
from dataclasses import dataclass

from fleetserve.engine import loader
from fleetserve.engine.async_engine import RequestStreams, StepLoop
from fleetserve.engine.config import EngineConfig
from fleetserve.engine.llm_engine import LLMEngine, validate_request
from fleetserve.engine.outputs import EngineStats, RequestOutput
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.startup_heap import freeze_startup_heap

log = logging.getLogger(__name__)

STOP_SECONDS = 30.0  # a shutdown waits this long for the engine process's current step, then kills it
WATCH_SECONDS = 1.0  # how often the engine process's command thread looks whether the step loop still runs


@dataclass
class EngineInfo:
    """What the API process needs to know of the engine, sent once its weights and KV cache are set up."""

    model_name: str
    max_model_len: int
    vocab_size: int
    eos_token_ids: set[int]
    block_size: int
    stats: EngineStats


class EngineProcess(RequestStreams):
    """The API process's side: AsyncEngine's interface over a spawned engine process. Constructing it starts the
    process and loads the tokenizer here while the weights load there; it returns once the engine is ready."""

    def __init__(self, config: EngineConfig):
        super().__init__()
        spawn = multiprocessing.get_context("spawn")  # never fork a process that holds threads or CUDA state
        self._conn, child_conn = spawn.Pipe()
        self._process = spawn.Process(target=engine_process_main, args=(child_conn, config),
                                      name="fleetserve-engine", daemon=True)
        self._process.start()
        child_conn.close()  # the child holds the only other end: its exit is EOF here
        try:
            self.tokenizer = loader.load_tokenizer(config)
            info = self._handshake()
        except BaseException:
            self._process.kill()
            self._process.join()
            raise
        self.model_name = info.model_name
        self.max_model_len = info.max_model_len
        self.vocab_size = info.vocab_size
        self.eos_token_ids = info.eos_token_ids
        self.block_size = info.block_size
        self._stats = info.stats
        self._adds_sent = 0
        self._adds_taken = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._gone = False  # the engine process has closed its end: no more outputs will come

    def _handshake(self) -> EngineInfo:
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            self._process.join()
            raise RuntimeError(f"the engine process exited with code {self._process.exitcode} while starting; "
                               "its log says why") from None
        if kind == "value_error":  # a setting the engine refuses: the same message as in-process
            raise ValueError(payload)
        if kind == "error":
            raise RuntimeError(f"the engine process failed to start: {payload}")
        return payload

    @property
    def healthy(self) -> bool:
        return self._stopping or (not self._gone and self._process.is_alive())

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._conn.fileno(), self._receive)

    async def shutdown(self) -> None:
        """Stops the engine process; requests still in flight end with finish_reason "abort"."""
        self._stopping = True
        try:
            self._conn.send(("shutdown",))
        except OSError:  # already gone
            pass
        await asyncio.to_thread(self._process.join, STOP_SECONDS)
        if self._process.is_alive():
            log.warning("the engine process did not stop within %.0f s; killing it", STOP_SECONDS)
            self._process.kill()
            await asyncio.to_thread(self._process.join)
        if not self._gone:
            self._receive()  # its last outputs, then EOF
        self._conn.close()

    def stats(self) -> EngineStats:
        """The engine's last reported stats, with requests sent since then counted as waiting."""
        return dataclasses.replace(self._stats,
                                   num_waiting=self._stats.num_waiting + self._adds_sent - self._adds_taken)

    def validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        validate_request(prompt_token_ids, params, self.max_model_len, self.vocab_size)  # before anything is sent

    def _accepting(self) -> bool:
        return self.healthy and not self._stopping

    def _submit(self, command: tuple) -> None:
        if command[0] == "add" and command[3].grammar is not None:
            params = dataclasses.replace(command[3], grammar=str(command[3].grammar.grammar))
            command = (*command[:3], params, command[4])
        try:
            if self._gone:
                raise BrokenPipeError
            self._conn.send(command)
        except OSError:
            if command[0] == "abort":  # nothing left to abort
                return
            raise RuntimeError("engine is not running") from None
        if command[0] == "add":
            self._adds_sent += 1

    def _receive(self) -> None:
        """Called by the event loop whenever the pipe is readable: every hand-over that has arrived."""
        try:
            while self._conn.poll():
                outputs, self._stats, self._adds_taken = self._conn.recv()
                self._deliver(outputs)
        except (EOFError, OSError):
            self._engine_gone()

    def _engine_gone(self) -> None:
        """The engine process has exited: every stream still open ends, so no caller waits forever."""
        self._gone = True
        if self._loop is not None:
            self._loop.remove_reader(self._conn.fileno())
        error = None
        if not self._stopping:
            log.error("the engine process exited unexpectedly")
            error = "the engine process exited"
        self._deliver([RequestOutput(request_id, [], "", True, "abort", 0, 0, error=error)
                       for request_id in self._streams])


def engine_process_main(conn, config: EngineConfig) -> None:
    """The engine process: loads the engine, reports its settings, then runs the step loop on a second thread while
    this one takes commands off the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the API process drains
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s engine-process %(name)s: %(message)s")
    try:
        engine = LLMEngine(config)
    except ValueError as error:  # a refused setting or source: the API process reports it as one line
        conn.send(("value_error", str(error)))
        return
    except Exception as error:
        log.exception("the engine failed to start")
        conn.send(("error", f"{type(error).__name__}: {error}"))
        sys.exit(1)

    def publish(outputs: list[RequestOutput]) -> None:
        try:
            conn.send((outputs, step_loop.stats, step_loop.adds_taken))
        except OSError:  # the API process is gone: no one waits for these, and the command thread stops the loop
            pass

    step_loop = StepLoop(engine, publish)
    freeze_startup_heap()
    conn.send(("ready", EngineInfo(engine.model_name, engine.max_model_len, engine.vocab_size,
                                   engine.loaded.eos_token_ids, engine.config.block_size, engine.stats())))
    # The steps run on a thread of their own, as in AsyncEngine: on a shared 2-core CPU, torch ran the same steps on
    # a process's main thread at 1.3-2.6 times the time they took on a second thread.
    steps = threading.Thread(target=step_loop.run, name="engine-step-loop")
    steps.start()
    take_commands(conn, step_loop, steps)
    steps.join()
    sys.exit(1 if step_loop.failed else 0)


def take_commands(conn, step_loop: StepLoop, steps: threading.Thread) -> None:
    """Hands each command to the step loop until shutdown or EOF (the API process is gone), which stop it, or until
    the step loop has died. A grammar is compiled here, off the step loop's thread."""
    while steps.is_alive():
        try:
            if not conn.poll(WATCH_SECONDS):  # a dead step loop is noticed this soon
                continue
            command = conn.recv()
        except (EOFError, OSError):
            break
        if command[0] == "shutdown":
            break
        if command[0] == "add" and command[3].grammar is not None:
            command = compiled(command, step_loop.engine)
        try:
            step_loop.submit(command)
        except RuntimeError:  # the step loop died; its process is ending
            break
    step_loop.stop()


def compiled(command: tuple, engine: LLMEngine) -> tuple:
    """An add command with its grammar's EBNF compiled by the compiler the server's schemas use (same tokenizer
    info, so the same masks); a grammar that does not compile becomes a reject that ends the request."""
    from fleetserve.engine.structured_output import grammar_compiler  # xgrammar: only once a grammar comes

    _, request_id, tokens, params, _ = command
    try:
        compiler = grammar_compiler(engine.tokenizer, engine.vocab_size, tuple(sorted(engine.loaded.eos_token_ids)))
        params.grammar = compiler.compiler.compile_grammar(params.grammar)
    except Exception as error:  # noqa: BLE001 - this request's fault alone
        return ("reject", request_id, len(tokens), f"grammar: {error}")
    return command
