"""The one boundary between the model and the paged KV cache.

The model hands over this step's q/k/v for a flat batch of tokens (several sequences back to back) and an
`AttentionMetadata`; this module writes the new k/v into their cache slots and attends each query over its
sequence's cached prefix plus the new tokens. Nothing else reads or writes the cache, so a GPU kernel (Triton,
FlexAttention) replaces `paged_attention` without the scheduler or the model noticing.

Cache layout per layer: k_cache, v_cache of shape [num_blocks, block_size, num_kv_heads, head_dim]; token t of a
sequence lives in block block_table[t // block_size] at offset t % block_size (slot = block * block_size + offset).
"""

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [num_tokens] cache slot of each new token
    block_tables: torch.Tensor  # [num_seqs, max_blocks] block ids, padded with 0
    context_lens: torch.Tensor  # [num_seqs] tokens in the cache after this step (cached prefix + new)
    query_lens: list[int]  # new tokens per sequence, in batch order
    context_lens_list: list[int]  # same as context_lens, host side so the CPU path needs no syncs
    num_decodes: int = 0  # leading sequences with one new token each: a mixed step attends to them as one batch

    @property
    def all_decode(self) -> bool:
        return all(n == 1 for n in self.query_lens)


@functools.cache
def _triton():
    """The GPU backend (kernels/), imported on first CUDA use so the CPU path never needs Triton."""
    from fleetserve.engine.kernels import paged_attention, triton_backend

    return paged_attention.store_kv, triton_backend.paged_attention


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """k, v: [num_tokens, num_kv_heads, head_dim] go to their slots."""
    if k.is_cuda:
        _triton()[0](k, v, k_cache, v_cache, slot_mapping)
        return
    k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, slot_mapping, k)
    v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, slot_mapping, v)


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                    scale: float) -> torch.Tensor:
    """q: [num_tokens, num_heads, head_dim] -> [num_tokens, num_heads, head_dim]. Plain PyTorch: decodes (the whole
    batch, or a mixed step's `num_decodes` leading rows) are batched in one call, padded to the longest context;
    prefill chunks run one sequence at a time. On CUDA: the Triton kernels."""
    if q.is_cuda:
        return _triton()[1](q, k_cache, v_cache, meta, scale)
    if meta.all_decode:
        return _decode_batch(q, k_cache, v_cache, meta.block_tables, meta.context_lens, scale)
    out = torch.empty_like(q)
    d = meta.num_decodes
    if d:
        out[:d] = _decode_batch(q[:d], k_cache, v_cache, meta.block_tables[:d], meta.context_lens[:d], scale)
    start = d
    for i in range(d, len(meta.query_lens)):
        q_len = meta.query_lens[i]
        out[start:start + q_len] = _prefill_one(q[start:start + q_len], k_cache, v_cache, meta.block_tables[i],
                                                meta.context_lens_list[i], scale)
        start += q_len
    return out


def _gather(cache: torch.Tensor, block_table: torch.Tensor, ctx_len: int) -> torch.Tensor:
    num_blocks = -(-ctx_len // cache.shape[1])
    return cache[block_table[:num_blocks]].flatten(0, 1)[:ctx_len]  # [ctx_len, kv_heads, head_dim]


def _prefill_one(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                 ctx_len: int, scale: float) -> torch.Tensor:
    q_len = q.shape[0]
    k = _gather(k_cache, block_table, ctx_len).transpose(0, 1)
    v = _gather(v_cache, block_table, ctx_len).transpose(0, 1)
    qt = q.transpose(0, 1)  # [heads, q_len, head_dim]
    if q_len == ctx_len:  # nothing cached before this chunk: plain causal
        out = F.scaled_dot_product_attention(qt, k, v, is_causal=True, scale=scale, enable_gqa=True)
    else:  # query i sits at position ctx_len - q_len + i and sees every key up to it
        q_pos = torch.arange(ctx_len - q_len, ctx_len, device=q.device).unsqueeze(1)
        mask = torch.arange(ctx_len, device=q.device).unsqueeze(0) <= q_pos
        out = F.scaled_dot_product_attention(qt, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    return out.transpose(0, 1)


def _decode_batch(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                  context_lens: torch.Tensor, scale: float) -> torch.Tensor:
    num_seqs, block_size = q.shape[0], k_cache.shape[1]
    max_len = block_tables.shape[1] * block_size
    k = k_cache[block_tables].flatten(1, 2).transpose(1, 2)  # [seqs, kv_heads, max_len, head_dim]
    v = v_cache[block_tables].flatten(1, 2).transpose(1, 2)
    mask = torch.arange(max_len, device=q.device).unsqueeze(0) < context_lens.unsqueeze(1)  # [seqs, max_len]
    out = F.scaled_dot_product_attention(q.unsqueeze(2), k, v, attn_mask=mask.view(num_seqs, 1, 1, max_len),
                                         scale=scale, enable_gqa=True)
    return out.squeeze(2)
