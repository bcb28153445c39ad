"""Paged-attention kernels against a plain fp32 PyTorch reference, on fresh random inputs each case.

Runs on a CUDA device; on a CPU machine it skips, unless TRITON_INTERPRET=1 (Triton's interpreter, slow but exact
enough to catch indexing bugs while developing without a GPU).
"""

import pytest
import torch

from kernel_device import DEVICE, DTYPE, relative_error, require_kernel_device

require_kernel_device()

from fleetserve.engine.kernels.paged_attention import (  # noqa: E402
    decode_splits,
    default_scale,
    paged_decode_attention,
    paged_prefill_attention,
    store_kv,
)

BOUND = 1e-2  # bf16 operands with fp32 accumulation land between 1e-3 and 1e-2 (METHOD.md)


def random_paged_cache(context_lens, kv_heads, head_dim, block_size, seed):
    """Scatter each sequence's random K/V over shuffled blocks; returns caches, block tables and dense K/V."""
    g = torch.Generator().manual_seed(seed)
    blocks_per_seq = [-(-n // block_size) for n in context_lens]
    num_blocks = sum(blocks_per_seq) + 3
    order = torch.randperm(num_blocks, generator=g).tolist()
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g).to(DTYPE)
    v_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g).to(DTYPE)
    tables = torch.zeros(len(context_lens), max(blocks_per_seq), dtype=torch.int32)
    dense = []
    for i, (n, nb) in enumerate(zip(context_lens, blocks_per_seq)):
        ids = [order.pop() for _ in range(nb)]
        tables[i, :nb] = torch.tensor(ids)
        k = k_cache[ids].reshape(-1, kv_heads, head_dim)[:n]
        v = v_cache[ids].reshape(-1, kv_heads, head_dim)[:n]
        dense.append((k.float(), v.float()))
    return k_cache.to(DEVICE), v_cache.to(DEVICE), tables.to(DEVICE), dense


def reference_attention(q, k, v, q_positions, scale):
    """q: [n_q, heads, d] at absolute positions q_positions; k, v: [n_kv, kv_heads, d]; causal, fp32."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k) * scale
    mask = torch.arange(k.shape[0])[None, :] > q_positions[:, None]
    scores = scores.masked_fill(mask[None], float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


@pytest.mark.parametrize(
    "context_lens,heads,kv_heads,head_dim,block_size,splits",
    [
        ([1, 17, 300, 64], 8, 2, 64, 16, 1),
        ([1000, 5, 129], 32, 8, 128, 256, 1),
        ([1000, 700], 32, 8, 128, 256, 4),
        ([257], 16, 8, 128, 32, 3),
        ([33, 80], 9, 3, 64, 16, 2),  # odd group size (3), padded to 16 rows inside the kernel
        # many splits, as batch 1 gets: one 64-key tile per split, most of them empty past the real context
        ([1000], 32, 8, 128, 16, 32),
        ([1], 32, 8, 128, 16, 32),  # context shorter than one split
        ([100, 1, 999, 64], 9, 3, 64, 16, 16),  # lengths that are no multiple of 64, one exactly one tile
        ([130, 2047], 16, 8, 128, 256, 32),
    ],
)
def test_decode_matches_reference(context_lens, heads, kv_heads, head_dim, block_size, splits):
    k_cache, v_cache, tables, dense = random_paged_cache(context_lens, kv_heads, head_dim, block_size, seed=splits)
    q = torch.randn(len(context_lens), heads, head_dim).to(DTYPE)
    scale = default_scale(head_dim)
    lens = torch.tensor(context_lens, dtype=torch.int32, device=DEVICE)
    out = paged_decode_attention(q.to(DEVICE), k_cache, v_cache, tables, lens, scale, num_splits=splits)
    ref = torch.cat([
        reference_attention(q[i : i + 1], k, v, torch.tensor([n - 1]), scale)
        for i, ((k, v), n) in enumerate(zip(dense, context_lens))
    ])
    assert relative_error(out.cpu(), ref) < BOUND


@pytest.mark.parametrize("splits", [1, 4])
def test_decode_in_longest_first_order_gives_the_same_bits(splits):
    context_lens = [30, 700, 5, 260, 129]
    k_cache, v_cache, tables, _ = random_paged_cache(context_lens, 2, 64, 16, seed=7)
    q = torch.randn(len(context_lens), 8, 64).to(DTYPE).to(DEVICE)
    lens = torch.tensor(context_lens, dtype=torch.int32, device=DEVICE)
    order = torch.tensor([1, 3, 4, 0, 2], device=DEVICE)
    plain = paged_decode_attention(q, k_cache, v_cache, tables, lens, 0.125, num_splits=splits)
    ordered = paged_decode_attention(q, k_cache, v_cache, tables, lens, 0.125, num_splits=splits, order=order)
    assert torch.equal(plain, ordered)


@pytest.mark.parametrize(
    "q_lens,prefixes,heads,kv_heads,head_dim,block_size",
    [
        ([5, 70, 1], [0, 0, 0], 8, 2, 64, 16),
        ([100, 3, 64], [32, 250, 0], 32, 8, 128, 256),  # cached prefixes, a chunk of 3, a fresh prompt
        ([129], [16], 9, 3, 64, 32),
    ],
)
def test_prefill_matches_reference(q_lens, prefixes, heads, kv_heads, head_dim, block_size):
    context_lens = [p + n for p, n in zip(prefixes, q_lens)]
    k_cache, v_cache, tables, dense = random_paged_cache(context_lens, kv_heads, head_dim, block_size, seed=len(q_lens))
    q = torch.randn(sum(q_lens), heads, head_dim).to(DTYPE)
    cu = torch.tensor([0] + q_lens).cumsum(0).to(torch.int32)
    scale = default_scale(head_dim)
    out = paged_prefill_attention(
        q.to(DEVICE), k_cache, v_cache, tables, cu.to(DEVICE),
        torch.tensor(context_lens, dtype=torch.int32, device=DEVICE), max(q_lens), scale,
    )
    ref = torch.cat([
        reference_attention(q[cu[i] : cu[i + 1]], k, v, torch.arange(prefixes[i], context_lens[i]), scale)
        for i, (k, v) in enumerate(dense)
    ])
    assert relative_error(out.cpu(), ref) < BOUND


@pytest.mark.parametrize("splits", [1, 4])
def test_mixed_step_runs_leading_decodes_through_the_decode_kernel(splits):
    """The backend's mixed step: the decode kernel for the leading one-token rows, the prefill kernel for the
    rest, both writing one output."""
    from fleetserve.engine.kernels.triton_backend import GpuAttentionMetadata, paged_attention

    q_lens, prefixes = [1, 1, 70, 5], [16, 299, 0, 32]
    context_lens = [p + n for p, n in zip(prefixes, q_lens)]
    k_cache, v_cache, tables, dense = random_paged_cache(context_lens, 2, 64, 16, seed=splits)
    q = torch.randn(sum(q_lens), 8, 64).to(DTYPE)
    cu = torch.tensor([0] + q_lens).cumsum(0).to(torch.int32)
    lens = torch.tensor(context_lens, dtype=torch.int32, device=DEVICE)
    meta = GpuAttentionMetadata(slot_mapping=torch.empty(0), block_tables=tables, context_lens=lens,
                                query_lens=q_lens, context_lens_list=context_lens, num_decodes=2,
                                cu_seqlens_q=cu.to(DEVICE), max_query_len=max(q_lens), decode_splits=splits)
    scale = default_scale(64)
    out = paged_attention(q.to(DEVICE), k_cache, v_cache, meta, scale)
    ref = torch.cat([
        reference_attention(q[cu[i] : cu[i + 1]], k, v, torch.arange(prefixes[i], context_lens[i]), scale)
        for i, (k, v) in enumerate(dense)
    ])
    assert relative_error(out.cpu(), ref) < BOUND


@pytest.mark.parametrize("kv_heads,head_dim", [(2, 64), (3, 64)])  # 3 x 64: rows that are no power of two
def test_store_kv_writes_slots_and_skips_padding(kv_heads, head_dim):
    k_cache = torch.full((4, 16, kv_heads, head_dim), 7.0, dtype=DTYPE, device=DEVICE)
    v_cache = k_cache.clone()
    qkv = torch.randn(3, 3 * kv_heads * head_dim, dtype=DTYPE, device=DEVICE)  # fused rows, strided views
    k = qkv[:, kv_heads * head_dim : 2 * kv_heads * head_dim].view(3, kv_heads, head_dim)
    v = qkv[:, 2 * kv_heads * head_dim :].view(3, kv_heads, head_dim)
    slots = torch.tensor([5, -1, 40], device=DEVICE)
    store_kv(k, v, k_cache, v_cache, slots)
    flat_k, flat_v = k_cache.view(-1, kv_heads, head_dim), v_cache.view(-1, kv_heads, head_dim)
    assert torch.equal(flat_k[5], k[0]) and torch.equal(flat_v[40], v[2])
    untouched = [i for i in range(64) if i not in (5, 40)]
    assert (flat_k[untouched] == 7.0).all() and (flat_v[untouched] == 7.0).all()


def test_decode_splits_fill_the_gpu_only_when_needed():
    assert decode_splits(batch=256, kv_heads=8, max_context=1024, num_sms=132) == 1
    assert decode_splits(batch=16, kv_heads=8, max_context=1024, num_sms=132) == 1  # 128 programs: full already
    assert decode_splits(batch=4, kv_heads=8, max_context=8192, num_sms=132) == 4
    assert decode_splits(batch=1, kv_heads=8, max_context=8192, num_sms=132) == 16  # one program an SM
    assert decode_splits(batch=1, kv_heads=2, max_context=8192, num_sms=132) == 32  # capped
    assert decode_splits(batch=1, kv_heads=8, max_context=1024, num_sms=132) == 16  # one 64-key tile each
    assert decode_splits(batch=1, kv_heads=8, max_context=100, num_sms=132) == 1
