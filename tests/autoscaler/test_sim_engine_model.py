"""The simulated replica follows our engine, and the world around it is not an oracle: chunked prefill, decode
cost growing with context, KV limits, routing, absolute spot pools, drawn cold starts, scraped metrics,
re-prefilled retries, and the honest baselines (static_ondemand_min, feasible requests, repeats)."""

import dataclasses
import json
import random

import pytest

from fleetserve import cli
from fleetserve.autoscaler import sim_policies
from fleetserve.autoscaler.control import LoopSettings
from fleetserve.autoscaler.policy import SloTarget
from fleetserve.autoscaler.sim_cluster import ON_DEMAND, SCRAPE_INTERVAL_S, SPOT, Cluster, SpotPool
from fleetserve.autoscaler.sim_profile import GpuPrices, ReplicaProfile
from fleetserve.autoscaler.sim_traces import SpotTrace, TraceRequest
from fleetserve.autoscaler.simulator import SimSetup, simulate, smallest_static_fleet
from fleetserve.autoscaler.spot import SpotSettings

PROFILE = ReplicaProfile(
    name="synthetic", source="test", gpus_per_replica=1, max_batch=16, kv_cache_tokens=20_000,
    prefill_tokens_per_s=4000.0, decode_batches=(1, 16), decode_seconds=(0.02, 0.04), cold_start_s=30.0,
    max_num_batched_tokens=512, decode_context_tokens=500, decode_s_per_context_token=1e-6,
)
PRICES = GpuPrices("test", on_demand_per_gpu_hour=2.0, spot_per_gpu_hour=0.6, source="test")


def run_one(requests, replicas=1, routing="round_robin", profile=PROFILE, dt=0.5):
    cluster = Cluster(profile, [], notice_s=30, drain_on_notice=True, seed=0, routing=routing)
    cluster.set_target(-100, ON_DEMAND, replicas)
    queue, t = sorted(requests, key=lambda r: r.arrival_s), 0.0
    while t < 600 and len(cluster.finished) + len(cluster.rejected) < len(requests):
        while queue and queue[0].arrival_s < t + dt:
            cluster.arrive(queue.pop(0))
        cluster.step(t, dt)
        t += dt
    return cluster


def test_a_long_prompt_is_prefilled_in_chunks_beside_running_decodes():
    decoding = TraceRequest(0.0, 100, 200)
    long_prompt = TraceRequest(1.0, 8000, 2)  # 2 s of prefill at 4000 tokens/s
    cluster = run_one([decoding, long_prompt])
    done = {r.trace: r for r in cluster.finished}
    # Every step carries the running decode (511 of the 512-token budget left) plus a 511-token prompt chunk.
    assert done[long_prompt].ttft_s == pytest.approx(8000 / 511 * (0.02 + 511 / 4000), rel=0.05)
    # It made 50 tokens before the prompt came and one per chunk step while it was prefilled.
    remaining = 199 - 1.0 / 0.02 - 8000 / 511
    assert done[decoding].finish_s == pytest.approx(done[long_prompt].first_token_s + remaining * 0.02, rel=0.02)


def test_decode_steps_cost_more_with_longer_contexts():
    short, long = run_one([TraceRequest(0, 100, 100)]), run_one([TraceRequest(0, 5000, 100)])
    assert long.finished[0].itl_s > short.finished[0].itl_s + 0.004  # 4900 more context tokens x 1 us


def test_kv_room_bounds_the_batch_and_a_never_fitting_prompt_is_rejected():
    requests = [TraceRequest(0, 4000, 50) for _ in range(6)] + [TraceRequest(0, 20_000, 5)]
    cluster = run_one(requests)
    assert len(cluster.rejected) == 1 and len(cluster.finished) == 6
    starts = sorted(r.admitted_s for r in cluster.finished)
    assert starts[4] > starts[3]  # four of 4050 tokens fill 20 000: the fifth waits for room


def test_round_robin_ignores_load_where_least_loaded_and_ideal_do_not():
    rng = random.Random(0)
    requests = [TraceRequest(i * 0.3, 200, rng.choice([5, 400])) for i in range(200)]
    p99 = {}
    for routing in ("round_robin", "least_loaded", "ideal"):
        ttfts = sorted(r.ttft_s for r in run_one(requests, replicas=2, routing=routing).finished)
        p99[routing] = ttfts[int(0.99 * len(ttfts))]
    assert p99["ideal"] <= p99["least_loaded"] <= p99["round_robin"] + 1e-9


def test_spot_pools_are_absolute_and_a_zero_capacity_zone_holds_nothing():
    zero, four = SpotTrace("zero", [0.0], [0]), SpotTrace("four", [0.0, 100.0], [4, 1])
    pools = [SpotPool(zero, 0.0), SpotPool(four, 0.0)]
    assert [p.capacity(50) for p in pools] == [0, 4] and pools[1].capacity(150) == 1


def test_cold_starts_are_drawn_from_the_profile_distribution():
    profile = dataclasses.replace(PROFILE, cold_start_cached_s=(10.0, 20.0), cold_start_uncached_s=(100.0, 200.0),
                                  cold_start_cached_share=0.5)
    draws = [profile.draw_cold_start(random.Random(seed)) for seed in range(200)]
    assert all(10 <= d <= 20 or 100 <= d <= 200 for d in draws)
    assert 60 < sum(d < 50 for d in draws) < 140


def test_policies_see_metrics_as_of_the_last_scrape():
    cluster = run_one([TraceRequest(0, 100, 10)])
    first = cluster.snapshot(SCRAPE_INTERVAL_S, 60)
    cluster.arrive(TraceRequest(SCRAPE_INTERVAL_S + 1, 100, 10))
    assert cluster.snapshot(SCRAPE_INTERVAL_S + 5, 60) is first  # same scrape: nothing new is visible
    assert cluster.snapshot(2 * SCRAPE_INTERVAL_S, 60).waiting == 1


def test_a_preempted_request_is_prefilled_again_on_another_replica():
    requests = [TraceRequest(0, 2000, 400)]
    cluster = Cluster(PROFILE, [], notice_s=0, drain_on_notice=True, seed=0)
    cluster.set_target(-100, ON_DEMAND, 2)
    cluster.arrive(requests[0])
    cluster.step(0, 1.0)
    holder = next(r for r in cluster.replicas if r.load())
    cluster._kill(holder, 1.0)
    assert cluster.queue[0].prefill_left == 2000 and cluster.queue[0].retries == 1
    cluster.step(1.0, 1.0)
    assert next(r for r in cluster.replicas if r.load()) is not holder


def setup(requests, pools=(), seed=0):
    return SimSetup(requests, PROFILE, PRICES, list(pools), slo_ttft_s=1.0, slo_itl_s=0.1, initial_replicas=1,
                    seed=seed, warmup_s=0.0)


def test_static_min_is_the_smallest_fleet_meeting_the_target_and_infeasible_requests_are_named():
    rng = random.Random(1)
    requests = [TraceRequest(i * 0.25, rng.randint(100, 600), rng.randint(20, 200)) for i in range(1200)]
    requests.append(TraceRequest(300.1, 6000, 5))  # 1.5 s of prefill: can never meet a 1 s SLO
    replicas, row, _ = smallest_static_fleet(setup(requests), 0.99, start=1, upper=16)
    assert row["feasible_requests"] == len(requests) - 1 and row["ttft_slo_attainment_feasible"] >= 0.99
    fewer, _ = simulate(sim_policies.Static(replicas - 1), setup(requests), replicas - 1)
    assert fewer["ttft_slo_attainment_feasible"] < 0.99


def simulate_inputs(tmp_path, requests: int, spot_counts: list[int], seed: int) -> list[str]:
    """A trace (one request every 0.4 s), a spot trace (a count a minute), a profile and prices written to
    `tmp_path`; the `fleetserve simulate` arguments that name them."""
    trace = tmp_path / "trace.csv"
    rng = random.Random(seed)
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n" + "".join(
        f"{i * 0.4},{rng.randint(100, 500)},{rng.randint(10, 60)}\n" for i in range(requests)))
    spot = tmp_path / "spot.json"
    spot.write_text(json.dumps({"metadata": {"gap_seconds": 60}, "data": spot_counts}))
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"name": "p", "source": "t", "device": "cpu", "max_batch": 16, "prefill_tokens_per_s": 4000,
                                   "decode_step_s": {"batch": [1, 16], "seconds": [0.02, 0.04]},
                                   "cold_start": {"cached_s": [10, 20], "uncached_s": [40, 60], "cached_share": 0.5}}))
    prices = tmp_path / "prices.csv"
    prices.write_text("instance_type,ondemand_usd_per_gpu_hr,spot_usd_per_gpu_hr\ngpu.x,2.0,0.6\n")
    return ["simulate", "--trace", str(trace), "--spot-trace", str(spot), "--profile", str(profile),
            "--prices", str(prices), "--instance-type", "gpu.x", "--warmup-s", "0"]


def test_repeats_report_mean_and_worst_per_policy(tmp_path):
    out = tmp_path / "out.json"
    assert cli.main([*simulate_inputs(tmp_path, 600, [3, 3, 0, 3, 1, 3] * 10, seed=2), "--slo-ttft", "2",
                     "--repeats", "3", "--policy", "fleetserve", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    ours = next(s for s in report["summary"] if s["policy"] == "fleetserve")
    assert ours["runs"] == 3 and len(report["repeats"]) == 3
    assert ours["ttft_slo_attainment_feasible_worst"] <= ours["ttft_slo_attainment_feasible_mean"]
    assert len(set(report["setup"]["spot_traces"][0]["offsets_s"])) == 3


def test_spot_replicas_spread_over_zones_as_the_operator_asks():
    big, small, zero = SpotTrace("big", [0.0], [10]), SpotTrace("small", [0.0], [3]), SpotTrace("zero", [0.0], [0])
    cluster = Cluster(PROFILE, [SpotPool(big, 0.0), SpotPool(small, 0.0), SpotPool(zero, 0.0)], notice_s=30,
                      drain_on_notice=True, seed=0)
    cluster.set_target(0.0, SPOT, 8)
    cluster.step(0.0, 0.5)
    # Fewest of ours first while a zone has room: 3 in the small zone, the rest in the big one, none in the empty one.
    held = [sum(1 for r in cluster.replicas if r.pool == i) for i in range(3)]
    assert held == [5, 3, 0]


def test_every_policy_starts_with_the_same_count_split_its_own_way():
    four = SpotTrace("four", [0.0], [4])
    requests = [TraceRequest(float(i), 100, 10) for i in range(20)]
    spot_setup = dataclasses.replace(setup(requests, [SpotPool(four, 0.0)]), initial_replicas=6)
    settings = LoopSettings(
        min_replicas=1, max_replicas=10, slo=SloTarget(1.0, 0.99), itl_slo_s=0.1, max_num_seqs=16,
        scale_up_stabilization_s=0, scale_down_delay_s=300,
        spot=SpotSettings(enabled=True, max_share=0.9, on_demand_min=1))
    ours = sim_policies.FleetServe(settings)
    assert ours.initial_split(6) == (1, 5)
    cluster = Cluster(PROFILE, spot_setup.pools, 30, True, 0)
    # Only 4 spot instances exist: the fifth spot replica starts on-demand, and all six serve at once.
    assert cluster.start_serving(-10.0, 1, 5) == 4
    assert sum(r.is_ready(-10.0) for r in cluster.replicas) == 6
    assert [r.kind for r in cluster.replicas].count(ON_DEMAND) == 2
    assert sim_policies.Hpa(1, 10).initial_split(6) == (6, 0)


def test_the_static_peak_fleet_is_sized_over_the_prompt_lengths_not_their_mean():
    # Same arrivals and mean prompt (1,000 tokens); one trace has a fifth of its prompts near the SLO in prefill.
    slo = SloTarget(ttft_s=1.0, quantile=0.99)
    even = [TraceRequest(i * 0.125, 1000, 50) for i in range(2000)]
    tail = [TraceRequest(i * 0.125, 3600 if i % 5 == 0 else 350, 50) for i in range(2000)]

    def peak_fleet(requests):
        capacity = sim_policies.profile_capacity(PROFILE, requests, itl_slo_s=0.1)
        return sim_policies.static_peak_replicas(capacity, requests, slo, max_replicas=100)

    assert peak_fleet(tail) > peak_fleet(even)
