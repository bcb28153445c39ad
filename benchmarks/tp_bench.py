"""Tensor parallelism on one host: the same random-weight model at every TP size in one run (issue 6, part 4).

    python benchmarks/tp_bench.py --model random://llama-3-8b --sizes 1,2,4            # on the GPU machine
    python benchmarks/tp_bench.py --model random://tests/tp/tiny-llama.json --device cpu --dtype float32 \
        --sizes 1,2 --offline-requests 8 --offline-max-len 120 --decode-tokens 32 --max-model-len 512 --out /tmp

For each size: the logits at the prompts' last position (prefill) and after one more token (decode), as relative
error against TP=1's; greedy agreement with TP=1; batch-1 decode tokens/s; offline throughput on workload a
(workloads.offline_requests). Writes tp-bench-<tag>.json (device, sizes, every number) to --out.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import correctness  # noqa: E402
import workloads  # noqa: E402
from fleetserve.engine.config import EngineConfig  # noqa: E402
from fleetserve.engine.group_layout import single_node  # noqa: E402
from fleetserve.engine.llm_engine import LLMEngine  # noqa: E402
from fleetserve.engine.sampling_params import SamplingParams  # noqa: E402
from fleetserve.engine.tp_launch import leader_group  # noqa: E402

log = logging.getLogger("tp_bench")
PROMPT_LEN = 128


def batch1_decode_tokens_per_s(engine: LLMEngine, prompt: list[int], tokens: int) -> float:
    """One request alone: (time for prefill + `tokens` decodes) minus (time for the prefill alone)."""
    def elapsed(max_tokens: int) -> float:
        start = time.perf_counter()
        engine.generate([prompt], SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))
        return time.perf_counter() - start

    elapsed(8)  # warm-up: kernels compile, caches fill
    return tokens / (elapsed(tokens + 1) - elapsed(1))


def offline_throughput(engine: LLMEngine, requests: list[workloads.BenchRequest]) -> dict:
    start = time.perf_counter()
    workloads.generate_all(engine, requests)
    seconds = time.perf_counter() - start
    tokens = sum(r.output_len for r in requests)
    return {"requests": len(requests), "output_tokens": tokens, "seconds": seconds, "output_tokens_per_s": tokens / seconds}


def fixed_prompts(vocab: int, count: int) -> list[list[int]]:
    return [[3 + (7 * i + j) % (vocab - 3) for j in range(PROMPT_LEN)] for i in range(count)]


def run_size(tp: int, config: EngineConfig, args) -> dict:
    with leader_group(single_node(tp), config):
        engine = LLMEngine(config)
        vocab = int(engine.loaded.hf_config.vocab_size)
        prompts = fixed_prompts(vocab, args.num_prompts)
        greedy = [out.new_token_ids for out in engine.generate(prompts, SamplingParams(
            max_tokens=args.greedy_tokens, temperature=0.0, ignore_eos=True))]
        prefill, decode = correctness.engine_logits(engine, prompts, [g[0] for g in greedy])
        requests = workloads.offline_requests(vocab, count=args.offline_requests, max_len=args.offline_max_len)
        result = {
            "tp": tp,
            "decode_batch1_tokens_per_s": batch1_decode_tokens_per_s(engine, prompts[0], args.decode_tokens),
            "offline": offline_throughput(engine, requests),
        }
        log.info("TP=%d: %s", tp, json.dumps(result))
        del engine
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {**result, "_greedy": greedy, "_logits": (prefill.cpu(), decode.cpu())}


def compare_to_tp1(run: dict, tp1: dict) -> dict:
    """Relative logit error and greedy agreement (tokens equal before the first divergence) against TP=1."""
    agree = sum(next((i for i, (a, b) in enumerate(zip(g, r)) if a != b), len(r))
                for g, r in zip(run["_greedy"], tp1["_greedy"]))
    total = sum(len(r) for r in tp1["_greedy"])
    return {"prefill_logits_rel_error": correctness.relative_error(run["_logits"][0], tp1["_logits"][0]),
            "decode_logits_rel_error": correctness.relative_error(run["_logits"][1], tp1["_logits"][1]),
            "greedy_agreement": agree / total}


def environment(device: str) -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if device == "cuda" else []
    return {"device": device, "gpus": gpus, "torch": torch.__version__, "commit": commit}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="random://llama-3-8b")
    parser.add_argument("--sizes", default="1,2,4", help="comma-separated TP sizes; the first must be 1")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--greedy-tokens", type=int, default=64)
    parser.add_argument("--decode-tokens", type=int, default=256)
    parser.add_argument("--offline-requests", type=int, default=256)
    parser.add_argument("--offline-max-len", type=int, default=1024)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--tag", default="run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sizes = [int(s) for s in args.sizes.split(",")]
    if sizes[0] != 1:
        parser.error("--sizes: the first size must be 1, the reference")
    runs = []
    for tp in sizes:
        config = EngineConfig(model=args.model, device=args.device, dtype=args.dtype, tensor_parallel_size=tp,
                              max_model_len=args.max_model_len, max_num_batched_tokens=8192, max_num_seqs=256)
        runs.append(run_size(tp, config, args))
    tp1 = runs[0]
    results = {"environment": environment(args.device), "model": args.model, "dtype": args.dtype, "sizes": []}
    for run in runs:
        entry = {k: v for k, v in run.items() if not k.startswith("_")}
        entry["vs_tp1"] = compare_to_tp1(run, tp1)
        entry["decode_speedup_vs_tp1"] = run["decode_batch1_tokens_per_s"] / tp1["decode_batch1_tokens_per_s"]
        results["sizes"].append(entry)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"tp-bench-{args.tag}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
