"""One command for the GPU machine: correctness against HF transformers, then the benchmarks of issue 3.

    python benchmarks/gpu_bench.py --all --out benchmarks/results            # everything
    python benchmarks/gpu_bench.py --shapes qwen3-0.6b --sections offline     # a part
    python benchmarks/gpu_bench.py --report benchmarks/results/gpu-*.json     # merge runs into the markdown table

Each run writes gpu-<sections>.json (GPU name, torch version, commit, every number) to --out.
"""

import argparse
import glob
import json
import logging
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import report  # noqa: E402
import workloads  # noqa: E402

log = logging.getLogger("gpu_bench")
SECTIONS = ["ceilings", "correctness", "decode", "offline", "online"]
SHAPES = ["qwen3-0.6b", "llama-3-8b"]
STATIC_BATCH = {"qwen3-0.6b": 256, "llama-3-8b": 64}  # HF's static cache for 256 x 2k tokens of 8B does not fit 80 GB


def environment() -> dict:
    import torch
    import transformers
    import triton

    commit = os.environ.get("FLEETSERVE_COMMIT") or git_commit()
    return {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "transformers": transformers.__version__, "commit": commit or "unknown",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def git_commit() -> str:
    """HEAD, marked -dirty when the tree differs from it (a copied tree whose .git lags behind looks dirty rather
    than silently old: pass FLEETSERVE_COMMIT there)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}-dirty" if head and dirty else head or "unknown"


def run_ceilings(results: dict) -> None:
    import kernel_bench

    results["ceilings"] = {"copy_gbps": kernel_bench.copy_bandwidth_gbps(),
                           "matmul_bf16_tflops": kernel_bench.matmul_tflops()}


def run_attention_kernels(results: dict) -> None:
    import kernel_bench

    results["attention_kernels"] = {
        "decode_llama8b_ctx1024": [kernel_bench.decode_attention_bench(b) for b in (1, 32, 256)],
        "prefill_llama8b": [kernel_bench.prefill_attention_bench()],
    }


def run_correctness(results: dict, shapes: list[str], args) -> None:
    import fleet

    out = results.setdefault("correctness", {})
    models = []
    if not args.skip_default_model:  # a real model: real chat prompts, and random tokens as a harder case
        models += [("smollm2-135m (default, GGUF)", None, "chat"),
                   ("smollm2-135m (default, GGUF), random-token prompts", None, "random")]
    models += [(s, s, "random") for s in shapes]
    for label, shape, prompt_kind in models:
        log.info("correctness: %s", label)
        try:
            out[label] = correctness_of(label, shape, prompt_kind, args)
        except Exception as e:  # one model's failure must not cost the others' checks
            log.exception("correctness %s failed", label)
            out[label] = {"error": repr(e)}
        fleet.free_gpu_memory()


def correctness_of(label: str, shape: str | None, prompt_kind: str, args) -> dict:
    import torch

    import correctness
    import fleet
    from fleetserve.engine import loader
    from fleetserve.engine.llm_engine import LLMEngine

    if shape is None:
        hf, tokenizer = loader.load_builtin_hf()
        hf = hf.to("cuda", torch.bfloat16)
    else:
        hf, tokenizer = fleet.random_hf_model(shape), fleet.builtin_tokenizer()
    loaded = loader.from_hf_model(hf, tokenizer, "cuda", torch.bfloat16)  # one copy of the weights, every engine
    if prompt_kind == "chat":
        prompts = correctness.chat_prompts(tokenizer)
    else:
        prompts = [r.prompt_ids for r in workloads.offline_requests(len(tokenizer), count=16, min_len=20,
                                                                    max_len=200, seed=1)]

    def make_engine(num_blocks, **overrides):
        blocks = num_blocks or 4096
        return LLMEngine(fleet.engine_config(num_kv_blocks=blocks, max_num_seqs=32,
                                             max_model_len=min(4096, blocks * 16), **overrides), loaded)

    n = args.greedy_tokens
    engine = make_engine(None)
    ours = correctness.engine_greedy(engine, prompts, n)
    hf_bf16 = correctness.hf_greedy(hf, prompts, n)
    entry = {"prompts": prompt_kind, "logits": correctness.logits_check(engine, hf, prompts)}  # leaves hf in fp32
    del engine
    fleet.free_gpu_memory()
    bf16_err = entry["logits"]["hf_bf16_prefill_err"]
    hf_fp32 = correctness.hf_greedy(hf, prompts, n)
    greedy = correctness.classify_divergences(correctness.greedy_check(ours, hf_fp32, prompts), hf, bf16_err)
    greedy["reference"] = "HF transformers, float32"
    greedy["agreement_with_hf_bf16"] = correctness.agreement(ours, hf_bf16)
    greedy["hf_bf16_agreement_with_hf_fp32"] = correctness.agreement(hf_bf16, hf_fp32)
    entry["greedy"] = greedy
    if greedy["other_divergences"]:  # which part of the engine parts from float32 there
        greedy["probes"] = correctness.probe_divergences(greedy, engine_variants(make_engine), prompts, hf_fp32, n,
                                                         hf)
    batching = correctness.classify_divergences(correctness.batching_check(make_engine, prompts * 2, n), hf,
                                                bf16_err)
    batching["passed"] = batching["passed"] and batching["preemptions"] > 0
    entry["batching_preemption"] = batching
    log.info("correctness %s: %s", label, json.dumps(entry))
    return entry


def engine_variants(make_engine) -> dict:
    """Engines that each change one batch-dependent part of a GPU step, for `correctness.probe_divergences`."""
    from fleetserve.engine import gpu_model_runner

    def eager_steps():
        engine = make_engine(None)
        engine.runner.graph_sizes = [0]  # no batch fits a graph: every step runs eagerly (prefill kernel)
        return engine

    def one_decode_split():
        splits = gpu_model_runner.decode_splits
        gpu_model_runner.decode_splits = lambda *args: 1  # read when the graphs are captured
        try:
            return make_engine(None)
        finally:
            gpu_model_runner.decode_splits = splits

    return {"as checked": lambda: make_engine(None),
            "overlapped steps off": lambda: make_engine(None, overlap_steps=False),
            "eager steps": eager_steps, "one decode split": one_decode_split,
            "64-token prefill chunks": lambda: make_engine(None, max_num_batched_tokens=64)}


def hf_baselines_in_child(shape: str, args) -> dict:
    """HF's baselines run in a process of their own: its continuous-batching manager works from a thread that
    may outlive `stop()` (the window ends mid-generation), and nothing it leaves on the GPU may touch our runs."""
    out = os.path.join(args.out, f".hf-{shape}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--hf-baselines", shape, "--hf-window", str(args.hf_window),
           "--static-batch", ",".join(f"{k}={v}" for k, v in args.static_batch.items()), "--out", out]
    try:
        subprocess.run(cmd, check=True, timeout=20 * args.hf_window + 300)
        with open(out) as f:
            return json.load(f)
    except (subprocess.SubprocessError, OSError, ValueError) as e:
        log.exception("HF baselines for %s failed", shape)
        return {"hf_generate_batch": {"error": repr(e)}}
    finally:
        if os.path.exists(out):
            os.remove(out)


def hf_baselines_main(shape: str, args) -> int:
    import fleet
    import hf_baselines

    requests = workloads.offline_requests(fleet.shape_config(shape)["vocab_size"])
    hf = fleet.random_hf_model(shape)
    static_batch = args.static_batch.get(shape, STATIC_BATCH[shape])
    entry = {}
    for name, fn in (("hf_generate_batch", lambda: hf_baselines.generate_batch_throughput(hf, requests,
                                                                                          args.hf_window)),
                     ("hf_static_generate", lambda: hf_baselines.static_generate_throughput(
                         hf, requests, static_batch, args.hf_window))):
        log.info("offline %s: %s, %.0f s window", shape, name, args.hf_window)
        try:
            entry[name] = fn()
        except Exception as e:  # a baseline that breaks is reported, not fatal
            log.exception("%s failed", name)
            entry[name] = {"error": repr(e)}
        with open(args.out, "w") as f:
            json.dump(entry, f)
    return 0


def run_engine_sections(results: dict, shapes: list[str], sections: list[str], args, save) -> None:
    import decode_bench
    import fleet
    import offline_bench
    import torch

    copy_gbps = results.get("ceilings", {}).get("copy_gbps")
    for shape in shapes:
        vocab = fleet.shape_config(shape)["vocab_size"]
        requests = workloads.offline_requests(vocab)
        if "offline" in sections and not args.skip_hf:
            results.setdefault("offline", {}).setdefault(shape, {}).update(hf_baselines_in_child(shape, args))
        if "decode" in sections and copy_gbps is None:  # measured before the KV cache takes the memory
            import kernel_bench

            copy_gbps = kernel_bench.copy_bandwidth_gbps()
        from fleetserve.engine.llm_engine import LLMEngine
        from fleetserve.engine.startup_heap import freeze_startup_heap

        engine = LLMEngine(fleet.engine_config(model=f"random://{shape}"))
        freeze_startup_heap()  # as `fleetserve serve`'s processes do; fleet.free_gpu_memory unfreezes
        if "decode" in sections:
            for batch in (1, 32, 256):
                log.info("decode %s batch %d", shape, batch)
                results.setdefault("decode", {}).setdefault(shape, []).append(
                    decode_bench.decode_bench(engine, batch, 1024, copy_gbps))
            if args.profiles:
                try:
                    results.setdefault("decode_kernels", {})[shape] = decode_bench.kernel_profile(engine, 1, 1024)
                except Exception as e:  # the profiler is a diagnostic, never a reason to lose the run
                    results.setdefault("decode_kernels", {})[shape] = {"error": repr(e)}
        if "offline" in sections:
            log.info("offline %s: fleetserve on %d requests", shape, len(requests))
            entry = results.setdefault("offline", {}).setdefault(shape, {})
            entry["fleetserve"] = offline_bench.fleetserve_throughput(engine, requests)
            if args.profiles:
                entry["fleetserve_host_profile"] = offline_bench.host_profile(engine, requests)
                # fresh prompts (other seeds) for each diagnostic run: the prefix cache holds the earlier ones
                entry["fleetserve_step_timeline"] = offline_bench.step_timeline(
                    engine, workloads.offline_requests(vocab, seed=1), copy_gbps)
                save()  # the whole run's kernel profile is slow to digest: keep what is measured so far
                entry["fleetserve_kernels"] = offline_bench.kernel_breakdown(
                    engine, workloads.offline_requests(vocab, seed=2))
            log.info("offline %s: %s", shape, json.dumps(entry))
        del engine
        fleet.free_gpu_memory()
        torch.cuda.synchronize()


def run_online(results: dict, args) -> None:
    import online_bench

    model = "builtin://smollm2-135m-instruct" if not args.skip_default_model else "random://qwen3-0.6b"
    vocab = 49152 if model.startswith("builtin") else 151936
    requests = workloads.azure_trace(args.trace, vocab, args.rate_scale, args.online_requests)
    extra = ["--served-model-name", "bench", "--max-num-batched-tokens", "8192", "--max-model-len", "4096",
             "--max-waiting", "100000"]
    result = online_bench.online_bench(model, requests, 8123, args.out, "bench", extra)
    result.update({"model": model, "trace": os.path.basename(args.trace), "rate_scale": args.rate_scale})
    results["online"] = result


def parse_shape_ints(text: str) -> dict:
    """'llama-3-8b=64,qwen3-0.6b=256' -> {'llama-3-8b': 64, 'qwen3-0.6b': 256}"""
    return {k: int(v) for k, v in (item.split("=") for item in text.split(",") if item)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="every section for every shape")
    parser.add_argument("--sections", default="", help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated model shapes")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    parser.add_argument("--hf-window", type=float, default=60.0, help="seconds each HF baseline is timed for")
    parser.add_argument("--static-batch", type=parse_shape_ints, default={},
                        help=f"static generate batch size per shape (default {STATIC_BATCH})")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--skip-default-model", action="store_true", help="the GGUF is not on this machine")
    parser.add_argument("--greedy-tokens", type=int, default=64)
    parser.add_argument("--profiles", action="store_true", help="host cProfile and a kernel profile per shape")
    parser.add_argument("--trace", default=os.path.join("..", "shared", "data", "azure-llm-2023", "conv.csv"))
    parser.add_argument("--rate-scale", type=float, default=4.0)
    parser.add_argument("--online-requests", type=int, default=400)
    parser.add_argument("--report", nargs="*", help="merge these result files into gpu-bench.md/.json and exit")
    parser.add_argument("--hf-baselines", metavar="SHAPE", help=argparse.SUPPRESS)  # the child of hf_baselines_in_child
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.hf_baselines:
        return hf_baselines_main(args.hf_baselines, args)
    if args.report is not None:
        files = args.report or sorted(glob.glob(os.path.join(args.out, "gpu-run-*.json")))
        report.write(files, args.out)
        return 0
    sections = SECTIONS if args.all else [s for s in args.sections.split(",") if s]
    shapes = [s for s in args.shapes.split(",") if s]
    os.makedirs(args.out, exist_ok=True)
    results = {"environment": environment(), "sections": sections, "shapes": shapes,
               "settings": {"hf_window_s": args.hf_window, "static_batch": args.static_batch}}
    path = os.path.join(args.out, f"gpu-run-{args.tag or '-'.join(sections)}.json")

    def save() -> None:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)

    steps = [("ceilings", lambda: run_ceilings(results)),
             ("engine", lambda: run_engine_sections(results, shapes, sections, args, save)),
             ("correctness", lambda: run_correctness(results, shapes, args)),
             ("online", lambda: run_online(results, args)),
             ("ceilings", lambda: run_attention_kernels(results))]
    for name, step in steps:
        wanted = name in sections or (name == "engine" and {"decode", "offline"} & set(sections))
        if not wanted:
            continue
        try:
            step()
        except Exception as e:  # keep what the other sections measured
            log.exception("section %s failed", name)
            results.setdefault("failures", {})[name] = repr(e)
        save()
    print(report.summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
