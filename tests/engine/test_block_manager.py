"""Block pool, reference counts, hash-chain prefix caching and LRU eviction, without a model."""

import pytest

from fleetserve.engine.block_manager import BlockManager
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.sequence import Sequence


def seq(tokens, rid="r"):
    return Sequence(rid, list(tokens), SamplingParams())


def admit(bm: BlockManager, s: Sequence) -> list[int]:
    """What the scheduler does on admission: take the prefix hits, allocate the rest, then 'compute' it."""
    prefix = bm.lookup_prefix(s)
    new = len(s) - len(prefix) * bm.block_size
    assert bm.can_allocate(s, new, prefix)
    bm.allocate(s, new, prefix)
    s.num_computed_tokens += new
    bm.commit(s)
    return prefix


def test_allocate_and_free_return_every_block():
    bm = BlockManager(num_blocks=8, block_size=4)
    s = seq(range(10))
    admit(bm, s)
    assert len(s.block_table) == 3 and bm.num_free_blocks == 5
    assert bm.usage == pytest.approx(3 / 8)
    bm.free(s)
    assert bm.num_free_blocks == 8 and s.block_table == [] and s.num_computed_tokens == 0


def test_shared_prefix_hits_full_blocks_only_and_counts_tokens():
    bm = BlockManager(num_blocks=16, block_size=4)
    a = seq(list(range(10)), "a")
    admit(bm, a)
    b = seq(list(range(9)) + [99, 98], "b")  # same first 9 tokens: two full blocks match
    prefix = admit(bm, b)
    assert prefix == a.block_table[:2]
    assert bm.ref_counts[prefix[0]] == 2
    assert b.num_computed_tokens == len(b)
    assert (bm.prefix_queries, bm.prefix_hits) == (10 + 11, 8)


def test_lookup_leaves_one_token_to_compute():
    bm = BlockManager(num_blocks=16, block_size=4)
    admit(bm, seq(range(8), "a"))
    assert len(bm.lookup_prefix(seq(range(8), "b"))) == 1  # an identical 8-token prompt still computes block 2


def test_different_earlier_block_breaks_the_chain():
    bm = BlockManager(num_blocks=16, block_size=4)
    admit(bm, seq([1, 2, 3, 4, 5, 6, 7, 8, 9], "a"))
    assert bm.lookup_prefix(seq([0, 2, 3, 4, 5, 6, 7, 8, 9], "b")) == []  # block 2 equal, but its chain is not


def test_freed_blocks_stay_hittable_until_evicted_lru():
    bm = BlockManager(num_blocks=4, block_size=4)
    a = seq(range(9), "a")
    admit(bm, a)  # 3 blocks, two of them full and cached
    bm.free(a)
    assert bm.num_free_blocks == 4 and bm.usage == 0.0
    b = seq(list(range(8)) + [50], "b")
    assert len(bm.lookup_prefix(b)) == 2  # revived from the free list
    bm.free(b) if b.block_table else None
    hog = seq(range(100, 112), "hog")  # needs 3 fresh blocks: evicts, least recently freed first
    admit(bm, hog)
    assert len(bm.lookup_prefix(b)) < 2


def test_can_allocate_counts_revived_hits_against_free_blocks():
    bm = BlockManager(num_blocks=3, block_size=4)
    a = seq(range(9), "a")
    admit(bm, a)
    bm.free(a)
    b = seq(list(range(8)) + [1, 2, 3, 4, 5], "b")  # 2 hits (free, cached) + 2 new blocks = 4 > 3
    prefix = bm.lookup_prefix(b)
    assert len(prefix) == 2
    assert not bm.can_allocate(b, len(b) - 8, prefix)


def test_decode_growth_allocates_a_block_at_the_boundary():
    bm = BlockManager(num_blocks=4, block_size=4)
    s = seq(range(4))
    admit(bm, s)
    s.token_ids.append(7)
    assert bm.can_allocate(s, 1)
    bm.allocate(s, 1)
    assert len(s.block_table) == 2
