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
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from every token already generated
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per occurrence in the generated tokens
    repetition_penalty: float = 1.0  # vLLM's: divides positive (multiplies negative) logits of prompt+output tokens
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit
    grammar: object | None = None  # a compiled grammar (structured_output.py) the output must follow

    @property
    def adjusts_logits(self) -> bool:
        """Whether this request's logits change before sampling (so the sampler keeps state for it)."""
        return bool(self.logit_bias or self.presence_penalty or self.frequency_penalty
                    or self.repetition_penalty != 1.0)

    @property
    def greedy(self) -> bool:
        # like vLLM: a temperature this small is argmax anyway, and dividing by it would overflow the logits
        return self.temperature < 1e-5
