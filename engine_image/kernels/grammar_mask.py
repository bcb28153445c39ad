"""Grammar masks applied to the logits in one launch: each program takes one constrained row and one block of the
vocabulary, reads the row's packed bitmask (bit j of int32 word i = token 32*i + j allowed) and writes -inf where a
token is not allowed. Unpacking the bitmask into a bool tensor with torch took about ten launches and a [rows,
vocab] intermediate per step."""

import torch
import triton
import triton.language as tl

BLOCK = 4096


@triton.jit
def _mask_rows_kernel(logits_ptr, stride, bitmask_ptr, words, pairs_ptr, pairs, vocab, BLOCK: tl.constexpr):
    pair = tl.program_id(0)
    mask_row = tl.load(pairs_ptr + pair)
    logits_row = tl.load(pairs_ptr + pairs + pair)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    in_vocab = cols < vocab
    word = tl.load(bitmask_ptr + mask_row * words + cols // 32, mask=in_vocab, other=-1)
    allowed = (word >> (cols % 32)) & 1
    tl.store(logits_ptr + logits_row * stride + cols, float("-inf"), mask=in_vocab & (allowed == 0))


def mask_rows_(logits: torch.Tensor, bitmask: torch.Tensor, pairs: torch.Tensor) -> None:
    """In place: logits [n, vocab] (float32); bitmask int32 [m, words]; pairs int64 [2, k]: row pairs[0][i] of the
    bitmask masks row pairs[1][i] of the logits."""
    k, vocab = pairs.shape[1], logits.shape[-1]
    if k:
        _mask_rows_kernel[(k, triton.cdiv(vocab, BLOCK))](logits, logits.stride(0), bitmask, bitmask.stride(0),
                                                         pairs, k, vocab, BLOCK=BLOCK, num_warps=4)
