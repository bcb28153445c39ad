"""Measures the replica profile the simulator replays (`fleetserve simulate --profile`) from our own engine.

Run from the repo root: `.venv/bin/python benchmarks/simulation_profile_measure.py --out PROFILE.json`.
It loads the engine (default: the built-in SmolLM2-135M on CPU), then measures
- prefill speed: one request of --prefill-tokens prompt tokens and one output token, timed end to end;
- decode step time per batch size: B requests (short prompts) prefilled first, then the mean of --decode-steps
  steps where every sequence produces one token;
- cold start: the wall time of loading the engine (weights, KV cache), to which --scheduling-s is added for what a
  cluster adds before the process starts (node, image pull); that part is an assumption, stated in the file.

`--clock cpu` times with this process's CPU time divided by torch's thread count instead of wall time: on a
machine shared with other jobs that approximates the uncontended wall time (wall time counts the waits too).
"""

import argparse
import json
import logging
import platform
import statistics
import time

import torch
from tqdm import tqdm

from fleetserve.engine.config import EngineConfig
from fleetserve.engine.llm_engine import LLMEngine
from fleetserve.engine.sampling_params import SamplingParams

log = logging.getLogger("simulation_profile")
PROMPT_TOKEN = 1000  # an ordinary vocabulary id: random prompts never hit special tokens
CLOCKS = {"wall": time.perf_counter, "cpu": lambda: time.process_time() / torch.get_num_threads()}
clock = CLOCKS["wall"]


def run_until_done(engine: LLMEngine) -> None:
    while engine.has_unfinished_requests():
        engine.step()


def prefill_tokens_per_s(engine: LLMEngine, tokens: int, repeats: int) -> float:
    times = []
    for i in range(repeats):
        # Distinct prompts so prefix caching doesn't turn later repeats into cache hits.
        prompt = [PROMPT_TOKEN + i] + [PROMPT_TOKEN + 7] * (tokens - 1)
        engine.add_request(f"prefill-{i}", prompt, SamplingParams(max_tokens=1, ignore_eos=True))
        start = clock()
        run_until_done(engine)
        times.append(clock() - start)
    return tokens / statistics.median(times)


def decode_step_s(engine: LLMEngine, batch: int, steps: int) -> float:
    params = SamplingParams(max_tokens=steps + 8, ignore_eos=True)
    for i in range(batch):
        engine.add_request(f"decode-{batch}-{i}", [PROMPT_TOKEN + batch, PROMPT_TOKEN + i] * 32, params)
    while any(not r.seq.output_token_ids for r in engine.requests.values()):  # all prefilled, first token out
        engine.step()
    start = clock()
    for _ in range(steps):
        engine.step()
    elapsed = (clock() - start) / steps
    for request_id in list(engine.requests):
        engine.abort(request_id)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="builtin://smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,2,4,8,16,32,64")
    parser.add_argument("--decode-steps", type=int, default=12)
    parser.add_argument("--prefill-tokens", type=int, default=1024)
    parser.add_argument("--scheduling-s", type=float, default=60.0)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    batches = [int(b) for b in args.batches.split(",")]

    started = time.perf_counter()
    engine = LLMEngine(EngineConfig(model=args.model, device=args.device, max_num_seqs=max(batches),
                                    max_model_len=2048))
    load_s = time.perf_counter() - started
    prefill = prefill_tokens_per_s(engine, args.prefill_tokens, repeats=3)
    seconds = [decode_step_s(engine, batch, args.decode_steps) for batch in tqdm(batches, desc="decode batch sizes")]
    kv_tokens = engine.runner.num_blocks * engine.config.block_size
    profile = {
        "name": f"fleetserve-engine {args.model} on {args.device}",
        "source": (
            f"measured by benchmarks/simulation_profile_measure.py on {platform.node()} "
            f"({platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{args.clock} clock, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); cold_start_s = engine load {load_s:.1f}s measured "
            f"+ {args.scheduling_s:.0f}s assumed for scheduling, node and image pull"
        ),
        "gpus_per_replica": 1,
        "device": args.device,
        "max_batch": max(batches),
        # The budget the engine chose for this device (its default), which the simulated replica then uses.
        "max_num_batched_tokens": engine.config.max_num_batched_tokens,
        "kv_cache_tokens": kv_tokens,
        "prefill_tokens_per_s": round(prefill, 1),
        "decode_step_s": {"batch": batches, "seconds": [round(s, 5) for s in seconds]},
        "cold_start_s": round(load_s + args.scheduling_s, 1),
    }
    with open(args.out, "w") as handle:
        json.dump(profile, handle, indent=2)
        handle.write("\n")
    log.info("profile written to %s: %s", args.out, json.dumps(profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
