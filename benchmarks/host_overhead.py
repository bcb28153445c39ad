"""The GPU engine's host work per decode step, measured on a CPU: everything `LLMEngine.step` does besides the
device work (scheduling, block bookkeeping, reading tokens back, detokenising, outputs), with overlapped steps as
on a GPU, and the runner's staging of a decode step's inputs (the arrays its CUDA graph reads). On a GPU this host
work runs while the device computes the step before; once it takes longer than the device's step, the GPU waits.

Each part is timed in one run against what it replaced:
- detokenising: per-token texts of byte-level tokenizers ("pieces"), against the direct Rust decode of two windows
  a token ("direct"), against `tokenizer.decode` of both windows ("decode");
- staging: block tables kept between steps (`host_inputs.stage_decode`), against each sequence's table converted
  from its Python list every step ("rebuild").

The device work is replaced by nothing: the runner returns no logits and the sampler hands out the tokens of a
story in turn (real text, so the detokenizer meets real pieces). One-layer random model, SmolLM2's tokenizer;
256 requests with prompts of 100-1024 tokens (the offline workload's), timed after 300 steps; medians.

    .venv/bin/python benchmarks/host_overhead.py [--steps 100] [--out results.json]
"""

import argparse
import json
import os
import platform
import random
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fleetserve.engine.config import EngineConfig  # noqa: E402
from fleetserve.engine.detokenizer import token_text  # noqa: E402
from fleetserve.engine.host_inputs import BlockTableMirror, stage_decode  # noqa: E402
from fleetserve.engine.llm_engine import LLMEngine  # noqa: E402
from fleetserve.engine.sampler import SampledBatch, SampledToken  # noqa: E402
from fleetserve.engine.sampling_params import SamplingParams  # noqa: E402
from fleetserve.engine.sequence import Sequence  # noqa: E402

TINY = {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 49152}  # SmolLM2's vocabulary: every id is text
STORY = "Write a long story about a lighthouse keeper who finds a message in a bottle, in English and 中文. " * 40
DETOKENIZERS = ("decode", "direct", "pieces")


def engine_without_device(batch: int) -> LLMEngine:
    config = EngineConfig(model="random://qwen3-0.6b", device="cpu", hf_overrides=TINY, max_num_seqs=batch,
                          max_num_batched_tokens=8192, num_kv_blocks=batch * 160, overlap_steps=True)
    engine = LLMEngine(config)
    story = engine.tokenizer.encode(STORY)
    draws = iter(range(1 << 62))

    def sample_story(logits, request_ids, params):
        start = next(draws)
        tokens = [SampledToken(story[(start + i) % len(story)]) for i in range(len(request_ids))]
        return SampledBatch(torch.empty(0), lambda: tokens)

    engine.runner.run = lambda seqs, pending_tokens: torch.empty(0)
    engine.sampler.sample_async = sample_story
    return engine


def set_detokenizers(engine: LLMEngine, kind: str) -> None:
    tokenizer, text = engine.tokenizer, token_text(engine.tokenizer)
    decode = (lambda ids: tokenizer.decode(ids, skip_special_tokens=True)) if kind == "decode" else text.decode
    for request in engine.requests.values():
        request.detokenizer._decode = decode
        request.detokenizer._pieces = text.pieces if kind == "pieces" else None


def measure_steps(batch: int, steps: int, warm_steps: int) -> dict:
    """Median host time of an engine step, for each detokenizer in turn (interleaved, so drift hits all)."""
    engine = engine_without_device(batch)
    rng = random.Random(0)
    for i in range(batch):
        prompt = [rng.randrange(1000, 40000) for _ in range(rng.randint(100, 1024))]
        engine.add_request(f"r{i}", prompt, SamplingParams(max_tokens=warm_steps + 4 * steps, ignore_eos=True))
    for _ in range(warm_steps):
        engine.step()
    times = {kind: [] for kind in DETOKENIZERS}
    for _ in range(steps):
        for kind in DETOKENIZERS:
            set_detokenizers(engine, kind)
            start = time.perf_counter()
            engine.step()
            times[kind].append(time.perf_counter() - start)
    return {kind: 1e3 * statistics.median(t) for kind, t in times.items()}


class RebuiltTables(BlockTableMirror):
    """The block tables before they were kept between steps: every row converted from its list, every step."""

    def gather(self, seqs, width: int, out: np.ndarray) -> None:
        table = out[:len(seqs)]
        table.fill(self.fill)
        for row, seq in enumerate(seqs):
            k = min(width, len(seq.block_table))
            table[row, :k] = seq.block_table[:k]


def measure_staging(batch: int, steps: int, block_size: int = 16, max_len: int = 2048) -> dict:
    """Median time to stage a decode step of `batch` sequences of 100-1024 + a growing number of tokens."""
    rng = random.Random(0)
    max_blocks = max_len // block_size
    seqs = [Sequence(f"r{i}", list(range(rng.randint(100, 1024))), SamplingParams()) for i in range(batch)]
    for seq in seqs:  # decoding with overlapped steps: the last input id is still on the device
        seq.num_pending, seq.pending_row = 1, 0
    next_block = iter(range(batch * max_blocks))
    kept, rebuilt = (cls(batch, max_blocks, fill=batch * max_blocks) for cls in (BlockTableMirror, RebuiltTables))
    rows, tables = np.zeros((6, batch), np.int64), np.zeros(batch * max_blocks, np.int32)
    times = {"rebuild": [], "kept": []}
    for _ in range(steps):
        for seq in seqs:  # the step's token, and a new block when the last one is full
            seq.token_ids.append(0)
            while len(seq.block_table) * block_size < len(seq):
                seq.block_table.append(next(next_block))
        start = time.perf_counter()
        stage_decode(seqs, rows, tables, rebuilt, block_size)
        middle = time.perf_counter()
        stage_decode(seqs, rows, tables, kept, block_size)
        times["rebuild"].append(middle - start)
        times["kept"].append(time.perf_counter() - middle)
    return {kind: 1e3 * statistics.median(t) for kind, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warm-steps", type=int, default=300, help="steps before timing: contexts grow")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    results = []
    for batch in args.batches:
        step_ms, staging_ms = measure_steps(batch, args.steps, args.warm_steps), measure_staging(batch, args.steps)
        results.append({"batch": batch, "engine_step_ms": step_ms, "decode_staging_ms": staging_ms})
        print(f"batch {batch:4d}: engine step (host) " + ", ".join(f"{k} {v:.2f} ms" for k, v in step_ms.items())
              + "; decode staging " + ", ".join(f"{k} {v:.3f} ms" for k, v in staging_ms.items()))
    if args.out:
        env = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        with open(args.out, "w") as f:
            json.dump({"environment": env, "settings": vars(args), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
