"""One request's state inside the engine: its tokens, block table, how much of it is in the KV cache, and status."""

import enum
import time

from fleetserve.engine.outputs import RequestTimings
from fleetserve.engine.sampling_params import SamplingParams


PENDING_TOKEN = -1  # a sampled token still on its way from the GPU (see LLMEngine's overlapped steps)


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    def __init__(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                 arrival: float | None = None):
        if not prompt_token_ids:
            raise ValueError("prompt_token_ids: must not be empty")
        self.request_id = request_id
        self.token_ids = list(prompt_token_ids)  # prompt followed by every generated token
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []
        self.num_computed_tokens = 0  # tokens whose K/V are in the cache
        self.block_hashes: list[int] = []  # hash chain over the leading full blocks
        self.num_cached_blocks = 0  # leading blocks whose hash is known (registered with the prefix cache)
        self.num_new_tokens = 0  # scheduled for the current step
        self.num_pending = 0  # trailing PENDING_TOKEN placeholders: sampled, not yet read back
        self.pending_row = -1  # the last placeholder's row in the sampled-token tensor of the step that drew it
        self.final_token_pending = False  # the last placeholder is the last token it may generate (length limit)
        self.finish_reason: str | None = None
        self.timings = RequestTimings(arrival=time.monotonic() if arrival is None else arrival)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:len(self.token_ids) - self.num_pending]

    @property
    def num_output_tokens(self) -> int:
        """Generated tokens read back so far (placeholders not counted)."""
        return len(self.token_ids) - self.num_prompt_tokens - self.num_pending

    def samples_after_step(self) -> bool:
        """True when this step's tokens reach the end of the sequence, so the step yields its next token."""
        return self.num_computed_tokens + self.num_new_tokens == len(self.token_ids)
