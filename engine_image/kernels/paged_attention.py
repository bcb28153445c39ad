"""Triton attention over a paged KV cache: one kernel to write new K/V, one for decode, one for prefill.

Cache layout, per layer: k_cache, v_cache of shape [num_blocks, block_size, num_kv_heads, head_dim]. A sequence's
token at position p lives at slot block_table[p // block_size] * block_size + p % block_size. Each key row's
slot is computed on its own, so key tiles (BLOCK_N) may span several cache blocks.

Prefill reads every key from the cache (new tokens are stored first), so a cached prefix, a chunked prompt and a
plain prompt are the same case: queries are the last q_len positions of a context of context_len tokens.
All launches have fixed grids given fixed tensor shapes, so decode can be captured in a CUDA graph.
"""

import math

import torch
import triton
import triton.language as tl

from fleetserve.engine.kernels.dependent_launch import pdl, wait_for_previous

LOG2E = 1.4426950408889634


@triton.jit
def _store_kv_kernel(k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr, k_stride, v_stride, ROW: tl.constexpr,
                     ROW_PAD: tl.constexpr, PDL: tl.constexpr):
    wait_for_previous(PDL)
    token = tl.program_id(0)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    if slot < 0:  # padding row of a captured batch
        return
    cols = tl.arange(0, ROW_PAD)
    mask = cols < ROW  # kv_heads * head_dim need not be a power of two (SmolLM2: 3 x 64)
    tl.store(k_cache_ptr + slot * ROW + cols, tl.load(k_ptr + token * k_stride + cols, mask=mask), mask=mask)
    tl.store(v_cache_ptr + slot * ROW + cols, tl.load(v_ptr + token * v_stride + cols, mask=mask), mask=mask)


def store_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor):
    """k, v: [tokens, kv_heads, head_dim] (rows may be strided views of a fused QKV output); slots < 0 are skipped."""
    tokens, kv_heads, head_dim = k.shape
    assert k.stride(1) == head_dim and k.stride(2) == 1 and v.stride(1) == head_dim and v.stride(2) == 1
    row = kv_heads * head_dim
    _store_kv_kernel[(tokens,)](k, v, k_cache, v_cache, slots, k.stride(0), v.stride(0), ROW=row,
                                ROW_PAD=triton.next_power_of_2(row), **pdl(k))


# Integer arguments that change from step to step are not specialised on (Triton would otherwise compile a variant
# for each of "== 1", "divisible by 16" and neither, some of them mid-serving, each a stall of a second or so).
@triton.jit(do_not_specialize=["bt_stride", "max_splits"])
def _decode_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr, order_ptr, out_ptr, m_ptr, denom_ptr,
    scale_log2, q_stride, bt_stride, max_splits,
    KV_HEADS: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE_SPLIT: tl.constexpr, ORDERED: tl.constexpr,
    PDL: tl.constexpr,
):
    """One program: one KV head (all its query heads at once, for GQA), one sequence, one split of the context.
    With a single split it writes the final output; otherwise partial results that _combine_kernel merges.
    KV heads are the grid's fastest axis: a cache row holds every head's slice of a token, so the programs that
    run side by side read whole rows together (DRAM pages open once), not one head's 256 bytes of each.
    ORDERED: the grid's sequence axis goes through `order` (longest context first), so the GPU starts the longest
    programs first and the last wave is short ones, not one long sequence the rest of the GPU waits for."""
    wait_for_previous(PDL)
    kv_head = tl.program_id(0)
    seq = tl.program_id(1)
    if ORDERED:
        seq = tl.load(order_ptr + seq)
    split = tl.program_id(2)
    context_len = tl.load(context_lens_ptr + seq)
    split_len = tl.cdiv(tl.cdiv(context_len, max_splits), BLOCK_N) * BLOCK_N
    start = split * split_len
    end = tl.minimum(start + split_len, context_len)

    heads = tl.arange(0, GROUP_PAD)
    dims = tl.arange(0, HEAD_DIM)
    head_mask = heads < GROUP
    q_heads = kv_head * GROUP + heads
    q = tl.load(q_ptr + seq * q_stride + q_heads[:, None] * HEAD_DIM + dims[None, :], mask=head_mask[:, None], other=0.0)

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    row = KV_HEADS * HEAD_DIM
    for n0 in range(start, end, BLOCK_N):
        pos = n0 + offs_n
        valid = pos < end
        block = tl.load(block_tables_ptr + seq * bt_stride + pos // BLOCK_SIZE, mask=valid, other=0)
        slot = block.to(tl.int64) * BLOCK_SIZE + pos % BLOCK_SIZE
        kv_offs = slot[:, None] * row + kv_head * HEAD_DIM + dims[None, :]
        k = tl.load(k_cache_ptr + kv_offs, mask=valid[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale_log2
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_cache_ptr + kv_offs, mask=valid[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    if SINGLE_SPLIT:
        out = acc / l_i[:, None]
        offs = (seq * KV_HEADS * GROUP + q_heads)[:, None] * HEAD_DIM + dims[None, :]
        tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=head_mask[:, None])
        return
    # Partial results per split; an empty split leaves m = -inf, l = 0 and is weighted to zero when combined.
    part = (seq * max_splits + split) * KV_HEADS * GROUP + q_heads
    tl.store(out_ptr + part[:, None] * HEAD_DIM + dims[None, :], acc, mask=head_mask[:, None])
    tl.store(m_ptr + part, m_i, mask=head_mask)
    tl.store(denom_ptr + part, l_i, mask=head_mask)


def decode_splits(batch: int, kv_heads: int, max_context: int, num_sms: int) -> int:
    """Split each context so the grid fills the GPU once, down to one 64-key tile per split: at batch 1 a program
    walking its tiles one after another is latency, not bandwidth. Once, not more: Llama-3-8B's batch-1 decode at
    context 1,024 (8 KV heads, H100) takes 7.7 µs a layer with 16 splits, 9.2 µs with 32, 8.8 µs with 8. Splits
    past a sequence's real context are empty (the kernel sizes splits from the actual length, so a short context
    uses only the first few)."""
    programs = batch * kv_heads
    if programs >= num_sms:
        return 1
    return max(1, min(num_sms // programs, max_context // 64, 32))


def paged_decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    context_lens: torch.Tensor, scale: float, num_splits: int = 1, block_n: int | None = None, num_warps: int = 4,
    out: torch.Tensor | None = None, order: torch.Tensor | None = None,
) -> torch.Tensor:
    """q: [batch, heads, head_dim] -> [batch, heads, head_dim]. Each sequence attends to its first context_len slots.
    `out` (contiguous, q's shape): written in place, e.g. the decode rows' share of a mixed step's output.
    `order`: a permutation of the batch, longest context first (a decode graph's staged order); None: in order.
    Unsplit (a batch that fills the GPU), 128-key tiles read the cache fastest (96% of copy bandwidth on an H100 at
    batch 256, against 93-95% for 64); split contexts keep 64, so a short split is not one mostly-empty tile."""
    batch, heads, head_dim = q.shape
    _, block_size, kv_heads, _ = k_cache.shape
    group = heads // kv_heads
    if out is None:
        out = torch.empty(batch, heads, head_dim, dtype=q.dtype, device=q.device)
    single = num_splits == 1
    block_n = block_n or (128 if single else 64)
    partial = out if single else torch.empty(batch, num_splits, heads, head_dim, dtype=torch.float32,
                                             device=q.device)
    m = torch.empty(batch, num_splits, heads, dtype=torch.float32, device=q.device)
    denom = torch.empty_like(m)
    _decode_kernel[(kv_heads, batch, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens, context_lens if order is None else order, partial, m, denom,
        scale * LOG2E, q.stride(0), block_tables.stride(0), num_splits,
        KV_HEADS=kv_heads, GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        BLOCK_SIZE=block_size, BLOCK_N=block_n, SINGLE_SPLIT=single, ORDERED=order is not None, num_warps=num_warps,
        num_stages=2 if single else 3, **pdl(q),
    )
    if not single:
        _combine_kernel[(batch, heads)](partial, m, denom, out, num_splits, heads, HEAD_DIM=head_dim,
                                        SPLITS_PAD=triton.next_power_of_2(num_splits), num_warps=4,
                                        **pdl(q))
    return out


@triton.jit(do_not_specialize=["num_splits"])
def _combine_kernel(partial_ptr, m_ptr, denom_ptr, out_ptr, num_splits, heads, HEAD_DIM: tl.constexpr,
                    SPLITS_PAD: tl.constexpr, PDL: tl.constexpr):
    """Merges one (sequence, head)'s split results, each weighted by exp2(its max - the overall max)."""
    wait_for_previous(PDL)
    seq = tl.program_id(0)
    head = tl.program_id(1)
    splits = tl.arange(0, SPLITS_PAD)
    valid = splits < num_splits
    idx = (seq * num_splits + splits) * heads + head
    m = tl.load(m_ptr + idx, mask=valid, other=float("-inf"))
    denom = tl.load(denom_ptr + idx, mask=valid, other=0.0)
    weight = tl.where(valid & (denom > 0), tl.exp2(m - tl.max(m, 0)), 0.0)
    dims = tl.arange(0, HEAD_DIM)
    acc = tl.load(partial_ptr + idx[:, None] * HEAD_DIM + dims[None, :], mask=valid[:, None], other=0.0)
    out = tl.sum(acc * weight[:, None], 0) / tl.sum(denom * weight, 0)
    tl.store(out_ptr + (seq * heads + head) * HEAD_DIM + dims, out.to(out_ptr.dtype.element_ty))


@triton.jit(do_not_specialize=["bt_stride"])
def _prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, cu_q_ptr, context_lens_ptr, out_ptr,
    scale_log2, q_stride, out_stride, bt_stride,
    KV_HEADS: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PDL: tl.constexpr,
):
    """One program: BLOCK_M query tokens of one sequence and one query head, causal over the paged context."""
    wait_for_previous(PDL)
    tile = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    q_start = tl.load(cu_q_ptr + seq)
    q_len = tl.load(cu_q_ptr + seq + 1) - q_start
    if tile * BLOCK_M >= q_len:
        return
    context_len = tl.load(context_lens_ptr + seq)
    prefix = context_len - q_len  # positions already cached before this chunk

    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < q_len
    dims = tl.arange(0, HEAD_DIM)
    q_offs = (q_start + rows)[:, None].to(tl.int64) * q_stride + head * HEAD_DIM + dims[None, :]
    q = tl.load(q_ptr + q_offs, mask=row_mask[:, None], other=0.0)
    q_pos = prefix + rows

    kv_head = head // GROUP
    row = KV_HEADS * HEAD_DIM
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    end = tl.minimum(prefix + (tile + 1) * BLOCK_M, context_len)  # last key any row of this tile may see
    for n0 in range(0, end, BLOCK_N):
        pos = n0 + offs_n
        valid = pos < end
        block = tl.load(block_tables_ptr + seq * bt_stride + pos // BLOCK_SIZE, mask=valid, other=0)
        slot = block.to(tl.int64) * BLOCK_SIZE + pos % BLOCK_SIZE
        kv_offs = slot[:, None] * row + kv_head * HEAD_DIM + dims[None, :]
        k = tl.load(k_cache_ptr + kv_offs, mask=valid[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale_log2
        s = tl.where(valid[None, :] & (pos[None, :] <= q_pos[:, None]), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_cache_ptr + kv_offs, mask=valid[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    acc = acc / l_i[:, None]
    out_offs = (q_start + rows)[:, None].to(tl.int64) * out_stride + head * HEAD_DIM + dims[None, :]
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=row_mask[:, None])


def paged_prefill_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor, context_lens: torch.Tensor, max_q_len: int, scale: float,
    block_m: int = 64, block_n: int = 64, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """q: [total_q_tokens, heads, head_dim], sequences packed back to back (cu_seqlens_q: [batch + 1]).

    context_lens counts the cached prefix plus the new tokens, whose K/V must already be in the cache. Rows of q
    that no sequence's [cu_seqlens_q[i], cu_seqlens_q[i + 1]) covers are neither read nor written (a mixed step
    passes only its prefill sequences); `out` (contiguous, q's shape) is written in place.
    """
    total, heads, head_dim = q.shape
    _, block_size, kv_heads, _ = k_cache.shape
    batch = context_lens.shape[0]
    if out is None:
        out = torch.empty(total, heads, head_dim, dtype=q.dtype, device=q.device)
    grid = (triton.cdiv(max_q_len, block_m), batch, heads)
    _prefill_kernel[grid](
        q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, out,
        scale * LOG2E, q.stride(0), out.stride(0), block_tables.stride(0),
        KV_HEADS=kv_heads, GROUP=heads // kv_heads, HEAD_DIM=head_dim,
        BLOCK_SIZE=block_size, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4, num_stages=2,
        **pdl(q),
    )
    return out


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
