"""Llama-family decoder (Llama 2/3, Mistral, Qwen2 with qkv bias, Qwen3 with per-head q/k RMSNorm) over a flat
batch of tokens and the paged KV cache. HF weight names are mapped onto the fused qkv and gate/up parameters."""

from collections.abc import Iterable

import torch
from torch import nn

from fleetserve.engine.attention import AttentionMetadata, paged_attention, write_kv
from fleetserve.engine.layers import (
    MergedColumnParallelLinear, ParallelLMHead, QKVParallelLinear, RMSNorm,
    RotaryEmbedding, RowParallelLinear, SiluAndMul, VocabParallelEmbedding,
)

SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}

# HF name fragment -> (our fused parameter, shard id)
PACKED_MODULES = {
    "q_proj": ("qkv_proj", "q"),
    "k_proj": ("qkv_proj", "k"),
    "v_proj": ("qkv_proj", "v"),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}


def rope_settings(cfg) -> tuple[float, dict | None]:
    """(theta, scaling) from either the transformers 4 keys (rope_theta/rope_scaling) or 5 (rope_parameters)."""
    params = getattr(cfg, "rope_parameters", None) or {}
    theta = params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    scaling = getattr(cfg, "rope_scaling", None) or params
    if scaling.get("rope_type", scaling.get("type", "default")) == "default":
        scaling = None
    return float(theta), scaling


def check_tensor_parallel(cfg, tp_size: int) -> None:
    """Every rank must hold a whole number of query heads, KV heads and MLP columns; refuse at start otherwise."""
    sizes = {"num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
             "intermediate_size": cfg.intermediate_size}
    bad = [f"{name} ({value})" for name, value in sizes.items() if value % tp_size]
    if bad:
        raise ValueError(f"tensor_parallel_size {tp_size} must divide the model's {', '.join(bad)}; "
                         "pick a tensor_parallel_size that divides them")


class LlamaAttention(nn.Module):
    """This rank's share of the heads: num_heads / tp_size query heads and num_kv_heads / tp_size KV heads."""

    def __init__(self, cfg, rotary: RotaryEmbedding, tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        self.num_heads = cfg.num_attention_heads // tp_size
        self.num_kv_heads = cfg.num_key_value_heads // tp_size
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scale = self.head_dim ** -0.5
        bias = getattr(cfg, "attention_bias", False) or cfg.model_type == "qwen2"
        self.qkv_proj = QKVParallelLinear(cfg.hidden_size, self.head_dim, cfg.num_attention_heads,
                                          cfg.num_key_value_heads, bias, tp_rank, tp_size)
        self.o_proj = RowParallelLinear(cfg.num_attention_heads * self.head_dim, cfg.hidden_size, False, tp_rank,
                                        tp_size)
        self.rotary = rotary
        self.qk_norm = cfg.model_type == "qwen3"
        if self.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.k_cache = self.v_cache = torch.empty(0)  # bound by the model runner

    def forward(self, positions: torch.Tensor, x: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = self.qkv_proj(x).split([q_size, kv_size, kv_size], -1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rotary(positions, q, k)
        write_kv(self.k_cache, self.v_cache, k, v, meta.slot_mapping)
        out = paged_attention(q, self.k_cache, self.v_cache, meta, self.scale)
        return self.o_proj(out.flatten(1))


class LlamaMLP(nn.Module):
    def __init__(self, cfg, tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        if getattr(cfg, "hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {cfg.hidden_act!r} is not supported")
        self.gate_up_proj = MergedColumnParallelLinear(cfg.hidden_size, [cfg.intermediate_size] * 2, False, tp_rank,
                                                       tp_size)
        self.act = SiluAndMul()
        self.down_proj = RowParallelLinear(cfg.intermediate_size, cfg.hidden_size, False, tp_rank, tp_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg, rotary: RotaryEmbedding, tp_rank: int, tp_size: int):
        super().__init__()
        self.self_attn = LlamaAttention(cfg, rotary, tp_rank, tp_size)
        self.mlp = LlamaMLP(cfg, tp_rank, tp_size)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, positions, hidden, residual, meta):
        """(hidden, residual) -> (hidden, residual): each residual add is fused into the norm that follows it, so the
        layer's output is the MLP's, not yet added to the stream (the next layer's input norm, or the final one, adds
        it). The first layer gets residual None: its input is the stream itself."""
        if residual is None:
            hidden, residual = self.input_layernorm(hidden), hidden
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(positions, hidden, meta)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


class LlamaModel(nn.Module):
    def __init__(self, cfg, tp_rank: int, tp_size: int):
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size, tp_rank, tp_size)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        theta, scaling = rope_settings(cfg)
        rotary = RotaryEmbedding(head_dim, cfg.max_position_embeddings, theta, scaling)  # one table, all layers
        self.layers = nn.ModuleList(LlamaDecoderLayer(cfg, rotary, tp_rank, tp_size)
                                    for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, input_ids, positions, meta):
        hidden, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            hidden, residual = layer(positions, hidden, residual, meta)
        return self.norm(hidden, residual)[0]


class LlamaForCausalLM(nn.Module):
    """One rank's shard of the model (the whole model when tp_size is 1)."""

    def __init__(self, cfg, tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        arch = (getattr(cfg, "architectures", None) or ["LlamaForCausalLM"])[0]
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ValueError(f"architecture {arch!r} is not supported (supported: {sorted(SUPPORTED_ARCHITECTURES)})")
        check_tensor_parallel(cfg, tp_size)
        self.config = cfg
        self.model = LlamaModel(cfg, tp_rank, tp_size)
        self.lm_head = ParallelLMHead(cfg.vocab_size, cfg.hidden_size, tp_rank, tp_size)
        self.tied = bool(getattr(cfg, "tie_word_embeddings", False))
        if self.tied:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """Hidden states for every token; `compute_logits` turns the ones that need a token into logits."""
        return self.model(input_ids, positions, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 logits, rounded once from the GEMM's accumulators (the sampler works in float32)."""
        return self.lm_head(hidden, torch.float32)

    def kv_layers(self) -> list[LlamaAttention]:
        return [layer.self_attn for layer in self.model.layers]

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Copies HF-named tensors into our (fused, possibly sharded) parameters; returns the names it filled."""
        params = dict(self.named_parameters(remove_duplicate=False))
        loaded = set()
        for name, tensor in weights:
            if "rotary_emb.inv_freq" in name or (self.tied and name == "lm_head.weight"):
                continue
            target, shard = name, None
            for hf_part, (ours, shard_id) in PACKED_MODULES.items():
                if f".{hf_part}." in name:
                    target, shard = name.replace(hf_part, ours), shard_id
                    break
            if target not in params:
                raise KeyError(f"checkpoint tensor {name!r} has no place in the model")
            param = params[target]
            loader = getattr(param, "weight_loader", None)
            with torch.no_grad():
                if shard is not None:
                    loader(param, tensor.to(param.dtype), shard)
                elif loader is not None:
                    loader(param, tensor.to(param.dtype))
                else:
                    param.data.copy_(tensor)
            loaded.add(target)
        return loaded
