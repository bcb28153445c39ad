#!/usr/bin/env bash
# The cross-workload evaluation (issue 13): each workload over 10 spot offsets and seeds (--repeats 10), all policies
# and the hindsight reference.
# Run from the repo root: bash benchmarks/results/cross_workload/run.sh   (about 90 minutes on 2 cores)
#
# Tune set: the workloads looked at while the policy was changed. Azure conversation on the L4 is the one the first
# version was tuned on; both Mooncake traces were run while the prefill-queue term was written; the ServeGen run with
# Azure lengths on the L4 was meant to be held out, but its first run (a residual estimate that ran away to max) was
# looked at and the estimate changed, so it moved here. The three runs on the second pool set (Azure x8, ServeGen
# mixed lengths, Mooncake on those pools) were held out until 1a0ed4a; the round after it diagnosed every workload,
# its fixes came partly from them, so they are tune runs now too. ServeGen M-mid on the third pool set was the
# held-out run of the policy frozen at c490841; the round that planned prefill over the prompt-length distribution
# (91f8cef) looked at it, so it is a tune run now. ServeGen M-large on the fourth pool set was the held-out set of
# 91f8cef/79286ab, run once and read then; its numbers were known when the next round changed the policy, so it is
# a tune run too.
# Held-out set: defined at 37d03c2, before any policy was run on it, from data no other run used (finer prompt
# buckets were tried on the tune set then and dropped before the held-out runs came; the policy run here is that of
# ac2decd, frozen before this set was chosen): ServeGen's DeepSeek-R1 client population (its one day, 19:00-23:00,
# the evening ramp, where the rate grows about fourfold), on a fifth spot-pool set (every AWS V100 availability
# trace of SkyPilot's no run used: the single-node zones us-east-1c, us-east-1d, us-east-1f, us-east-2b,
# us-west-2b and us-west-2c of February 2023, the 8-GPU zone us-west-2a of October 2022, and the empty zone), once
# on the L4 with Azure conversation lengths, once on the H100 with Mooncake conversation lengths.
# Nothing in the policy is fitted to any of them; docs/autoscaler.md lists every constant and its reason.
set -euo pipefail
# The commit the results belong to; the simulator and the policy must be as committed there.
git diff --quiet HEAD -- autoscaler src/fleetserve/api benchmarks/results/simulation_profile.json \
  benchmarks/results/simulation_profile_h100.json || { echo "commit autoscaler/ first: the results name a commit" >&2; exit 1; }
COMMIT=$(git rev-parse --short HEAD)
OUT=benchmarks/results/cross_workload
GEN=$(mktemp -d)  # ServeGen-driven traces are generated here, not committed (derived from shared data)
trap 'rm -rf "$GEN"' EXIT
source benchmarks/results/workloads.sh  # the five spot-pool sets, FLEETSERVE_SETTINGS, H100, servegen_clients
run() {  # name, then fleetserve simulate arguments
  local name=$1; shift
  nice -n 19 .venv/bin/fleetserve simulate --repeats 10 --policy all --slo-ttft 2 --notice-s 120 "${FLEETSERVE_SETTINGS[@]}" "$@" \
    --json $OUT/$name.json --markdown $OUT/$name.md --plot $OUT/$name.png
}
# ServeGen (Alibaba Bailian): M-small day 2, 05:00-09:00, the morning ramp (the rate about doubles), scaled to a mean.
servegen() {  # output, mean rate, then --lengths traces
  local out=$1 rate=$2; shift 2
  servegen_clients m-small 29 4 "$out" "$rate" "$@"
}

# --- tune set ---
run azure_conv_l4 "${POOLS_TUNE[@]}" --trace $DATA/azure-llm-2023/conv.csv
run mooncake_conversation_h100 "${POOLS_TUNE[@]}" "${H100[@]}" --trace $DATA/mooncake-fast25/conversation_trace.jsonl
run mooncake_synthetic_h100 "${POOLS_TUNE[@]}" "${H100[@]}" --trace $DATA/mooncake-fast25/synthetic_trace.jsonl

servegen $GEN/servegen_l4.csv 4 --lengths $DATA/azure-llm-2023/conv.csv
run servegen_azure_lengths_l4 "${POOLS_SECOND[@]}" --trace $GEN/servegen_l4.csv

run azure_conv_x8_h100 "${POOLS_SECOND[@]}" "${H100[@]}" --trace $DATA/azure-llm-2023/conv.csv --rate-scale 8
# Clients take Azure conversation and Mooncake conversation lengths in turn: short chat beside long-context requests.
servegen $GEN/servegen_mix.csv 8 --lengths $DATA/azure-llm-2023/conv.csv --lengths $DATA/mooncake-fast25/conversation_trace.jsonl
run servegen_mix_h100 "${POOLS_SECOND[@]}" "${H100[@]}" --trace $GEN/servegen_mix.csv
run mooncake_conversation_h100_held_out_pools "${POOLS_SECOND[@]}" "${H100[@]}" --trace $DATA/mooncake-fast25/conversation_trace.jsonl

# ServeGen M-mid, day 1, 11:00-14:00 (a dip, then the rate rises by a third), 8 req/s; clients take Azure
# conversation and Mooncake synthetic lengths in turn. The held-out run until 91f8cef.
servegen_clients m-mid 11 3 $GEN/servegen_mmid.csv 8 --lengths $DATA/azure-llm-2023/conv.csv \
  --lengths $DATA/mooncake-fast25/synthetic_trace.jsonl
run servegen_mmid_h100_third_pools "${POOLS_THIRD[@]}" "${H100[@]}" --trace $GEN/servegen_mmid.csv

# ServeGen M-large, day 2, 11:00-14:00, on the fourth pool set (the held-out set of 91f8cef): 8 req/s on the H100
# with clients taking Azure conversation, Mooncake conversation and Mooncake synthetic lengths in turn; 4 req/s on
# the L4 with Azure lengths.
servegen_clients m-large 35 3 $GEN/servegen_mlarge_mix.csv 8 --lengths $DATA/azure-llm-2023/conv.csv \
  --lengths $DATA/mooncake-fast25/conversation_trace.jsonl --lengths $DATA/mooncake-fast25/synthetic_trace.jsonl
run servegen_mlarge_h100_fourth_pools "${POOLS_FOURTH[@]}" "${H100[@]}" --trace $GEN/servegen_mlarge_mix.csv
servegen_clients m-large 35 3 $GEN/servegen_mlarge_l4.csv 4 --lengths $DATA/azure-llm-2023/conv.csv
run servegen_mlarge_azure_lengths_l4_fourth_pools "${POOLS_FOURTH[@]}" --trace $GEN/servegen_mlarge_l4.csv

# --- held-out set ---
# ServeGen DeepSeek-R1, 19:00-23:00, on the fifth pool set: 4 req/s on the L4 with Azure conversation lengths, 8 req/s
# on the H100 with Mooncake conversation lengths.
servegen_clients deepseek-r1 19 4 $GEN/servegen_r1_l4.csv 4 --lengths $DATA/azure-llm-2023/conv.csv
run servegen_r1_azure_lengths_l4_fifth_pools "${POOLS_FIFTH[@]}" --trace $GEN/servegen_r1_l4.csv
servegen_clients deepseek-r1 19 4 $GEN/servegen_r1_h100.csv 8 --lengths $DATA/mooncake-fast25/conversation_trace.jsonl
run servegen_r1_mooncake_lengths_h100_fifth_pools "${POOLS_FIFTH[@]}" "${H100[@]}" --trace $GEN/servegen_r1_h100.csv

nice -n 19 .venv/bin/python benchmarks/cross_workload_table.py $OUT "$COMMIT" > $OUT/README.md
