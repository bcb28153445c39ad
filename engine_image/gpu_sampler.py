"""Next-token choice on the GPU for a whole batch at once, with the Sampler's API and semantics (greedy, or
temperature / top-k / top-p; seeded requests reproducible whatever their batch; optional logprobs of the raw
distribution). Every row is handled by batched tensor ops and one sampling launch; the results cross to the host
in a single copy, the step's one synchronisation.
"""

import functools
import random

import torch

from fleetserve.engine.kernels.sampling import greedy_argmax, gumbel_argmax
from fleetserve.engine.logits_processing import LogitsProcessors
from fleetserve.engine.sampler import SampledBatch, SampledToken
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.structured_output import GrammarMasks

_MASK63 = (1 << 63) - 1


def draw_seed(base: int, draw: int) -> int:
    """A distinct Philox key for each draw of a request (splitmix64's constants, kept to 63 bits for int64)."""
    z = (base + (draw + 1) * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) & _MASK63


def top_k_top_p_filter(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Per row: keep the top_k best (0: all), then the smallest set whose mass reaches top_p; others -> -inf.
    logits are already divided by the temperature."""
    vocab = logits.shape[-1]
    sorted_logits, order = logits.sort(-1, descending=True)
    ranks = torch.arange(vocab, device=logits.device)
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), vocab)
    drop = ranks[None, :] >= k[:, None]
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(-1)
    mass_before = probs.cumsum(-1) - probs
    drop |= mass_before >= top_p[:, None]  # the token that crosses top_p stays
    drop[:, 0] = False  # and each row's best always does, even for a top_p that float32 rounds to 0
    return logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))


def upload(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Host list -> device tensor without waiting for the GPU (a pageable copy would drain the stream)."""
    return torch.tensor(values, dtype=dtype).pin_memory().to(device, non_blocking=True)


class GpuSampler:
    def __init__(self, device: torch.device):
        self.device = device
        self.seeds: dict[str, int] = {}
        self.draws: dict[str, int] = {}
        self.processors = LogitsProcessors(device)
        self.grammars = GrammarMasks(device)

    def add(self, request_id: str, params: SamplingParams, prompt_token_ids: list[int]) -> None:
        self.grammars.add(request_id, params.grammar)  # first: the one that may raise (a grammar worker gone)
        self.seeds[request_id] = random.getrandbits(63) if params.seed is None else params.seed & _MASK63
        self.draws[request_id] = 0
        self.processors.add(request_id, params, prompt_token_ids)

    def remove(self, request_id: str) -> None:
        self.seeds.pop(request_id, None)
        self.draws.pop(request_id, None)
        self.processors.remove(request_id)
        self.grammars.remove(request_id)

    def sample(self, logits: torch.Tensor, request_ids: list[str], params: list[SamplingParams]) -> list[SampledToken]:
        return self.sample_async(logits, request_ids, params).result()

    def sample_async(self, logits: torch.Tensor, request_ids: list[str], params: list[SamplingParams]
                     ) -> SampledBatch:
        """logits: float32 [n, vocab] on the GPU, one row per request, in the order of `request_ids`. Returns once
        the work is queued; the host copy lands in pinned memory and `result()` waits for it."""
        if not request_ids:
            return SampledBatch(torch.empty(0, dtype=torch.long, device=self.device), list)
        want_logprobs = any(p.logprobs is not None for p in params)
        # logprobs stay those of the model's raw distribution (vLLM's default): taken before any adjustment
        logprobs = torch.log_softmax(logits, -1) if want_logprobs else None
        to_device = functools.partial(upload, device=self.device)
        logits = self.processors.apply(logits, request_ids, to_device)
        logits = self.grammars.apply(logits, request_ids, to_device)
        tokens = greedy_argmax(logits)
        sampled_rows = [i for i, p in enumerate(params) if not p.greedy]
        if sampled_rows:
            tokens = self._draw(logits, tokens, request_ids, params, sampled_rows)
        self.processors.record(tokens, request_ids)
        k = max((p.logprobs or 0) for p in params)
        packed = [tokens.float()[:, None]]  # ids < 2**24 are exact in float32
        if want_logprobs:
            packed.append(logprobs.gather(-1, tokens[:, None]))
            if k:
                values, ids = logprobs.topk(k, -1)
                packed += [values, ids.float()]
        packed = torch.cat(packed, -1) if len(packed) > 1 else packed[0]  # greedy alone: no copy
        host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
        host.copy_(packed, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()

        def read_back() -> list[SampledToken]:
            ready.synchronize()  # the one host sync of the step
            return self._unpack(host.tolist(), params, k)

        batch = SampledBatch(tokens, read_back)
        self.grammars.record(batch, request_ids)
        return batch

    @staticmethod
    def _unpack(host: list[list[float]], params: list[SamplingParams], k: int) -> list[SampledToken]:
        out = []
        for row, p in zip(host, params):
            token = SampledToken(int(row[0]))
            if p.logprobs is not None:
                token.logprob = row[1]
                if p.logprobs > 0:
                    top = zip(row[2 + k:2 + k + p.logprobs], row[2:2 + p.logprobs])
                    token.top = [(int(t), lp) for t, lp in top]
            out.append(token)
        return out

    def _draw(self, logits, greedy_tokens, request_ids, params, rows) -> torch.Tensor:
        sub = [params[i] for i in rows]
        seeds, inv_temps = [], []
        for i in rows:
            rid = request_ids[i]
            seeds.append(draw_seed(self.seeds[rid], self.draws[rid]))
            self.draws[rid] += 1
            inv_temps.append(1.0 / params[i].temperature)
        index = upload(rows, torch.long, self.device)
        chosen = logits.index_select(0, index)
        if any(p.top_k > 0 or p.top_p < 1.0 for p in sub):
            temps = upload([p.temperature for p in sub], torch.float32, self.device)
            top_k = upload([p.top_k for p in sub], torch.long, self.device)
            top_p = upload([p.top_p for p in sub], torch.float32, self.device)
            chosen = top_k_top_p_filter(chosen / temps[:, None], top_k, top_p)
            inv_temps = [1.0] * len(rows)
        drawn = gumbel_argmax(chosen.contiguous(), upload(seeds, torch.long, self.device),
                              upload(inv_temps, torch.float32, self.device))
        return greedy_tokens.index_copy(0, index, drawn)
