"""Checks the policy's prefill-queue model (autoscaler/policy.py, `PrefillQueue`) against the simulator: for the
static on-demand fleet that a cross-workload run found smallest (`static_ondemand_min`), the share of feasible
requests the model predicts over the TTFT SLO at the trace's mean rate, once from the trace's exact prompt lengths
and once through the engine's prompt histogram (its buckets, as the live loop reads them), beside the share
the simulator measured for that fleet.

Run from the repo root (seconds):
  .venv/bin/python benchmarks/prefill_queue_check.py \
      --case ../shared/data/mooncake-fast25/conversation_trace.jsonl \
             benchmarks/results/cross_workload/mooncake_conversation_h100.json \
      --case ../shared/data/mooncake-fast25/synthetic_trace.jsonl \
             benchmarks/results/cross_workload/mooncake_synthetic_h100.json \
      --case ../shared/data/azure-llm-2023/conv.csv benchmarks/results/cross_workload/azure_conv_l4.json \
      --out benchmarks/results/prefill_queue_check.json
"""

import argparse
import json

import numpy as np

from fleetserve.autoscaler.estimate import CapacityEstimate
from fleetserve.autoscaler.policy import Load, PrefillQueue, SloTarget
from fleetserve.autoscaler.prompt_lengths import PromptLengths
from fleetserve.autoscaler.sim_cluster import prompt_histogram
from fleetserve.autoscaler.sim_profile import load_profile
from fleetserve.autoscaler.sim_traces import load_requests


def late_share(lengths: PromptLengths, mean_prefill_s: float, rate: float, speed: float, slo: SloTarget,
               replicas: int) -> float:
    """The model's late share; the mean prefill is the trace's, as the live loop reads it from the histogram's sum."""
    capacity = CapacityEstimate(slots_per_replica=1, service_time_s=1.0, prefill_s=mean_prefill_s,
                                prefill_tokens_per_s=speed, prompt_lengths=lengths)
    return PrefillQueue(Load(rate, 0, 0), capacity, slo).miss_share(replicas, 0.0)


def check(trace: str, result_path: str) -> dict:
    result = json.load(open(result_path))
    setup = result["setup"]
    profile = load_profile(setup["profile"]["path"])
    requests = load_requests(trace)
    prompts = np.sort([r.prompt_tokens for r in requests])
    rate = len(requests) / setup["duration_s"]
    slo = SloTarget(ttft_s=setup["slo_ttft_s"], quantile=setup["slo_percentile"] / 100)
    replicas = setup["static_ondemand_min_replicas"]
    exact = PromptLengths(tuple((float(p), float(p), 1.0 / len(prompts)) for p in prompts))
    bucketed = PromptLengths.from_histogram(prompt_histogram(prompts, profile.longest_request))
    first_repeat = result["repeats"][0]
    rows = first_repeat["results"] if isinstance(first_repeat, dict) else first_repeat
    measured = next(r for r in rows if r["policy"] == "static_ondemand_min")["ttft_slo_attainment_feasible"]
    speed = profile.prefill_tokens_per_s
    mean_prefill_s = float(prompts.mean()) / speed
    return {
        "trace": trace, "result": result_path, "profile": profile.name, "replicas": replicas,
        "mean_rate_rps": round(rate, 3), "slo_ttft_s": slo.ttft_s,
        "late_measured": round(1 - measured, 5),
        "late_predicted_exact_lengths": round(late_share(exact, mean_prefill_s, rate, speed, slo, replicas), 5),
        "late_predicted_histogram": round(late_share(bucketed, mean_prefill_s, rate, speed, slo, replicas), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", nargs=2, action="append", required=True, metavar=("TRACE", "RESULT_JSON"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rows = [check(trace, result) for trace, result in args.case]
    for row in rows:
        print(f"{row['trace']}: {row['replicas']} replicas at {row['mean_rate_rps']} req/s, late: measured "
              f"{row['late_measured']:.2%}, predicted {row['late_predicted_exact_lengths']:.2%} (exact lengths), "
              f"{row['late_predicted_histogram']:.2%} (histogram)")
    json.dump(rows, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
