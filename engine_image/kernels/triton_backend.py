"""The GPU side of the attention boundary: `paged_attention` with the same arguments as the PyTorch version in
fleetserve.engine.attention, running the Triton kernels.

The GPU model runner hands over `GpuAttentionMetadata`, which carries what the kernels need as device tensors
(prepared once per step, not once per layer). Plain `AttentionMetadata` also works, at the cost of building those
tensors on every call.
"""

from dataclasses import dataclass

import torch

from fleetserve.engine.attention import AttentionMetadata
from fleetserve.engine.kernels.paged_attention import paged_decode_attention, paged_prefill_attention


@dataclass
class GpuAttentionMetadata(AttentionMetadata):
    cu_seqlens_q: torch.Tensor | None = None  # [num_seqs + 1] int32, start of each sequence's queries
    max_query_len: int = 1
    decode_splits: int = 1  # split-KV factor for decode; fixed per captured batch size
    is_decode: bool = False  # one query per sequence (set for CUDA-graph batches, whose query_lens are padded)
    decode_order: torch.Tensor | None = None  # the batch's rows, longest context first (decode graphs)
    # A mixed step's prefill sequences' own block tables, query starts and context lengths, as tensors of their own:
    # slices past the decode rows would start at addresses of any alignment, and Triton compiles a kernel variant
    # per alignment (a stall mid-serving). None: sliced from the whole step's tensors.
    prefill_block_tables: torch.Tensor | None = None
    prefill_cu_seqlens_q: torch.Tensor | None = None
    prefill_context_lens: torch.Tensor | None = None


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                    scale: float) -> torch.Tensor:
    if getattr(meta, "is_decode", False) or meta.all_decode:
        return paged_decode_attention(q, k_cache, v_cache, meta.block_tables, meta.context_lens, scale,
                                      getattr(meta, "decode_splits", 1), order=getattr(meta, "decode_order", None))
    cu, max_q = getattr(meta, "cu_seqlens_q", None), getattr(meta, "max_query_len", 0)
    if cu is None:  # plain metadata: build per call
        cu = torch.tensor([0, *meta.query_lens], device=q.device).cumsum(0).to(torch.int32)
        max_q = max(meta.query_lens)
    d = meta.num_decodes
    if not d:
        return paged_prefill_attention(q, k_cache, v_cache, meta.block_tables, cu, meta.context_lens, max_q, scale)
    # A mixed step: its leading one-token rows go through the decode kernel, which reads each KV head's K/V once for
    # all its query heads; the prefill kernel would read them once per query head, with 63 of its 64 rows idle.
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    paged_decode_attention(q[:d], k_cache, v_cache, meta.block_tables[:d], meta.context_lens[:d], scale,
                           getattr(meta, "decode_splits", 1), out=out[:d])
    tables = getattr(meta, "prefill_block_tables", None)
    if tables is None:
        tables, cu, context_lens = meta.block_tables[d:], cu[d:], meta.context_lens[d:]
    else:
        cu, context_lens = meta.prefill_cu_seqlens_q, meta.prefill_context_lens
    paged_prefill_attention(q, k_cache, v_cache, tables, cu, context_lens, max_q, scale, out=out)
    return out
