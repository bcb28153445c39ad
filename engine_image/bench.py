"""`fleetserve bench`: our server against HF transformers `generate` on the same model and the same requests.

Request lengths come from the Azure LLM conversation trace (2023), scaled down so a 135M model on a few CPU cores
finishes in minutes: input = ContextTokens * input_scale, output = GeneratedTokens * output_scale, each clamped to
[4, max]. Prompts are seeded random token ids (the trace has no text) and every request is forced to its exact
output length (ignore_eos / min_new_tokens), greedy on both sides.

Our side: `fleetserve serve` as a subprocess, all N requests sent at once over streaming /v1/completions.
TTFT is send -> first text chunk; ITL the gaps between text chunks (as vLLM's benchmark_serving measures them).
HF side: one batched `generate` call over the same N prompts (left-padded); every request's first token arrives
with the batch's first step, and its ITL is the per-step time up to its own length.
"""

import argparse
import asyncio
import csv
import json
import logging
import os
import platform
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from fleetserve.engine.config import DEFAULT_MODEL, served_name_for

logger = logging.getLogger("fleetserve.bench")

DEFAULT_TRACE = "../shared/data/azure-llm-2023/conv.csv"
PROMPT_TOKEN_RANGE = (1000, 30000)  # ordinary vocabulary ids: no special tokens in random prompts


@dataclass
class BenchRequest:
    prompt_ids: list[int]
    output_len: int


@dataclass
class RequestResult:
    sent_at: float
    token_times: list[float] = field(default_factory=list)  # when each piece of output arrived
    output_tokens: int = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="builtin://smollm2-135m-instruct or an HF model folder")
    parser.add_argument("--num-requests", type=int, default=16, help="requests, all sent concurrently")
    parser.add_argument("--trace", default=DEFAULT_TRACE, help="CSV with ContextTokens,GeneratedTokens columns")
    parser.add_argument("--input-scale", type=float, default=1 / 8)
    parser.add_argument("--output-scale", type=float, default=1 / 4)
    parser.add_argument("--max-input-len", type=int, default=512)
    parser.add_argument("--max-output-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=0, help="port for the benchmarked server (default: a free one)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/cpu-bench.json"))
    parser.add_argument("--skip-hf", action="store_true", help="only measure our server")


# ---- requests from the trace (pure) --------------------------------------------------------------------------------

def read_trace_lengths(path: str) -> list[tuple[int, int]]:
    with open(path, newline="") as handle:
        return [(int(row["ContextTokens"]), int(row["GeneratedTokens"])) for row in csv.DictReader(handle)]


def scale_length(length: int, scale: float, maximum: int) -> int:
    return max(4, min(maximum, round(length * scale)))


def make_requests(lengths: list[tuple[int, int]], count: int, input_scale: float, output_scale: float,
                  max_input: int, max_output: int, seed: int) -> list[BenchRequest]:
    rng = random.Random(seed)
    requests = []
    for context, generated in rng.sample(lengths, count):
        input_len = scale_length(context, input_scale, max_input)
        requests.append(BenchRequest([rng.randrange(*PROMPT_TOKEN_RANGE) for _ in range(input_len)],
                                     scale_length(generated, output_scale, max_output)))
    return requests


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(system: str, results: list[RequestResult], duration: float) -> dict:
    ttfts = [result.token_times[0] - result.sent_at for result in results if result.token_times]
    itls = [later - earlier for result in results
            for earlier, later in zip(result.token_times, result.token_times[1:])]
    output_tokens = sum(result.output_tokens for result in results)
    return {
        "system": system, "requests": len(results), "output_tokens": output_tokens, "duration_s": duration,
        "output_tokens_per_s": output_tokens / duration,
        "ttft_p50_ms": 1000 * percentile(ttfts, 50), "ttft_p99_ms": 1000 * percentile(ttfts, 99),
        "itl_p50_ms": 1000 * percentile(itls, 50), "itl_p99_ms": 1000 * percentile(itls, 99),
        # other work on the machine skews CPU timings: record how busy it was when this system finished
        "load_average_1m": os.getloadavg()[0],
    }


def markdown_table(rows: list[dict]) -> str:
    lines = ["| system | requests | output tokens | duration (s) | output tok/s | TTFT p50 (ms) | TTFT p99 (ms) "
             "| ITL p50 (ms) | ITL p99 (ms) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['system']} | {row['requests']} | {row['output_tokens']} | {row['duration_s']:.1f} "
                     f"| {row['output_tokens_per_s']:.1f} | {row['ttft_p50_ms']:.0f} | {row['ttft_p99_ms']:.0f} "
                     f"| {row['itl_p50_ms']:.0f} | {row['itl_p99_ms']:.0f} |")
    return "\n".join(lines)


def machine_description() -> dict:
    import torch

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


# ---- our server -------------------------------------------------------------------------------------------------

def start_server(args: argparse.Namespace, requests: list[BenchRequest]) -> subprocess.Popen:
    max_len = max(len(request.prompt_ids) + request.output_len for request in requests)
    # the console script, as a user starts it
    command = [str(Path(sys.executable).with_name("fleetserve")), "serve", "--model", args.model,
               "--port", str(args.port), "--max-num-seqs", str(len(requests)), "--max-model-len", str(max_len),
               "--max-waiting", str(len(requests))]
    logger.info("starting: %s", " ".join(command))
    return subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"})


async def wait_healthy(base_url: str, server: subprocess.Popen, timeout: float = 300) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with {server.returncode} before becoming healthy")
            try:
                async with session.get(f"{base_url}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise TimeoutError(f"the server was not healthy within {timeout}s")


async def stream_one(session, url: str, model: str, request: BenchRequest, progress: tqdm) -> RequestResult:
    payload = {"model": model, "prompt": request.prompt_ids, "max_tokens": request.output_len, "temperature": 0,
               "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    result = RequestResult(sent_at=time.perf_counter())
    async with session.post(url, json=payload) as response:
        if response.status != 200:
            raise RuntimeError(f"server answered {response.status}: {await response.text()}")
        async for line in response.content:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[len(b"data: "):])
            if chunk.get("usage"):
                result.output_tokens = chunk["usage"]["completion_tokens"]
            if chunk["choices"] and chunk["choices"][0]["text"]:
                result.token_times.append(time.perf_counter())
    progress.update()
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def bench_server(args: argparse.Namespace, requests: list[BenchRequest]) -> dict:
    import aiohttp

    args.port = args.port or free_port()
    base_url = f"http://127.0.0.1:{args.port}"
    server = start_server(args, requests)
    try:
        await wait_healthy(base_url, server)
        model = served_name_for(args.model)
        timeout = aiohttp.ClientTimeout(total=3600)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with tqdm(total=len(requests), desc="fleetserve", unit="req") as progress:
                started = time.perf_counter()
                results = await asyncio.gather(*(stream_one(session, f"{base_url}/v1/completions", model, request,
                                                            progress) for request in requests))
                duration = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=60)
    return summarize("fleetserve (continuous batching)", list(results), duration)


# ---- HF transformers ------------------------------------------------------------------------------------------

def load_hf(model: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fleetserve.engine.loader import load_builtin_hf

    if model == DEFAULT_MODEL:
        return load_builtin_hf()
    if not os.path.isdir(model):
        raise ValueError(f"--model: the HF comparison needs {DEFAULT_MODEL} or an HF model folder, not {model!r}")
    return AutoModelForCausalLM.from_pretrained(model).eval(), AutoTokenizer.from_pretrained(model)


def bench_hf(args: argparse.Namespace, requests: list[BenchRequest]) -> dict:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    hf_model, tokenizer = load_hf(args.model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    longest = max(len(request.prompt_ids) for request in requests)
    input_ids = torch.tensor([[pad_id] * (longest - len(r.prompt_ids)) + r.prompt_ids for r in requests])
    attention_mask = torch.tensor([[0] * (longest - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in requests])
    max_new = max(request.output_len for request in requests)
    progress = tqdm(total=max_new, desc="HF generate", unit="step")

    class StepClock(StoppingCriteria):
        """Stamps the time of every decoding step; never stops generation."""

        def __init__(self):
            self.times = []

        def __call__(self, input_ids, scores, **kwargs):
            self.times.append(time.perf_counter())
            progress.update()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    clock = StepClock()
    started = time.perf_counter()
    with torch.inference_mode():
        hf_model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new,
                          min_new_tokens=max_new, do_sample=False, pad_token_id=pad_id,
                          stopping_criteria=StoppingCriteriaList([clock]))
    duration = time.perf_counter() - started
    progress.close()
    results = [RequestResult(started, clock.times[:request.output_len], request.output_len) for request in requests]
    return summarize("HF transformers generate (static batch)", results, duration)


# ---- entry ---------------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    requests = make_requests(read_trace_lengths(args.trace), args.num_requests, args.input_scale,
                             args.output_scale, args.max_input_len, args.max_output_len, args.seed)
    logger.info("%d requests: %d input tokens, %d output tokens in total", len(requests),
                sum(len(request.prompt_ids) for request in requests), sum(r.output_len for r in requests))
    rows = [asyncio.run(bench_server(args, requests))]
    if not args.skip_hf:
        rows.append(bench_hf(args, requests))
    table = markdown_table(rows)
    print(table)
    report = {"machine": machine_description(), "model": args.model, "trace": args.trace,
              "settings": {key: value for key, value in vars(args).items() if key not in ("output",)},
              "requests": [{"input_len": len(r.prompt_ids), "output_len": r.output_len} for r in requests],
              "results": rows, "table": table}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    logger.info("wrote %s", args.output)
    return 0
