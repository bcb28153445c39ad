"""Programmatic dependent launch: on when a Hopper GPU runs a step of at most 16 tokens unless turned off
(FLEETSERVE_PDL=0), off for larger steps, on the CPU and in Triton's interpreter; each kernel waits before its first
memory access; and a decode layer's chain of kernels replayed from a CUDA graph gives the same bits with it as
without.

Runs on a CUDA device; on a CPU machine it skips, unless TRITON_INTERPRET=1 (Triton's interpreter).
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from kernel_device import DEVICE, DTYPE, require_kernel_device

require_kernel_device()

from fleetserve.engine.kernels import dependent_launch  # noqa: E402
from fleetserve.engine.kernels.dependent_launch import pdl  # noqa: E402
from fleetserve.engine.kernels.fused_ops import add_rms_norm, rotate_and_store_kv  # noqa: E402
from fleetserve.engine.kernels.paged_attention import paged_decode_attention  # noqa: E402
from fleetserve.engine.kernels import skinny_gemm  # noqa: E402
from fleetserve.engine.kernels.skinny_gemm import gated_linear, linear  # noqa: E402

HOPPER = DEVICE == "cuda" and torch.cuda.get_device_capability()[0] >= 9


def test_on_for_few_tokens_on_a_hopper_gpu_outside_the_interpreter_unless_turned_off(monkeypatch):
    # The rule's reason is the few-row GEMMs' limit: the two constants are one number, kept in two modules only
    # because skinny_gemm imports dependent_launch.
    assert dependent_launch.FEW_TOKENS == skinny_gemm.MAX_ROWS
    for asked in ("1", "0", None):
        if asked is None:
            monkeypatch.delenv("FLEETSERVE_PDL", raising=False)
        else:
            monkeypatch.setenv("FLEETSERVE_PDL", asked)
        dependent_launch._enabled.cache_clear()
        assert pdl(torch.empty(1)) == {"PDL": False, "launch_pdl": False}
        want = asked != "0" and HOPPER and os.environ.get("TRITON_INTERPRET") != "1"
        assert pdl(torch.empty(1, device=DEVICE))["PDL"] == want
        assert pdl(torch.empty(dependent_launch.FEW_TOKENS, 8, device=DEVICE))["PDL"] == want
        assert pdl(torch.empty(dependent_launch.FEW_TOKENS + 1, 8, device=DEVICE)) == {"PDL": False,
                                                                                        "launch_pdl": False}
    dependent_launch._enabled.cache_clear()


# Compiles kernels for a Hopper target with Triton's own compiler (no GPU needed), outside the interpreter, and
# reports where the dependent-launch instructions sit in each kernel's PTX.
_COMPILE_FOR_HOPPER = r"""
import json, re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fleetserve.engine.kernels import fused_ops, paged_attention, skinny_gemm

P, I, F, C = "*bf16", "i32", "fp32", "constexpr"
KERNELS = {
    "skinny": (skinny_gemm._skinny_kernel, [P, P, P, P, I, I, I, I, I],
               {"HAS_BIAS": False, "GATED": False, "EVEN_K": True, "BLOCK_N": 64, "BLOCK_K": 128, "M_PAD": 16},
               {"num_warps": 4, "num_stages": 6}),
    "add_rms_norm": (fused_ops._add_rms_norm_kernel, [P, P, P, P, P, I, I, I, F], {"BLOCK": 4096},
                     {"num_warps": 8}),
    "decode": (paged_attention._decode_kernel, [P, P, P, "*i32", "*i32", "*i32", "*fp32", "*fp32", "*fp32", F, I, I, I],
               {"KV_HEADS": 8, "GROUP": 4, "GROUP_PAD": 16, "HEAD_DIM": 128, "BLOCK_SIZE": 16, "BLOCK_N": 64,
                "SINGLE_SPLIT": False, "ORDERED": True}, {"num_warps": 4, "num_stages": 3}),
}
report = {}
for name, (kernel, types, constexprs, options) in KERNELS.items():
    for pdl in (True, False):
        names = list(kernel.arg_names)
        signature = {n: t for n, t in zip(names, types)}
        signature.update({n: C for n in names[len(types):]})
        source = ASTSource(fn=kernel, signature=signature, constexprs={**constexprs, "PDL": pdl})
        ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]
        body = ptx[ptx.index(".entry"):]
        memory = re.search(r"\b(ld|st|cp\.async)\.global", body)
        wait = body.find("griddepcontrol.wait")
        report[f"{name} {pdl}"] = {"wait": wait, "first_memory_op": memory.start() if memory else -1,
                                   "launch_dependents": "griddepcontrol.launch_dependents" in body}
json.dump(report, sys.stdout)
"""


def test_with_it_each_kernel_waits_before_its_first_memory_access():
    """The interpreter cannot run these instructions, so this compiles for Hopper on any machine and reads the PTX:
    with PDL the wait comes before the kernel's first global load or store, and without it neither instruction is
    there."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE_FOR_HOPPER], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for key, where in json.loads(done.stdout).items():
        if key.endswith("True"):
            assert 0 <= where["wait"] < where["first_memory_op"] and where["launch_dependents"], key
        else:
            assert where["wait"] == -1 and not where["launch_dependents"], key


def _layer(x, residual, w):
    """One decode layer's kernels in order, each reading what the one before wrote."""
    normed, residual = add_rms_norm(x, residual, w["norm"], 1e-6)
    qkv = linear(normed, w["qkv"])
    q = rotate_and_store_kv(qkv, w["positions"], w["cos_sin"], 4, 2, w["k_cache"], w["v_cache"], w["slots"])
    attn = paged_decode_attention(q, w["k_cache"], w["v_cache"], w["tables"], w["context_lens"], 0.125,
                                  num_splits=4)
    out = linear(attn.flatten(1), w["o"])
    normed, residual = add_rms_norm(out, residual, w["norm"], 1e-6)
    return gated_linear(normed, w["gate_up"]), residual


@pytest.mark.skipif(not HOPPER, reason="programmatic dependent launch needs a Hopper (or later) GPU")
def test_a_layer_replayed_from_a_graph_gives_the_same_bits_with_and_without(monkeypatch):
    g = torch.Generator(device=DEVICE).manual_seed(0)
    hidden, heads, kv_heads, head_dim, batch, blocks, block_size = 256, 4, 2, 64, 3, 8, 16

    def rand(*shape):
        return torch.randn(*shape, generator=g, device=DEVICE).to(DTYPE) / 8

    angles = torch.rand(64, head_dim // 2, generator=g, device=DEVICE)
    w = {"norm": rand(hidden) + 1, "qkv": rand((heads + 2 * kv_heads) * head_dim, hidden),
         "o": rand(hidden, heads * head_dim), "gate_up": rand(2 * 512, hidden),
         "positions": torch.tensor([5, 17, 40], device=DEVICE), "slots": torch.tensor([5, 49, 104], device=DEVICE),
         "cos_sin": torch.cat([angles.cos(), angles.sin()], 1),
         "tables": torch.tensor([[0, 1, 2], [2, 3, 4], [4, 5, 6]], dtype=torch.int32, device=DEVICE),
         "context_lens": torch.tensor([6, 18, 41], dtype=torch.int32, device=DEVICE)}
    x, residual = rand(batch, hidden), rand(batch, hidden)
    k_cache, v_cache = rand(blocks, block_size, kv_heads, head_dim), rand(blocks, block_size, kv_heads, head_dim)
    results = []
    for enabled in ("1", "0"):
        monkeypatch.setenv("FLEETSERVE_PDL", enabled)
        dependent_launch._enabled.cache_clear()
        w["k_cache"], w["v_cache"] = k_cache.clone(), v_cache.clone()
        _layer(x, residual, w)  # compiles outside the graph
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = _layer(x, residual, w)
        graph.replay()
        torch.cuda.synchronize()
        results.append([t.clone() for t in out])
    dependent_launch._enabled.cache_clear()
    for with_pdl, without in zip(*results):
        assert torch.equal(with_pdl, without)
