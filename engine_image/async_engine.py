"""The engine for an asyncio server. `StepLoop` runs `LLMEngine.step` back to back on one thread and hands each
step's outputs on; `RequestStreams` turns those outputs into one async stream per request on the event loop. Two
hosts put them together:
- `AsyncEngine` (here): the step loop on a thread of the server's own process (tests and benchmarks share loaded
  weights through it; tensor-parallel rank 0 uses it);
- `engine_process.EngineProcess`: the step loop in a process of its own, so the event loop and the engine never
  compete for one GIL (what `fleetserve serve` runs by default)."""

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable

from fleetserve.engine import distributed
from fleetserve.engine.config import EngineConfig
from fleetserve.engine.llm_engine import LLMEngine
from fleetserve.engine.loader import LoadedModel
from fleetserve.engine.outputs import EngineStats, RequestOutput
from fleetserve.engine.sampling_params import SamplingParams

log = logging.getLogger(__name__)

STREAM_INTERVAL_S = 0.03  # while COALESCE_FROM or more requests run, their tokens are handed over this often
COALESCE_FROM = 64


class StepLoop:
    """Drives one LLMEngine from the thread that calls `run`, the only thread that touches it. Requests and aborts
    arrive through a locked command list (`submit`, from any thread): ("add", id, tokens, params, arrival) |
    ("abort", id) | ("reject", id, prompt tokens, error), the last ending a request that never reached the engine.
    Outputs leave through `publish(outputs)`, called on the loop's thread."""

    def __init__(self, engine: LLMEngine, publish: Callable[[list[RequestOutput]], None]):
        self.engine = engine
        self._publish = publish
        self._lock = threading.Lock()
        self._commands: list[tuple] = []
        self._wake = threading.Event()
        self.stats = engine.stats()  # a snapshot the loop's thread refreshes; read from any thread
        self.adds_taken = 0  # add and reject commands taken off the list so far
        self.stopping = False
        self.failed = False
        self._closed = False  # the loop has exited and takes no more commands
        self._held: list[RequestOutput] = []  # a step's outputs waiting for the next launch (see run)
        self.stream_interval_s = STREAM_INTERVAL_S
        self._pending: dict[str, list[RequestOutput]] = {}  # outputs held back by the stream interval (_hand_over)
        self._last_flush = 0.0

    def queued_adds(self) -> int:
        with self._lock:
            return sum(1 for command in self._commands if command[0] != "abort")

    def submit(self, command: tuple) -> None:
        with self._lock:
            if self._closed:
                if command[0] == "abort":
                    return
                raise RuntimeError("engine is not running")
            self._commands.append(command)
        self._wake.set()

    def stop(self) -> None:
        """The loop ends after its current step; requests still in flight end with finish_reason "abort"."""
        self.stopping = True
        self._wake.set()

    def run(self) -> None:
        """With overlapped steps a step's outputs are handed over once the next step is launched, just before the
        read back waits for the device. Whoever receives them then renders and writes them while this thread waits
        with the GIL released, instead of competing with it for the GIL while it launches the next step (a launch
        is hundreds of short calls, each giving the GIL up and waiting to get it back)."""
        try:
            while not self.stopping:
                self._wake.clear()
                self._apply_commands()
                if not self.engine.has_unfinished_requests():
                    self._wake.wait()
                    continue
                if getattr(self.engine, "overlap", False):
                    outputs = self.engine.step(after_launch=self._publish_held)
                    self.stats = self.engine.stats()
                    self._held = outputs
                else:
                    outputs = self.engine.step()
                    self.stats = self.engine.stats()
                    self._hand_over(outputs)
                if not self.engine.has_unfinished_requests():  # no next launch: hand everything over now
                    self._publish_held()
                    self._flush_pending()
            self._close(None)
        except Exception:  # logged, not re-raised: the callers learn it from their final outputs and `failed`
            log.exception("engine step loop died")
            self.failed = True
            self._close("engine step loop died")

    def _publish_held(self) -> None:
        held, self._held = self._held, []
        self._hand_over(held)

    def _hand_over(self, outputs: list[RequestOutput]) -> None:
        """A step's outputs, handed on. While many requests run, a request's ordinary tokens are handed over at most
        every `stream_interval_s`, several tokens at once (as SGLang's --stream-interval does): each hand-over wakes
        every stream, and at a few hundred streams and tens of steps a second that work is the event loop's main
        load (in AsyncEngine it also competes for the GIL with this thread's launches). A request's first tokens,
        its last output and any error go at once, so time to first token and completion are not delayed."""
        now = time.monotonic()
        flush = len(outputs) < COALESCE_FROM or now - self._last_flush >= self.stream_interval_s
        ready = []
        for out in outputs:
            if flush or out.finished or out.error is not None or out.completion_tokens == len(out.new_token_ids):
                ready += self._pending.pop(out.request_id, ())
                ready.append(out)
            else:
                self._pending.setdefault(out.request_id, []).append(out)
        if flush:
            for earlier in self._pending.values():
                ready += earlier
            self._pending.clear()
            self._last_flush = now
        self._send(ready)

    def _flush_pending(self) -> None:
        ready = [out for earlier in self._pending.values() for out in earlier]
        self._pending.clear()
        self._send(ready)

    def _close(self, error: str | None) -> None:
        """Refuses new commands, then ends every request still known or still queued, so no caller waits forever."""
        self._publish_held()
        self._flush_pending()
        with self._lock:
            self._closed = True
            commands, self._commands = self._commands, []
        queued = [RequestOutput(c[1], [], "", True, "abort", len(c[2]), 0, error=error) for c in commands
                  if c[0] == "add"]
        queued += [RequestOutput(c[1], [], "", True, "abort", c[2], 0, error=c[3]) for c in commands
                   if c[0] == "reject"]
        outputs = queued + self._abort_all(error)
        try:
            self.stats = self.engine.stats()
        except Exception:  # engine state may be broken: the outputs still go out
            log.exception("engine stats unreadable while closing")
        self._send(outputs)

    def _abort_all(self, error: str | None) -> list[RequestOutput]:
        outputs = []
        for request_id, request in list(self.engine.requests.items()):
            try:
                outputs.append(self.engine.abort(request_id, error=error))
            except Exception:  # engine state may be broken: still release the caller
                outputs.append(RequestOutput(request_id, [], "", True, "abort", request.seq.num_prompt_tokens,
                                             request.seq.num_output_tokens, error=error))
        return outputs

    def _apply_commands(self) -> None:
        with self._lock:
            commands, self._commands = self._commands, []
        outputs = []
        for command in commands:
            if command[0] == "add":
                _, request_id, tokens, params, arrival = command
                try:
                    self.engine.add_request(request_id, tokens, params, arrival)
                except Exception as exc:  # validated before: a race, or a fault that is this request's alone
                    outputs.append(RequestOutput(request_id, [], "", True, "abort", len(tokens), 0, error=str(exc)))
            elif command[0] == "reject":
                _, request_id, num_prompt_tokens, error = command
                outputs.append(RequestOutput(request_id, [], "", True, "abort", num_prompt_tokens, 0, error=error))
            else:
                out = self.engine.abort(command[1])
                if out is not None:
                    outputs.append(out)
        self.adds_taken += sum(1 for command in commands if command[0] != "abort")
        self.stats = self.engine.stats()  # before the outputs go: an idle engine sends nothing after them
        self._send(outputs)

    def _send(self, outputs: list[RequestOutput]) -> None:
        if outputs:
            self._publish(outputs)


class RequestStreams:
    """The event loop's side of an engine: one asyncio queue per request, fed by `_deliver` with the outputs the
    step loop hands over. A host supplies `healthy`, `validate`, `_submit` and `_accepting`."""

    max_model_len: int
    vocab_size: int

    def __init__(self):
        self._streams: dict[str, asyncio.Queue] = {}  # touched only on the event loop

    def abort(self, request_id: str) -> None:
        self._submit(("abort", request_id))

    async def generate(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
                       ) -> AsyncIterator[RequestOutput]:
        """Outputs of one request as steps produce them; the last has finished=True. Raises ValueError (naming
        the field) for a request the engine cannot serve. Stopping the iteration early aborts the request."""
        if not self._accepting():
            raise RuntimeError("engine is not running")
        if request_id in self._streams:
            raise ValueError(f"request_id: {request_id!r} is already running")
        self.validate(prompt_token_ids, params)
        queue: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = queue
        finished = False
        try:
            self._submit(("add", request_id, list(prompt_token_ids), params, time.monotonic()))
            while not finished:
                out = await queue.get()
                while not out.finished and not queue.empty():  # the consumer fell behind: one output, not many
                    out = merged(out, queue.get_nowait())
                finished = out.finished
                yield out
        finally:
            self._streams.pop(request_id, None)
            if not finished:  # consumer went away (client disconnect, cancellation): free the blocks
                self.abort(request_id)

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            queue = self._streams.get(out.request_id)
            if queue is not None:
                queue.put_nowait(out)


class AsyncEngine(RequestStreams):
    """The step loop on a dedicated thread of this process (torch releases the GIL while it computes); each
    hand-over reaches the event loop with `call_soon_threadsafe`."""

    def __init__(self, config: EngineConfig, loaded: LoadedModel | None = None):
        super().__init__()
        self.engine = LLMEngine(config, loaded)
        self.tokenizer = self.engine.tokenizer
        self.model_name = self.engine.model_name
        self.max_model_len = self.engine.max_model_len
        self.vocab_size = self.engine.vocab_size
        self.eos_token_ids = self.engine.loaded.eos_token_ids  # what a finished grammar lets through
        self.block_size = self.engine.config.block_size
        self.step_loop = StepLoop(self.engine, self._publish)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def healthy(self) -> bool:
        if distributed.group_failure() is not None:  # a tensor-parallel rank is gone: restart the replica
            return False
        return not self.step_loop.failed and (self._thread is None or self._thread.is_alive()
                                              or self.step_loop.stopping)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self.step_loop.run, name="engine-step-loop", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        """Stops the step loop; requests still in flight end with finish_reason "abort"."""
        self.step_loop.stop()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)

    def stats(self) -> EngineStats:
        """The snapshot of the last step, with requests handed over since then counted as waiting."""
        stats = self.step_loop.stats
        return dataclasses.replace(stats, num_waiting=stats.num_waiting + self.step_loop.queued_adds())

    def validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        self.engine.validate(prompt_token_ids, params)

    def _accepting(self) -> bool:
        return self.healthy and not self.step_loop.stopping

    def _submit(self, command: tuple) -> None:
        self.step_loop.submit(command)

    def _publish(self, outputs: list[RequestOutput]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, outputs)


def merged(first: RequestOutput, then: RequestOutput) -> RequestOutput:
    """Two consecutive outputs of a request as one. Under load the event loop serves a request's queue less often
    than steps fill it; rendering and writing once per wake-up instead of once per token keeps it at engine speed."""
    logprobs = None if first.logprobs is None and then.logprobs is None else (first.logprobs or []) + (
        then.logprobs or [])
    return dataclasses.replace(then, new_token_ids=first.new_token_ids + then.new_token_ids,
                               new_text=first.new_text + then.new_text, logprobs=logprobs)
