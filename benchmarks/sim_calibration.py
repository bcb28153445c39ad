"""Calibrates the simulator's replica model against our real engine: the same arrivals replayed against
`fleetserve serve` (CPU, the default model) and through the simulator with the profile measured on this machine
just before (benchmarks/simulation_profile_measure.py), then the simulated TTFT/ITL percentiles beside the
measured ones. Also replays the GPU benchmark's offline workload (256 requests, lengths uniform 100..1024, all at
t=0) through the H100 profile and compares throughput with what our engine measured on the H100.

Run from the repo root (minutes, scaled down for a 2-core VM):
  .venv/bin/python benchmarks/simulation_profile_measure.py --out /tmp/cpu_profile.json --batches 1,2,4,8,16 \
      --decode-steps 10 --prefill-tokens 512 --scheduling-s 0
  .venv/bin/python benchmarks/sim_calibration.py --cpu-profile /tmp/cpu_profile.json \
      --out benchmarks/results/sim_calibration.json --plot benchmarks/results/sim_calibration.png
"""

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile

from online_bench import replay, stop_server
from workloads import BenchRequest

from fleetserve.autoscaler.sim_cluster import ON_DEMAND, Cluster
from fleetserve.autoscaler.sim_profile import load_profile
from fleetserve.autoscaler.sim_traces import TraceRequest
from fleetserve.engine.bench import percentile, wait_healthy


def arrivals(count: int, rate: float, seed: int) -> list[TraceRequest]:
    """Poisson arrivals with short prompts and outputs: what a CPU replica serves in a minute or two."""
    rng, t, out = random.Random(seed), 0.0, []
    for _ in range(count):
        t += rng.expovariate(rate)
        out.append(TraceRequest(t, rng.randint(16, 128), rng.randint(8, 48)))
    return out


def simulated(profile_path: str, requests: list[TraceRequest], step_s: float = 0.05) -> dict:
    profile = load_profile(profile_path)
    cluster = Cluster(profile, [], notice_s=0, drain_on_notice=True, seed=0)
    cluster.set_target(-1e4, ON_DEMAND, 1)
    pending, t = list(requests), 0.0
    while len(cluster.finished) + len(cluster.rejected) < len(requests) and t < 1e5:
        while pending and pending[0].arrival_s < t + step_s:
            cluster.arrive(pending.pop(0))
        cluster.step(t, step_s)
        t += step_s
    ttft = [r.ttft_s for r in cluster.finished]
    itl = [r.itl_s for r in cluster.finished if r.trace.output_tokens > 1]
    # The simulator's ITL is per request (its mean gap); the measured one is per gap.
    return {"ttft_p50_ms": 1e3 * percentile(ttft, 50), "ttft_p99_ms": 1e3 * percentile(ttft, 99),
            "itl_p50_ms": 1e3 * percentile(itl, 50), "itl_p99_ms": 1e3 * percentile(itl, 99),
            "completed": len(cluster.finished), "duration_s": t}


def measured(requests: list[TraceRequest], port: int, max_num_seqs: int) -> dict:
    log = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-P", "-m", "fleetserve", "serve", "--device", "cpu", "--port", str(port),
                             "--max-num-seqs", str(max_num_seqs), "--served-model-name", "calib"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_healthy(base, proc))
        rng = random.Random(0)
        bench = [BenchRequest([rng.randrange(1000, 20000) for _ in range(r.prompt_tokens)], r.output_tokens, r.arrival_s)
                 for r in requests]
        result = asyncio.run(replay(base, "calib", bench))
    finally:
        stop_server(proc)
    return result


def offline_h100(profile_path: str, gpu_run: str) -> dict:
    """The GPU benchmark's offline workload (benchmarks/workloads.offline_requests) through the H100 profile."""
    rng = random.Random(0)
    requests = [TraceRequest(0.0, rng.randint(100, 1024), rng.randint(100, 1024)) for _ in range(256)]
    result = simulated(profile_path, requests, step_s=0.1)
    engine = json.load(open(gpu_run))["offline"]["llama-3-8b"]["fleetserve"]
    output_tokens = sum(r.output_tokens for r in requests)
    last = result["duration_s"]
    return {"simulated_output_tokens_per_s": output_tokens / last,
            "simulated_max_num_batched_tokens": load_profile(profile_path).max_num_batched_tokens,
            "measured_output_tokens_per_s": engine["output_tokens_per_s"], "measured_source": gpu_run,
            # gpu-run-final.json (commit a3dea02) predates the device-derived budget (cb1a66a): it ran with 2048.
            "measured_max_num_batched_tokens": 2048}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-profile", required=True)
    parser.add_argument("--h100-profile", default="benchmarks/results/simulation_profile_h100.json")
    parser.add_argument("--gpu-run", default="benchmarks/results/gpu-run-final.json")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--port", type=int, default=18311)
    parser.add_argument("--out", required=True)
    parser.add_argument("--plot")
    args = parser.parse_args()
    requests = arrivals(args.requests, args.rate, seed=1)
    profile = json.load(open(args.cpu_profile))
    report = {
        "workload": {"requests": args.requests, "poisson_rate": args.rate, "prompt_tokens": "uniform 16..128",
                     "output_tokens": "uniform 8..48", "model": "builtin://smollm2-135m-instruct", "device": "cpu"},
        "cpu_profile": profile,
        "measured": measured(requests, args.port, profile["max_batch"]),
        "simulated": simulated(args.cpu_profile, requests),
        "h100_offline": offline_h100(args.h100_profile, args.gpu_run),
    }
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = ["ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms"]
        figure, axis = plt.subplots(figsize=(8, 4))
        xs = range(len(keys))
        axis.bar([x - 0.2 for x in xs], [report["measured"][k] for k in keys], 0.4, label="fleetserve serve (measured)")
        axis.bar([x + 0.2 for x in xs], [report["simulated"][k] for k in keys], 0.4, label="simulator")
        axis.set_xticks(list(xs), keys)
        axis.set_ylabel("ms")
        axis.set_title("CPU, SmolLM2-135M: measured vs simulated (same arrivals)")
        axis.legend()
        figure.tight_layout()
        figure.savefig(args.plot, dpi=100)
    print(json.dumps({k: report[k] for k in ("measured", "simulated", "h100_offline")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
