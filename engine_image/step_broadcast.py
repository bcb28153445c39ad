"""Both ends of a tensor-parallel step: rank 0 (which owns the scheduler and the block manager) sends what its
runner is about to compute, and every other rank rebuilds just enough of each scheduled sequence to run the same
step on its own shard of the model and the KV cache.

A step message is one tuple per scheduled sequence: (its request id, tokens already in the cache, the tokens this
step computes, the sequence's length, its block table, whether the step ends at its last token). The GPU runner
keeps each request's block table between steps by its id. Only the new tokens travel, so a
message stays small however long the sequences grow.
"""

import logging

import torch

from fleetserve.engine import distributed
from fleetserve.engine.sequence import Sequence

log = logging.getLogger(__name__)


def step_message(seqs: list[Sequence]) -> list[tuple]:
    message = []
    for seq in seqs:
        start, end = seq.num_computed_tokens, seq.num_computed_tokens + seq.num_new_tokens
        message.append((seq.request_id, start, seq.token_ids[start:end], len(seq), list(seq.block_table),
                        seq.samples_after_step()))
    return message


class StepTokens:
    """A sequence's token ids as far as another rank knows them: only the ones this step computes (the ones before
    are in the KV cache already). That is all a runner reads; reading anything else raises instead of silently
    computing on made-up ids."""

    def __init__(self, start: int, tokens: list[int]):
        self.start, self.tokens = start, tokens

    def __len__(self) -> int:
        return self.start + len(self.tokens)

    def __getitem__(self, index: int | slice):
        if isinstance(index, slice):
            first, stop, step = index.indices(len(self))
            if step != 1 or (first < self.start and stop > first):
                raise IndexError(f"only positions {self.start}..{len(self) - 1} are known on this rank")
            return self.tokens[max(first - self.start, 0):max(stop - self.start, 0)]
        position = index + len(self) if index < 0 else index
        if not self.start <= position < len(self):
            raise IndexError(f"only positions {self.start}..{len(self) - 1} are known on this rank")
        return self.tokens[position - self.start]


class StepSeq:
    """A scheduled sequence as a runner on another rank sees it."""

    num_pending = 0  # tensor-parallel steps are not overlapped: every token is known when a step is sent

    def __init__(self, request_id: str, start: int, new_tokens: list[int], length: int, block_table: list[int],
                 samples: bool):
        self.request_id = request_id
        self.num_computed_tokens = start
        self.num_new_tokens = len(new_tokens)
        self.token_ids = StepTokens(start, new_tokens)
        self.block_table = block_table
        self._length = length
        self._samples = samples

    def __len__(self) -> int:
        return self._length

    def samples_after_step(self) -> bool:
        return self._samples


def step_seqs(message: list[tuple]) -> list[StepSeq]:
    return [StepSeq(*entry) for entry in message]


class LeaderRunner:
    """Rank 0's runner: sends each step to the other ranks, then runs its own shard (the logits come back whole,
    gathered by the LM head). A step that fails after it was sent leaves the ranks out of step, so it fails the
    group for good; the health check then reports the replica unhealthy and Kubernetes restarts it."""

    def __init__(self, runner):
        if distributed.tp_size() == 1:
            raise RuntimeError("tensor_parallel_size > 1 needs its group first: start it with "
                               "tp_launch.leader_group, as `fleetserve serve` does")
        self.runner = runner
        self.device = runner.device
        self.num_blocks = distributed.min_over_ranks(runner.num_blocks)

    def run(self, seqs: list[Sequence], pending_tokens: torch.Tensor | None = None) -> torch.Tensor:
        failure = distributed.group_failure()
        if failure is not None:
            raise RuntimeError(f"tensor-parallel group failed: {failure}")
        try:
            distributed.broadcast_step(step_message(seqs))
            return self.runner.run(seqs, pending_tokens)
        except Exception as exc:
            distributed.fail_group(f"a step failed on rank 0: {exc}")
            raise


def follow_steps(runner) -> None:
    """Every other rank: runs the steps rank 0 sends until it sends None. Raises when rank 0 is gone."""
    distributed.min_over_ranks(runner.num_blocks)
    while (message := distributed.receive_step()) is not None:
        runner.run(step_seqs(message))
    log.info("rank %d: rank 0 stopped the group", distributed.tp_rank())
