"""The fused Triton layers against the PyTorch layers they replace, on fresh random inputs.

Runs on a CUDA device; on a CPU machine it skips, unless TRITON_INTERPRET=1 (then in float16: numpy has no bf16).
"""

import pytest
import torch

from kernel_device import DEVICE, DTYPE, relative_error, require_kernel_device

require_kernel_device()

from fleetserve.engine.kernels.fused_layers import use_fused_kernels  # noqa: E402
from fleetserve.engine.layers import RMSNorm, RotaryEmbedding, SiluAndMul  # noqa: E402

BOUND = 1e-2  # same rounding points as the PyTorch layers; only the order of float32 sums differs


def fused_copy(module):
    fused = type(module).__new__(type(module))
    fused.__dict__.update(module.__dict__)
    assert use_fused_kernels(fused) == 1
    return fused


@pytest.mark.parametrize("tokens,hidden", [(1, 576), (7, 4096), (33, 128)])
def test_rms_norm_matches_layer(tokens, hidden):
    layer = RMSNorm(hidden, 1e-5).to(DEVICE)
    layer.weight.data = (1 + 0.1 * torch.randn(hidden)).to(DEVICE, DTYPE)
    x = torch.randn(tokens, hidden, device=DEVICE).to(DTYPE)
    assert relative_error(fused_copy(layer)(x), layer(x)) < BOUND


@pytest.mark.parametrize("tokens,hidden", [(1, 576), (5, 4096), (3, 100)])
def test_rms_norm_with_residual_matches_layer(tokens, hidden):
    layer = RMSNorm(hidden, 1e-5).to(DEVICE)
    layer.weight.data = (1 + 0.1 * torch.randn(hidden)).to(DEVICE, DTYPE)
    x = torch.randn(tokens, hidden, device=DEVICE).to(DTYPE)
    residual = (4 * torch.randn(tokens, hidden, device=DEVICE)).to(DTYPE)
    inputs = x.clone(), residual.clone()
    ref_out, ref_sum = layer(x, residual)
    out, total = fused_copy(layer)(x, residual)
    assert torch.equal(total, ref_sum)  # one rounding of the sum, as the layer (and HF) add in the model dtype
    assert relative_error(out, ref_out) < BOUND
    assert torch.equal(x, inputs[0]) and torch.equal(residual, inputs[1])  # nothing written in place


def test_rms_norm_on_strided_heads():
    layer = RMSNorm(128, 1e-6).to(DEVICE, DTYPE)
    qkv = torch.randn(5, 3 * 4 * 128, device=DEVICE).to(DTYPE)
    q = qkv[:, :4 * 128].view(5, 4, 128)  # a split view, as in the model's per-head q_norm
    assert relative_error(fused_copy(layer)(q), layer(q)) < BOUND


def test_silu_and_mul_matches_layer():
    x = torch.randn(9, 2 * 3000, device=DEVICE).to(DTYPE)
    layer = SiluAndMul()
    assert relative_error(fused_copy(layer)(x), layer(x)) < BOUND


@pytest.mark.parametrize("heads,kv_heads,head_dim", [(16, 8, 128), (9, 3, 64)])
def test_rotary_matches_layer_in_place_on_fused_qkv(heads, kv_heads, head_dim):
    layer = RotaryEmbedding(head_dim, 4096, 500000.0, None).to(DEVICE)
    tokens = 6
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, device=DEVICE).to(DTYPE)
    q, k, _ = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], -1)
    q, k = q.view(tokens, heads, head_dim), k.view(tokens, kv_heads, head_dim)
    positions = torch.tensor([0, 1, 2, 100, 2000, 4095], device=DEVICE)
    ref_q, ref_k = layer(positions, q.clone(), k.clone())
    out_q, out_k = fused_copy(layer)(positions, q, k)
    assert relative_error(out_q, ref_q) < BOUND and relative_error(out_k, ref_k) < BOUND
    assert out_q.data_ptr() == q.data_ptr()  # rotated in place, inside the fused qkv buffer
