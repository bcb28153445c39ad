#!/usr/bin/env bash
# Where FleetServe's cost above the hindsight fleet comes from (benchmarks/policy_cost_gap.py), on the three
# workloads whose spot pools have room most of the time (the cross-workload tune pools), 10 repeats each as there;
# the first three steps on the fourth workload where the hindsight fleet stays under 40% (ServeGen M-large on the L4,
# fourth pools); and the first three on a workload whose rate steps up twice within minutes (ServeGen's DeepSeek-R1
# evening ramp on the L4 and the fifth pools, the held-out run of the cross-workload evaluation, read by then).
# Run from the repo root: bash benchmarks/results/cost_gap/run.sh   (about 100 minutes on one core)
set -euo pipefail
DATA=../shared/data
OUT=benchmarks/results/cost_gap
BAMBOO=$DATA/bamboo-spot-preemption
SKY=$DATA/skypilot-spot-traces/spot-traces/availability
POOLS=(--spot-trace $BAMBOO/aws-p3-trace.csv --spot-trace $BAMBOO/aws-g4dn-trace.csv
       --spot-trace $SKY/1-node/aws-02-15-2023/us-east-1a_v100_1.json
       --spot-trace benchmarks/results/cross_workload/zero_capacity_zone.json)
H100=(--profile benchmarks/results/simulation_profile_h100.json --instance-type p5.48xlarge)
gap() {  # name, then fleetserve simulate arguments
  local name=$1; shift
  nice -n 10 .venv/bin/python benchmarks/policy_cost_gap.py --out $OUT/$name.json -- \
    --slo-ttft 2 --notice-s 120 "${POOLS[@]}" "$@"
}
gap azure_conv_l4 --trace $DATA/azure-llm-2023/conv.csv
gap mooncake_conversation_h100 "${H100[@]}" --trace $DATA/mooncake-fast25/conversation_trace.jsonl
gap mooncake_synthetic_h100 "${H100[@]}" --trace $DATA/mooncake-fast25/synthetic_trace.jsonl

GEN=$(mktemp -d)  # the ServeGen-driven traces, as cross_workload/run.sh makes them
trap 'rm -rf "$GEN"' EXIT
nice -n 10 .venv/bin/python -m fleetserve.autoscaler.sim_servegen \
  --clients $DATA/servegen-alibaba-bailian/m-large_client_windows.csv.gz --start-h 35 --hours 3 --mean-rate 4 \
  --lengths $DATA/azure-llm-2023/conv.csv --out $GEN/servegen_mlarge_l4.csv
nice -n 10 .venv/bin/python benchmarks/policy_cost_gap.py --steps 3 \
  --out $OUT/servegen_mlarge_azure_lengths_l4_fourth_pools.json -- --slo-ttft 2 --notice-s 120 \
  --spot-trace $BAMBOO/aws-spot-instances-p2-xlarge-us-east-1e-2020-11-23-1700-to-2020-11-24-0700.csv \
  --spot-trace $SKY/1-node/aws-02-15-2023/us-west-2a_v100_1.json --spot-trace $SKY/1-node/aws-02-15-2023/us-east-2a_v100_1.json \
  --spot-trace benchmarks/results/cross_workload/zero_capacity_zone.json --trace $GEN/servegen_mlarge_l4.csv
nice -n 10 .venv/bin/python -m fleetserve.autoscaler.sim_servegen \
  --clients $DATA/servegen-alibaba-bailian/deepseek-r1_client_windows.csv.gz --start-h 19 --hours 4 --mean-rate 4 \
  --lengths $DATA/azure-llm-2023/conv.csv --out $GEN/servegen_r1_l4.csv
nice -n 10 .venv/bin/python benchmarks/policy_cost_gap.py --steps 3 \
  --out $OUT/servegen_r1_azure_lengths_l4_fifth_pools.json -- --slo-ttft 2 --notice-s 120 \
  $(for zone in us-east-1c us-east-1d us-east-1f us-east-2b us-west-2b us-west-2c; do
      echo --spot-trace $SKY/1-node/aws-02-15-2023/${zone}_v100_1.json; done) \
  --spot-trace $SKY/1-node/aws-10-26-2022/us-west-2a_v100_8.json \
  --spot-trace benchmarks/results/cross_workload/zero_capacity_zone.json --trace $GEN/servegen_r1_l4.csv
