"""Next-token choice from logits: greedy, or temperature / top-k / top-p sampling from a per-request generator, so
a seeded request draws the same numbers whatever else shares its batch. Optional logprobs (of the model's raw
distribution, like vLLM) with the top alternatives."""

from dataclasses import dataclass

import torch

from fleetserve.engine.logits_processing import LogitsProcessors
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.structured_output import GrammarMasks


@dataclass
class SampledToken:
    token_id: int
    logprob: float | None = None  # set when logprobs were requested
    top: list[tuple[int, float]] | None = None  # (token id, logprob), best first
    error: str | None = None  # this row's sampling failed: its request fails alone, the token is a placeholder


class SampledBatch:
    """A step's sampled tokens: `tokens` (on the model's device, one per row) can feed the next step at once;
    `result()` brings them (and any logprobs) to the host, waiting for the device only then."""

    def __init__(self, tokens: torch.Tensor, read_back):
        self.tokens = tokens
        self._read_back = read_back
        self._result: list[SampledToken] | None = None

    def result(self) -> list[SampledToken]:
        if self._result is None:
            self._result = self._read_back()
        return self._result


def host_tensor(values: list, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


class Sampler:
    def __init__(self, device: torch.device):
        self.device = device
        self.generators: dict[str, torch.Generator] = {}
        self.processors = LogitsProcessors(device)
        self.grammars = GrammarMasks(device)

    def add(self, request_id: str, params: SamplingParams, prompt_token_ids: list[int]) -> None:
        self.grammars.add(request_id, params.grammar)  # first: the one that may raise (a grammar worker gone)
        generator = torch.Generator(device=self.device)
        if params.seed is None:
            generator.seed()
        else:
            generator.manual_seed(params.seed)
        self.generators[request_id] = generator
        self.processors.add(request_id, params, prompt_token_ids)

    def remove(self, request_id: str) -> None:
        self.generators.pop(request_id, None)
        self.processors.remove(request_id)
        self.grammars.remove(request_id)

    def sample(self, logits: torch.Tensor, request_ids: list[str], params: list[SamplingParams]) -> list[SampledToken]:
        return self.sample_async(logits, request_ids, params).result()

    def sample_async(self, logits: torch.Tensor, request_ids: list[str], params: list[SamplingParams]
                     ) -> SampledBatch:
        """logits: float32 [n, vocab], one row per request, in the order of `request_ids`. On the CPU the work is
        done before this returns."""
        if not request_ids:
            return SampledBatch(torch.empty(0, dtype=torch.long, device=logits.device), list)
        out = self._sample(logits, request_ids, params)
        tokens = torch.tensor([t.token_id for t in out], dtype=torch.long, device=logits.device)
        self.processors.record(tokens, request_ids)
        batch = SampledBatch(tokens, lambda: out)
        self.grammars.record(batch, request_ids)
        return batch

    def _sample(self, logits: torch.Tensor, request_ids: list[str], params: list[SamplingParams]
                ) -> list[SampledToken]:
        # logprobs stay those of the model's raw distribution (vLLM's default); the choice uses the adjusted one
        logprobs = torch.log_softmax(logits, -1) if any(p.logprobs is not None for p in params) else None
        logits = self.processors.apply(logits, request_ids, host_tensor)
        logits = self.grammars.apply(logits, request_ids, host_tensor)
        greedy_ids = logits.argmax(-1).tolist()
        out = []
        for row, (request_id, p) in enumerate(zip(request_ids, params)):
            try:  # one request's fault must not cost the rest of the batch its tokens
                out.append(self._sample_row(row, greedy_ids, logprobs, logits, p, self.generators[request_id]))
            except Exception as exc:
                out.append(SampledToken(0, error=f"sampling failed: {exc}"))
        return out

    def _sample_row(self, row: int, greedy_ids: list[int], logprobs: torch.Tensor | None, logits: torch.Tensor,
                    p: SamplingParams, generator: torch.Generator) -> SampledToken:
        token = greedy_ids[row] if p.greedy else self._draw(logits[row], p, generator)
        sampled = SampledToken(token)
        if p.logprobs is not None:
            sampled.logprob = logprobs[row, token].item()
            if p.logprobs > 0:
                values, ids = logprobs[row].topk(p.logprobs)
                sampled.top = list(zip(ids.tolist(), values.tolist()))
        return sampled

    @staticmethod
    def _draw(logits: torch.Tensor, p: SamplingParams, generator: torch.Generator) -> int:
        return int(torch.multinomial(filtered_probs(logits, p), 1, generator=generator))


def filtered_probs(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Probabilities after temperature, then top-k, then top-p (the smallest set whose mass reaches top_p)."""
    logits = logits / p.temperature
    if 0 < p.top_k < logits.shape[-1]:
        kth = logits.topk(p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = logits.sort(descending=True)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs
        drop = mass_before >= p.top_p  # the token that crosses top_p stays
        drop[0] = False  # and the best always does, even for a top_p that float32 rounds to 0
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return logits.softmax(-1)
