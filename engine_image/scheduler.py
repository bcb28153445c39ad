"""Continuous batching policy: which sequences run this step and how many tokens each computes.

Every step first continues the running sequences in order (a decode is one token, an unfinished prompt its next
chunk), then admits waiting ones while the token budget, `max_num_seqs` and free blocks allow; a long prompt is
split across steps (chunked prefill) and shares steps with decodes. When blocks run out the newest running
sequence is preempted by recompute: its blocks are freed and it goes back to the front of `waiting`, keeping every
token it generated, so it later resumes exactly where it was. Never touches tensors.
"""

import time
from collections import deque

from fleetserve.engine.block_manager import BlockManager
from fleetserve.engine.sequence import Sequence, SequenceStatus


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int,
                 admission_batch: int = 1, admission_wait_steps: int = 0):
        """`admission_batch`, `admission_wait_steps`: while the batch is full but for fewer than `admission_batch`
        free places and every sequence scheduled is decoding, waiting sequences are admitted only once that many
        places are free or after `admission_wait_steps` steps of waiting. On a GPU a step of decodes alone replays
        a CUDA graph while a step with a prompt in it runs eagerly, launch by launch, which costs the host ~20 ms
        for a small model: behind a long queue, where one or two places free up every step, admitting each
        prompt at once made every step an eager one. 1 and 0: every free place is filled at once."""
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.admission_batch = admission_batch
        self.admission_wait_steps = admission_wait_steps
        self._admission_deferred = 0  # consecutive steps that held admission back
        self.waiting: deque[Sequence] = deque()
        self.running: deque[Sequence] = deque()
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[Sequence]:
        """Sequences for this step, in batch order, each with `num_new_tokens` set and blocks allocated."""
        budget = self.max_num_batched_tokens
        scheduled: list[Sequence] = []
        preempted = False
        index = 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            if seq.final_token_pending:  # its last token is on the way; it ends when that is read back
                index += 1
                continue
            num_new = min(len(seq) - seq.num_computed_tokens, budget)
            while not self.block_manager.can_allocate(seq, num_new):
                victim = self.running.pop()  # newest first; those before `index` are already scheduled
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                self._schedule(seq, num_new, scheduled)
                budget -= num_new
                index += 1
                continue
            break
        if self._defer_admission(scheduled, preempted):
            return scheduled
        while not preempted and self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if seq.num_pending:  # preempted with a token still on its way: resume once it is known
                break
            prefix = self.block_manager.lookup_prefix(seq)
            num_new = min(len(seq) - len(prefix) * self.block_manager.block_size, budget)
            if not self.block_manager.can_allocate(seq, num_new, prefix):
                break
            self.waiting.popleft()
            self.block_manager.allocate(seq, num_new, prefix)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            seq.num_new_tokens = num_new
            scheduled.append(seq)
            budget -= num_new
            if seq.timings.first_scheduled is None:
                seq.timings.first_scheduled = time.monotonic()
        return scheduled

    def _defer_admission(self, scheduled: list[Sequence], preempted: bool) -> bool:
        """Whether this step admits no waiting sequence (see `admission_batch`)."""
        free = self.max_num_seqs - len(self.running)
        if (preempted or not self.waiting or not scheduled or free == 0 or free >= self.admission_batch
                or self._admission_deferred >= self.admission_wait_steps
                or any(seq.num_new_tokens != 1 for seq in scheduled)):
            self._admission_deferred = 0
            return False
        self._admission_deferred += 1
        return True

    def _schedule(self, seq: Sequence, num_new: int, scheduled: list[Sequence]) -> None:
        self.block_manager.allocate(seq, num_new)
        seq.num_new_tokens = num_new
        scheduled.append(seq)

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_new_tokens = 0
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def step_done(self, scheduled: list[Sequence]) -> None:
        """The step computed the scheduled tokens: their K/V are now cached."""
        self.advance(scheduled)
        for seq in scheduled:
            self.block_manager.commit(seq)

    @staticmethod
    def advance(scheduled: list[Sequence]) -> None:
        """The step that computes the scheduled tokens has been launched: later steps start after them (the GPU
        runs steps in launch order). Registering the new full blocks for prefix caching waits for `commit`."""
        for seq in scheduled:
            seq.num_computed_tokens += seq.num_new_tokens
            seq.num_new_tokens = 0

    def finish(self, seq: Sequence, reason: str) -> None:
        if seq.status == SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status == SequenceStatus.WAITING:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
