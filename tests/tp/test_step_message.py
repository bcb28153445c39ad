"""A step message carries what every rank's runner reads of a scheduled sequence, and no more."""

import pytest

from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.sequence import Sequence
from fleetserve.engine.step_broadcast import step_message, step_seqs


def scheduled(tokens: list[int], computed: int, new: int, blocks: list[int]) -> Sequence:
    seq = Sequence("r", tokens, SamplingParams())
    seq.num_computed_tokens, seq.num_new_tokens, seq.block_table = computed, new, blocks
    return seq


@pytest.mark.parametrize("computed, new", [(0, 10), (4, 3), (9, 1)])  # prefill, a prefill chunk, a decode
def test_other_ranks_see_what_the_runner_reads(computed, new):
    seq = scheduled(list(range(100, 110)), computed, new, [7, 3])
    (copy,) = step_seqs(step_message([seq]))
    end = computed + new
    assert copy.token_ids[computed:end] == seq.token_ids[computed:end]
    assert (copy.request_id, copy.num_computed_tokens, copy.num_new_tokens, copy.block_table) == ("r", computed, new,
                                                                                                 [7, 3])
    assert (len(copy), copy.samples_after_step()) == (len(seq), seq.samples_after_step())
    if seq.samples_after_step():
        assert copy.token_ids[-1] == seq.token_ids[-1]


def test_only_this_steps_tokens_travel():
    seq = scheduled(list(range(1000)), 999, 1, list(range(63)))
    (entry,) = step_message([seq])
    assert entry[2] == [999]


def test_reading_cached_positions_raises():
    (copy,) = step_seqs(step_message([scheduled(list(range(10)), 4, 3, [0])]))
    with pytest.raises(IndexError, match="only positions 4..6 are known on this rank"):
        copy.token_ids[0:7]
    with pytest.raises(IndexError):
        copy.token_ids[2]
