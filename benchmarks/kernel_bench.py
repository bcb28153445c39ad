"""Device ceilings and attention-kernel speed: copy bandwidth, and paged decode/prefill at Llama-3-8B shapes."""

import torch
import triton

from fleetserve.engine.kernels.paged_attention import (
    decode_splits,
    default_scale,
    paged_decode_attention,
    paged_prefill_attention,
)


def copy_bandwidth_gbps(gib: float = 4.0) -> float:
    """Device-to-device copy, counting bytes read plus bytes written (the ceiling decode is compared with)."""
    src = torch.randn(int(gib * (1 << 30)) // 2, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
    del src, dst
    torch.cuda.empty_cache()
    return 2 * gib * (1 << 30) / (ms * 1e-3) / 1e9


def matmul_tflops(n: int = 8192) -> float:
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    ms = triton.testing.do_bench(lambda: a @ b, warmup=50, rep=300, return_mode="median")
    return 2 * n**3 / (ms * 1e-3) / 1e12


def _paged_cache(batch: int, context: int, kv_heads: int, head_dim: int, block_size: int):
    blocks_per_seq = -(-context // block_size)
    num_blocks = batch * blocks_per_seq
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, dtype=torch.bfloat16, device="cuda")
    v_cache = torch.randn_like(k_cache)
    tables = torch.randperm(num_blocks, device="cuda").view(batch, blocks_per_seq).to(torch.int32)
    return k_cache, v_cache, tables


def decode_attention_bench(batch: int, context: int = 1024, heads: int = 32, kv_heads: int = 8, head_dim: int = 128,
                           block_size: int = 16, block_n: int | None = None, num_warps: int = 4) -> dict:
    k_cache, v_cache, tables = _paged_cache(batch, context, kv_heads, head_dim, block_size)
    q = torch.randn(batch, heads, head_dim, dtype=torch.bfloat16, device="cuda")
    lens = torch.full((batch,), context, dtype=torch.int32, device="cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    splits = decode_splits(batch, kv_heads, context, sms)
    ms = triton.testing.do_bench(
        lambda: paged_decode_attention(q, k_cache, v_cache, tables, lens, default_scale(head_dim), splits, block_n,
                                       num_warps),
        warmup=25, rep=200, return_mode="median")
    kv_bytes = 2 * batch * context * kv_heads * head_dim * 2
    return {"batch": batch, "context": context, "block_size": block_size, "block_n": block_n, "num_warps": num_warps,
            "splits": splits, "us": ms * 1e3, "kv_gbps": kv_bytes / (ms * 1e-3) / 1e9}


def prefill_attention_bench(batch: int = 8, q_len: int = 1024, heads: int = 32, kv_heads: int = 8,
                            head_dim: int = 128, block_size: int = 16) -> dict:
    k_cache, v_cache, tables = _paged_cache(batch, q_len, kv_heads, head_dim, block_size)
    q = torch.randn(batch * q_len, heads, head_dim, dtype=torch.bfloat16, device="cuda")
    cu = torch.arange(0, batch + 1, dtype=torch.int32, device="cuda") * q_len
    lens = torch.full((batch,), q_len, dtype=torch.int32, device="cuda")
    ms = triton.testing.do_bench(
        lambda: paged_prefill_attention(q, k_cache, v_cache, tables, cu, lens, q_len, default_scale(head_dim)),
        warmup=25, rep=200, return_mode="median")
    flops = 4 * batch * heads * head_dim * q_len * q_len / 2  # causal: half the square
    return {"batch": batch, "q_len": q_len, "us": ms * 1e3, "tflops": flops / (ms * 1e-3) / 1e12}
