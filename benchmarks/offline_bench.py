"""Offline throughput: every request submitted at once, output tokens per second until the last one finishes."""

import time

import torch

from fleetserve.engine.sampling_params import SamplingParams
from workloads import BenchRequest


def fleetserve_throughput(engine, requests: list[BenchRequest]) -> dict:
    warm = [SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)]
    engine.generate([requests[0].prompt_ids], warm)  # compiles the prefill kernel outside the timed region
    params = [SamplingParams(max_tokens=r.output_len, temperature=0.0, ignore_eos=True) for r in requests]
    preemptions = engine.scheduler.num_preemptions
    torch.cuda.synchronize()
    start = time.perf_counter()
    outs = engine.generate([r.prompt_ids for r in requests], params)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    produced = sum(len(o.new_token_ids) for o in outs)
    wanted = sum(r.output_len for r in requests)
    return {"requests": len(requests), "output_tokens": wanted, "produced_tokens": produced, "seconds": elapsed,
            "output_tokens_per_s": wanted / elapsed, "preemptions": engine.scheduler.num_preemptions - preemptions}
