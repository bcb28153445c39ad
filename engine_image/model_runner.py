"""The tensor side of a step on the CPU (gpu_model_runner.py is the CUDA one, same API): owns the KV cache, turns
scheduled sequences into model inputs, runs the model and returns logits for the sequences that get a token this
step. Makes no policy decisions."""

import logging

import torch

from fleetserve.engine import distributed
from fleetserve.engine.attention import AttentionMetadata
from fleetserve.engine.config import EngineConfig
from fleetserve.engine.models.llama import LlamaForCausalLM
from fleetserve.engine.sequence import Sequence

log = logging.getLogger(__name__)


def kv_bytes_per_block(hf_config, block_size: int, dtype: torch.dtype) -> int:
    """One block of this rank's KV cache, which holds its share of the KV heads under tensor parallelism."""
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    kv_heads = hf_config.num_key_value_heads // distributed.tp_size()
    per_token = 2 * hf_config.num_hidden_layers * kv_heads * head_dim * dtype.itemsize
    return per_token * block_size


def bind_kv_cache(model: LlamaForCausalLM, kv_cache: torch.Tensor) -> None:
    """Points every attention layer at its slices of `kv_cache` [layers, 2, blocks, block_size, kv_heads, dim]."""
    for i, layer in enumerate(model.kv_layers()):
        layer.k_cache, layer.v_cache = kv_cache[i, 0], kv_cache[i, 1]


def ensure_kv_cache_bound(model: LlamaForCausalLM, kv_cache: torch.Tensor) -> None:
    """Engines may share one model's weights (tests, benchmarks): each rebinds its own cache before it runs when
    another engine bound its own since, so no engine ever computes on another's K/V."""
    if model.kv_layers()[0].k_cache.data_ptr() != kv_cache.data_ptr():
        bind_kv_cache(model, kv_cache)


def pending_inputs(seqs: list[Sequence]) -> tuple[list[int], list[int]]:
    """The input ids of this step that are still on the device (the token each decoding sequence sampled in the
    step before, see LLMEngine): their places in the step's flat input, and their rows in that step's tokens."""
    places, rows, offset = [], [], 0
    for seq in seqs:
        offset += seq.num_new_tokens
        if seq.num_pending:  # only ever the last token, which every step that reaches it computes
            places.append(offset - 1)
            rows.append(seq.pending_row)
    return places, rows


def decodes_first(seqs: list[Sequence]) -> tuple[list[Sequence], int]:
    """A step's sequences in the order its inputs are laid out: those computing one token first (stable), so
    attention runs them as one decode batch and only the rest one prefill at a time (a mixed step of 255 decodes and
    one new prompt is the common step behind a long queue); and how many lead. The engine's order is the scheduler's:
    a runner returns logits in that order whatever the layout."""
    batch = sorted(seqs, key=lambda seq: seq.num_new_tokens != 1)
    return batch, sum(1 for seq in batch if seq.num_new_tokens == 1)


def require_pending_tokens(pending_tokens: torch.Tensor | None) -> torch.Tensor:
    """The previous step's sampled tokens, which a step with pending inputs cannot run without."""
    if pending_tokens is None:
        raise RuntimeError("a scheduled token is still pending but the step was given no sampled tokens")
    return pending_tokens


def fill_pending(input_ids: torch.Tensor, places: list[int], rows: list[int], pending_tokens: torch.Tensor | None,
                 upload) -> None:
    if places:
        input_ids[upload(places)] = require_pending_tokens(pending_tokens)[upload(rows)]


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, config: EngineConfig):
        self.model = model
        self.config = config
        self.block_size = config.block_size
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.num_blocks = config.num_kv_blocks or self._derive_num_blocks()
        self._allocate_kv_cache()

    def _derive_num_blocks(self) -> int:
        per_block = kv_bytes_per_block(self.model.config, self.block_size, self.dtype)
        num_blocks = self.config.kv_cache_memory_bytes // per_block
        if num_blocks < 1:
            raise ValueError(f"kv_cache_memory_bytes {self.config.kv_cache_memory_bytes} is less than one KV block "
                             f"({per_block} bytes)")
        log.info("KV cache: %d blocks of %d tokens (%.2f GiB)", num_blocks, self.block_size,
                 num_blocks * per_block / 2**30)
        return int(num_blocks)

    def _allocate_kv_cache(self) -> None:
        layers = self.model.kv_layers()
        a = layers[0]
        self.kv_cache = torch.zeros(len(layers), 2, self.num_blocks, self.block_size, a.num_kv_heads, a.head_dim,
                                    dtype=self.dtype, device=self.device)
        bind_kv_cache(self.model, self.kv_cache)

    @torch.inference_mode()
    def run(self, seqs: list[Sequence], pending_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Computes the scheduled tokens of `seqs`; float32 logits [n, vocab] for each sequence (in order) whose
        step reaches its last token. `pending_tokens`: the previous step's sampled tokens, for inputs still
        pending."""
        ensure_kv_cache_bound(self.model, self.kv_cache)
        batch, num_decodes = decodes_first(seqs)
        input_ids, positions, slots, query_lens, context_lens, last_row = [], [], [], [], [], {}
        for seq in batch:
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + seq.num_new_tokens
            input_ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            slots.extend(seq.block_table[p // self.block_size] * self.block_size + p % self.block_size
                         for p in range(start, end))
            query_lens.append(end - start)
            context_lens.append(end)
            last_row[seq.request_id] = len(input_ids) - 1
        sample_rows = [last_row[seq.request_id] for seq in seqs if seq.samples_after_step()]
        width = max(-(-n // self.block_size) for n in context_lens)
        tables = [seq.block_table[:width] + [0] * (width - min(width, len(seq.block_table))) for seq in batch]
        as_tensor = lambda values: torch.tensor(values, dtype=torch.long, device=self.device)  # noqa: E731
        meta = AttentionMetadata(slot_mapping=as_tensor(slots), block_tables=as_tensor(tables),
                                 context_lens=as_tensor(context_lens), query_lens=query_lens,
                                 context_lens_list=context_lens, num_decodes=num_decodes)
        ids = as_tensor(input_ids)
        fill_pending(ids, *pending_inputs(batch), pending_tokens, as_tensor)
        hidden = self.model(ids, as_tensor(positions), meta)
        if not sample_rows:
            return torch.empty(0, device=self.device)
        return self.model.compute_logits(hidden[as_tensor(sample_rows)])
