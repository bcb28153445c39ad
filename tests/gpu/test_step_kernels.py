"""The decode step's small kernels outside the model: greedy argmax over the vocabulary and the pending-input fill.

Runs on a CUDA device; on a CPU machine it skips, unless TRITON_INTERPRET=1 (Triton's interpreter).
"""

import pytest
import torch

from kernel_device import DEVICE, require_kernel_device

require_kernel_device()

from fleetserve.engine.kernels.fused_ops import take_pending  # noqa: E402
from fleetserve.engine.kernels.sampling import ARGMAX_CHUNK, greedy_argmax  # noqa: E402


@pytest.mark.parametrize("rows,vocab", [(1, 128256), (3, 1000), (2, 2 * ARGMAX_CHUNK)])
def test_greedy_argmax_is_torch_argmax(rows, vocab):
    logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(vocab)).to(DEVICE)
    assert torch.equal(greedy_argmax(logits), logits.argmax(-1))


def test_greedy_argmax_takes_the_first_of_equal_maxima_across_chunks_and_skips_minus_inf():
    logits = torch.full((2, 3 * ARGMAX_CHUNK + 5), float("-inf"), device=DEVICE)
    logits[0, [7, ARGMAX_CHUNK + 1, 3 * ARGMAX_CHUNK + 4]] = 2.0  # a tie in three chunks
    logits[1, 3 * ARGMAX_CHUNK + 4] = -1e30  # the only finite logit, in the last, partial chunk
    assert greedy_argmax(logits).tolist() == [7, 3 * ARGMAX_CHUNK + 4]


def test_take_pending_fills_only_pending_rows_of_the_first_n():
    ids = torch.tensor([10, 11, 12, 13, 14, 15, 16, 17], device=DEVICE)
    rows = torch.tensor([-1, 2, 0, -1, 1, -1, 0, 0], device=DEVICE)
    tokens = torch.tensor([100, 101, 102], device=DEVICE)
    take_pending(ids, rows, tokens, n=5)
    assert ids.tolist() == [10, 102, 100, 13, 101, 15, 16, 17]
