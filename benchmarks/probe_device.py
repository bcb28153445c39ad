"""First look at the device: versions, ceilings, kernel speed variants, and the HF APIs the baselines use."""

import inspect
import json
import os
import sys

import torch
import transformers
import triton

sys.path.insert(0, os.path.dirname(__file__))
import kernel_bench  # noqa: E402

out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
       "transformers": transformers.__version__}
out["copy_gbps"] = kernel_bench.copy_bandwidth_gbps()
out["matmul_tflops"] = kernel_bench.matmul_tflops()
out["decode"] = [kernel_bench.decode_attention_bench(b, block_size=bs, block_n=bn, num_warps=w)
                 for b in (1, 32, 256) for bs in (16, 256) for bn in (32, 64, 128) for w in (4, 8)]
out["prefill"] = [kernel_bench.prefill_attention_bench()]
from transformers.generation.continuous_batching import ContinuousMixin  # noqa: E402
out["hf_api"] = {n: str(inspect.signature(getattr(ContinuousMixin, n))) for n in ("generate_batch", "init_continuous_batching")}
from transformers.generation.continuous_batching.continuous_api import ContinuousBatchingManager  # noqa: E402
out["hf_api"]["add_request"] = str(inspect.signature(ContinuousBatchingManager.add_request))
print(json.dumps(out, indent=1))
for d in out["decode"]:
    print(f"decode b={d['batch']:3d} bs={d['block_size']:3d} bn={d['block_n']:3d} w={d['num_warps']} "
          f"splits={d['splits']:2d} {d['us']:8.1f} us {d['kv_gbps']:7.0f} GB/s ({d['kv_gbps'] / out['copy_gbps']:.0%})")
with open(os.path.join(os.environ.get("OUT", "."), "probe.json"), "w") as f:
    json.dump(out, f, indent=1)

import time  # noqa: E402

import hf_baselines  # noqa: E402
import model_shapes  # noqa: E402
import workloads  # noqa: E402

model = hf_baselines.random_hf_model(model_shapes.QWEN3_0_6B)
reqs = workloads.offline_requests(151936, count=32, min_len=100, max_len=300)
for r in reqs:
    r.output_len = 64
hf = {}
for name, fn in (("generate_batch", lambda: hf_baselines.generate_batch_throughput(model, reqs)),
                 ("static", lambda: hf_baselines.static_generate_throughput(model, reqs, 32))):
    try:
        t = time.perf_counter()
        hf[name] = fn()
        hf[name]["wall"] = time.perf_counter() - t
    except Exception as e:  # the probe's job is to find out what breaks
        hf[name] = repr(e)
print(json.dumps(hf, indent=1))
