"""Programmatic dependent launch (PDL, Hopper and later) for the forward's kernels.

A decode step is some 330 short kernels in a row, and each one's start (its launch, its blocks placed on the SMs,
its first loads) otherwise waits for the end of the one before. A kernel launched with `launch_pdl=True` may be
placed while its predecessor's last blocks still run; its first statement, `wait_for_previous`, blocks until that
predecessor has finished and its writes are visible, so nothing it reads or writes can race. Every program of every
such kernel waits, even one that returns early, so "my predecessor finished" implies the same of the kernel before
it, and so on down the chain. It then lets its own successor be placed at once.

Kernels take a `PDL` constexpr and are launched with `**pdl(tensor)`, the tensor's first dimension being the
step's tokens. On Hopper and later it is on for steps of at most FEW_TOKENS tokens: there every kernel but the down
projection is ours and short, and its start is a large share of its time (Llama-3-8B batch-1 decode on an H100:
85.8% of copy bandwidth with it, 83.2% without). In larger steps it measured slower (Qwen3-0.6B offline, batch 256:
1.5% fewer tokens a second), so there it is off. FLEETSERVE_PDL=0 turns it off everywhere (to compare, or to rule
it out). Never on the CPU, in Triton's interpreter (which has no such instructions) or before Hopper.
"""

import functools
import os

import torch
import triton
import triton.language as tl

try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # a Triton without grid dependency control: never enabled (see `_enabled`)
    gdc_launch_dependents = gdc_wait = None


FEW_TOKENS = 16  # the few-row GEMMs' limit (skinny_gemm.MAX_ROWS): above it cuBLAS runs the projections


@functools.cache
def _enabled(device_index: int) -> bool:
    if gdc_wait is None or os.environ.get("TRITON_INTERPRET") == "1" or os.environ.get("FLEETSERVE_PDL") == "0":
        return False
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def pdl(t: torch.Tensor) -> dict:
    """The launch keywords for a forward kernel whose tensors live where `t` does, `t.shape[0]` the step's tokens."""
    if not t.is_cuda or t.shape[0] > FEW_TOKENS:
        return {"PDL": False, "launch_pdl": False}
    on = _enabled(t.device.index if t.device.index is not None else torch.cuda.current_device())
    return {"PDL": on, "launch_pdl": on}


@triton.jit
def wait_for_previous(PDL: tl.constexpr):
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
