"""GPU versions of the model's small layers, swapped in by class so the parameters and the model code stay as
they are: the GPU runner calls `use_fused_kernels(model)`, the CPU path never sees these."""

from torch import nn

from fleetserve.engine.kernels import skinny_gemm
from fleetserve.engine.kernels.fused_ops import add_rms_norm, rms_norm, rotary_, rotate_and_store_kv, silu_and_mul
from fleetserve.engine.kernels.triton_backend import paged_attention
from fleetserve.engine.layers import LinearBase, ParallelLMHead, RMSNorm, RotaryEmbedding, SiluAndMul
from fleetserve.engine.models.llama import LlamaAttention, LlamaMLP


class FusedRMSNorm(RMSNorm):
    def forward(self, x, residual=None):
        if residual is None:
            return rms_norm(x, self.weight, self.eps)
        return add_rms_norm(x, residual, self.weight, self.eps)


class FusedSiluAndMul(SiluAndMul):
    def forward(self, x):
        return silu_and_mul(x)


class FusedRotaryEmbedding(RotaryEmbedding):
    def forward(self, positions, q, k):
        return rotary_(q, k, positions, self.cos_sin)


class FusedLlamaAttention(LlamaAttention):
    """q/k norm (Qwen3), rotary and the KV store in one launch between the qkv projection and attention."""

    def forward(self, positions, x, meta):
        norms = (self.q_norm.weight, self.k_norm.weight, self.q_norm.eps) if self.qk_norm else ()  # one eps: cfg's
        q = rotate_and_store_kv(self.qkv_proj(x), positions, self.rotary.cos_sin, self.num_heads, self.num_kv_heads,
                                self.k_cache, self.v_cache, meta.slot_mapping, *norms)
        out = paged_attention(q, self.k_cache, self.v_cache, meta, self.scale)
        return self.o_proj(out.flatten(1))


class FusedLlamaMLP(LlamaMLP):
    """At decode batch sizes the gate/up GEMM and silu * up are one launch (kernels/skinny_gemm.py)."""

    def forward(self, x):
        act = skinny_gemm.gated_linear(x, self.gate_up_proj.weight)
        if act is None:
            act = self.act(self.gate_up_proj(x))
        return self.down_proj(act)


FUSED = {RMSNorm: FusedRMSNorm, SiluAndMul: FusedSiluAndMul, RotaryEmbedding: FusedRotaryEmbedding,
         LlamaAttention: FusedLlamaAttention, LlamaMLP: FusedLlamaMLP}


def use_fused_kernels(model: nn.Module) -> int:
    """Re-classes every plain RMSNorm / SiluAndMul / RotaryEmbedding / LlamaAttention / LlamaMLP in place, and
    gives the linear layers and the LM head the few-row GEMM, except projections whose input is three or more times
    their output (cuBLAS splits those; skinny_gemm.py says why they stay); returns how many modules it changed."""
    changed = 0
    for module in model.modules():
        fused = FUSED.get(type(module))
        if fused is not None:
            module.__class__ = fused
            changed += 1
        if isinstance(module, (LinearBase, ParallelLMHead)):
            out_features, in_features = module.weight.shape
            if in_features < 3 * out_features:
                module.matmul = skinny_gemm.linear
                changed += 1
    return changed
