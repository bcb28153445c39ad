"""The simulator: reproducible for a seed, and each baseline behaves as documented on small synthetic traces."""

import dataclasses
import json
import random
from types import SimpleNamespace

import pytest

from fleetserve import cli
from fleetserve.autoscaler import sim_policies
from fleetserve.autoscaler.control import LoopSettings
from fleetserve.autoscaler.policy import SloTarget
from fleetserve.autoscaler.sim_cluster import SPOT, Counts, SpotPool
from fleetserve.autoscaler.sim_profile import GpuPrices, ReplicaProfile, load_profile
from fleetserve.autoscaler.sim_traces import SpotTrace, TraceRequest, busiest_offset, load_requests, load_spot_trace
from fleetserve.autoscaler.simulator import SimSetup, simulate
from fleetserve.autoscaler.spot import SpotSettings

PROFILE = ReplicaProfile(
    name="synthetic", source="test", gpus_per_replica=1, max_batch=16, kv_cache_tokens=100_000,
    prefill_tokens_per_s=5000.0, decode_batches=(1, 16), decode_seconds=(0.02, 0.04), cold_start_s=30.0,
)
PRICES = GpuPrices("test", on_demand_per_gpu_hour=2.0, spot_per_gpu_hour=0.6, source="test")
REQUIRED_KEYS = {
    "policy", "requests", "ttft_slo_attainment", "feasible_requests", "ttft_slo_attainment_feasible", "itl_slo_attainment", "ttft_p50_s", "ttft_p99_s", "cost_usd",
    "cost_vs_static_ondemand", "lost_requests", "gpu_hours_spot", "gpu_hours_ondemand",
}


def step_trace(low_rate: float, high_rate: float, seconds: int, seed: int = 1) -> list[TraceRequest]:
    """Poisson arrivals at `low_rate` for the first third, `high_rate` for the middle, `low_rate` again."""
    rng, t, requests = random.Random(seed), 0.0, []
    while t < seconds:
        rate = high_rate if seconds / 3 <= t < 2 * seconds / 3 else low_rate
        t += rng.expovariate(rate)
        requests.append(TraceRequest(t, rng.randint(100, 400), rng.randint(20, 80)))
    return requests


def setup_for(requests, pools=(), initial=1, seed=0) -> SimSetup:
    return SimSetup(requests, PROFILE, PRICES, list(pools), slo_ttft_s=2.0, slo_itl_s=0.1, initial_replicas=initial,
                    seed=seed, warmup_s=0.0)


def test_trace_and_spot_trace_loading(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:50.9951690,396,109\n"
                     "2023-11-16 18:15:46.6805900,374,44\n")
    requests = load_requests(trace)
    assert requests[0] == TraceRequest(0.0, 374, 44) and requests[1].arrival_s == pytest.approx(4.3145790)
    events = tmp_path / "events.csv"
    events.write_text("0,add,node1\n0,add,node2\n5000,remove,node1\n9000,add,node3\n")
    membership = load_spot_trace(events)
    assert [membership.count_at(t) for t in (1, 6, 10)] == [2, 1, 2]
    steps = tmp_path / "steps.csv"
    steps.write_text("0,4\n10,4\n10,1\n20,1\n20,3\n")  # each change: two rows at one x, old value first
    held = load_spot_trace(steps)
    assert [held.count_at(t) for t in (5, 15, 25)] == [4, 1, 3]
    assert held.drops_between(0, 30) == 3
    assert busiest_offset(SpotTrace("x", [0, 600, 900], [4, 1, 4]), duration_s=300, step_s=300) == 600


def test_profile_file_round_trip(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({
        "name": "p", "source": "s", "device": "cpu", "max_batch": 8, "prefill_tokens_per_s": 1000,
        "decode_step_s": {"batch": [1, 8], "seconds": [0.01, 0.03]}, "cold_start_s": 5,
    }))
    profile = load_profile(path)
    assert profile.decode_step_s(4) == pytest.approx(0.01 + 0.02 * 3 / 7)
    assert profile.largest_batch_within(0.02) == 4
    path.write_text("{}")
    with pytest.raises(ValueError, match="missing field"):
        load_profile(path)


def test_static_bills_a_fixed_fleet_and_loses_nothing():
    requests = step_trace(1.0, 3.0, 300)
    row, _ = simulate(sim_policies.Static(3), setup_for(requests), 3)
    assert row["lost_requests"] == 0 and row["gpu_hours_spot"] == 0
    end = max(r.arrival_s for r in requests)
    assert 3 * end / 3600 <= row["gpu_hours_ondemand"] <= 3 * (end + 60) / 3600  # billed from t=0 to the last finish
    assert REQUIRED_KEYS <= row.keys()


def test_hpa_scales_up_on_a_queue_and_keeps_the_peak_for_its_five_minute_window():
    requests = step_trace(0.5, 6.0, 600)  # the high phase starts at minute 3.3
    _, timeline = simulate(sim_policies.Hpa(1, 10), setup_for(requests), 1)
    peak = max(timeline.on_demand)
    first_peak = timeline.on_demand.index(peak)
    assert peak > 1 and timeline.minute[first_peak] <= 3.4 + 1
    assert timeline.on_demand[first_peak:first_peak + 5] == [peak] * 5  # the highest wish of 300 s holds
    assert timeline.on_demand[-1] < peak


class FakeCluster:
    """Just what the KPA reads: in-system concurrency and the ready count."""

    def __init__(self):
        self.concurrency, self.ready = 0, 1

    def in_system(self):
        return self.concurrency

    def counts(self, kind, t):
        return Counts(ready=self.ready, starting=0, pending=0)


def test_kpa_panics_within_its_six_second_window_and_holds_for_the_stable_window():
    kpa, cluster = sim_policies.Kpa(1, 50, target_concurrency=10), FakeCluster()
    cluster.concurrency = 10
    for t in range(0, 60, 2):
        assert kpa.decide(cluster, t) == (1, 0)
    cluster.concurrency = 100  # 10x the target: the 6 s panic window sees it long before the 60 s one
    assert [kpa.decide(cluster, t)[0] for t in range(60, 68, 2)][-1] == 10
    cluster.ready, cluster.concurrency = 10, 10
    after = [kpa.decide(cluster, t)[0] for t in range(70, 260, 10)]
    assert after[:6] == [10] * 6  # panic mode never scales down until 60 s without panic
    assert after[6:9] == [5, 2, 1]  # then at most halving per step, down to what the stable window wants


def test_skyserve_falls_back_to_on_demand_when_spot_is_unavailable():
    skyserve = sim_policies.SkyServe(1, 10, target_qps_per_replica=1.0, upscale_delay_s=0)
    cluster = SimpleNamespace(arrival_rate=lambda t, w: 4.0, counts=lambda kind, t: Counts(0, 0, 3 if kind == SPOT else 0))
    skyserve.decide(cluster, 0)
    on_demand, spot = skyserve.decide(cluster, 20)
    assert (on_demand, spot) == (1 + 3, 3 + 1)  # base + one per spot replica not ready; +1 over-provisioned spot


def test_warmup_replay_is_unscored_and_unbilled():
    requests = step_trace(2.0, 2.0, 300)
    cold, _ = simulate(sim_policies.Static(2), setup_for(requests), 2)
    warm, _ = simulate(sim_policies.Static(2), dataclasses.replace(setup_for(requests), warmup_s=120.0), 2)
    assert warm["requests"] == cold["requests"] == len(requests)
    assert warm["gpu_hours_ondemand"] == pytest.approx(cold["gpu_hours_ondemand"], rel=0.05)


def test_the_simulation_is_reproducible_for_a_seed_and_preemptions_cost_requests(tmp_path):
    requests = step_trace(4.0, 8.0, 600)
    dropping = SpotTrace("drops", [0, 200, 260, 400, 460], [4, 1, 4, 0, 4])
    pools = [SpotPool(dropping, 0)]
    settings = LoopSettings(
        min_replicas=1, max_replicas=10, slo=SloTarget(2.0, 0.99), itl_slo_s=0.1, max_num_seqs=16,
        scale_up_stabilization_s=0, scale_down_delay_s=60, spot=SpotSettings(enabled=True, max_share=0.9, on_demand_min=1),
    )
    first, _ = simulate(sim_policies.FleetServe(settings), setup_for(requests, pools, initial=2, seed=7), 2)
    again, _ = simulate(sim_policies.FleetServe(settings), setup_for(requests, pools, initial=2, seed=7), 2)
    assert first == again
    assert first["preemptions"] > 0 and first["gpu_hours_spot"] > 0
    skyserve = sim_policies.SkyServe(1, 10, target_qps_per_replica=1.0)
    sky_row, _ = simulate(skyserve, setup_for(requests, pools, initial=2, seed=7), 2)
    # SkyServe keeps sending to a replica after its notice: requests die with it. We drain on the notice.
    assert sky_row["retried_requests"] >= first["retried_requests"]


def test_cli_writes_json_markdown_and_plot(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n" + "".join(
        f"{r.arrival_s},{r.prompt_tokens},{r.output_tokens}\n" for r in step_trace(1.0, 3.0, 300)))
    spot = tmp_path / "spot.csv"
    spot.write_text("0,4\n100,4\n100,2\n200,2\n200,4\n")
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({
        "name": "synthetic", "source": "test", "device": "cpu", "max_batch": 16, "prefill_tokens_per_s": 5000,
        "decode_step_s": {"batch": [1, 16], "seconds": [0.02, 0.04]}, "cold_start_s": 30,
    }))
    prices = tmp_path / "prices.csv"
    prices.write_text("instance_type,ondemand_usd_per_gpu_hr,spot_usd_per_gpu_hr\ngpu.x,2.0,0.6\ngpu.x,2.2,0.7\n")
    outputs = [tmp_path / name for name in ("a.json", "b.json")]
    for output in outputs:
        assert cli.main([
            "simulate", "--trace", str(trace), "--spot-trace", str(spot), "--policy", "all", "--slo-ttft", "2",
            "--profile", str(profile), "--prices", str(prices), "--instance-type", "gpu.x", "--seed", "3",
            "--json", str(output), "--plot", str(tmp_path / "plot.png"), "--markdown", str(tmp_path / "table.md"),
        ]) == 0
    first, second = (json.loads(o.read_text()) for o in outputs)
    assert first["results"] == second["results"]
    assert [r["policy"] for r in first["results"]] == sim_policies_names()
    for row in first["results"]:
        assert REQUIRED_KEYS <= row.keys()
    assert first["results"][0]["cost_vs_static_ondemand_min"] == 1.0
    assert first["results"][1]["cost_vs_static_ondemand"] == 1.0
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    assert "| fleetserve |" in (tmp_path / "table.md").read_text()


def sim_policies_names() -> list[str]:
    """Every row of `--policy all`: the policies, then the hindsight references (sim_hindsight)."""
    return ["static_ondemand_min", "static_ondemand_peak", "hpa_queue", "knative_kpa", "skyserve_spothedge", "fleetserve",
            "hindsight", "hindsight_fleetserve_split"]
