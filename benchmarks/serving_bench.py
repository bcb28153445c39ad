"""Issue 14's whole table in one command on one GPU, every number and its baseline from the same run:

    python benchmarks/serving_bench.py --out benchmarks/results --tag h100

1. ceilings: device-to-device copy bandwidth;
2. Llama-3-8B shape (random weights), batch-1 decode at context 1024, as a share of that bandwidth (target >= 85%);
3. Qwen3-0.6B shape (random weights) in-process `generate`: the 256-request offline workload in --runs runs, each
   on fresh prompts (target >= 21,000 output tok/s in every run), and 1,024 requests (no lower than 256);
4. the same engine config behind `fleetserve serve` (its default layout: the engine in a process of its own), the
   same requests sent at once over HTTP, streaming (target >= 90% of in-process at 256 and at 1,024); the section
   http_best_in_thread (not run by default) repeats it with `--engine-process off`, the layout before issue 14;
5. `fleetserve serve` with its defaults on the 256 requests (target within 10% of the best config), then the Azure
   conversation trace: its saturation rate (all requests at once), then replayed at 80% of it (target TTFT p99 < 1 s).

Writes serving-<tag>.json (GPU, torch, commit, every number) and prints the markdown table.
"""

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402

log = logging.getLogger("serving_bench")
SHAPE = "qwen3-0.6b"
# the in-process benchmark's engine config, given to the server as flags so both run the same engine
BEST = {"max_model_len": 4096, "max_num_batched_tokens": 8192, "max_num_seqs": 256}
BEST_FLAGS = ["--max-model-len", "4096", "--max-num-batched-tokens", "8192", "--max-num-seqs", "256",
              "--max-waiting", "4096"]


def warmup_requests(vocab: int) -> list:
    """The untimed warm-up every path gets before its timed runs (in-process and each server alike): 64 requests of
    the offline workload's shape, none of them a timed one. A new engine's first steps pay one-off costs (kernel
    variants compiled on first use, the allocator growing its pools) that no later run pays."""
    return workloads.offline_requests(vocab, count=64, seed=999)


class CompileLog:
    """Counts Triton compilations in this process (the in-process engine's), per phase: a compile inside a timed
    run is a stall of about a second that the run would not see once warm. Each entry is the kernel's name and,
    after a colon, Triton's cache key for it (each argument's type and specialisation: alignment, divisibility by
    16, == 1), so a variant first met mid-run shows which argument made it new, and before it the seconds since the
    phase began (a run's own untimed one-prompt warm-up takes the first fraction of a second of its phase)."""

    def __init__(self):
        self.counts: dict[str, list[str]] = {}
        self._phase, self._phase_start = "start", time.perf_counter()
        try:
            import triton

            triton.knobs.runtime.jit_post_compile_hook = self._hook
        except (ImportError, AttributeError):
            pass

    def close(self) -> None:
        """Stops counting: a later section's engine (Llama-3-8B's, in this process) compiles its own variants,
        which must not land in this log under its last phase."""
        try:
            import triton

            triton.knobs.runtime.jit_post_compile_hook = None
        except (ImportError, AttributeError):
            pass

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, name: str) -> None:
        self._phase, self._phase_start = name, time.perf_counter()

    def _hook(self, *args, **kwargs):
        fn = kwargs.get("fn")
        name = str(getattr(fn, "name", fn))[:40]
        key = str(kwargs.get("key", ""))[:1500]
        at = f"{time.perf_counter() - self._phase_start:.2f} s"
        self.counts.setdefault(self._phase, []).append(f"{at} {name}: {key}" if key else f"{at} {name}")


class GpuWatch:
    """Samples the card once a second while a section runs (nvidia-smi: SM clock, temperature, power, throttle
    reasons), so a slow section can be told apart from a hot or power-capped card. Keeps the lowest clock, the
    highest temperature and power, and every throttle reason seen."""

    FIELDS = "clocks.sm,temperature.gpu,power.draw,clocks_event_reasons.active"

    def __init__(self):
        self.summary: dict = {"samples": 0, "min_sm_mhz": None, "max_temp_c": None, "max_power_w": None,
                              "throttle_reasons": []}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        s = self.summary
        while not self._stop.wait(1.0):
            try:
                line = subprocess.run(["nvidia-smi", f"--query-gpu={self.FIELDS}", "--format=csv,noheader,nounits"],
                                      capture_output=True, text=True, timeout=5).stdout.splitlines()[0]
                clock, temp, power, reasons = (v.strip() for v in line.split(","))
                values = int(clock), int(temp), float(power), int(reasons, 16)
            except (OSError, subprocess.SubprocessError, IndexError, ValueError):
                return  # no nvidia-smi here, or a format it does not know: no samples
            s["samples"] += 1
            s["min_sm_mhz"] = min(values[0], s["min_sm_mhz"] or values[0])
            s["max_temp_c"] = max(values[1], s["max_temp_c"] or values[1])
            s["max_power_w"] = max(values[2], s["max_power_w"] or values[2])
            if values[3] not in (0, 1) and reasons not in s["throttle_reasons"]:  # 1: idle
                s["throttle_reasons"].append(reasons)


def in_process(results: dict, runs: int, diagnose: bool = False) -> None:
    import fleet
    import offline_bench
    from fleetserve.engine.llm_engine import LLMEngine
    from fleetserve.engine.startup_heap import freeze_startup_heap

    vocab = fleet.shape_config(SHAPE)["vocab_size"]
    compiles = CompileLog()
    engine = LLMEngine(fleet.engine_config(model=f"random://{SHAPE}", **BEST))
    entry = results.setdefault("in_process", {})
    compiles.phase = "warm-up"
    workloads.generate_all(engine, warmup_requests(vocab))
    freeze_startup_heap()  # as `fleetserve serve`'s processes do (startup_heap.py says why)
    entry["256"] = []
    for run in range(runs):
        compiles.phase = f"256 run {run}"
        entry["256"].append(offline_bench.fleetserve_throughput(engine, workloads.offline_requests(vocab, seed=run)))
    compiles.phase = "1024"
    entry["1024"] = offline_bench.fleetserve_throughput(engine, workloads.offline_requests(vocab, count=1024,
                                                                                           seed=100))
    compiles.close()
    entry["triton_compiles"] = compiles.counts
    if diagnose:  # where the 1,024-request run's time goes, by step kind
        entry["1024_step_timeline"] = offline_bench.step_timeline(
            engine, workloads.offline_requests(vocab, count=1024, seed=100))
    log.info("in-process: %s", json.dumps(entry))
    del engine
    fleet.free_gpu_memory()


def llama_decode(results: dict) -> None:
    import decode_bench
    import fleet
    import kernel_bench
    from fleetserve.engine.llm_engine import LLMEngine
    from fleetserve.engine.startup_heap import freeze_startup_heap

    copy_gbps = kernel_bench.copy_bandwidth_gbps()
    results["ceilings"] = {"copy_gbps": copy_gbps}
    engine = LLMEngine(fleet.engine_config(model="random://llama-3-8b"))
    freeze_startup_heap()
    results["llama_decode_batch1"] = decode_bench.decode_bench(engine, 1, 1024, copy_gbps)
    log.info("llama decode: %s", json.dumps(results["llama_decode_batch1"]))
    del engine
    fleet.free_gpu_memory()


async def burst(base: str, requests: list, model: str = "bench", stream: bool = True) -> dict:
    """Every request at once, streaming; output tok/s from the requested lengths (ignore_eos makes them exact)."""
    import aiohttp

    async def one(session, r):
        body = {"model": model, "prompt": r.prompt_ids, "max_tokens": r.output_len, "temperature": 0.0,
                "ignore_eos": True, "stream": stream}
        sent, first = time.perf_counter(), None
        async with session.post(f"{base}/v1/completions", json=body) as resp:
            if resp.status != 200:
                return {"error": resp.status}
            async for line in resp.content:
                if first is None and (line.startswith(b"data: {") or not stream):
                    first = time.perf_counter()
                if b'"error"' in line:
                    return {"error": line.decode()[:200]}
        return {"ttft": first - sent, "done": time.perf_counter()}

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=900)) as session:
        start = time.perf_counter()
        out = await asyncio.gather(*(one(session, r) for r in requests))
    ok = [(r, x) for r, x in zip(requests, out) if "error" not in x]
    elapsed = max(x["done"] for _, x in ok) - start
    return {"requests": len(requests), "completed": len(ok), "errors": sorted({str(x["error"]) for x in out
                                                                                 if "error" in x})[:5],
            "seconds": elapsed, "output_tokens_per_s": sum(r.output_len for r, _ in ok) / elapsed,
            "requests_per_s": len(ok) / elapsed}


def served(results: dict, key: str, flags: list[str], work) -> None:
    import online_bench
    from fleetserve.engine.bench import wait_healthy

    port = 8123
    proc = online_bench.start_server(f"random://{SHAPE}", port, os.path.join(OUT_DIR, f"server-{key}.log"),
                                     ["--served-model-name", "bench", *flags])
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_healthy(base, proc, timeout=400))
        work(base, results.setdefault(key, {"flags": flags}))
    finally:
        online_bench.stop_server(proc)


def warm_then_256(base: str, entry: dict, run_256: bool) -> int:
    """A server's untimed warm-up, then (unless skipped) the timed 256-request burst; the model's vocabulary size."""
    import fleet

    vocab = fleet.shape_config(SHAPE)["vocab_size"]
    asyncio.run(burst(base, warmup_requests(vocab)))
    if run_256:
        entry["256"] = asyncio.run(burst(base, workloads.offline_requests(vocab, seed=0)))
    return vocab


def http_best(args):
    def work(base: str, entry: dict) -> None:
        vocab = warm_then_256(base, entry, not args.only_1024)
        entry["1024"] = asyncio.run(burst(base, workloads.offline_requests(vocab, count=1024, seed=100)))
        if args.no_stream_too:  # the same burst without streaming: what the per-token path costs
            entry["1024_no_stream"] = asyncio.run(burst(base, workloads.offline_requests(vocab, count=1024, seed=100),
                                                        stream=False))
        log.info("http best: %s", json.dumps(entry))
    return work


def http_defaults(args):
    def work(base: str, entry: dict) -> None:
        import online_bench

        vocab = warm_then_256(base, entry, not args.only_trace)
        trace = workloads.azure_trace(args.trace, vocab, 1.0, args.trace_requests)
        natural_rate = len(trace) / max(r.arrival_s for r in trace)
        saturation = asyncio.run(burst(base, workloads.azure_trace(args.trace, vocab, 1.0, args.trace_requests,
                                                                  seed=1)))
        entry["trace_saturation"] = saturation
        scale = 0.8 * saturation["requests_per_s"] / natural_rate
        entry["trace_at_80pct"] = asyncio.run(online_bench.replay(
            base, "bench", workloads.azure_trace(args.trace, vocab, scale, args.trace_requests, seed=2),
            per_request=True))
        entry["trace_at_80pct"]["rate_scale"] = scale
        log.info("http defaults: %s", json.dumps(entry))
    return work


def table(r: dict) -> str:
    def get(*keys):
        node = r
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return None
            node = node[k]
        return node

    def fmt(x, spec=",.0f"):
        return "n/a" if x is None else format(x, spec)

    runs = [x["output_tokens_per_s"] for x in get("in_process", "256") or []]
    ip256, ip1024 = (runs[0] if runs else None), get("in_process", "1024", "output_tokens_per_s")
    h256, h1024 = get("http_best", "256", "output_tokens_per_s"), get("http_best", "1024", "output_tokens_per_s")
    d256 = get("http_defaults", "256", "output_tokens_per_s")
    p99 = get("http_defaults", "trace_at_80pct", "ttft_p99_ms")
    share = get("llama_decode_batch1", "bandwidth_fraction")

    def ratio(a, b):
        return None if a is None or b is None else a / b

    def verdict(ok):
        return "n/a" if ok is None else ("met" if ok else "missed")

    rows = [
        ("HTTP / in-process, 256 requests", ">= 90%", f"{fmt(h256)} / {fmt(ip256)} = {fmt(ratio(h256, ip256), '.1%')}",
         verdict(None if ratio(h256, ip256) is None else ratio(h256, ip256) >= 0.9)),
        ("HTTP / in-process, 1,024 requests", ">= 90%",
         f"{fmt(h1024)} / {fmt(ip1024)} = {fmt(ratio(h1024, ip1024), '.1%')}",
         verdict(None if ratio(h1024, ip1024) is None else ratio(h1024, ip1024) >= 0.9)),
        ("in-process 1,024 vs 256", ">= 100%", f"{fmt(ip1024)} / {fmt(ip256)} = {fmt(ratio(ip1024, ip256), '.1%')}",
         verdict(None if ratio(ip1024, ip256) is None else ratio(ip1024, ip256) >= 1.0)),
        ("`serve` defaults / best config (HTTP, 256)", ">= 90%",
         f"{fmt(d256)} / {fmt(h256)} = {fmt(ratio(d256, h256), '.1%')}",
         verdict(None if ratio(d256, h256) is None else ratio(d256, h256) >= 0.9)),
        ("Azure conv trace at 80% of saturation, TTFT p99", "< 1 s", f"{fmt(p99, ',.0f')} ms",
         verdict(None if p99 is None else p99 < 1000)),
        ("Qwen3-0.6B offline, every run", ">= 21,000 tok/s", ", ".join(fmt(x) for x in runs) or "n/a",
         verdict(None if not runs else min(runs) >= 21000)),
        ("Llama-3-8B batch-1 decode, of copy bandwidth", ">= 85%", fmt(share, ".1%"),
         verdict(None if share is None else share >= 0.85)),
    ]
    env = r.get("environment", {})
    head = f"One {env.get('gpu')}, torch {env.get('torch')}, commit {env.get('commit')}, {env.get('date')}\n\n"
    lines = ["| target | wanted | measured (ours / baseline) | |", "|---|---:|---:|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return head + "\n".join(lines) + "\n"


OUT_DIR = "."


def main() -> int:
    global OUT_DIR
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--tag", default="gpu")
    parser.add_argument("--runs", type=int, default=3, help="in-process runs of the 256-request workload")
    parser.add_argument("--trace", default=os.path.join("..", "shared", "data", "azure-llm-2023", "conv.csv"))
    parser.add_argument("--trace-requests", type=int, default=400)
    parser.add_argument("--sections", default="in_process,http_best,http_defaults,decode")
    parser.add_argument("--diagnose", action="store_true",
                        help="also: the in-process 1,024-request run's step timeline")
    parser.add_argument("--no-stream-too", action="store_true",
                        help="http_best: the 1,024-request burst again without streaming")
    parser.add_argument("--only-1024", action="store_true", help="http_best: skip the 256-request burst")
    parser.add_argument("--only-trace", action="store_true", help="http_defaults: skip the 256-request burst")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    OUT_DIR = args.out
    os.makedirs(args.out, exist_ok=True)
    import gpu_bench

    results = {"environment": gpu_bench.environment(), "engine_config": BEST}
    path = os.path.join(args.out, f"serving-{args.tag}.json")
    steps = {"decode": lambda: llama_decode(results),
             "in_process": lambda: in_process(results, args.runs, args.diagnose),
             "http_best": lambda: served(results, "http_best", BEST_FLAGS, http_best(args)),
             "http_best_in_thread": lambda: served(results, "http_best_in_thread",
                                                   [*BEST_FLAGS, "--engine-process", "off"], http_best(args)),
             "http_defaults": lambda: served(results, "http_defaults", [], http_defaults(args))}
    for name in args.sections.split(","):
        try:
            with GpuWatch() as watch:
                steps[name]()
        except Exception as e:  # keep what the other sections measured
            log.exception("section %s failed", name)
            results.setdefault("failures", {})[name] = repr(e)
        results.setdefault("gpu_watch", {})[name] = watch.summary
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
    text = table(results)
    with open(os.path.join(args.out, f"serving-{args.tag}.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
