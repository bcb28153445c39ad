"""How one request wants its tokens chosen and when it stops. Validated by the server before it gets here."""

from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 (or below 1e-5) means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means off
    seed: int | None = None  # same seed, same prompt, same params -> same tokens, whatever the batch
    stop: list[str] = field(default_factory=list)  # stop strings; the matched string is not returned
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # None: off; k >= 0: the chosen token's logprob plus the top k alternatives

    @property
    def greedy(self) -> bool:
        # like vLLM: a temperature this small is argmax anyway, and dividing by it would overflow the logits
        return self.temperature < 1e-5
