"""Replays a request trace through one policy on the simulated cluster and scores the outcome."""

import dataclasses
import logging
import math
import statistics

from fleetserve.autoscaler.sim_cluster import ON_DEMAND, SPOT, Cluster, SpotPool
from fleetserve.autoscaler.sim_policies import Static
from fleetserve.autoscaler.sim_profile import GpuPrices, ReplicaProfile
from fleetserve.autoscaler.sim_traces import TraceRequest

log = logging.getLogger(__name__)

# After the last arrival, keep simulating until everything finished or this long has passed.
DRAIN_LIMIT_S = 900.0


@dataclasses.dataclass(frozen=True)
class SimSetup:
    requests: list[TraceRequest]
    profile: ReplicaProfile
    prices: GpuPrices
    pools: list[SpotPool]
    slo_ttft_s: float
    slo_itl_s: float
    # Replicas already serving when the warm-up starts, the same count for every autoscaling policy, split between
    # on-demand and spot as that policy's own rules split it (see `simulate`).
    initial_replicas: int
    notice_s: float = 30.0  # preemption notice (GCP gives 30 s, AWS 120 s)
    # The trace's first warmup_s are replayed once before it starts, unscored and unbilled, so every policy meets
    # the trace from a steady state with a metrics history, as a running deployment would.
    warmup_s: float = 300.0
    step_s: float = 0.5
    seed: int = 0
    routing: str = "round_robin"  # what a Kubernetes Service does
    quantile: float = 0.99  # the SLO percentile the metrics report TTFT and prompt length at

    def feasible(self, request: TraceRequest) -> bool:
        """Can this request meet the TTFT SLO at all on this profile: it fits, and its prompt alone prefills in time."""
        return (request.prompt_tokens < self.profile.longest_request
                and self.profile.prefill_s(request.prompt_tokens) <= self.slo_ttft_s)


@dataclasses.dataclass
class Timeline:
    """Per-minute series for the plot."""

    minute: list[float] = dataclasses.field(default_factory=list)
    arrivals_per_s: list[float] = dataclasses.field(default_factory=list)
    on_demand: list[int] = dataclasses.field(default_factory=list)
    spot: list[int] = dataclasses.field(default_factory=list)


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def score(policy_name: str, setup: SimSetup, cluster: Cluster, end_s: float) -> dict:
    """The per-policy result row (keys fixed by issue 5; cost_vs_static_ondemand is filled in by the caller)."""
    done = [r for r in cluster.finished if r.scored]
    total = len(setup.requests)
    ttfts = sorted(r.ttft_s for r in done)
    within_ttft = sum(t <= setup.slo_ttft_s for t in ttfts)
    feasible = sum(1 for r in setup.requests if setup.feasible(r))
    within_feasible = sum(1 for r in done if r.ttft_s <= setup.slo_ttft_s and setup.feasible(r.trace))
    within_itl = sum(r.itl_s <= setup.slo_itl_s for r in done)
    rejected = sum(1 for r in cluster.rejected if r.scored)
    unfinished = total - len(done) - rejected
    retried = sum(1 for r in done if r.retries) + sum(1 for r in cluster.queue if r.retries and r.scored)
    hours_spot = cluster.gpu_hours(SPOT, 0.0, end_s)
    hours_on_demand = cluster.gpu_hours(ON_DEMAND, 0.0, end_s)
    return {
        "policy": policy_name,
        "requests": total,
        "ttft_slo_attainment": within_ttft / total,
        "feasible_requests": feasible,
        "ttft_slo_attainment_feasible": within_feasible / feasible if feasible else math.nan,
        "itl_slo_attainment": within_itl / total,
        "ttft_p50_s": _quantile(ttfts, 0.50),
        "ttft_p99_s": _quantile(ttfts, 0.99),
        "itl_mean_s": statistics.fmean(r.itl_s for r in done) if done else math.nan,
        "cost_usd": hours_on_demand * setup.prices.on_demand_per_gpu_hour + hours_spot * setup.prices.spot_per_gpu_hour,
        "cost_vs_static_ondemand": math.nan,
        "lost_requests": unfinished + retried,
        "retried_requests": retried,
        "unfinished_requests": unfinished,
        "rejected_requests": rejected,
        "preemptions": cluster.preemptions,
        "gpu_hours_spot": hours_spot,
        "gpu_hours_ondemand": hours_on_demand,
    }


def warmup_replay(requests: list[TraceRequest], warmup_s: float) -> list[TraceRequest]:
    """The trace's first `warmup_s`, shifted to end at t=0."""
    return [dataclasses.replace(r, arrival_s=r.arrival_s - warmup_s) for r in requests if r.arrival_s < warmup_s]


def simulate(policy, setup: SimSetup, initial_replicas: int) -> tuple[dict, Timeline]:
    """Runs `policy` over the whole trace; returns its result row and its per-minute timeline.

    The fleet at the start began well before it, so it is serving from the first request, already split the way
    the policy splits that many replicas (a deployment that has been running is in its steady state; starting all
    on-demand would make a spot policy replace most of its fleet during the warm-up). Spot replicas the pools have
    no room for at the start are on-demand instead, as a fallback would have made them.
    """
    cluster = Cluster(setup.profile, setup.pools, setup.notice_s, policy.drains_on_notice, setup.seed,
                      setup.routing, setup.quantile)
    start = -setup.warmup_s
    on_demand, spot = policy.initial_split(initial_replicas) if setup.pools else (initial_replicas, 0)
    placed = cluster.start_serving(start, on_demand, spot)
    policy.started(on_demand + spot - placed, placed)
    timeline = Timeline()
    warmup = warmup_replay(setup.requests, setup.warmup_s)
    arrivals = [(r, False) for r in warmup] + [(r, True) for r in setup.requests]
    last_arrival = setup.requests[-1].arrival_s
    next_request, next_decision, next_sample, t = 0, start, 0.0, start
    while t <= last_arrival + DRAIN_LIMIT_S:
        while next_request < len(arrivals) and arrivals[next_request][0].arrival_s < t + setup.step_s:
            cluster.arrive(*arrivals[next_request])
            next_request += 1
        if t >= next_decision:
            on_demand, spot = policy.decide(cluster, t)
            cluster.set_target(t, ON_DEMAND, on_demand)
            cluster.set_target(t, SPOT, spot if setup.pools else 0)
            next_decision = t + policy.interval_s
        if t >= next_sample:
            timeline.minute.append(t / 60)
            timeline.arrivals_per_s.append(cluster.arrival_rate(t, 60.0))
            timeline.on_demand.append(sum(1 for r in cluster.alive(ON_DEMAND) if r.placed_s is not None))
            timeline.spot.append(sum(1 for r in cluster.alive(SPOT) if r.placed_s is not None and r.noticed_s is None))
            next_sample = t + 60.0
        cluster.step(t, setup.step_s)
        t += setup.step_s
        if next_request == len(arrivals) and len(cluster.finished) + len(cluster.rejected) == len(arrivals):
            break
    log.info("%s: simulated %.0f s, %d preemptions", policy.name, t, cluster.preemptions)
    return score(policy.name, setup, cluster, t), timeline


def smallest_static_fleet(setup: SimSetup, target: float, start: int, upper: int) -> tuple[int, dict, Timeline]:
    """`static_ondemand_min`: the fewest on-demand replicas whose fixed fleet keeps `target` of the feasible
    requests within the TTFT SLO, by doubling from `start` then bisecting (attainment grows with the fleet)."""
    runs: dict[int, tuple[dict, Timeline]] = {}

    def meets(replicas: int) -> bool:
        if replicas not in runs:
            runs[replicas] = simulate(Static(replicas, name="static_ondemand_min"), setup, replicas)
        return runs[replicas][0]["ttft_slo_attainment_feasible"] >= target

    low, high = 0, max(1, start)
    while not meets(high) and high < upper:
        low, high = high, min(upper, 2 * high)
    while high - low > 1:  # meets(high) or high == upper; the answer lies in (low, high]
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    return high, *runs[high]
