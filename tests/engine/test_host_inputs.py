"""The GPU runner's host-side inputs. Block tables: after any history of steps, a gathered table equals the
sequences' own tables, padded; driven by the real scheduler and block manager, so tables grow, are shared through
the prefix cache, are replaced by preemption, and request ids come back after their request finished. A decode
step's staged rows: each sequence's last token, position, cache slot and length, and the padding rows."""

import random

import numpy as np

from fleetserve.engine.block_manager import BlockManager
from fleetserve.engine.host_inputs import BlockTableMirror, stage_decode
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.scheduler import Scheduler
from fleetserve.engine.sequence import PENDING_TOKEN, Sequence
from fleetserve.engine.step_broadcast import step_message, step_seqs

FILL = 999


def padded(seqs, width):
    """The table built from scratch: what the runner did before the mirror."""
    tables = np.full((len(seqs), width), FILL, np.int32)
    for row, seq in enumerate(seqs):
        k = min(width, len(seq.block_table))
        tables[row, :k] = seq.block_table[:k]
    return tables


def test_gathered_tables_equal_the_sequences_tables_through_growth_preemption_and_reused_ids():
    rng = random.Random(3)
    block_size, max_num_seqs = 4, 6
    sched = Scheduler(BlockManager(14, block_size), max_num_seqs, max_num_batched_tokens=12)
    mirror = BlockTableMirror(max_num_seqs, max_blocks=14, fill=FILL)
    prefix = list(range(100, 112))
    live = []
    for step in range(600):
        if rng.random() < 0.35 and len(live) < 9:
            prompt = prefix[:rng.randint(0, 12)] + [rng.randint(0, 50) for _ in range(rng.randint(1, 9))]
            seq = Sequence(f"r{rng.randint(0, 11)}", prompt, SamplingParams())  # ids come back once finished
            if all(s.request_id != seq.request_id for s in live):
                sched.add(seq)
                live.append(seq)
        scheduled = sched.schedule()
        if scheduled:
            width = -(-max(s.num_computed_tokens + s.num_new_tokens for s in scheduled) // block_size)
            out = np.full((max_num_seqs + 2, width), -1, np.int32)
            mirror.gather(scheduled, width, out)
            np.testing.assert_array_equal(out[:len(scheduled)], padded(scheduled, width), err_msg=f"step {step}")
            assert (out[len(scheduled):] == -1).all()  # rows past the batch are the caller's
        sampling = [s for s in scheduled if s.samples_after_step()]
        sched.step_done(scheduled)
        for seq in sampling:
            seq.token_ids.append(rng.randint(0, 50))
        for seq in list(live):
            if seq.num_output_tokens >= 20 or rng.random() < 0.02:
                sched.finish(seq, "length")
                live.remove(seq)
    assert sched.num_preemptions > 5 and sched.block_manager.prefix_hits > 0


def test_a_new_request_under_a_finished_ones_id_gets_its_own_blocks():
    mirror = BlockTableMirror(max_rows=2, max_blocks=4, fill=FILL)
    old, new = Sequence("a", [1], SamplingParams()), Sequence("a", [2], SamplingParams())
    old.block_table, new.block_table = [5], [7, 8]  # the new table is longer: no tail copy can make it right
    out = np.empty((1, 2), np.int32)
    mirror.gather([old], 2, out)
    mirror.gather([new], 2, out)
    assert out.tolist() == [[7, 8]]


def test_a_decode_step_stages_last_tokens_positions_slots_and_padding_rows():
    block_size, graph_batch = 4, 8
    mirror = BlockTableMirror(max_rows=8, max_blocks=6, fill=FILL)
    a, b, c = (Sequence(r, list(range(10, 10 + n)), SamplingParams()) for r, n in [("a", 9), ("b", 4), ("c", 13)])
    a.block_table, b.block_table, c.block_table = [3, 1, 4], [5], [9, 2, 6, 8]
    b.token_ids[-1] = PENDING_TOKEN  # its last input is still on the GPU, in row 2 of the previous step's tokens
    b.num_pending, b.pending_row = 1, 2
    rows = np.full((6, 10), -7, np.int64)
    tables = np.full(60, -7, np.int32)
    width, any_pending = stage_decode([a, b, c], rows[:, :graph_batch], tables, mirror, block_size)
    ids, positions, slots, context_lens, pending_rows, order = rows[:, :graph_batch].tolist()
    assert (width, any_pending) == (4, True)
    assert ids == [18, PENDING_TOKEN, 22] + [0] * 5
    assert positions == [8, 3, 12] + [0] * 5
    assert slots == [4 * 4 + 0, 5 * 4 + 3, 8 * 4 + 0] + [FILL * block_size] * 5
    assert context_lens == [9, 4, 13] + [1] * 5
    assert pending_rows == [-1, 2, -1] + [-1] * 5
    assert order == [2, 0, 1, 3, 4, 5, 6, 7]  # longest context first, padding last
    assert tables[:graph_batch * width].reshape(graph_batch, width).tolist() == (
        [[3, 1, 4, FILL], [5, FILL, FILL, FILL], [9, 2, 6, 8]] + [[FILL] * 4] * 5)
    assert (rows[:, graph_batch:] == -7).all() and (tables[graph_batch * width:] == -7).all()


def test_other_tensor_parallel_ranks_stage_the_same_tables():
    """Another rank rebuilds each sequence from the step message, with a new block table list every step."""
    leader, follower = (BlockTableMirror(max_rows=2, max_blocks=4, fill=FILL) for _ in range(2))
    seq = Sequence("a", [1, 2, 3], SamplingParams())
    for blocks in ([4], [4, 6], [4, 6]):
        seq.block_table = blocks  # grows as a decode goes on
        seq.num_computed_tokens, seq.num_new_tokens = len(seq) - 1, 1
        ours, theirs = np.empty((1, 2), np.int32), np.empty((1, 2), np.int32)
        leader.gather([seq], 2, ours)
        follower.gather(step_seqs(step_message([seq])), 2, theirs)
        assert ours.tolist() == theirs.tolist() == [blocks + [FILL] * (2 - len(blocks))]
        seq.token_ids.append(5)
