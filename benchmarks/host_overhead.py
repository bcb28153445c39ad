"""Host time per engine step at batch 64 and 256 on CPU, in `LLMEngine._append` (the per-token output path the GPU
engine runs unchanged: bookkeeping and the incremental detokenizer), with a one-layer random model and SmolLM2's
tokenizer. The whole step is reported too, but on CPU it is mostly the sampler's per-row draws, which the GPU
sampler does in one kernel. The baseline detokenizer (`tokenizer.decode` for every window, as before the fast
path) lives only here, to compare both in one run.

    .venv/bin/python benchmarks/host_overhead.py [--steps 64] [--out results.json]
"""

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from fleetserve.engine import llm_engine  # noqa: E402
from fleetserve.engine.config import EngineConfig  # noqa: E402
from fleetserve.engine.detokenizer import IncrementalDetokenizer  # noqa: E402
from fleetserve.engine.llm_engine import LLMEngine  # noqa: E402
from fleetserve.engine.sampling_params import SamplingParams  # noqa: E402

TINY = {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 49152}  # SmolLM2's vocabulary: every id is text
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle. "


class BaselineDetokenizer(IncrementalDetokenizer):
    """The detokenizer before the fast path: every window decoded through `tokenizer.decode`."""

    def __init__(self, tokenizer, prompt_token_ids: list[int], stop: list[str]):
        super().__init__(tokenizer, prompt_token_ids, stop)
        self._decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)


def measure(engine: LLMEngine, batch: int, steps: int) -> dict:
    """Runs `batch` requests through prefill, then times `steps` decode steps: the whole step and `_append`."""
    prompt = engine.tokenizer.encode(PROMPT)
    params = SamplingParams(max_tokens=steps + 8, temperature=1.0, seed=1, ignore_eos=True)
    for i in range(batch):
        engine.add_request(f"r{i}", prompt, SamplingParams(**{**params.__dict__, "seed": i}))
    while any(seq.num_computed_tokens < seq.num_prompt_tokens for seq in engine.scheduler.running) \
            or engine.scheduler.waiting:
        engine.step()
    append_s = 0.0
    real_append = engine._append

    def timed_append(seq, position, token):
        nonlocal append_s
        start = time.perf_counter()
        out = real_append(seq, position, token)
        append_s += time.perf_counter() - start
        return out

    engine._append = timed_append
    step_times, append_times = [], []
    for _ in range(steps):  # medians: the machine is shared, so single steps catch other processes' bursts
        append_s, start = 0.0, time.perf_counter()
        engine.step()
        step_times.append(time.perf_counter() - start)
        append_times.append(append_s)
    del engine._append
    for request_id in list(engine.requests):
        engine.abort(request_id)
    append_ms = 1e3 * statistics.median(append_times)
    return {"batch": batch, "steps": steps, "step_ms": 1e3 * statistics.median(step_times), "append_ms": append_ms,
            "append_us_per_token": 1e3 * append_ms / batch}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the host path is single-threaded; keep the tiny model from competing for cores
    config = EngineConfig(model="random://qwen3-0.6b", device="cpu", hf_overrides=TINY, max_num_seqs=256,
                          max_num_batched_tokens=8192, kv_cache_memory_bytes=64 << 20)
    engine = LLMEngine(config)
    results = {}
    for name, detokenizer in [("baseline", BaselineDetokenizer), ("current", IncrementalDetokenizer)]:
        llm_engine.IncrementalDetokenizer = detokenizer  # the engine builds one per request from this name
        results[name] = [measure(engine, batch, args.steps) for batch in args.batches]
    llm_engine.IncrementalDetokenizer = IncrementalDetokenizer
    for name, rows in results.items():
        for row in rows:
            print(f"{name:9s} batch {row['batch']:4d}: step {row['step_ms']:7.2f} ms, "
                  f"_append {row['append_ms']:6.2f} ms ({row['append_us_per_token']:5.1f} us/token)")
    if args.out:
        env = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        with open(args.out, "w") as f:
            json.dump({"environment": env, "settings": vars(args), **results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
