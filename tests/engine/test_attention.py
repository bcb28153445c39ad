"""The paged-attention boundary against dense causal attention on random data: prefill over a cached prefix,
fresh prompts and batched decodes, with blocks scattered through the cache."""

import torch
import torch.nn.functional as F

from fleetserve.engine.attention import AttentionMetadata, paged_attention, write_kv

HEADS, KV_HEADS, DIM, BLOCK = 6, 2, 16, 4


def dense(q, k, v):
    """q: [n, H, D] for the last n positions of k/v: [L, KV, D]."""
    n, length = q.shape[0], k.shape[0]
    mask = torch.arange(length)[None, :] <= torch.arange(length - n, length)[:, None]
    out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask,
                                         enable_gqa=True)
    return out.transpose(0, 1)


def run_step(caches, seqs, q_lens, num_decodes=0):
    """seqs: (k, v, block_table) with k/v the sequence's whole context; the last q_len tokens are new this step."""
    k_cache, v_cache = caches
    qs, ks, vs, slots, tables, ctx = [], [], [], [], [], []
    width = max(len(t) for _, _, t in seqs)
    for (k, v, table), q_len in zip(seqs, q_lens):
        length = k.shape[0]
        cached = range(length - q_len)
        for p in cached:  # the prefix is already in the cache
            k_cache[table[p // BLOCK], p % BLOCK], v_cache[table[p // BLOCK], p % BLOCK] = k[p], v[p]
        qs.append(torch.randn(q_len, HEADS, DIM))
        ks.append(k[length - q_len:])
        vs.append(v[length - q_len:])
        slots += [table[p // BLOCK] * BLOCK + p % BLOCK for p in range(length - q_len, length)]
        tables.append(table + [0] * (width - len(table)))
        ctx.append(length)
    meta = AttentionMetadata(torch.tensor(slots), torch.tensor(tables), torch.tensor(ctx), list(q_lens), ctx,
                             num_decodes)
    write_kv(k_cache, v_cache, torch.cat(ks), torch.cat(vs), meta.slot_mapping)
    out = paged_attention(torch.cat(qs), k_cache, v_cache, meta, DIM ** -0.5)
    return qs, out


def make_seqs(lengths, generator):
    order = torch.randperm(64, generator=generator).tolist()  # scattered, non-contiguous blocks
    seqs = []
    for length in lengths:
        need = -(-length // BLOCK)
        table, order = order[:need], order[need:]
        seqs.append((torch.randn(length, KV_HEADS, DIM), torch.randn(length, KV_HEADS, DIM), table))
    return seqs


def check(lengths, q_lens, num_decodes=0):
    torch.manual_seed(0)
    caches = (torch.zeros(64, BLOCK, KV_HEADS, DIM), torch.zeros(64, BLOCK, KV_HEADS, DIM))
    seqs = make_seqs(lengths, torch.Generator().manual_seed(1))
    qs, out = run_step(caches, seqs, q_lens, num_decodes)
    expected = torch.cat([dense(q, k, v) for q, (k, v, _) in zip(qs, seqs)])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_prefill_fresh_and_over_a_cached_prefix():
    check(lengths=[9, 13, 4], q_lens=[9, 5, 1])


def test_batched_decode_of_different_context_lengths():
    check(lengths=[1, 7, 16, 30], q_lens=[1, 1, 1, 1])


def test_mixed_step_attends_to_its_leading_decodes_as_one_batch():
    check(lengths=[7, 30, 9, 13, 2], q_lens=[1, 1, 9, 5, 1], num_decodes=2)
