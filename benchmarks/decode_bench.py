"""Decode steps at a fixed batch and context: tokens/s, and bytes moved per second (weights once, plus every
sequence's K/V) as a fraction of the copy bandwidth measured in the same run. The step is the engine's whole step;
the captured graph's replay alone is reported beside it (the GPU's share)."""

import random
import time

import torch

from fleetserve.engine.sampling_params import SamplingParams


def bytes_per_step(model, batch: int, context: int) -> int:
    """The fewest bytes one decode step must read: every weight once (the embedding table only where it doubles
    as the LM head) and the K/V of every cached token."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())  # tied tensors count once
    if not model.tied:
        embed = model.model.embed_tokens.weight
        weights -= embed.numel() * embed.element_size()
    layer = model.kv_layers()[0]
    kv_per_token = 2 * len(model.kv_layers()) * layer.num_kv_heads * layer.head_dim * layer.k_cache.element_size()
    return weights + batch * context * kv_per_token


def _time_ms(fn, steps: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / steps


def _start_decoding(engine, batch: int, context: int, steps: int, warm: int = 3) -> list | None:
    """Adds `batch` requests of `context` random prompt tokens and runs steps until every prompt is prefilled and
    `warm` decode steps are done; the requests can decode `steps` more without any ending. None: they don't fit."""
    prefill_steps = -(-batch * context // engine.config.max_num_batched_tokens) + 2
    max_tokens = prefill_steps + warm + steps + 8  # the first prompts decode while the last prefill: none may end
    if batch * -(-(context + max_tokens) // engine.config.block_size) > engine.runner.num_blocks:
        return None
    rng = random.Random(batch)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    for i in range(batch):
        engine.add_request(f"decode-{batch}-{i}", [rng.randrange(engine.vocab_size) for _ in range(context)], params)
    started: set[str] = set()
    while len(started) < batch:  # chunked prefill of every prompt
        started.update(out.request_id for out in engine.step())
    for _ in range(warm):
        engine.step()
    running = list(engine.scheduler.running)
    assert len(running) == batch, "a request ended before the timed steps"
    return running


def _stop_decoding(engine) -> None:
    for request_id in list(engine.requests):
        engine.abort(request_id)
    engine.step()  # reads back (and drops) the step still in flight
    torch.cuda.synchronize()


@torch.inference_mode()
def decode_bench(engine, batch: int, context: int, copy_gbps: float, steps: int = 32) -> dict:
    """`batch` requests with `context` random prompt tokens decode together through `LLMEngine.step`, as served
    (scheduling, overlapped steps, sampling, detokenising): wall time a step, once every prompt is prefilled."""
    runner = engine.runner
    running = _start_decoding(engine, batch, context, steps)
    if running is None:
        return {"batch": batch, "context": context, "skipped": "KV cache too small"}
    contexts = [sum(len(seq) for seq in running) / batch]
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        engine.step()
    torch.cuda.synchronize()
    step_ms = (time.perf_counter() - start) * 1e3 / steps
    contexts.append(sum(len(seq) for seq in running) / batch)
    bucket = runner.graph_sizes[next(i for i, b in enumerate(runner.graph_sizes) if b >= batch)]
    graph_ms = _time_ms(runner.graphs[bucket].replay, steps)  # the last step's inputs (every row real), replayed
    _stop_decoding(engine)
    mean_context = sum(contexts) / 2
    moved = bytes_per_step(engine.runner.model, batch, round(mean_context))
    return {
        "batch": batch, "context": context, "mean_context": mean_context, "step_ms": step_ms, "graph_ms": graph_ms,
        "tokens_per_s": batch / (step_ms * 1e-3), "bytes_per_step": moved,
        "gbps": moved / (step_ms * 1e-3) / 1e9, "bandwidth_fraction": moved / (step_ms * 1e-3) / 1e9 / copy_gbps,
        "graph_bandwidth_fraction": moved / (graph_ms * 1e-3) / 1e9 / copy_gbps,
        "overlapped_steps": engine.overlap,
    }


@torch.inference_mode()
def kernel_profile(engine, batch: int, context: int, steps: int = 8, top: int = 15) -> dict:
    """What the GPU does during engine decode steps (graph kernels included), by GPU time, beside the steps' wall
    time: where a step's time goes besides reading bytes, and how long the GPU sits idle."""
    from torch.profiler import ProfilerActivity, profile

    if _start_decoding(engine, batch, context, steps) is None:
        return {"batch": batch, "context": context, "skipped": "KV cache too small"}
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            engine.step()
        torch.cuda.synchronize()
        wall_us = (time.perf_counter() - start) * 1e6
    _stop_decoding(engine)
    return {"batch": batch, "context": context, "steps": steps, "wall_us_per_step": wall_us / steps,
            **kernel_table(prof, steps, top)}


def kernel_table(prof, steps: int, top: int) -> dict:
    """A torch profile's GPU work per step: busy time, launches, and the kernels taking the most time."""
    events = [e for e in prof.key_averages() if getattr(e, "device_time_total", 0) > 0]
    events.sort(key=lambda e: e.device_time_total, reverse=True)
    busy = sum(e.device_time_total for e in events)
    return {"gpu_us_per_step": busy / steps, "launches_per_step": sum(e.count for e in events) / steps,
            "top": [{"name": e.key[:80], "count": e.count // steps, "us_per_step": e.device_time_total / steps}
                    for e in events[:top]]}
