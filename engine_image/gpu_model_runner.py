"""The tensor side of a step on a CUDA GPU: the same job and API as ModelRunner (KV cache, inputs, model, logits),
with the Triton paged-attention kernels, a KV cache sized by a profiling pass, and decode steps replayed from CUDA
graphs captured per batch-size bucket (without graphs, each decode step's launches cost more than its math).

One extra cache block, past the ones the block manager hands out, is a scratch block: the padding rows of a
captured batch write their K/V there and attend to it, so no real block is touched and no row produces NaN.
"""

import bisect
import logging

import numpy as np
import torch
from tqdm import tqdm

from fleetserve.engine.config import EngineConfig
from fleetserve.engine.host_inputs import BlockTableMirror, stage_decode
from fleetserve.engine.kernels.fused_layers import use_fused_kernels
from fleetserve.engine.kernels.fused_ops import take_pending
from fleetserve.engine.kernels.paged_attention import decode_splits
from fleetserve.engine.kernels.triton_backend import GpuAttentionMetadata
from fleetserve.engine.model_runner import (
    bind_kv_cache,
    decodes_first,
    ensure_kv_cache_bound,
    fill_pending,
    kv_bytes_per_block,
    pending_inputs,
    require_pending_tokens,
)
from fleetserve.engine.models.llama import LlamaForCausalLM
from fleetserve.engine.sequence import Sequence

log = logging.getLogger(__name__)


def graph_batch_sizes(max_num_seqs: int) -> list[int]:
    """Captured decode batch sizes (nano-vllm's buckets): 1, 2, 4, 8, then every 16 up to max_num_seqs."""
    sizes = [b for b in (1, 2, 4, 8) if b < max_num_seqs] + list(range(16, max_num_seqs + 1, 16))
    return sorted(set(sizes + [max_num_seqs]))


def kv_budget_bytes(total: int, free: int, utilization: float, activation_peak: int) -> int:
    """What `gpu_memory_utilization` of the card leaves for the KV cache after everything already resident (weights,
    CUDA context, other processes) and the peak activations of the largest step."""
    used = total - free
    return int(total * utilization - used - activation_peak)


class GPUModelRunner:
    def __init__(self, model: LlamaForCausalLM, config: EngineConfig):
        self.model = model
        use_fused_kernels(model)
        self.config = config
        self.block_size = config.block_size
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.max_model_len = config.max_model_len or int(model.config.max_position_embeddings)
        self.max_blocks_per_seq = -(-self.max_model_len // self.block_size)
        self.num_sms = torch.cuda.get_device_properties(self.device).multi_processor_count
        self.num_kv_heads = model.kv_layers()[0].num_kv_heads
        self.num_blocks = config.num_kv_blocks or self._profile_num_blocks()
        self._allocate_kv_cache(self.num_blocks + 1)  # + the scratch block
        self.scratch_block = self.num_blocks
        self.block_tables = BlockTableMirror(config.max_num_seqs, self.max_blocks_per_seq, fill=self.scratch_block)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._capture_decode_graphs()

    # --- memory -------------------------------------------------------------------------------------------------

    def _profile_num_blocks(self) -> int:
        """Runs one full-budget prefill on a throwaway cache to measure peak activations, then sizes the cache."""
        tokens = min(self.config.max_num_batched_tokens, self.max_model_len)
        blocks = -(-tokens // self.block_size)
        self._allocate_kv_cache(blocks)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        seq_lens = [tokens]
        meta = self._prefill_metadata(
            slots=list(range(tokens)), tables=np.arange(blocks, dtype=np.int32)[None, :], query_lens=seq_lens,
            context_lens=seq_lens)
        with torch.inference_mode():
            hidden = self.model(torch.zeros(tokens, dtype=torch.long, device=self.device),
                                torch.arange(tokens, device=self.device), meta)
            self.model.compute_logits(hidden[-min(tokens, self.config.max_num_seqs):])
        torch.cuda.synchronize()
        activation_peak = torch.cuda.max_memory_allocated() - base
        self.kv_cache = None
        self._unbind_kv_cache()
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(self.device)
        budget = kv_budget_bytes(total, free, self.config.gpu_memory_utilization, activation_peak)
        per_block = kv_bytes_per_block(self.model.config, self.block_size, self.dtype)
        num_blocks = budget // per_block - 1  # one goes to the scratch block
        if num_blocks < self.max_blocks_per_seq:
            raise ValueError(f"gpu_memory_utilization {self.config.gpu_memory_utilization}: the KV cache would hold "
                             f"{max(num_blocks, 0) * self.block_size} tokens, less than max_model_len "
                             f"{self.max_model_len}")
        log.info("KV cache: %d blocks of %d tokens (%.2f GiB); activation peak %.2f GiB", num_blocks,
                 self.block_size, num_blocks * per_block / 2**30, activation_peak / 2**30)
        return int(num_blocks)

    def _allocate_kv_cache(self, num_blocks: int) -> None:
        layers = self.model.kv_layers()
        a = layers[0]
        self.kv_cache = torch.empty(len(layers), 2, num_blocks, self.block_size, a.num_kv_heads, a.head_dim,
                                    dtype=self.dtype, device=self.device)
        bind_kv_cache(self.model, self.kv_cache)

    def _unbind_kv_cache(self) -> None:
        for layer in self.model.kv_layers():
            layer.k_cache = layer.v_cache = torch.empty(0)

    # --- metadata -----------------------------------------------------------------------------------------------

    def _to_device(self, values, dtype=torch.int32) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values), dtype=dtype).pin_memory().to(self.device, non_blocking=True)

    def _prefill_metadata(self, slots, tables: np.ndarray, query_lens: list[int], context_lens: list[int],
                          num_decodes: int = 0):
        cu = np.zeros(len(query_lens) + 1, dtype=np.int32)
        np.cumsum(query_lens, out=cu[1:])
        splits = decode_splits(num_decodes, self.num_kv_heads, max(context_lens[:num_decodes]),
                               self.num_sms) if num_decodes else 1
        meta = GpuAttentionMetadata(
            slot_mapping=self._to_device(slots, torch.long), block_tables=self._to_device(tables),
            context_lens=self._to_device(context_lens), query_lens=query_lens, context_lens_list=context_lens,
            num_decodes=num_decodes, cu_seqlens_q=self._to_device(cu), max_query_len=max(query_lens),
            decode_splits=splits)
        if 0 < num_decodes < len(query_lens):  # the prefill part's own aligned tensors (see GpuAttentionMetadata)
            meta.prefill_block_tables = self._to_device(tables[num_decodes:])
            meta.prefill_cu_seqlens_q = self._to_device(cu[num_decodes:])
            meta.prefill_context_lens = self._to_device(context_lens[num_decodes:])
        return meta

    # --- CUDA graphs for decode ---------------------------------------------------------------------------------

    def _capture_decode_graphs(self) -> None:
        sizes = graph_batch_sizes(self.config.max_num_seqs)
        max_bs = sizes[-1]
        self.graph_sizes = sizes
        # Decode inputs cross to the GPU in two copies a step: rows of ids / positions / slots / context lengths /
        # pending rows / attention order from one pinned buffer, and the block tables from another; the graphs read
        # views of the device copies. A pending row >= 0 takes that input id from the previous step's tokens, on
        # the GPU.
        self.h_rows = torch.zeros(6, max_bs, dtype=torch.long).pin_memory()
        self.h_rows_np = self.h_rows.numpy()
        self.g_rows = torch.zeros(6, max_bs, dtype=torch.long, device=self.device)
        (self.g_input_ids, self.g_positions, self.g_slots, self.g_context_lens, self.g_pending_rows,
         self.g_order) = self.g_rows
        self.g_slots.fill_(self.scratch_block * self.block_size)
        self.g_context_lens.fill_(1)
        self.g_order.copy_(torch.arange(max_bs))
        self.h_tables = torch.empty(max_bs * self.max_blocks_per_seq, dtype=torch.int32).pin_memory()
        self.h_tables_np = self.h_tables.numpy()
        self.d_tables = torch.empty_like(self.h_tables, device=self.device)
        self.g_tables = torch.full((max_bs, self.max_blocks_per_seq), self.scratch_block, dtype=torch.int32,
                                   device=self.device)
        self.staged = torch.cuda.Event()
        self.g_logits: dict[int, torch.Tensor] = {}  # each graph's own output buffer
        pool = None
        with torch.inference_mode():
            for bs in tqdm(reversed(sizes), total=len(sizes), desc="capturing decode graphs", disable=None):
                meta = GpuAttentionMetadata(
                    slot_mapping=self.g_slots[:bs], block_tables=self.g_tables[:bs],
                    context_lens=self.g_context_lens[:bs], query_lens=[1] * bs, context_lens_list=[],
                    is_decode=True, decode_splits=decode_splits(bs, self.num_kv_heads, self.max_model_len,
                                                                self.num_sms), decode_order=self.g_order[:bs])
                run = lambda: self.model.compute_logits(  # noqa: E731
                    self.model(self.g_input_ids[:bs], self.g_positions[:bs], meta))
                run()  # warm-up outside the graph: Triton compiles here
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    self.g_logits[bs] = run()
                pool = graph.pool()
                self.graphs[bs] = graph
        torch.cuda.synchronize()

    def _run_decode_graph(self, seqs: list[Sequence], pending_tokens: torch.Tensor | None) -> torch.Tensor:
        n = len(seqs)
        bs = self.graph_sizes[bisect.bisect_left(self.graph_sizes, n)]
        self.staged.synchronize()  # the previous step's copies have left the pinned buffers
        width, any_pending = stage_decode(seqs, self.h_rows_np[:, :bs], self.h_tables_np, self.block_tables,
                                          self.block_size)
        if any_pending:
            pending_tokens = require_pending_tokens(pending_tokens)
        self.g_rows.copy_(self.h_rows, non_blocking=True)  # 6 x max_bs: one small contiguous copy
        self.d_tables[:bs * width].copy_(self.h_tables[:bs * width], non_blocking=True)
        self.staged.record()
        if any_pending:
            take_pending(self.g_input_ids, self.g_pending_rows, pending_tokens, n)
        self.g_tables[:bs, :width].copy_(self.d_tables[:bs * width].view(bs, width))
        self.graphs[bs].replay()
        return self.g_logits[bs][:n]

    # --- the step -----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def run(self, seqs: list[Sequence], pending_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Computes the scheduled tokens of `seqs`; float32 logits [n, vocab] (on the GPU) for each sequence, in
        order, whose step reaches its last token. `pending_tokens`: the previous step's sampled tokens (on the
        GPU), for inputs still pending. Returns once the work is queued."""
        ensure_kv_cache_bound(self.model, self.kv_cache)  # the graphs captured ours; eager steps read the layers'
        if len(seqs) <= self.graph_sizes[-1] and all(
                s.num_new_tokens == 1 and s.samples_after_step() for s in seqs):
            return self._run_decode_graph(seqs, pending_tokens)
        return self._run_eager(seqs, pending_tokens)

    def _run_eager(self, seqs: list[Sequence], pending_tokens: torch.Tensor | None = None) -> torch.Tensor:
        batch, num_decodes = decodes_first(seqs)
        input_ids, positions, slots, query_lens, last_row = [], [], [], [], {}
        bsz = self.block_size
        context_lens = [seq.num_computed_tokens + seq.num_new_tokens for seq in batch]
        tables = np.empty((len(batch), -(-max(context_lens) // bsz)), np.int32)
        self.block_tables.gather(batch, tables.shape[1], tables)
        for seq, table, end in zip(batch, tables, context_lens):
            start = seq.num_computed_tokens
            input_ids.extend(seq.token_ids[start:end])
            pos = np.arange(start, end)
            positions.append(pos)
            slots.append(table[pos // bsz].astype(np.int64) * bsz + pos % bsz)
            query_lens.append(end - start)
            last_row[seq.request_id] = len(input_ids) - 1
        sample_rows = [last_row[seq.request_id] for seq in seqs if seq.samples_after_step()]
        meta = self._prefill_metadata(np.concatenate(slots), tables, query_lens, context_lens, num_decodes)
        ids = self._to_device(input_ids, torch.long)
        fill_pending(ids, *pending_inputs(batch), pending_tokens, lambda v: self._to_device(v, torch.long))
        hidden = self.model(ids, self._to_device(np.concatenate(positions), torch.long), meta)
        if not sample_rows:
            return torch.empty(0, device=self.device)
        return self.model.compute_logits(hidden[self._to_device(sample_rows, torch.long)])
