"""The one-launch q/k norm + rotary + KV store against the unfused ops it replaces, and the re-classed attention
module against the plain one. Runs on a CUDA device; on a CPU machine it skips unless TRITON_INTERPRET=1 (float16).
"""

from types import SimpleNamespace

import pytest
import torch

from kernel_device import DEVICE, DTYPE, relative_error, require_kernel_device

require_kernel_device()

from fleetserve.engine.attention import AttentionMetadata  # noqa: E402
from fleetserve.engine.kernels.fused_layers import FusedLlamaAttention, use_fused_kernels  # noqa: E402
from fleetserve.engine.kernels.fused_ops import rms_norm, rotary_, rotate_and_store_kv  # noqa: E402
from fleetserve.engine.kernels.paged_attention import store_kv  # noqa: E402
from fleetserve.engine.layers import RotaryEmbedding  # noqa: E402
from fleetserve.engine.models.llama import LlamaAttention  # noqa: E402

BOUND = 1e-2
SENTINEL = 7.0


def empty_caches(kv_heads, head_dim, num_blocks=4, block_size=16):
    k_cache = torch.full((num_blocks, block_size, kv_heads, head_dim), SENTINEL, dtype=DTYPE, device=DEVICE)
    return k_cache, k_cache.clone()


@pytest.mark.parametrize("heads,kv_heads,head_dim,qk_norm", [
    (32, 8, 128, False),  # Llama 3: rotary + store
    (16, 8, 128, True),  # Qwen3: q/k norm + rotary + store
    (9, 3, 64, False),  # SmolLM2: 3 KV heads x 64, rows that are no power of two
    (9, 3, 64, True),
])
def test_matches_unfused_ops(heads, kv_heads, head_dim, qk_norm):
    tokens = 5
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, device=DEVICE).to(DTYPE)
    positions = torch.tensor([0, 7, 100, 2000, 4095], device=DEVICE)
    slots = torch.tensor([3, -1, 17, 40, 63], device=DEVICE)  # -1: a padding row, stores nothing
    cos_sin = RotaryEmbedding(head_dim, 4096, 1000000.0, None).cos_sin.to(DEVICE)
    weights = [(1 + 0.1 * torch.randn(head_dim)).to(DEVICE, DTYPE) for _ in range(2)] if qk_norm else [None, None]
    eps = 1e-6

    q, k, v = qkv.clone().split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], -1)
    q, k, v = (t.view(tokens, -1, head_dim) for t in (q, k, v))
    if qk_norm:
        q, k = rms_norm(q, weights[0], eps), rms_norm(k, weights[1], eps)
    rotary_(q, k, positions, cos_sin)
    ref_k_cache, ref_v_cache = empty_caches(kv_heads, head_dim)
    store_kv(k, v, ref_k_cache, ref_v_cache, slots)

    k_cache, v_cache = empty_caches(kv_heads, head_dim)
    out_q = rotate_and_store_kv(qkv, positions, cos_sin, heads, kv_heads, k_cache, v_cache, slots, *weights, eps=eps)
    assert out_q.data_ptr() == qkv.data_ptr()  # q rotated in place in the fused qkv buffer
    assert relative_error(out_q, q) < BOUND
    assert relative_error(k_cache, ref_k_cache) < BOUND and torch.equal(v_cache, ref_v_cache)
    written = slots[slots >= 0].tolist()
    untouched = [i for i in range(64) if i not in written]
    assert (k_cache.view(64, -1)[untouched] == SENTINEL).all() and (v_cache.view(64, -1)[untouched] == SENTINEL).all()


@pytest.mark.parametrize("model_type,heads,kv_heads,head_dim", [("llama", 8, 2, 64), ("qwen3", 9, 3, 64)])
def test_fused_attention_module_matches_plain(model_type, heads, kv_heads, head_dim):
    """Two fresh prompts (3 and 2 tokens) through the plain module (PyTorch path) and the re-classed one (kernels)."""
    cfg = SimpleNamespace(num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                          hidden_size=heads * head_dim, attention_bias=False, model_type=model_type,
                          rms_norm_eps=1e-6)
    torch.manual_seed(0)
    attn = LlamaAttention(cfg, RotaryEmbedding(head_dim, 64, 10000.0, None))
    for param in attn.parameters():
        param.data = 1 + 0.1 * torch.randn_like(param) if param.dim() == 1 else 0.05 * torch.randn_like(param)
    attn = attn.to(DEVICE, DTYPE)
    attn.rotary = RotaryEmbedding(head_dim, 64, 10000.0, None).to(DEVICE)  # the table stays float32, as the loader's
    x = torch.randn(5, cfg.hidden_size, device=DEVICE).to(DTYPE)
    positions = torch.tensor([0, 1, 2, 0, 1], device=DEVICE)
    meta = AttentionMetadata(slot_mapping=torch.tensor([0, 1, 2, 16, 17], device=DEVICE),
                             block_tables=torch.tensor([[0], [1]], dtype=torch.int32, device=DEVICE),
                             context_lens=torch.tensor([3, 2], dtype=torch.int32, device=DEVICE),
                             query_lens=[3, 2], context_lens_list=[3, 2])

    attn.k_cache, attn.v_cache = empty_caches(kv_heads, head_dim)
    ref = attn(positions, x, meta)
    ref_k_cache = attn.k_cache
    use_fused_kernels(attn)
    assert type(attn) is FusedLlamaAttention
    attn.k_cache, attn.v_cache = empty_caches(kv_heads, head_dim)
    assert relative_error(attn(positions, x, meta), ref) < BOUND
    assert relative_error(attn.k_cache, ref_k_cache) < BOUND
