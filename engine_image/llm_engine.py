"""The synchronous engine loop: add requests, then each `step` schedules, runs the model, samples, detokenises
and reports what every request produced. Not thread-safe: one thread drives it (see async_engine)."""

import dataclasses
import logging
import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass

from fleetserve.engine import loader
from fleetserve.engine.block_manager import BlockManager
from fleetserve.engine.config import EngineConfig
from fleetserve.engine.detokenizer import IncrementalDetokenizer, token_text
from fleetserve.engine.model_runner import ModelRunner
from fleetserve.engine.outputs import EngineStats, RequestOutput, TokenLogprob
from fleetserve.engine.sampler import SampledBatch, SampledToken, Sampler
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.scheduler import Scheduler
from fleetserve.engine.sequence import PENDING_TOKEN, Sequence, SequenceStatus
from fleetserve.engine.step_broadcast import LeaderRunner

log = logging.getLogger(__name__)
ENDED_ROW = SamplingParams(temperature=0.0)  # a row whose request ended while its token was being computed


def build_runner(model, config: EngineConfig) -> ModelRunner:
    """The runner of one rank; tensor-parallel ranks other than 0 build theirs here too, so all run the same code.
    On a GPU: the Triton / CUDA-graph runner (imported only there, so the CPU path never needs Triton)."""
    if next(model.parameters()).device.type == "cuda":
        from fleetserve.engine.gpu_model_runner import GPUModelRunner

        return GPUModelRunner(model, config)
    return ModelRunner(model, config)


def build_sampler(device):
    if device.type == "cuda":
        from fleetserve.engine.gpu_sampler import GpuSampler

        return GpuSampler(device)
    return Sampler(device)


@dataclass
class _Request:
    seq: Sequence
    detokenizer: IncrementalDetokenizer


@dataclass
class _LaunchedStep:
    """A step whose work is queued on the device: what it computes, and where its sampled tokens go."""

    scheduled: list[Sequence]
    sampling: list[Sequence]
    positions: list[int]  # index in each sampling sequence's token_ids that its new token fills
    sampled: SampledBatch | None  # None while the sampling waits (see LLMEngine._launch)
    logits: "torch.Tensor | None" = None  # kept for that sampling


def validate_request(prompt_token_ids: list[int], params: SamplingParams, max_model_len: int, vocab_size: int) -> None:
    """Raises ValueError naming the field when an engine of these settings cannot serve this request."""
    if not prompt_token_ids:
        raise ValueError("prompt: must not be empty")
    if len(prompt_token_ids) >= max_model_len:
        raise ValueError(f"prompt: {len(prompt_token_ids)} tokens leave no room to generate within "
                         f"max_model_len {max_model_len}")
    if min(prompt_token_ids) < 0 or max(prompt_token_ids) >= vocab_size:
        raise ValueError(f"prompt: token ids must be in [0, {vocab_size})")
    if params.max_tokens < 1:
        raise ValueError("max_tokens: must be >= 1")
    if params.temperature < 0:
        raise ValueError("temperature: must be >= 0")
    if not 0 < params.top_p <= 1:
        raise ValueError("top_p: must be in (0, 1]")
    if params.top_k < 0:
        raise ValueError("top_k: must be >= 0 (0 means off)")


class LLMEngine:
    def __init__(self, config: EngineConfig, loaded: loader.LoadedModel | None = None):
        """`loaded` lets several engines (tests, benchmarks) share one set of weights."""
        self.config = config = config.with_device_defaults()
        self.loaded = loaded or loader.load(config)
        self.tokenizer = self.loaded.tokenizer
        token_text(self.tokenizer)  # per-token texts built now, not in the first request's time to first token
        self.model_name = config.served_model_name
        self.runner = build_runner(self.loaded.model, config)
        if config.tensor_parallel_size > 1:  # rank 0 of a group: every step goes to the other ranks too
            self.runner = LeaderRunner(self.runner)
        self.max_model_len = self._max_model_len()
        self.block_manager = BlockManager(self.runner.num_blocks, config.block_size, config.enable_prefix_caching)
        admission = {}
        if self.runner.device.type == "cuda":  # decode-only steps replay CUDA graphs there (Scheduler's docstring)
            admission = dict(admission_batch=max(1, config.max_num_seqs // 16), admission_wait_steps=12)
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs, config.max_num_batched_tokens,
                                   **admission)
        self.sampler = build_sampler(self.runner.device)
        self.vocab_size = int(self.loaded.hf_config.vocab_size)
        self.requests: dict[str, _Request] = {}
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.overlap = config.overlap_steps_on(self.runner.device)
        self._in_flight: _LaunchedStep | None = None

    def _max_model_len(self) -> int:
        model_len = self.loaded.max_position
        wanted = self.config.max_model_len or model_len
        if wanted > model_len:
            raise ValueError(f"max_model_len {wanted} exceeds the model's context length {model_len}")
        capacity = self.runner.num_blocks * self.config.block_size
        if wanted > capacity:
            raise ValueError(f"max_model_len {wanted} does not fit the KV cache ({capacity} tokens); lower "
                             "max_model_len or give the cache more memory")
        return wanted

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                    arrival: float | None = None) -> None:
        if request_id in self.requests:
            raise ValueError(f"request_id: {request_id!r} is already running")
        self.validate(prompt_token_ids, params)
        seq = Sequence(request_id, prompt_token_ids, params, arrival)
        request = _Request(seq, IncrementalDetokenizer(self.tokenizer, prompt_token_ids, params.stop))
        self.sampler.add(request_id, params, prompt_token_ids)  # the last step that may raise: nothing is half-added
        self.requests[request_id] = request
        self.scheduler.add(seq)

    def validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        validate_request(prompt_token_ids, params, self.max_model_len, self.vocab_size)

    def abort(self, request_id: str, error: str | None = None) -> RequestOutput | None:
        """Ends the request now and frees its blocks; returns its final output (None if unknown)."""
        request = self.requests.get(request_id)
        if request is None:
            return None
        out = self._output(request.seq, [], "", None)
        self._finish(request.seq, "abort", out)
        out.error = error
        return out

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def step(self, after_launch=None) -> list[RequestOutput]:
        """Runs one step and returns what the requests produced. With overlapped steps (on a GPU), the step
        launched here runs on the device while the host reads back and detokenises the step before it, so the
        outputs returned are that earlier step's; the host's per-token work then costs no GPU time.
        `after_launch`: called once the step's work is queued, before the read back waits for the device."""
        launched, failed = self._launch(self._in_flight.sampled.tokens if self._in_flight else None)
        if after_launch is not None:
            after_launch()
        if self.overlap:
            done, self._in_flight = self._in_flight, launched
        else:
            done = launched
        outputs = failed + (self._read_back(done) if done is not None else [])
        if launched is not None and launched.sampled is None:
            outputs += self._sample_waiting(launched)
        return outputs

    def _launch(self, pending_tokens) -> tuple[_LaunchedStep | None, list[RequestOutput]]:
        """Schedules and queues a step (model, then sampling); each sampling sequence gets a placeholder for its
        token, so the next step can be scheduled before the token is read back."""
        scheduled = self.scheduler.schedule()
        if not scheduled:
            return None, []
        sampling = [seq for seq in scheduled if seq.samples_after_step()]
        request_ids = [s.request_id for s in sampling]
        try:
            logits = self.runner.run(scheduled, pending_tokens)
            # With overlapped steps, a batch holding a constrained request samples only after the host has read
            # back the step before (step()): its masks need that step's tokens, and the grammar workers accept
            # them and fill the masks meanwhile, so that the masks and the host's per-token work run side by side
            waits = self.overlap and self.sampler.grammars.prepare(request_ids, logits.shape[-1])
            sampled = None if waits else self.sampler.sample_async(logits, request_ids, [s.params for s in sampling])
        except Exception as exc:  # a fault fails this step's requests, the engine stays usable
            return None, self._fail_step(scheduled, exc)
        self.scheduler.advance(scheduled)
        positions = []
        for row, seq in enumerate(sampling):
            positions.append(len(seq.token_ids))
            seq.token_ids.append(PENDING_TOKEN)
            seq.num_pending += 1
            seq.pending_row = row
            seq.final_token_pending = self._at_length_limit(seq, len(seq))
        return _LaunchedStep(scheduled, sampling, positions, sampled, None if sampled else logits), []

    def _sample_waiting(self, step: _LaunchedStep) -> list[RequestOutput]:
        """Queues the sampling of a launched step that waited for the read back of the step before. A request
        that ended in that read back has left the sampler: its row is sampled greedily and its token dropped."""
        params = [s.params if s.status != SequenceStatus.FINISHED else ENDED_ROW for s in step.sampling]
        logits, step.logits = step.logits, None
        try:
            step.sampled = self.sampler.sample_async(logits, [s.request_id for s in step.sampling], params)
        except Exception as exc:
            self._in_flight = None
            return self._fail_step([seq for seq in step.scheduled if seq.status != SequenceStatus.FINISHED], exc)
        return []

    def _read_back(self, step: _LaunchedStep) -> list[RequestOutput]:
        """Waits for a launched step's tokens, then appends them: text, stop checks, finished requests."""
        try:
            tokens = step.sampled.result()
        except Exception as exc:
            live = [seq for seq in step.scheduled if seq.status != SequenceStatus.FINISHED]
            return self._fail_step(live, exc)
        outputs = []
        for seq, position, token in zip(step.sampling, step.positions, tokens):
            seq.token_ids[position] = token.token_id
            seq.num_pending -= 1
            if seq.status != SequenceStatus.FINISHED:  # else it ended (stop, abort) while this step ran
                outputs.append(self._append_or_fail(seq, position, token))
        for seq in step.scheduled:
            if seq.status != SequenceStatus.FINISHED:
                self.block_manager.commit(seq)
        return outputs

    def _fail_step(self, scheduled: list[Sequence], exc: Exception) -> list[RequestOutput]:
        log.error("engine step failed; aborting its %d requests", len(scheduled), exc_info=exc)
        return [self.abort(seq.request_id, error=f"engine step failed: {exc}") for seq in scheduled
                if seq.request_id in self.requests]

    def _append_or_fail(self, seq: Sequence, position: int, sampled: SampledToken) -> RequestOutput:
        """A fault in one request's sampling, detokenising or stop matching ends that request alone, with its
        reason; the rest of the batch carries on."""
        error = sampled.error
        if error is None:
            try:
                return self._append(seq, position, sampled)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
        log.error("request %s failed: %s", seq.request_id, error)
        return self.abort(seq.request_id, error=error)

    def _append(self, seq: Sequence, position: int, sampled: SampledToken) -> RequestOutput:
        """The token at `position` of the sequence has been read back."""
        token = sampled.token_id
        self.generation_tokens += 1
        if seq.timings.first_token is None:
            seq.timings.first_token = time.monotonic()
            self.prompt_tokens += seq.num_prompt_tokens
        params = seq.params
        detokenizer = self.requests[seq.request_id].detokenizer
        reason, text = None, ""
        if token in params.stop_token_ids or (not params.ignore_eos and token in self.loaded.eos_token_ids):
            reason, text = "stop", detokenizer.flush()  # the stop token itself is never text
        else:
            detokenizer.add_token(token)
            text, hit_stop_string = detokenizer.take()
            if hit_stop_string:
                reason = "stop"
            elif self._at_length_limit(seq, position + 1):
                reason, text = "length", text + detokenizer.flush()
        out = self._output(seq, [token], text, self._logprobs(sampled, params))
        if reason is not None:
            self._finish(seq, reason, out)
        return out

    def _at_length_limit(self, seq: Sequence, length: int) -> bool:
        """Whether the sequence, at `length` tokens, may generate no more (max_tokens or the context length)."""
        return length - seq.num_prompt_tokens >= seq.params.max_tokens or length >= self.max_model_len

    def _output(self, seq: Sequence, new_ids: list[int], text: str, logprobs) -> RequestOutput:
        return RequestOutput(request_id=seq.request_id, new_token_ids=new_ids, new_text=text, finished=False,
                             finish_reason=None, prompt_tokens=seq.num_prompt_tokens,
                             completion_tokens=seq.num_output_tokens, logprobs=logprobs)

    def _finish(self, seq: Sequence, reason: str, out: RequestOutput) -> None:
        self.scheduler.finish(seq, reason)
        self.sampler.remove(seq.request_id)
        del self.requests[seq.request_id]
        seq.timings.finished = time.monotonic()
        out.finished, out.finish_reason, out.timings = True, reason, seq.timings

    def _logprobs(self, sampled: SampledToken, params: SamplingParams) -> list[TokenLogprob] | None:
        if params.logprobs is None:
            return None
        text = lambda t: self.tokenizer.decode([t])  # noqa: E731
        top = {text(t): lp for t, lp in (sampled.top or [])}
        return [TokenLogprob(sampled.token_id, text(sampled.token_id), sampled.logprob, top)]

    def stats(self) -> EngineStats:
        return EngineStats(
            num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting),
            kv_cache_usage=self.block_manager.usage, prefix_cache_queries=self.block_manager.prefix_queries,
            prefix_cache_hits=self.block_manager.prefix_hits, num_preemptions=self.scheduler.num_preemptions,
            prompt_tokens=self.prompt_tokens, generation_tokens=self.generation_tokens)

    def generate(self, prompts: Seq[str] | Seq[list[int]], params: SamplingParams | Seq[SamplingParams]
                 ) -> list[RequestOutput]:
        """Runs the prompts to completion together; one merged output per prompt (all tokens, all text)."""
        params_list = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        ids = [f"generate-{i}" for i in range(len(prompts))]
        token_ids = [self.tokenizer.encode(p) if isinstance(p, str) else p for p in prompts]
        for tokens, p in zip(token_ids, params_list):  # all or nothing: no half-added batch on a bad prompt
            self.validate(tokens, p)
        for request_id, tokens, p in zip(ids, token_ids, params_list):
            self.add_request(request_id, tokens, p)
        merged = {i: _Merged() for i in ids}
        while self.scheduler.has_work() or self._in_flight is not None:
            for out in self.step():
                merged[out.request_id].add(out)
        return [merged[i].output() for i in ids]


class _Merged:
    """One request's step outputs, gathered into one: token ids and text pieces are appended as they come and
    joined once at the end (re-building the whole list and string every step is quadratic in the output length,
    which an offline run of long outputs feels)."""

    def __init__(self):
        self.token_ids: list[int] = []
        self.texts: list[str] = []
        self.logprobs: list[TokenLogprob] | None = None
        self.last: RequestOutput | None = None

    def add(self, out: RequestOutput) -> None:
        self.token_ids += out.new_token_ids
        self.texts.append(out.new_text)
        if out.logprobs is not None:
            if self.logprobs is None:
                self.logprobs = []
            self.logprobs += out.logprobs
        self.last = out

    def output(self) -> RequestOutput:
        return dataclasses.replace(self.last, new_token_ids=self.token_ids, new_text="".join(self.texts),
                                   logprobs=self.logprobs)
