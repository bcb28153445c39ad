"""The request sets the benchmarks replay (the published offline workload, the Azure conversation trace) and the
one way they run offline: all at once, greedy, each to its output length."""

import csv
import random
from dataclasses import dataclass
from datetime import datetime

from fleetserve.engine.sampling_params import SamplingParams


@dataclass
class BenchRequest:
    prompt_ids: list[int]
    output_len: int
    arrival_s: float = 0.0  # offset from the start of the replay


def generate_all(engine, requests: list[BenchRequest]) -> list:
    """Runs every request through `engine.generate` together, greedy, each to exactly its output length."""
    params = [SamplingParams(max_tokens=r.output_len, temperature=0.0, ignore_eos=True) for r in requests]
    return engine.generate([r.prompt_ids for r in requests], params)


def offline_requests(vocab_size: int, count: int = 256, min_len: int = 100, max_len: int = 1024,
                     seed: int = 0) -> list[BenchRequest]:
    """nano-vllm's / vLLM's throughput workload: input and output lengths uniform in [min_len, max_len], random ids."""
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        prompt_len, output_len = rng.randint(min_len, max_len), rng.randint(min_len, max_len)
        requests.append(BenchRequest([rng.randrange(vocab_size) for _ in range(prompt_len)], output_len))
    return requests


def azure_trace(path: str, vocab_size: int, rate_scale: float, limit: int, max_prompt: int = 2048,
                max_output: int = 512, seed: int = 0) -> list[BenchRequest]:
    """The first `limit` arrivals of the Azure LLM conversation trace, inter-arrival gaps divided by rate_scale.

    Prompts are random ids of the logged length (the trace has no text); lengths are capped to fit the model.
    """
    rng = random.Random(seed)
    requests, start = [], None
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            t = datetime.fromisoformat(row["TIMESTAMP"][:26]).timestamp()
            start = t if start is None else start
            prompt_len = max(1, min(int(row["ContextTokens"]), max_prompt))
            output_len = max(1, min(int(row["GeneratedTokens"]), max_output))
            prompt = [rng.randrange(vocab_size) for _ in range(prompt_len)]
            requests.append(BenchRequest(prompt, output_len, (t - start) / rate_scale))
            if len(requests) == limit:
                break
    return requests
