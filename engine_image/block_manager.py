"""Paged KV blocks: a fixed pool, reference counts, and automatic prefix caching.

A full block is identified by a hash chain over the token ids of it and every block before it, so two requests
with a common prefix share the blocks of that prefix. A block is registered only after its K/V were computed
(`commit`), so nobody can hit a block that is still being filled. Freed blocks keep their contents and hash and
sit in an LRU free list; they are reused by later hits until a fresh allocation evicts the least recently freed.
Counters are in tokens, like vLLM: queries = prompt tokens looked up, hits = tokens served from the cache.
"""

from collections import OrderedDict

from fleetserve.api.prefix_blocks import CHAIN_START, chain_hash
from fleetserve.engine.sequence import Sequence


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1:
            raise ValueError("num_kv_blocks must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # front = evicted first
        self.block_hash: dict[int, int] = {}  # block id -> its chain hash, for registered blocks
        self.block_tokens: dict[int, tuple[int, ...]] = {}  # guards against hash collisions
        self.cached: dict[int, int] = {}  # chain hash -> block id
        self.prefix_queries = 0
        self.prefix_hits = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        return 1.0 - len(self._free) / self.num_blocks

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def lookup_prefix(self, seq: Sequence) -> list[int]:
        """Cached blocks matching the sequence's leading full blocks; always leaves at least one token to compute
        (the step needs it to produce logits). Changes nothing."""
        if not self.enable_prefix_caching:
            return []
        hits, prev = [], CHAIN_START
        for i in range((len(seq) - 1) // self.block_size):
            tokens = tuple(seq.token_ids[i * self.block_size:(i + 1) * self.block_size])
            prev = chain_hash(prev, tokens)
            block = self.cached.get(prev)
            if block is None or self.block_tokens[block] != tokens:
                break
            hits.append(block)
        return hits

    def can_allocate(self, seq: Sequence, num_new_tokens: int, prefix: list[int] = ()) -> bool:
        total = seq.num_computed_tokens + len(prefix) * self.block_size + num_new_tokens
        needed = self.blocks_for(total) - len(seq.block_table) - len(prefix)
        if not prefix:  # every running sequence, every step: keep it short
            return needed <= len(self._free)
        revived = sum(1 for b in prefix if self.ref_counts[b] == 0)  # hits sitting in the free list
        return needed + revived <= len(self._free)

    def allocate(self, seq: Sequence, num_new_tokens: int, prefix: list[int] = ()) -> None:
        """Attaches the prefix hits (admission only) and grows the block table to hold `num_new_tokens` more."""
        if not seq.block_table:  # admission (new or preempted): count the lookup
            self.prefix_queries += len(seq)
            self.prefix_hits += len(prefix) * self.block_size
        if prefix:
            for block in prefix:
                self._reference(block)
            seq.block_table.extend(prefix)
            seq.block_hashes = [self.block_hash[b] for b in prefix]
            seq.num_cached_blocks = len(prefix)
            seq.num_computed_tokens = len(prefix) * self.block_size
        while len(seq.block_table) * self.block_size < seq.num_computed_tokens + num_new_tokens:
            seq.block_table.append(self._take_free())

    def commit(self, seq: Sequence) -> None:
        """Registers the sequence's newly completed full blocks with the prefix cache (their K/V now exist)."""
        if not self.enable_prefix_caching:
            return
        known = len(seq) - seq.num_pending  # a block holding a placeholder cannot be hashed yet
        full = min(seq.num_computed_tokens, known) // self.block_size
        for i in range(seq.num_cached_blocks, full):
            tokens = tuple(seq.token_ids[i * self.block_size:(i + 1) * self.block_size])
            h = chain_hash(seq.block_hashes[-1] if seq.block_hashes else CHAIN_START, tokens)
            seq.block_hashes.append(h)
            block = seq.block_table[i]
            if h not in self.cached:  # an identical block computed by another request stays the canonical one
                self.cached[h] = block
                self.block_hash[block] = h
                self.block_tokens[block] = tokens
        seq.num_cached_blocks = max(seq.num_cached_blocks, full)

    def free(self, seq: Sequence) -> None:
        """Releases the sequence's blocks (tail first, so the tail is evicted first) and resets its cache state."""
        for block in reversed(seq.block_table):
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self._free[block] = None
                if block not in self.block_hash:  # holds nothing reusable: hand it out first
                    self._free.move_to_end(block, last=False)
        seq.block_table = []
        seq.block_hashes = []
        seq.num_cached_blocks = 0
        seq.num_computed_tokens = 0

    def _reference(self, block: int) -> None:
        if self.ref_counts[block] == 0:
            del self._free[block]
        self.ref_counts[block] += 1

    def _take_free(self) -> int:
        block, _ = self._free.popitem(last=False)
        h = self.block_hash.pop(block, None)
        if h is not None:  # evict its cached contents
            del self.block_tokens[block]
            if self.cached.get(h) == block:
                del self.cached[h]
        self.ref_counts[block] = 1
        return block
