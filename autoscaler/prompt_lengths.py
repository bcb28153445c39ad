"""The prompt lengths a deployment serves, as the engines' `vllm:request_prompt_tokens` histogram tells them: the
distribution the prefill-queue model plans over (issue 13: not the mean, not one percentile).

The histogram gives how many prompts fell in each bucket. Within a bucket, lengths are taken as spread evenly in log
scale (density falling as 1 / length): the engine's buckets are spaced in log scale, and prompt lengths thin out
towards the long end of each (the linear spread of Prometheus' `histogram_quantile` would put as many prompts at a
bucket's top as at its bottom, and those are the prompts with least slack before the SLO).
"""

import dataclasses
import math
from collections.abc import Sequence

import numpy as np


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
        Prompts above the highest finite bound are spread up to one more step (the ratio of the last two
        bounds; a doubling if there is one): the engine's buckets grow by about the same ratio each step up to
        max_model_len, and no prompt reaches max_model_len."""
        ordered = sorted(cumulative)
        total = ordered[-1][1] if ordered else 0.0
        if not total > 0:
            return None
        finite = [bound for bound, _ in ordered if math.isfinite(bound) and bound > 0]
        step = finite[-1] / finite[-2] if len(finite) > 1 else 2.0
        buckets, low, below = [], 0.0, 0.0
        for bound, count in ordered:
            high = low * step if math.isinf(bound) and low > 0 else bound
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
