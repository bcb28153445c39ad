"""Offline throughput: every request submitted at once, output tokens per second until the last one finishes."""

import cProfile
import pstats
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


def host_profile(engine, requests: list[BenchRequest], steps_tokens: int = 64, top: int = 15) -> list[dict]:
    """Where the host spends a step: cProfile over a short run of the same requests (64 output tokens each),
    the functions with the most own time. The GPU waits while the host does this work."""
    params = SamplingParams(max_tokens=steps_tokens, temperature=0.0, ignore_eos=True)
    profiler = cProfile.Profile()
    profiler.enable()
    engine.generate([r.prompt_ids for r in requests], params)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return [{"function": f"{path.rsplit('/', 1)[-1]}:{line}:{name}", "calls": calls, "own_s": own, "total_s": total}
            for (path, line, name), (_, calls, own, total, _) in rows]
