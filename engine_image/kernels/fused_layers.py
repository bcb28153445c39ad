"""GPU versions of the model's small layers, swapped in by class so the parameters and the model code stay as
they are: the GPU runner calls `use_fused_kernels(model)`, the CPU path never sees these."""

from torch import nn

from fleetserve.engine.kernels.fused_ops import add_rms_norm, rms_norm, rotary_, silu_and_mul
from fleetserve.engine.layers import RMSNorm, RotaryEmbedding, SiluAndMul


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


FUSED = {RMSNorm: FusedRMSNorm, SiluAndMul: FusedSiluAndMul, RotaryEmbedding: FusedRotaryEmbedding}


def use_fused_kernels(model: nn.Module) -> int:
    """Re-classes every plain RMSNorm / SiluAndMul / RotaryEmbedding in place; returns how many it changed."""
    changed = 0
    for module in model.modules():
        fused = FUSED.get(type(module))
        if fused is not None:
            module.__class__ = fused
            changed += 1
    return changed
