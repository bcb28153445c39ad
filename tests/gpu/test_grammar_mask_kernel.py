"""The one-launch grammar mask (kernels/grammar_mask.py) against unpacking the bitmask with torch, as the CPU
sampler does. Runs on a CUDA device; on a CPU machine it skips unless TRITON_INTERPRET=1."""

import os

import pytest
import torch

triton = pytest.importorskip("triton")
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("needs a CUDA device (or TRITON_INTERPRET=1)", allow_module_level=True)

from fleetserve.engine.kernels.grammar_mask import BLOCK, mask_rows_  # noqa: E402
from fleetserve.engine.structured_output import unpack_bitmask  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("vocab", [BLOCK + 37, 2 * BLOCK, 100])  # a partial last block and word, whole blocks
def test_masks_only_the_paired_rows_as_the_bitmask_says(vocab):
    gen = torch.Generator().manual_seed(vocab)
    words = (vocab + 31) // 32
    bitmask = torch.randint(-2**31, 2**31 - 1, (3, words), generator=gen, dtype=torch.int64).to(torch.int32)
    logits = torch.randn(5, vocab, generator=gen)
    pairs = torch.tensor([[2, 0], [4, 1]])  # bitmask row 2 masks logits row 4, row 0 masks row 1
    expected = logits.clone()
    for mask_row, row in pairs.T.tolist():
        allowed = unpack_bitmask(bitmask[mask_row:mask_row + 1], vocab)[0]
        expected[row] = expected[row].masked_fill(~allowed, float("-inf"))
    got = logits.to(DEVICE)
    mask_rows_(got, bitmask.to(DEVICE), pairs.to(DEVICE))
    assert torch.equal(got.cpu(), expected)
    assert torch.equal(got.cpu()[[0, 2, 3]], logits[[0, 2, 3]])  # unpaired rows untouched


def test_no_pairs_is_a_no_op():
    logits = torch.randn(2, 64, device=DEVICE)
    before = logits.clone()
    mask_rows_(logits, torch.zeros(1, 2, dtype=torch.int32, device=DEVICE), torch.zeros(2, 0, dtype=torch.long,
                                                                                        device=DEVICE))
    assert torch.equal(logits, before)
