"""The prompt lengths a deployment serves, as the engines' `vllm:request_prompt_tokens` histogram tells them: the
distribution the prefill-queue model plans over (issue 13: not the mean, not one percentile).

The histogram gives how many prompts fell in each bucket. Within a bucket, lengths are taken as spread evenly in log
scale (density falling as 1 / length): vLLM's 1-2-5 buckets are spaced in log scale, and prompt lengths thin out
towards the long end of each (the linear spread of Prometheus' `histogram_quantile` would put as many prompts at a
bucket's top as at its bottom, and those are the prompts with least slack before the SLO).
"""

import dataclasses
import math
from collections.abc import Sequence

import numpy as np


def _next_125_step(bound: float) -> float:
    """The 1-2-5 bucket bound after `bound` (2 -> 5 -> 10 -> 20)."""
    mantissa = bound / 10 ** math.floor(math.log10(bound))
    return bound * (2.5 if round(mantissa) == 2 else 2.0)


@dataclasses.dataclass(frozen=True)
class PromptLengths:
    """Buckets of prompt lengths: (shortest, longest tokens, share of prompts)."""

    buckets: tuple[tuple[float, float, float], ...]

    @classmethod
    def one_length(cls, tokens: float) -> "PromptLengths":
        """Every prompt `tokens` long: where the engine exports no prompt histogram, the mean prompt stands in."""
        return cls(((tokens, tokens, 1.0),))

    @classmethod
    def from_histogram(cls, cumulative: Sequence[tuple[float, float]]) -> "PromptLengths | None":
        """From a Prometheus histogram's cumulative (le, rate) pairs, +Inf included; None when it counted nothing.
        Prompts above the highest finite bound are spread up to the next 1-2-5 step: the engine's buckets run in
        1-2-5 steps up to max_model_len, and no prompt reaches max_model_len."""
        ordered = sorted(cumulative)
        total = ordered[-1][1] if ordered else 0.0
        if not total > 0:
            return None
        buckets, low, below = [], 0.0, 0.0
        for bound, count in ordered:
            high = _next_125_step(low) if math.isinf(bound) and low > 0 else bound
            share = max(0.0, count - below) / total
            if share > 0 and math.isfinite(high):
                buckets.append((low, high, share))
            low, below = (bound if math.isfinite(bound) else low), max(below, count)
        return cls(tuple(buckets)) if buckets else None

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` prompt lengths drawn from the distribution."""
        lows, highs, shares = (np.array(column) for column in zip(*self.buckets))
        picked = rng.choice(len(shares), size=count, p=shares / shares.sum())
        high = highs[picked]
        low = np.where(lows[picked] > 0, lows[picked], np.minimum(1.0, high))  # the first bucket, from 0: one token
        return low * (high / low) ** rng.random(count)
