"""Batched random sampling in one launch: the Gumbel-max trick with counter-based random numbers.

Row r draws argmax(logits / temperature + Gumbel noise), the noise coming from Philox keyed by the row's own seed,
so a seeded request draws the same token whatever else shares its batch, with no per-request generator objects.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _gumbel_argmax_kernel(logits_ptr, seeds_ptr, inv_temps_ptr, out_ptr, vocab, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    seed = tl.load(seeds_ptr + row)
    inv_temp = tl.load(inv_temps_ptr + row)
    best_score = float("-inf")
    best_index = 0
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < vocab
        x = tl.load(logits_ptr + row * stride + cols, mask=mask, other=float("-inf"))
        u = tl.rand(seed, cols)
        gumbel = -tl.log(-tl.log(u + 1e-20) + 1e-20)
        score = tl.where(mask, x * inv_temp + gumbel, float("-inf"))
        tile_best = tl.max(score, 0)
        tile_index = start + tl.argmax(score, 0)
        take = tile_best > best_score
        best_index = tl.where(take, tile_index, best_index)
        best_score = tl.where(take, tile_best, best_score)
    tl.store(out_ptr + row, best_index)


def gumbel_argmax(logits: torch.Tensor, seeds: torch.Tensor, inv_temps: torch.Tensor) -> torch.Tensor:
    """logits: [n, vocab] float32 (-inf where filtered out); seeds: [n] int64; inv_temps: [n] float32 -> [n] int64."""
    n, vocab = logits.shape
    out = torch.empty(n, dtype=torch.int64, device=logits.device)
    _gumbel_argmax_kernel[(n,)](logits, seeds, inv_temps, out, vocab, logits.stride(0), BLOCK=4096, num_warps=8)
    return out
