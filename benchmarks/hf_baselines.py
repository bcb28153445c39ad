"""What a user gets from HF transformers on the same GPU: its continuous batching and static-batch `generate`.

Both are timed on the same requests as FleetServe; throughput counts each request's own output length only
(padding and tokens past a request's length in a static batch are waste, not output).
"""

import logging
import time

import torch

from workloads import BenchRequest

log = logging.getLogger(__name__)


def _greedy_config(model, max_new_tokens: int):
    from transformers import GenerationConfig

    # eos off: random weights must not stop early, every request runs to its own length
    return GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=None, pad_token_id=0)


@torch.inference_mode()
def generate_batch_throughput(model, requests: list[BenchRequest]) -> dict:
    """HF continuous batching through its manager, so each request keeps its own max_new_tokens."""
    manager = model.init_continuous_batching(generation_config=_greedy_config(model, max(r.output_len for r in requests)))
    manager.start()
    try:
        start = time.perf_counter()
        for i, r in enumerate(requests):
            manager.add_request(r.prompt_ids, request_id=f"r{i}", max_new_tokens=r.output_len)
        produced, finished = 0, 0
        while finished < len(requests):
            result = manager.get_result(timeout=60)
            if result is None:
                raise RuntimeError(f"HF continuous batching stalled after {finished} of {len(requests)} requests")
            if result.is_finished():
                finished += 1
                produced += len(result.generated_tokens)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    finally:
        manager.stop(block=True)
    wanted = sum(r.output_len for r in requests)
    return {"requests": len(requests), "output_tokens": wanted, "produced_tokens": produced, "seconds": elapsed,
            "output_tokens_per_s": wanted / elapsed}


@torch.inference_mode()
def static_generate_throughput(model, requests: list[BenchRequest], batch_size: int) -> dict:
    """Plain `generate` over fixed batches, left-padded, each batch running to its longest output."""
    start = time.perf_counter()
    for first in range(0, len(requests), batch_size):
        batch = requests[first:first + batch_size]
        width = max(len(r.prompt_ids) for r in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, r in enumerate(batch):
            ids[row, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[row, width - len(r.prompt_ids):] = 1
        longest = max(r.output_len for r in batch)
        model.generate(input_ids=ids.cuda(), attention_mask=mask.cuda(), min_new_tokens=longest,
                       generation_config=_greedy_config(model, longest))
        log.info("static generate: batch %d/%d done", first // batch_size + 1, -(-len(requests) // batch_size))
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    wanted = sum(r.output_len for r in requests)
    return {"requests": len(requests), "batch_size": batch_size, "output_tokens": wanted, "seconds": elapsed,
            "output_tokens_per_s": wanted / elapsed}
