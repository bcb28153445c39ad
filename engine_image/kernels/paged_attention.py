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

LOG2E = 1.4426950408889634


@triton.jit
def _store_kv_kernel(k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr, k_stride, v_stride, ROW: tl.constexpr,
                     ROW_PAD: tl.constexpr):
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
                                ROW_PAD=triton.next_power_of_2(row))


@triton.jit
def _decode_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr, out_ptr, partial_ptr, m_ptr, denom_ptr,
    counter_ptr, scale_log2, q_stride, bt_stride, max_splits,
    KV_HEADS: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE_SPLIT: tl.constexpr,
):
    """One program: one sequence, one KV head (all its query heads at once, for GQA), one split of the context.
    With a single split it writes the final output; otherwise it writes partial results, and the last of the
    head's split programs to finish merges them (one launch instead of a second merge kernel, whose fixed cost
    at batch 1 was ~3 us a layer)."""
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
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

    out_offs = (seq * KV_HEADS * GROUP + q_heads)[:, None] * HEAD_DIM + dims[None, :]
    if SINGLE_SPLIT:
        out = acc / l_i[:, None]
        tl.store(out_ptr + out_offs, out.to(out_ptr.dtype.element_ty), mask=head_mask[:, None])
    else:
        _store_split_and_merge_last(acc, m_i, l_i, out_ptr, partial_ptr, m_ptr, denom_ptr, counter_ptr, out_offs,
                                    seq, kv_head, split, max_splits, q_heads, head_mask, dims, KV_HEADS, GROUP,
                                    GROUP_PAD, HEAD_DIM)


@triton.jit
def _store_split_and_merge_last(acc, m_i, l_i, out_ptr, partial_ptr, m_ptr, denom_ptr, counter_ptr, out_offs, seq,
                                kv_head, split, max_splits, q_heads, head_mask, dims, KV_HEADS: tl.constexpr,
                                GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Stores this split's partial result; the last split of the (sequence, KV head) to finish merges them all,
    each weighted by exp2(its max - the overall max). An empty split has m = -inf, l = 0 and weighs nothing."""
    part = (seq * max_splits + split) * KV_HEADS * GROUP + q_heads
    tl.store(partial_ptr + part[:, None] * HEAD_DIM + dims[None, :], acc, mask=head_mask[:, None])
    tl.store(m_ptr + part, m_i, mask=head_mask)
    tl.store(denom_ptr + part, l_i, mask=head_mask)
    # Count the finished splits: the barrier puts every thread's stores before the count, whose release (and the
    # merging program's acquire) makes them visible across SMs; loads below bypass L1 (.cg) to read them.
    tl.debug_barrier()
    counter = counter_ptr + seq * KV_HEADS + kv_head
    if tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu") == max_splits - 1:
        m_max = tl.full([GROUP_PAD], float("-inf"), tl.float32)
        for s in range(max_splits):
            part = (seq * max_splits + s) * KV_HEADS * GROUP + q_heads
            m_max = tl.maximum(m_max, tl.load(m_ptr + part, mask=head_mask, other=float("-inf"),
                                              cache_modifier=".cg"))
        merged = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
        denom = tl.zeros([GROUP_PAD], tl.float32)
        for s in range(max_splits):
            part = (seq * max_splits + s) * KV_HEADS * GROUP + q_heads
            l_s = tl.load(denom_ptr + part, mask=head_mask, other=0.0, cache_modifier=".cg")
            m_s = tl.load(m_ptr + part, mask=head_mask, other=float("-inf"), cache_modifier=".cg")
            weight = tl.where(l_s > 0, tl.exp2(m_s - m_max), 0.0)
            merged += weight[:, None] * tl.load(partial_ptr + part[:, None] * HEAD_DIM + dims[None, :],
                                                mask=head_mask[:, None], other=0.0, cache_modifier=".cg")
            denom += weight * l_s
        tl.store(out_ptr + out_offs, (merged / denom[:, None]).to(out_ptr.dtype.element_ty),
                 mask=head_mask[:, None])
        tl.atomic_xchg(counter, 0)  # zero again for the next launch (a CUDA graph replays this one)


def decode_splits(batch: int, kv_heads: int, max_context: int, num_sms: int) -> int:
    """Split each context so the grid fills the GPU about twice over, down to one 64-key tile per split: at batch 1
    a program walking its tiles one after another is latency, not bandwidth. Splits past a sequence's real context
    are empty (the kernel sizes splits from the actual length, so a short context uses only the first few)."""
    programs = batch * kv_heads
    if programs >= num_sms:
        return 1
    return max(1, min(2 * num_sms // programs, max_context // 64, 32))


def paged_decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    context_lens: torch.Tensor, scale: float, num_splits: int = 1, block_n: int = 64, num_warps: int = 4,
) -> torch.Tensor:
    """q: [batch, heads, head_dim] -> [batch, heads, head_dim]. Each sequence attends to its first context_len slots."""
    batch, heads, head_dim = q.shape
    _, block_size, kv_heads, _ = k_cache.shape
    group = heads // kv_heads
    out = torch.empty(batch, heads, head_dim, dtype=q.dtype, device=q.device)
    single = num_splits == 1
    partial = out if single else torch.empty(batch, num_splits, heads, head_dim, dtype=torch.float32,
                                             device=q.device)
    m = torch.empty(batch, num_splits, heads, dtype=torch.float32, device=q.device)
    denom = torch.empty_like(m)
    counters = split_counters(q.device, 0 if single else batch * kv_heads)
    _decode_kernel[(batch, kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens, out, partial, m, denom, counters,
        scale * LOG2E, q.stride(0), block_tables.stride(0), num_splits,
        KV_HEADS=kv_heads, GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        BLOCK_SIZE=block_size, BLOCK_N=block_n, SINGLE_SPLIT=single, num_warps=num_warps, num_stages=3,
    )
    return out


_counters: dict[torch.device, list[torch.Tensor]] = {}


def split_counters(device: torch.device, n: int) -> torch.Tensor:
    """Zeroed int32 counters, one per (sequence, KV head), shared by every decode launch on the device: each
    launch leaves them zero again. Splits only happen while batch x KV heads is below the SM count, so 1024 is
    enough in practice; a larger tensor replaces it only outside CUDA-graph capture (the runner warms each batch
    size up first), and earlier ones stay alive for the graphs that captured them."""
    held = _counters.setdefault(device, [])
    if not held or held[-1].numel() < n:
        held.append(torch.zeros(max(n, 1024), dtype=torch.int32, device=device))
    return held[-1]


@triton.jit
def _prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, cu_q_ptr, context_lens_ptr, out_ptr,
    scale_log2, q_stride, out_stride, bt_stride,
    KV_HEADS: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program: BLOCK_M query tokens of one sequence and one query head, causal over the paged context."""
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
    block_m: int = 64, block_n: int = 64,
) -> torch.Tensor:
    """q: [total_q_tokens, heads, head_dim], sequences packed back to back (cu_seqlens_q: [batch + 1]).

    context_lens counts the cached prefix plus the new tokens, whose K/V must already be in the cache.
    """
    total, heads, head_dim = q.shape
    _, block_size, kv_heads, _ = k_cache.shape
    batch = context_lens.shape[0]
    out = torch.empty(total, heads, head_dim, dtype=q.dtype, device=q.device)
    grid = (triton.cdiv(max_q_len, block_m), batch, heads)
    _prefill_kernel[grid](
        q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, out,
        scale * LOG2E, q.stride(0), out.stride(0), block_tables.stride(0),
        KV_HEADS=kv_heads, GROUP=heads // kv_heads, HEAD_DIM=head_dim,
        BLOCK_SIZE=block_size, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4, num_stages=2,
    )
    return out


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
