"""What a user gets from HF transformers on the same GPU: its continuous batching and static-batch `generate`.

HF runs at a few hundred tokens/s here, so a full 256-request run would take many minutes of GPU time; each
baseline is instead timed over a fixed window of the same workload (all requests submitted at once), counting
only tokens a request asked for. A window includes HF's prefill of every prompt (against HF) and leaves out the
tail where few requests remain (in HF's favour).
"""

import time

import torch

from workloads import BenchRequest


def _greedy_config(max_new_tokens: int, max_time: float | None = None):
    from transformers import GenerationConfig

    # eos off: random weights must not stop early, every request runs to its own length
    return GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                            eos_token_id=None, pad_token_id=0, max_time=max_time)


@torch.inference_mode()
def generate_batch_throughput(model, requests: list[BenchRequest], window_s: float) -> dict:
    """HF continuous batching through its manager (each request keeps its own max_new_tokens), streaming so that
    tokens of unfinished requests count too."""
    manager = model.init_continuous_batching(generation_config=_greedy_config(max(r.output_len for r in requests)))
    manager.start()
    produced: dict[str, int] = {}
    wanted = {f"r{i}": r.output_len for i, r in enumerate(requests)}
    try:
        start = time.perf_counter()
        for rid, r in zip(wanted, requests):
            manager.add_request(r.prompt_ids, request_id=rid, max_new_tokens=r.output_len, streaming=True)
        finished = 0
        while finished < len(requests) and time.perf_counter() - start < window_s:
            result = manager.get_result(timeout=1)
            if result is None:
                continue
            produced[result.request_id] = len(result.generated_tokens)  # cumulative while streaming
            finished += result.is_finished()
        elapsed = time.perf_counter() - start
    finally:
        manager.stop(block=True, timeout=30, hard_stop=True)
    tokens = sum(min(n, wanted[rid]) for rid, n in produced.items())
    return {"requests": len(requests), "finished": finished, "window_s": window_s, "seconds": elapsed,
            "output_tokens": tokens, "output_tokens_per_s": tokens / elapsed}


@torch.inference_mode()
def static_generate_throughput(model, requests: list[BenchRequest], batch_size: int, window_s: float) -> dict:
    """Plain `generate` on the first batch, left-padded and running to its longest output (or the window)."""
    batch = requests[:batch_size]
    width = max(len(r.prompt_ids) for r in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, r in enumerate(batch):
        ids[row, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
        mask[row, width - len(r.prompt_ids):] = 1
    longest = max(r.output_len for r in batch)
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(input_ids=ids.cuda(), attention_mask=mask.cuda(),
                         generation_config=_greedy_config(longest, max_time=window_s))
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    steps = out.shape[1] - width
    tokens = sum(min(steps, r.output_len) for r in batch)
    return {"requests": len(batch), "batch_size": batch_size, "steps": steps, "window_s": window_s,
            "seconds": elapsed, "output_tokens": tokens, "output_tokens_per_s": tokens / elapsed}
