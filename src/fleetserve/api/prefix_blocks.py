"""Prefix-cache block identity, shared by the engine's block manager and the router.

A full block of token ids is named by a hash chain over it and every block before it, so two prompts with a common
prefix share the names of that prefix's blocks. The chain starts from 0, not None: hash(None) depends on the
process on Python < 3.12, and the router must name blocks as every engine process does.
"""

from collections.abc import Sequence

CHAIN_START = 0


def chain_hash(prev: int, token_ids: tuple[int, ...]) -> int:
    return hash((prev, token_ids))


def prefix_block_hashes(token_ids: Sequence[int], block_size: int) -> list[int]:
    """Names of the prompt's blocks a prefix-cache lookup can hit: the full blocks before its last token (the
    engine always computes the last token, for its logits)."""
    hashes, prev = [], CHAIN_START
    for start in range(0, (len(token_ids) - 1) // block_size * block_size, block_size):
        prev = chain_hash(prev, tuple(token_ids[start:start + block_size]))
        hashes.append(prev)
    return hashes
