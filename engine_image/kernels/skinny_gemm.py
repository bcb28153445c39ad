"""y = x @ W^T (+ bias) for a few rows of x: the decode step's projections and LM head at small batch.

With one to sixteen rows a projection reads each weight once and does almost no arithmetic, so it is a question of
streaming W at memory bandwidth. cuBLAS meets these shapes with split-K kernels plus a separate reduce (Llama-3-8B's
o_proj at 64% of copy bandwidth on an H100, qkv 75%, LM head 91%); this kernel gives each program 64 whole rows of
W, walks K in 128-wide tiles six deep in flight, and multiplies them on the tensor cores by x padded to 16 rows
(with the weights cycled so every call reads HBM: o_proj 75%, qkv 81%, gate/up 91%, LM head 101%).

Its numbers are cuBLAS's: a row's K is summed in one pass, as cuBLAS does for these shapes at prefill sizes, so
on an H100 each output equals, bit for bit, the same row computed by cuBLAS in a batch of 64 (probed on Qwen3-0.6B's
projections and LM head and Llama-3-8B's o_proj; docs/gpu.md). A
sequence's tokens then do not depend on the batch it is decoded in, nor on whether its K/V came from decode steps
or from recomputing it after a preemption. That is why the MLP's down projection (input three or more times its
output) stays on cuBLAS: there cuBLAS splits K at small row counts (decode, and a short prompt's prefill), and a
one-pass row differs in the last bit for 0.3-0.9% of outputs.
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from fleetserve.engine.kernels.dependent_launch import pdl, wait_for_previous

MAX_ROWS = 16
BLOCK_N, BLOCK_K, STAGES = 64, 128, 6
GATED_STAGES = 4  # two weight tiles a stage: six would not fit in shared memory


# The row count changes with the batch: not specialised on, so a new batch size compiles nothing mid-serving.
@triton.jit(do_not_specialize=["M"])
def _skinny_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, N, K, x_stride, y_stride, HAS_BIAS: tl.constexpr,
                   GATED: tl.constexpr, EVEN_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   M_PAD: tl.constexpr, PDL: tl.constexpr):
    """One program: BLOCK_N output features for every row; computes y^T[BLOCK_N, M_PAD] = W[BLOCK_N, K] x^T.
    GATED: W is [gate; up], N rows each, and y = silu(x W_gate^T) * (x W_up^T), each product rounded to y's dtype
    first, as the unfused GEMM and silu_and_mul round them."""
    wait_for_previous(PDL)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, M_PAD)
    k = tl.arange(0, BLOCK_K)
    n_ok = n < N
    m_ok = m < M
    w_ptrs = w_ptr + n[:, None].to(tl.int64) * K + k[None, :]
    x_ptrs = x_ptr + m[None, :] * x_stride + k[:, None]
    up_offset = N.to(tl.int64) * K
    acc = tl.zeros([BLOCK_N, M_PAD], tl.float32)
    acc_up = tl.zeros([BLOCK_N, M_PAD], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        w_mask = n_ok[:, None] if EVEN_K else n_ok[:, None] & (k0 + k < K)[None, :]
        x_mask = m_ok[None, :] if EVEN_K else m_ok[None, :] & (k0 + k < K)[:, None]
        x = tl.load(x_ptrs, mask=x_mask, other=0.0)
        acc = tl.dot(tl.load(w_ptrs, mask=w_mask, other=0.0), x, acc)
        if GATED:
            acc_up = tl.dot(tl.load(w_ptrs + up_offset, mask=w_mask, other=0.0), x, acc_up)
        w_ptrs += BLOCK_K
        x_ptrs += BLOCK_K
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=n_ok, other=0.0).to(tl.float32)[:, None]
    if GATED:
        gate = acc.to(y_ptr.dtype.element_ty).to(tl.float32)
        up = acc_up.to(y_ptr.dtype.element_ty).to(tl.float32)
        act = (gate / (1.0 + tl.exp(-gate))).to(y_ptr.dtype.element_ty).to(tl.float32)  # as silu_and_mul
        acc = act * up
    tl.store(y_ptr + m[None, :] * y_stride + n[:, None], acc.to(y_ptr.dtype.element_ty),
             mask=n_ok[:, None] & m_ok[None, :])


def _fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return x.dim() == 2 and 0 < x.shape[0] <= MAX_ROWS and x.stride(-1) == 1 and weight.is_contiguous()


def _launch(x, weight, bias, out_features, out_dtype, gated, tiles: tuple[int, int, int, int] | None = None):
    """tiles: (BLOCK_N, num_warps, BLOCK_K, num_stages), the shipped ones unless a benchmark sweeps them."""
    rows, in_features = x.shape
    block_n, warps, block_k, stages = tiles or (BLOCK_N, 4, BLOCK_K, GATED_STAGES if gated else STAGES)
    y = torch.empty(rows, out_features, dtype=out_dtype, device=x.device)
    _skinny_kernel[(triton.cdiv(out_features, block_n),)](
        x, weight, weight if bias is None else bias, y, rows, out_features, in_features, x.stride(0), y.stride(0),
        HAS_BIAS=bias is not None, GATED=gated, EVEN_K=in_features % block_k == 0, BLOCK_N=block_n,
        BLOCK_K=block_k, M_PAD=MAX_ROWS, num_warps=warps, num_stages=stages, **pdl(x))
    return y


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """F.linear, through the kernel when x has at most MAX_ROWS rows. `out_dtype` (float32 for logits) is what the
    product is rounded to, once, instead of x's dtype."""
    out_dtype = out_dtype or x.dtype
    if _fits(x, weight):
        return _launch(x, weight, bias, weight.shape[0], out_dtype, gated=False)
    if out_dtype == x.dtype:
        return F.linear(x, weight, bias)
    y = torch.mm(x.flatten(0, -2), weight.t(), out_dtype=out_dtype).view(*x.shape[:-1], -1)
    return y if bias is None else y + bias


def gated_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """silu(x W_gate^T) * (x W_up^T) for W = [gate; up] in one launch, or None when x has too many rows."""
    if not _fits(x, weight):
        return None
    return _launch(x, weight, None, weight.shape[0] // 2, x.dtype, gated=True)
