"""The few-row GEMM's tile and pipeline choices, swept on the decode projections of Llama-3-8B and Qwen3-0.6B.

    python benchmarks/skinny_gemm_sweep.py --out benchmarks/results --tag h100

Two sweeps around the shipped configuration (64-row weight tiles, K in 128-wide tiles, six stages, four when
gated; kernels/skinny_gemm.py): the pipeline depth and K tile at 1 and 8 rows, and 16- or 32-row weight tiles (more
programs for the small projections) with 1, 2 or 4 warps at 1 and 16 rows. Each call's weights are one of several
copies cycled so every call reads HBM, the calls replayed from a CUDA graph; each configuration's output is
compared bit for bit with the shipped one's. Writes skinny-gemm-sweep-<tag>.json.
"""

import argparse
import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gpu_bench  # noqa: E402
import kernel_bench  # noqa: E402
from fleetserve.engine.kernels import skinny_gemm  # noqa: E402

# name: (in_features, out_features, gated); gated weights hold gate and up, out_features rows each
SHAPES = {"qkv": (4096, 6144, False), "o_proj": (4096, 4096, False), "gate_up": (4096, 14336, True),
          "lm_head": (4096, 128256, False), "q06_qkv": (1024, 4096, False), "q06_o": (2048, 1024, False),
          "q06_gu": (1024, 3072, True), "q06_lm": (1024, 151936, False)}
STAGES_SWEEP = [(64, 4, 128, s) for s in (2, 3, 4, 5, 6, 8, 10)] + [(64, 4, 256, s) for s in (2, 3, 4, 5)]
TILE_SWEEP = [(32, 4, 128, 4), (32, 4, 128, 6), (32, 2, 128, 4), (32, 2, 128, 6), (16, 4, 128, 4),
              (16, 4, 128, 6), (16, 1, 128, 4), (16, 1, 128, 6), (16, 2, 128, 6)]


def launch(x, w, out_features, gated, *tiles):
    return skinny_gemm._launch(x, w, None, out_features, x.dtype, gated, tiles)


def graph_us(fn, weights) -> float:
    """Microseconds a call, each call on the next weight copy, replayed from one graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # compile and warm outside the capture
        for w in weights:
            fn(w)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for w in weights:
            fn(w)
    return triton.testing.do_bench(graph.replay, warmup=10, rep=100, return_mode="median") * 1e3 / len(weights)


def sweep(copy_gbps: float) -> list[dict]:
    rows_out = []
    for name, (k, n, gated) in SHAPES.items():
        weight_rows = 2 * n if gated else n
        nbytes = k * weight_rows * 2
        weights = [torch.randn(weight_rows, k, dtype=torch.bfloat16, device="cuda") / 64
                   for _ in range(max(2, int(400e6 // nbytes) + 1))]
        shipped = (64, 4, 128, skinny_gemm.GATED_STAGES if gated else skinny_gemm.STAGES)
        for sweep_name, configs, row_counts in (("stages", STAGES_SWEEP, (1, 8)),
                                                ("tile", [shipped, *TILE_SWEEP], (1, 16))):
            if sweep_name == "tile" and name in ("lm_head", "q06_lm"):
                continue  # thousands of programs already: nothing for smaller tiles to fill
            for m in row_counts:
                x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
                reference = launch(x, weights[0], n, gated, *shipped)
                for config in configs:
                    try:
                        same = torch.equal(launch(x, weights[0], n, gated, *config), reference)
                        us = graph_us(lambda w: launch(x, w, n, gated, *config), weights)  # noqa: B023
                    except triton.runtime.errors.OutOfResources as e:  # too many stages for shared memory
                        print(f"{name} m={m} {config}: {e}", flush=True)
                        continue
                    gbps = nbytes / (us * 1e-6) / 1e9
                    rows_out.append({"sweep": sweep_name, "shape": name, "m": m, "block_n": config[0],
                                     "warps": config[1], "block_k": config[2], "stages": config[3], "us": us,
                                     "gbps": gbps, "fraction_of_copy": gbps / copy_gbps, "same_bits": bool(same)})
                    print(f"{name:8s} m={m:2d} {config} {us:7.1f} us {gbps / copy_gbps:6.1%} same={same}", flush=True)
        del weights
        torch.cuda.empty_cache()
    return rows_out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--tag", default="gpu")
    args = parser.parse_args()
    copy_gbps = kernel_bench.copy_bandwidth_gbps()
    result = {"environment": gpu_bench.environment(), "copy_gbps": copy_gbps, "rows": sweep(copy_gbps)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"skinny-gemm-sweep-{args.tag}.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
