"""What a request's logits go through before its token is chosen, shared by the CPU and GPU samplers: logit_bias,
then the repetition, frequency and presence penalties (vLLM's order). Each request that asks for any keeps its
counts of generated tokens as a tensor on the sampler's device, updated there from the sampled tokens, so the GPU
sampler never waits for the host; requests that ask for none cost nothing."""

from collections.abc import Callable

import torch

from fleetserve.engine.sampling_params import SamplingParams

# host values -> a tensor on the sampler's device (the GPU sampler's copy does not wait for the stream)
Upload = Callable[[list, torch.dtype], torch.Tensor]


class _History:
    def __init__(self, params: SamplingParams, prompt_token_ids: list[int]):
        self.params = params
        self.prompt_token_ids = prompt_token_ids
        self.counts: torch.Tensor | None = None  # [vocab] float32: times each token was generated
        self.in_prompt: torch.Tensor | None = None  # [vocab] bool, only for a repetition penalty

    def ensure(self, vocab: int, device: torch.device, upload: Upload) -> None:
        if self.counts is None:  # the vocabulary is the logits' width, first known at the first step
            self.counts = torch.zeros(vocab, dtype=torch.float32, device=device)
            if self.params.repetition_penalty != 1.0:
                self.in_prompt = torch.zeros(vocab, dtype=torch.bool, device=device)
                self.in_prompt[upload(self.prompt_token_ids, torch.long)] = True


class LogitsProcessors:
    def __init__(self, device: torch.device):
        self.device = device
        self.histories: dict[str, _History] = {}

    def add(self, request_id: str, params: SamplingParams, prompt_token_ids: list[int]) -> None:
        if params.adjusts_logits:
            self.histories[request_id] = _History(params, prompt_token_ids)

    def remove(self, request_id: str) -> None:
        self.histories.pop(request_id, None)

    def apply(self, logits: torch.Tensor, request_ids: list[str], upload: Upload) -> torch.Tensor:
        """logits [n, vocab] -> the same, with the rows of requests that adjust theirs adjusted (a copy then)."""
        rows = [row for row, rid in enumerate(request_ids) if rid in self.histories]
        if not rows:
            return logits
        histories = [self.histories[request_ids[row]] for row in rows]
        for history in histories:
            history.ensure(logits.shape[-1], logits.device, upload)
        index = upload(rows, torch.long)
        adjusted = adjust(logits.index_select(0, index), [h.params for h in histories],
                          torch.stack([h.counts for h in histories]),
                          [h.in_prompt for h in histories], upload)
        return logits.index_copy(0, index, adjusted)

    def record(self, tokens: torch.Tensor, request_ids: list[str]) -> None:
        """Counts each adjusting request's sampled token (tokens: [n] on the device, in the order of request_ids)."""
        for row, rid in enumerate(request_ids):
            history = self.histories.get(rid)
            if history is not None and history.counts is not None:
                history.counts.index_add_(0, tokens[row:row + 1], torch.ones(1, device=tokens.device))


def adjust(logits: torch.Tensor, params: list[SamplingParams], counts: torch.Tensor,
           in_prompt: list[torch.Tensor | None], upload: Upload) -> torch.Tensor:
    """logits, counts: [m, vocab]; one SamplingParams and prompt mask (or None) per row."""
    bias = [(row, token, value) for row, p in enumerate(params) for token, value in p.logit_bias.items()]
    if bias:
        rows, tokens, values = zip(*bias)
        logits = logits.index_put((upload(list(rows), torch.long), upload(list(tokens), torch.long)),
                                  upload(list(values), torch.float32), accumulate=True)
    repetition = [p.repetition_penalty for p in params]
    if any(r != 1.0 for r in repetition):
        seen = counts > 0  # vLLM's rule: prompt and output tokens alike
        for row, mask in enumerate(in_prompt):
            if mask is not None:
                seen[row] |= mask
        penalty = upload(repetition, torch.float32)[:, None]
        logits = torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)
    frequency = upload([p.frequency_penalty for p in params], torch.float32)[:, None]
    presence = upload([p.presence_penalty for p in params], torch.float32)[:, None]
    return logits - frequency * counts - presence * (counts > 0).float()
