"""Model building blocks, tensor-parallel after nano-vllm: every sharded parameter carries a `weight_loader` that
takes the full HF tensor and keeps this rank's slice. Communication happens only where the math needs it: an
all-reduce after each row-parallel linear and the vocab-parallel embedding, an all-gather of the LM head's logits.
With tp_size=1 the slice is the whole tensor and no collective is called."""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _default_loader(param: nn.Parameter, loaded: torch.Tensor) -> None:
    param.data.copy_(loaded)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """F.linear, its result in `out_dtype` (x's by default). The GPU runner gives linear layers and the LM head
    kernels/skinny_gemm.linear instead, with the same signature."""
    y = F.linear(x, weight, bias)
    return y if out_dtype is None else y.to(out_dtype)


class LinearBase(nn.Module):
    matmul = staticmethod(linear)

    def __init__(self, in_features: int, out_features: int, bias: bool, tp_dim: int | None,
                 tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        self.tp_dim, self.tp_rank, self.tp_size = tp_dim, tp_rank, tp_size
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.weight.weight_loader = self.weight_loader
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False)
            self.bias.weight_loader = self.weight_loader
        else:
            self.register_parameter("bias", None)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        _default_loader(param, loaded)


class ColumnParallelLinear(LinearBase):
    """Output features split across ranks; no communication in forward."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, tp_rank: int = 0, tp_size: int = 1):
        assert out_features % tp_size == 0
        super().__init__(in_features, out_features // tp_size, bias, 0, tp_rank, tp_size)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        shard = param.data.size(self.tp_dim)
        param.data.copy_(loaded.narrow(self.tp_dim, self.tp_rank * shard, shard))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matmul(x, self.weight, self.bias)


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel projections stored as one (gate+up); shard_id picks the slot."""

    def __init__(self, in_features: int, output_sizes: list[int], bias: bool = False, tp_rank: int = 0,
                 tp_size: int = 1):
        self.output_sizes = output_sizes
        super().__init__(in_features, sum(output_sizes), bias, tp_rank, tp_size)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: int) -> None:
        offset = sum(self.output_sizes[:shard_id]) // self.tp_size
        size = self.output_sizes[shard_id] // self.tp_size
        own = loaded.chunk(self.tp_size, self.tp_dim)[self.tp_rank]
        param.data.narrow(self.tp_dim, offset, size).copy_(own)


class QKVParallelLinear(ColumnParallelLinear):
    """q, k and v projections stored as one; each rank keeps its share of the query and key/value heads."""

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int, bias: bool = False,
                 tp_rank: int = 0, tp_size: int = 1):
        self.head_dim = head_dim
        self.num_heads = num_heads // tp_size
        self.num_kv_heads = max(1, num_kv_heads // tp_size)
        out = (num_heads + 2 * num_kv_heads) * head_dim
        super().__init__(hidden_size, out, bias, tp_rank, tp_size)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: str) -> None:
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        offset, size = {"q": (0, q_size), "k": (q_size, kv_size), "v": (q_size + kv_size, kv_size)}[shard_id]
        own = loaded.chunk(self.tp_size, self.tp_dim)[self.tp_rank]
        param.data.narrow(self.tp_dim, offset, size).copy_(own)


class RowParallelLinear(LinearBase):
    """Input features split across ranks; each rank's partial output is summed over the ranks."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, tp_rank: int = 0, tp_size: int = 1):
        assert in_features % tp_size == 0
        super().__init__(in_features // tp_size, out_features, bias, 1, tp_rank, tp_size)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        if param.data.dim() == 1:  # bias is added once, not per shard
            param.data.copy_(loaded)
            return
        shard = param.data.size(self.tp_dim)
        param.data.copy_(loaded.narrow(self.tp_dim, self.tp_rank * shard, shard))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.tp_rank == 0 else None
        out = self.matmul(x, self.weight, bias)
        if self.tp_size > 1:
            dist.all_reduce(out)
        return out


class VocabParallelEmbedding(nn.Module):
    """Vocabulary rows split across ranks; each rank embeds the ids it owns and the ranks' results are summed."""

    def __init__(self, num_embeddings: int, embedding_dim: int, tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        self.tp_rank, self.tp_size = tp_rank, tp_size
        self.num_per_rank = math.ceil(num_embeddings / tp_size)
        self.start = tp_rank * self.num_per_rank
        self.weight = nn.Parameter(torch.empty(self.num_per_rank, embedding_dim), requires_grad=False)
        self.weight.weight_loader = self.weight_loader

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        own = loaded[self.start:self.start + self.num_per_rank]
        param.data.zero_()
        param.data[: own.size(0)].copy_(own)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return F.embedding(ids, self.weight)
        mask = (ids >= self.start) & (ids < self.start + self.num_per_rank)
        out = F.embedding((ids - self.start) * mask, self.weight) * mask.unsqueeze(-1)
        dist.all_reduce(out)
        return out


class ParallelLMHead(VocabParallelEmbedding):
    """Logits over the whole vocabulary: each rank computes its slice and the slices are gathered."""

    matmul = staticmethod(linear)

    def __init__(self, num_embeddings: int, embedding_dim: int, tp_rank: int = 0, tp_size: int = 1):
        super().__init__(num_embeddings, embedding_dim, tp_rank, tp_size)
        self.vocab_size = num_embeddings

    def forward(self, hidden: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        logits = self.matmul(hidden, self.weight, None, out_dtype)
        if self.tp_size > 1:
            slices = logits.new_empty(self.tp_size * logits.shape[0], *logits.shape[1:])
            dist.all_gather_single(slices, logits)  # rank after rank along dim 0
            logits = slices.view(self.tp_size, *logits.shape).movedim(0, -2).flatten(-2)  # -> [..., V]
        return logits[..., : self.vocab_size]


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size), requires_grad=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """norm(x); or, given the residual stream, (norm(x + residual), x + residual): the decoder's add and the
        next norm as one step, which the GPU layer fuses into one launch. The sum is rounded to the model dtype
        (HF adds in bf16); the norm is computed in float32 like HF, so low-precision runs don't drift from it."""
        if residual is not None:
            x = x + residual
            return self._norm(x), x
        return self._norm(x)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = x.chunk(2, -1)
        return F.silu(gate) * up


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None) -> torch.Tensor:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        return _llama3_inv_freq(inv_freq, scaling)
    raise ValueError(f"rope_scaling type {kind!r} is not supported")


def _llama3_inv_freq(inv_freq: torch.Tensor, s: dict) -> torch.Tensor:
    """Llama 3.1's frequency-dependent scaling: long wavelengths scaled by `factor`, short kept, smooth between."""
    factor, low, high, old_len = s["factor"], s["low_freq_factor"], s["high_freq_factor"], s[
        "original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Neox-style (rotate-half) rotary embedding with a precomputed cos/sin table indexed by position."""

    def __init__(self, head_dim: int, max_position: int, theta: float, scaling: dict | None):
        super().__init__()
        inv_freq = rope_inv_freq(head_dim, theta, scaling)
        freqs = torch.outer(torch.arange(max_position, dtype=torch.float32), inv_freq)
        self.register_buffer("cos_sin", torch.cat([freqs.cos(), freqs.sin()], -1), persistent=False)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        cos, sin = self.cos_sin[positions].unsqueeze(-2).chunk(2, -1)  # [tokens, 1, head_dim/2]
        return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.float().chunk(2, -1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).to(x.dtype)
