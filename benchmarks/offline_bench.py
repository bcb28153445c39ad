"""Offline throughput: every request submitted at once, output tokens per second until the last one finishes."""

import cProfile
import pstats
import time

import torch

from fleetserve.engine.sampling_params import SamplingParams
from workloads import BenchRequest, generate_all


def fleetserve_throughput(engine, requests: list[BenchRequest]) -> dict:
    warm = [SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)]
    engine.generate([requests[0].prompt_ids], warm)  # compiles the prefill kernel outside the timed region
    preemptions = engine.scheduler.num_preemptions
    torch.cuda.synchronize()
    start = time.perf_counter()
    outs = generate_all(engine, requests)
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


@torch.inference_mode()
def step_timeline(engine, requests: list[BenchRequest], copy_gbps: float | None = None) -> dict:
    """Where the offline run's time goes: the same run with a CUDA event after each step's model work, grouped
    by step kind (mixed prefill, decode by batch size). Per group: wall time, GPU time (from the previous step's
    end to this one's: its kernels, plus any wait for the host), host time inside the runner, how long the host
    waited for the step's tokens (near zero: the host, not the GPU, sets the pace), and the bytes a step must read
    (weights once, every cached K/V), as a fraction of copy bandwidth over the GPU time."""
    from decode_bench import bytes_per_step

    runner, original, original_sample = engine.runner, engine.runner.run, engine.sampler.sample_async
    weights = bytes_per_step(runner.model, 0, 0)
    kv_per_token = bytes_per_step(runner.model, 1, 1) - weights
    steps, waits = [], {}

    def timed_sample(*args):
        batch, index = original_sample(*args), len(steps) - 1
        read_back = batch._read_back

        def timed_read_back():
            started = time.perf_counter()
            out = read_back()
            waits[index] = time.perf_counter() - started
            return out

        batch._read_back = timed_read_back
        return batch

    def timed_run(scheduled, pending_tokens):
        started = time.perf_counter()
        out = original(scheduled, pending_tokens)
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        tokens = sum(seq.num_new_tokens for seq in scheduled)
        context = sum(seq.num_computed_tokens + seq.num_new_tokens for seq in scheduled)
        steps.append((len(scheduled), tokens, context, end, started, time.perf_counter() - started))
        return out

    torch.cuda.synchronize()
    first = torch.cuda.Event(enable_timing=True)
    first.record()
    runner.run, engine.sampler.sample_async = timed_run, timed_sample
    try:
        start = time.perf_counter()
        generate_all(engine, requests)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    finally:
        del runner.run, engine.sampler.sample_async  # the classes' methods again
    groups: dict[str, dict] = {}
    previous, launches = first, [s[4] for s in steps] + [start + wall]
    for i, (seqs, tokens, context, end, started, host) in enumerate(steps):
        kind = "mixed prefill" if tokens > seqs else f"decode b{_bucket(seqs)}"
        g = groups.setdefault(kind, {"steps": 0, "tokens": 0, "wall_s": 0.0, "gpu_s": 0.0, "host_run_s": 0.0,
                                     "host_wait_s": 0.0, "bytes": 0})
        g["steps"] += 1
        g["tokens"] += tokens
        g["wall_s"] += launches[i + 1] - started
        g["gpu_s"] += previous.elapsed_time(end) / 1e3
        g["host_run_s"] += host
        g["host_wait_s"] += waits.get(i, 0.0)
        g["bytes"] += weights + context * kv_per_token
        previous = end
    for g in groups.values():
        if copy_gbps:
            g["bandwidth_fraction_of_gpu_time"] = g["bytes"] / g["gpu_s"] / 1e9 / copy_gbps
    return {"wall_s": wall, "steps": len(steps), "groups": groups}


def _bucket(batch: int) -> str:
    for top in (8, 32, 64, 128, 192):
        if batch <= top:
            return f"<={top}"
    return ">192"


@torch.inference_mode()
def kernel_breakdown(engine, requests: list[BenchRequest], top: int = 25) -> dict:
    """The GPU kernels of the whole offline run by total time, beside its wall time (one 'step' = the run)."""
    from torch.profiler import ProfilerActivity, profile

    from decode_bench import kernel_table

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        generate_all(engine, requests)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    return {"wall_s": wall, **kernel_table(prof, 1, top)}
