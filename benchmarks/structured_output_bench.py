"""Does the grammar mask slow the requests in a batch that use none? (issue 17)

Two in-process runs on the same engine, same prompts, same lengths, every request `ignore_eos` to `--output-len`:
  free:   N unconstrained requests + M more unconstrained ones
  masked: the same N unconstrained requests + M requests constrained by a JSON schema (an array of strings long
          enough that the grammar never completes before --output-len, so every masked request lives as long)
The only difference is the mask. Reported per run: the unconstrained requests' mean inter-token latency (from the
step that produced each token), the run's wall time and output tokens/s, the sampler's own time per step, and the
engine's grammar time per step: handing the previous step's tokens to the grammar workers (with the wait for those
tokens) and waiting for the workers' masks. On a GPU, a batch with a constrained request samples only after the
previous step is read back (the matchers must see its tokens), and the workers accept and fill meanwhile; the
masked run shows what that costs.

    .venv/bin/python benchmarks/structured_output_bench.py --device cuda --model hf://Qwen/Qwen3-0.6B \
        --free 192 --constrained 64 --output-len 256 --out benchmarks/results/structured-output-gpu.json
    .venv/bin/python benchmarks/structured_output_bench.py --device cpu --free 3 --constrained 1 --output-len 16
"""

import argparse
import json
import statistics
import time

import torch

from fleetserve.engine.config import EngineConfig
from fleetserve.engine.grammar_workers import GrammarWorkers
from fleetserve.engine.llm_engine import LLMEngine
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.structured_output import grammar_compiler

finish_step = GrammarWorkers.finish_step
LONG_JSON = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string", "maxLength": 6},
                                                        "minItems": 100_000}},
             "required": ["items"], "additionalProperties": False}


def sync(engine: LLMEngine) -> None:
    if engine.runner.device.type == "cuda":
        torch.cuda.synchronize()


def timed(owner, name: str, seconds: list[float]) -> None:
    """Wraps owner.name so that each call's duration lands in `seconds` (undone by `del owner.name`)."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
        return out

    setattr(owner, name, wrapper)


def run(engine: LLMEngine, prompts: list[list[int]], params: list[SamplingParams], free: int) -> dict:
    """Steps until all finish; the first `free` requests are the unconstrained ones measured."""
    sampler_seconds, start_seconds, wait_seconds = [], [], []
    grammars = engine.sampler.grammars
    timed(engine.sampler, "sample_async", sampler_seconds)
    timed(grammars, "_start", start_seconds)
    timed(GrammarWorkers, "finish_step", wait_seconds)
    ids = [f"r{i}" for i in range(len(prompts))]
    for rid, prompt, p in zip(ids, prompts, params):
        engine.add_request(rid, prompt, p)
    token_times: dict[str, list[float]] = {rid: [] for rid in ids[:free]}
    sync(engine)
    start = time.perf_counter()
    produced = 0
    while engine.has_unfinished_requests() or engine._in_flight is not None:
        outs = engine.step()
        now = time.perf_counter()
        for out in outs:
            produced += len(out.new_token_ids)
            if out.request_id in token_times and out.new_token_ids:
                token_times[out.request_id].append(now)
    sync(engine)
    wall = time.perf_counter() - start
    del engine.sampler.sample_async, grammars._start  # the class's methods again
    GrammarWorkers.finish_step = finish_step
    steps = len(sampler_seconds)
    gaps = [b - a for times in token_times.values() for a, b in zip(times, times[1:])]
    return {"wall_s": round(wall, 3), "output_tokens_per_s": round(produced / wall, 1),
            "free_itl_ms_mean": round(statistics.mean(gaps) * 1e3, 3),
            "free_itl_ms_p99": round(sorted(gaps)[int(0.99 * (len(gaps) - 1))] * 1e3, 3),
            "sampler_ms_per_step": round(statistics.mean(sampler_seconds) * 1e3, 3),
            "grammar_start_ms_per_step": round(sum(start_seconds) / steps * 1e3, 3),
            "grammar_wait_ms_per_step": round(sum(wait_seconds) / steps * 1e3, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin://smollm2-135m-instruct")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--free", type=int, default=192)
    ap.add_argument("--constrained", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    total = args.free + args.constrained
    engine = LLMEngine(EngineConfig(model=args.model, device=args.device, max_num_seqs=max(total, 1),
                                    max_model_len=args.prompt_len + args.output_len + 16))
    compiler = grammar_compiler(engine.tokenizer, engine.vocab_size, tuple(sorted(engine.loaded.eos_token_ids)))
    grammar = compiler.json_schema(LONG_JSON)
    gen = torch.Generator().manual_seed(0)
    vocab = min(len(engine.tokenizer), engine.vocab_size)
    prompts = [torch.randint(100, vocab, (args.prompt_len,), generator=gen).tolist() for _ in range(total)]
    free = SamplingParams(max_tokens=args.output_len, temperature=0.0, ignore_eos=True)
    masked = SamplingParams(max_tokens=args.output_len, temperature=0.0, ignore_eos=True, grammar=grammar)
    warm_up = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    warm_up_masked = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, grammar=grammar)
    for extra in (warm_up, warm_up_masked):  # kernels, graphs and pinned buffers of every batch size, both paths
        run(engine, prompts, [warm_up] * args.free + [extra] * args.constrained, args.free)
    results = {"model": args.model, "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
               "free": args.free, "constrained": args.constrained, "prompt_len": args.prompt_len,
               "output_len": args.output_len, "runs": []}
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        for name, extra in (("free", free), ("masked", masked)):
            row = {"run": name, **run(engine, prompts, [free] * args.free + [extra] * args.constrained, args.free)}
            print(json.dumps(row), flush=True)
            results["runs"].append(row)
    for key in ("free_itl_ms_mean", "output_tokens_per_s", "sampler_ms_per_step"):
        means = {name: statistics.mean(r[key] for r in results["runs"] if r["run"] == name)
                 for name in ("free", "masked")}
        results[f"masked_over_free_{key}"] = round(means["masked"] / means["free"], 4)
    print(json.dumps({k: v for k, v in results.items() if k.startswith("masked_over")}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
