"""The few-row GEMM against F.linear, and its batch invariance: a row's output is the same alone or among others.

Runs on a CUDA device; on a CPU machine it skips, unless TRITON_INTERPRET=1 (then in float16: numpy has no bf16).
"""

import pytest
import torch
import torch.nn.functional as F

from kernel_device import DEVICE, DTYPE, relative_error, require_kernel_device

require_kernel_device()

from fleetserve.engine.kernels import skinny_gemm  # noqa: E402
from fleetserve.engine.kernels.fused_layers import use_fused_kernels  # noqa: E402
from fleetserve.engine.layers import ParallelLMHead, QKVParallelLinear, RowParallelLinear  # noqa: E402

BOUND = 1e-2  # bf16 operands, float32 accumulation in another order than cuBLAS's


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE, DTYPE)


# K a multiple of the 128-wide tile and not (SmolLM2's 576), N a multiple of the 64 rows and not
@pytest.mark.parametrize("rows,in_features,out_features", [(1, 256, 192), (5, 576, 100), (16, 384, 64)])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_f_linear(rows, in_features, out_features, bias):
    x, w = rand(rows, in_features), rand(out_features, in_features, seed=1) / in_features ** 0.5
    b = rand(out_features, seed=2) if bias else None
    out = skinny_gemm.linear(x, w, b)
    assert out.shape == (rows, out_features) and out.dtype == DTYPE
    assert relative_error(out, F.linear(x.double(), w.double(), None if b is None else b.double())) < BOUND


def test_a_row_gives_the_same_bits_alone_and_in_any_batch_up_to_the_limit():
    x, w = rand(skinny_gemm.MAX_ROWS, 256), rand(128, 256, seed=1)
    alone = skinny_gemm.linear(x[3:4], w)
    for rows in (4, 7, skinny_gemm.MAX_ROWS):
        assert torch.equal(skinny_gemm.linear(x[:rows], w)[3], alone[0])


def test_more_rows_or_a_strided_input_go_to_f_linear():
    w = rand(64, 128, seed=1)
    x = rand(skinny_gemm.MAX_ROWS + 1, 128)
    assert torch.equal(skinny_gemm.linear(x, w), F.linear(x, w))
    strided = rand(2, 256)[:, ::2]
    assert torch.equal(skinny_gemm.linear(strided, w), F.linear(strided, w))


def test_the_runner_gives_linear_layers_and_the_lm_head_the_kernel_but_not_a_down_projection():
    layers = torch.nn.ModuleList([QKVParallelLinear(128, 32, 4, 2), RowParallelLinear(128, 64),
                                  ParallelLMHead(256, 64)]).to(DEVICE, DTYPE)
    down = RowParallelLinear(384, 128)
    for layer in [*layers, down]:
        layer.weight.data.copy_(rand(*layer.weight.shape, seed=3))
    x = [rand(3, 128), rand(3, 128), rand(3, 64)]
    plain = [layer(v) for layer, v in zip(layers, x)]
    assert use_fused_kernels(layers) == 3 and use_fused_kernels(down) == 0
    assert down.matmul is not skinny_gemm.linear
    for layer, v, ref in zip(layers, x, plain):
        assert layer.matmul is skinny_gemm.linear
        assert relative_error(layer(v), ref) < BOUND


def test_gated_matches_the_gemm_then_silu_and_mul_bit_for_bit():
    from fleetserve.engine.kernels.fused_ops import silu_and_mul

    x, w = rand(5, 256), rand(2 * 192, 256, seed=1) / 16
    assert torch.equal(skinny_gemm.gated_linear(x, w), silu_and_mul(skinny_gemm.linear(x, w)))
    assert skinny_gemm.gated_linear(rand(skinny_gemm.MAX_ROWS + 1, 256), w) is None


def test_logits_come_in_float32_rounded_once():
    x, w = rand(3, 256), rand(512, 256, seed=1)
    out = skinny_gemm.linear(x, w, out_dtype=torch.float32)
    assert out.dtype == torch.float32
    assert relative_error(out, F.linear(x.double(), w.double())) < 1e-5
