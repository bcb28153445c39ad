"""Matrix-vector product for one-row inputs (batch-1 decode steps).

At batch 1 a linear layer is a pure weight read. On the H100, at Llama-3-8B shapes with K = 4096, this kernel
reads the weight 2-10% faster than the kernels cuBLAS picks (LM head 3.09 vs 2.81 TB/s, gate/up 2.84 vs 2.79,
o_proj 2.11 vs 2.04; benchmarks/results/gpu-bench.md), but slower where rows are long (down_proj, K = 14336:
2.40 vs 2.64 TB/s), so it takes only rows up to MAX_K.
"""

import torch
import triton
import triton.language as tl

MAX_K = 8192
BLOCK_N, BLOCK_K = 8, 512  # the best of 12 tiles tried on the H100, for all four K = 4096 shapes


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, out_ptr, N, K, w_stride, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 EVEN_K: tl.constexpr):
    """One program: BLOCK_N output features, each the dot product of a weight row with x, in float32."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    cols = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + cols) < K if not EVEN_K else cols < BLOCK_K
        w = tl.load(w_ptr + rows[:, None].to(tl.int64) * w_stride + (k0 + cols)[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        x = tl.load(x_ptr + k0 + cols, mask=k_ok, other=0.0)
        acc += tl.sum(w.to(tl.float32) * x.to(tl.float32)[None, :], 1)
    tl.store(out_ptr + rows, acc.to(out_ptr.dtype.element_ty), mask=row_ok)


def takes(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `gemv` serves this product: one input row, a weight with rows of at most MAX_K, unit column stride."""
    return x.dim() == 2 and x.shape[0] == 1 and weight.shape[1] <= MAX_K and weight.stride(1) == 1


def gemv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x: [1, K], weight: [N, K] -> [1, N], as F.linear(x, weight) (float32 accumulation, one rounding)."""
    n, k = weight.shape
    x = x.contiguous()
    out = torch.empty(1, n, dtype=x.dtype, device=x.device)
    _gemv_kernel[(triton.cdiv(n, BLOCK_N),)](x, weight, out, n, k, weight.stride(0), BLOCK_N=BLOCK_N,
                                             BLOCK_K=BLOCK_K, EVEN_K=k % BLOCK_K == 0, num_warps=4, num_stages=5)
    return out
