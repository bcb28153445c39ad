# The spot-pool sets, profiles and ServeGen trace generation shared by the autoscaler's result scripts
# (cross_workload/run.sh, cost_gap/run.sh, slo_misses/run.sh). Sourced from the repo root; ../shared/data is the
# data folder beside the checkout.
DATA=../shared/data
BAMBOO=$DATA/bamboo-spot-preemption
SKY=$DATA/skypilot-spot-traces/spot-traces/availability
ZERO=benchmarks/results/cross_workload/zero_capacity_zone.json  # a zone with no capacity at all: valid input, never placed on
# First set (tune): Bamboo's AWS p3 and g4dn clusters and SkyPilot's single-node V100 zone us-east-1a (empty 83% of the time).
POOLS_TUNE=(--spot-trace $BAMBOO/aws-p3-trace.csv --spot-trace $BAMBOO/aws-g4dn-trace.csv
            --spot-trace $SKY/1-node/aws-02-15-2023/us-east-1a_v100_1.json --spot-trace $ZERO)
# Second set (held out until 1a0ed4a): Bamboo's g4dn.xlarge count trace of us-east-1c and SkyPilot's 16-node V100 zones us-west-2a, us-east-2b.
POOLS_SECOND=(--spot-trace $BAMBOO/aws-spot-instances-g4dn-xlarge-us-east-1c-2020-11-20-1930-to-2020-11-21-2200.csv
              --spot-trace $SKY/16-node/aws-08-27-2023/us-west-2a_v100_1.json
              --spot-trace $SKY/16-node/aws-08-27-2023/us-east-2b_v100_1.json --spot-trace $ZERO)
# Third set: Bamboo's g4dn.xlarge count trace of us-east-1d, SkyPilot's 16-node V100 zone us-west-2c and its 8-node
# V100 zone us-west-2b of October 2022.
POOLS_THIRD=(--spot-trace $BAMBOO/aws-spot-instances-g4dn-xlarge-us-east-1d-2020-11-23-1730-to-2020-11-24-1530.csv
             --spot-trace $SKY/16-node/aws-08-27-2023/us-west-2c_v100_1.json
             --spot-trace $SKY/1-node/aws-10-26-2022/us-west-2b_v100_8.json --spot-trace $ZERO)
# Fourth set: Bamboo's p2.xlarge count trace of us-east-1e, SkyPilot's single-node V100 zones us-west-2a and
# us-east-2a of February 2023.
POOLS_FOURTH=(--spot-trace $BAMBOO/aws-spot-instances-p2-xlarge-us-east-1e-2020-11-23-1700-to-2020-11-24-0700.csv
              --spot-trace $SKY/1-node/aws-02-15-2023/us-west-2a_v100_1.json
              --spot-trace $SKY/1-node/aws-02-15-2023/us-east-2a_v100_1.json --spot-trace $ZERO)
# Fifth set (held out at 37d03c2): SkyPilot's V100 availability traces no other set uses.
POOLS_FIFTH=(--spot-trace $SKY/1-node/aws-02-15-2023/us-east-1c_v100_1.json --spot-trace $SKY/1-node/aws-02-15-2023/us-east-1d_v100_1.json
             --spot-trace $SKY/1-node/aws-02-15-2023/us-east-1f_v100_1.json --spot-trace $SKY/1-node/aws-02-15-2023/us-east-2b_v100_1.json
             --spot-trace $SKY/1-node/aws-02-15-2023/us-west-2b_v100_1.json --spot-trace $SKY/1-node/aws-02-15-2023/us-west-2c_v100_1.json
             --spot-trace $SKY/1-node/aws-10-26-2022/us-west-2a_v100_8.json --spot-trace $ZERO)
# Every pool is an AWS trace and prices are AWS's: a reclaimed instance gets AWS's two-minute interruption notice
# (--notice-s 120 in every run; the simulator's default of 30 s is GCP's).
# FleetServe's settings in every run: an on-demand floor of 1 (an LLMDeployment's default) and up to 90% of the fleet
# on spot (an LLMDeployment's default is 80%, fleetserve simulate's too).
FLEETSERVE_SETTINGS=(--on-demand-min 1 --spot-max-share 0.9)
H100=(--profile benchmarks/results/simulation_profile_h100.json --instance-type p5.48xlarge)

servegen_clients() {  # client population, start hour, hours, output, mean rate, then --lengths traces
  local clients=$1 start=$2 hours=$3 out=$4 rate=$5; shift 5
  nice -n 19 .venv/bin/python -m fleetserve.autoscaler.sim_servegen \
    --clients $DATA/servegen-alibaba-bailian/${clients}_client_windows.csv.gz --start-h "$start" --hours "$hours" \
    --mean-rate "$rate" "$@" --out "$out"
}
