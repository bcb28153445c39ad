#!/usr/bin/env bash
# The cross-workload evaluation (issue 13): each workload over 10 spot offsets and seeds (--repeats 10), three spot
# pools (two Bamboo AWS clusters and one SkyPilot single-node V100 zone that has no capacity most of the time).
# Run from the repo root: bash benchmarks/results/cross_workload/run.sh
set -euo pipefail
DATA=../shared/data
OUT=benchmarks/results/cross_workload
SPOT=(--spot-trace $DATA/bamboo-spot-preemption/aws-p3-trace.csv --spot-trace $DATA/bamboo-spot-preemption/aws-g4dn-trace.csv
      --spot-trace $DATA/skypilot-spot-traces/spot-traces/availability/1-node/aws-02-15-2023/us-east-1a_v100_1.json)
run() {  # name, then fleetserve simulate arguments
  local name=$1; shift
  .venv/bin/fleetserve simulate "${SPOT[@]}" --repeats 10 --policy all "$@" \
    --json $OUT/$name.json --markdown $OUT/$name.md --plot $OUT/$name.png
}
run azure_conv_l4 --trace $DATA/azure-llm-2023/conv.csv --slo-ttft 2
run mooncake_conversation_h100 --trace $DATA/mooncake-fast25/conversation_trace.jsonl --slo-ttft 2 \
  --profile benchmarks/results/simulation_profile_h100.json --instance-type p5.48xlarge
run mooncake_synthetic_h100 --trace $DATA/mooncake-fast25/synthetic_trace.jsonl --slo-ttft 2 \
  --profile benchmarks/results/simulation_profile_h100.json --instance-type p5.48xlarge
