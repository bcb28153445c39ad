"""A mixed step (decodes sharing a step with prefill chunks, the common step while requests queue): the runner lays
out its one-token rows first, so attention batches them, and still returns logits in the scheduler's order, each
row what that sequence gets alone."""

import random

import torch

from fleetserve.engine.model_runner import decodes_first
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.sequence import Sequence


def test_decodes_first_keeps_the_order_within_each_kind():
    seqs = [Sequence(str(i), [1] * 50, SamplingParams()) for i in range(5)]
    for seq, n in zip(seqs, [12, 1, 10, 1, 1]):
        seq.num_new_tokens = n
    assert decodes_first(seqs) == ([seqs[1], seqs[3], seqs[4], seqs[0], seqs[2]], 3)


def run(engine, steps):
    """steps: (seq, tokens to compute) pairs of one step, in the scheduler's order; returns that step's logits."""
    for seq, n in steps:
        engine.block_manager.allocate(seq, n)
        seq.num_new_tokens = n
    seqs = [seq for seq, _ in steps]
    logits = engine.runner.run(seqs)
    for seq in seqs:
        seq.num_computed_tokens += seq.num_new_tokens
        seq.num_new_tokens = 0
    return logits


def test_mixed_step_logits_in_scheduler_order_equal_each_alone(make_engine):
    engine = make_engine(enable_prefix_caching=False)
    rng = random.Random(0)
    prompts = {name: [rng.randrange(1000, 40000) for _ in range(n)]
               for name, n in [("fresh", 12), ("decode1", 20), ("chunk", 40), ("decode2", 33)]}
    seqs = {name: Sequence(name, ids, SamplingParams()) for name, ids in prompts.items()}
    run(engine, [(seqs["decode1"], 19), (seqs["chunk"], 16), (seqs["decode2"], 32)])

    mixed = run(engine, [(seqs["fresh"], 12), (seqs["decode1"], 1), (seqs["chunk"], 10), (seqs["decode2"], 1)])

    assert mixed.shape[0] == 3  # the chunk does not reach its prompt's end: no logits
    for row, name in enumerate(["fresh", "decode1", "decode2"]):
        alone = Sequence(f"{name}-alone", prompts[name], SamplingParams())
        torch.testing.assert_close(mixed[row], run(engine, [(alone, len(alone))])[0], rtol=1e-4, atol=1e-4)
