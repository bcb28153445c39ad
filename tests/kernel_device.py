"""What the Triton kernel tests in tests/gpu/ share: where they run (a CUDA device, or on a CPU machine Triton's
interpreter when TRITON_INTERPRET=1, in float16 since NumPy has no bfloat16) and how they compare results."""

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float16


def require_kernel_device() -> None:
    """Skips the calling test module unless Triton is installed and a CUDA device or the interpreter runs it; call
    it before importing any kernel."""
    pytest.importorskip("triton")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs a CUDA device (or TRITON_INTERPRET=1)", allow_module_level=True)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert not torch.isnan(out).any()
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()
