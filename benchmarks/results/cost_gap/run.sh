#!/usr/bin/env bash
# Where FleetServe's cost above the hindsight fleet comes from (benchmarks/policy_cost_gap.py), on the three
# workloads whose spot pools have room most of the time (the cross-workload tune pools), 10 repeats each as there;
# the first three steps on the fourth workload where the hindsight fleet stays under 40% (ServeGen M-large on the L4,
# fourth pools); and the first three on a workload whose rate steps up twice within minutes (ServeGen's DeepSeek-R1
# evening ramp on the L4 and the fifth pools, the held-out run of the cross-workload evaluation, read by then).
# Run from the repo root: bash benchmarks/results/cost_gap/run.sh   (about 100 minutes on one core)
set -euo pipefail
OUT=benchmarks/results/cost_gap
GEN=$(mktemp -d)  # the ServeGen-driven traces, as cross_workload/run.sh makes them
trap 'rm -rf "$GEN"' EXIT
source benchmarks/results/workloads.sh  # the spot-pool sets, FLEETSERVE_SETTINGS, H100, servegen_clients
gap() {  # name, how many steps, then fleetserve simulate arguments
  local name=$1 steps=$2; shift 2
  nice -n 10 .venv/bin/python benchmarks/policy_cost_gap.py --steps "$steps" --out $OUT/$name.json -- \
    --slo-ttft 2 --notice-s 120 "${FLEETSERVE_SETTINGS[@]}" "$@"
}
gap azure_conv_l4 6 "${POOLS_TUNE[@]}" --trace $DATA/azure-llm-2023/conv.csv
gap mooncake_conversation_h100 6 "${POOLS_TUNE[@]}" "${H100[@]}" --trace $DATA/mooncake-fast25/conversation_trace.jsonl
gap mooncake_synthetic_h100 6 "${POOLS_TUNE[@]}" "${H100[@]}" --trace $DATA/mooncake-fast25/synthetic_trace.jsonl

servegen_clients m-large 35 3 $GEN/servegen_mlarge_l4.csv 4 --lengths $DATA/azure-llm-2023/conv.csv
gap servegen_mlarge_azure_lengths_l4_fourth_pools 3 "${POOLS_FOURTH[@]}" --trace $GEN/servegen_mlarge_l4.csv
servegen_clients deepseek-r1 19 4 $GEN/servegen_r1_l4.csv 4 --lengths $DATA/azure-llm-2023/conv.csv
gap servegen_r1_azure_lengths_l4_fifth_pools 3 "${POOLS_FIFTH[@]}" --trace $GEN/servegen_r1_l4.csv
