"""The policies the simulator compares: ours (the real control.tick) and four baselines, each reduced to
"every `interval_s`, look at the cluster and set on-demand and spot targets".

Baselines, as configured here (docs/autoscaler.md explains each choice):
- static: a fixed on-demand fleet sized for the trace's peak minute;
- hpa: Kubernetes HPA on average queue length per pod (15 s sync, 10% tolerance, 300 s scale-down window,
  scale-up limited to max(4 pods, 100%) per step), on-demand;
- kpa: Knative KPA on concurrency (2 s tick, 60 s stable and 6 s panic window, panic at 200% of ready
  capacity, target 70% of a replica's batch slots), on-demand;
- skyserve: SkyServe's request-rate autoscaler with SpotHedge placement (20 s decisions over a 60 s QPS window,
  300 s upscale and 1200 s downscale delay, spot spread over pools, +1 over-provisioned spot replica, one
  on-demand replica for every spot replica not ready); clients retry what preemptions lose (no draining).
"""

import collections
import dataclasses
import math

from fleetserve.api.placement import split_replicas
from fleetserve.autoscaler.control import LoopMemory, LoopSettings, Observed, tick
from fleetserve.autoscaler.estimate import CapacityEstimate
from fleetserve.autoscaler.metrics import MetricsUnavailable
from fleetserve.autoscaler.policy import Load, SloTarget, recommend
from fleetserve.autoscaler.prompt_lengths import PromptLengths
from fleetserve.autoscaler.sim_cluster import ON_DEMAND, SPOT, Cluster, prompt_histogram
from fleetserve.autoscaler.sim_profile import ReplicaProfile
from fleetserve.autoscaler.sim_traces import TraceRequest

METRICS_WINDOW_S = 60.0  # the live loop's default rate window (FLEETSERVE_METRICS_WINDOW_S)


def profile_capacity(profile: ReplicaProfile, requests: list[TraceRequest], itl_slo_s: float) -> CapacityEstimate:
    """What one replica sustains on this trace's average request, from the profile (the baselines' sizing), with
    the trace's prompt lengths in the engine's histogram buckets, as our policy would measure them.

    Slots are bounded by the ITL SLO and by how many average requests fit the KV cache. The service time is the
    stall-free one (prefill + output x decode step); `service_time_at` stretches its decode part by the prefill
    share of the replica count it is asked about, as it does for measured estimates.
    """
    prompt = sum(r.prompt_tokens for r in requests) / len(requests)
    output = sum(r.output_tokens for r in requests) / len(requests)
    kv_slots = int(profile.kv_cache_tokens / (prompt + output))
    slots = max(1, min(profile.largest_batch_within(itl_slo_s), kv_slots))
    prefill_s = profile.prefill_s(round(prompt))
    lengths = PromptLengths.from_histogram(prompt_histogram([r.prompt_tokens for r in requests], profile.longest_request))
    return CapacityEstimate(slots, prefill_s + output * profile.decode_step_s(slots), prefill_s, prefill_share=0.0,
                            prefill_tokens_per_s=profile.prefill_tokens_per_s, prompt_lengths=lengths)


def peak_rate(requests: list[TraceRequest], window_s: float = 60.0) -> float:
    """Highest arrival rate over any `window_s` of the trace."""
    arrivals = [r.arrival_s for r in requests]
    best, start = 0, 0
    for end, t in enumerate(arrivals):
        while arrivals[start] <= t - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best / window_s


def static_peak_replicas(capacity: CapacityEstimate, requests: list[TraceRequest], slo: SloTarget, max_replicas: int) -> int:
    """Replicas that hold the SLO at the trace's peak minute, by the same queueing model our policy uses."""
    load = Load(peak_rate(requests), backlog=0, in_flight=1)
    return recommend(load, capacity, slo, max_replicas, cold_start_s=0, max_replicas=max_replicas).replicas


class OnDemandOnly:
    """The start of a run for a policy that uses no spot: every initial replica is on-demand."""

    def initial_split(self, replicas: int) -> tuple[int, int]:
        return replicas, 0

    def started(self, on_demand: int, spot: int) -> None:
        pass


@dataclasses.dataclass
class Static(OnDemandOnly):
    replicas: int
    name: str = "static_ondemand_peak"
    interval_s: float = 3600.0
    drains_on_notice: bool = True

    def decide(self, cluster: Cluster, t: float) -> tuple[int, int]:
        return self.replicas, 0


@dataclasses.dataclass
class Hpa(OnDemandOnly):
    min_replicas: int
    max_replicas: int
    target_waiting_per_pod: float = 2.0
    tolerance: float = 0.1
    down_window_s: float = 300.0
    name: str = "hpa_queue"
    interval_s: float = 15.0
    drains_on_notice: bool = True
    _current: int = 0
    _history: list = dataclasses.field(default_factory=list)

    def decide(self, cluster: Cluster, t: float) -> tuple[int, int]:
        counts = cluster.counts(ON_DEMAND, t)
        self._current = self._current or counts.ready + counts.starting or self.min_replicas
        ready = max(1, counts.ready)
        ratio = (cluster.waiting() / ready) / self.target_waiting_per_pod
        wanted = self._current if abs(ratio - 1) <= self.tolerance else math.ceil(ready * ratio)
        wanted = max(self.min_replicas, min(self.max_replicas, wanted, max(self._current + 4, 2 * self._current)))
        self._history = [(s, n) for s, n in self._history if s > t - self.down_window_s] + [(t, wanted)]
        self._current = wanted if wanted > self._current else max(n for _, n in self._history)
        return self._current, 0


@dataclasses.dataclass
class Kpa(OnDemandOnly):
    min_replicas: int
    max_replicas: int
    target_concurrency: float
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    max_scale_down_rate: float = 2.0
    name: str = "knative_kpa"
    interval_s: float = 2.0
    drains_on_notice: bool = True
    _samples: collections.deque = dataclasses.field(default_factory=collections.deque)
    _current: int = 0
    _panic_until: float = -1.0

    def decide(self, cluster: Cluster, t: float) -> tuple[int, int]:
        self._samples.append((t, cluster.in_system()))
        while self._samples[0][0] <= t - self.stable_window_s:
            self._samples.popleft()
        stable = sum(c for _, c in self._samples) / len(self._samples)
        recent = [c for s, c in self._samples if s > t - self.panic_window_s]
        panic = sum(recent) / len(recent)
        ready = max(1, cluster.counts(ON_DEMAND, t).ready)
        self._current = self._current or self.min_replicas
        want_stable = math.ceil(stable / self.target_concurrency)
        want_panic = math.ceil(panic / self.target_concurrency)
        if want_panic / ready >= self.panic_threshold:
            self._panic_until = t + self.stable_window_s
        if t < self._panic_until:
            wanted = max(self._current, want_panic)  # panic mode never scales down
        else:
            wanted = max(want_stable, math.floor(self._current / self.max_scale_down_rate))
        self._current = max(self.min_replicas, min(self.max_replicas, wanted))
        return self._current, 0


@dataclasses.dataclass
class SkyServe:
    min_replicas: int
    max_replicas: int
    target_qps_per_replica: float
    qps_window_s: float = 60.0
    upscale_delay_s: float = 300.0
    downscale_delay_s: float = 1200.0
    base_on_demand: int = 1
    overprovision: int = 1
    name: str = "skyserve_spothedge"
    interval_s: float = 20.0
    drains_on_notice: bool = False
    _target: int = 0
    _up_since: float | None = None
    _down_since: float | None = None

    def initial_split(self, replicas: int) -> tuple[int, int]:
        """SkyServe's own split of a target: its on-demand base, the rest on spot (plus its over-provisioning)."""
        base = min(self.base_on_demand, replicas)
        return base, replicas - base + (self.overprovision if replicas > base else 0)

    def started(self, on_demand: int, spot: int) -> None:
        self._target = max(self.min_replicas, on_demand + spot - (self.overprovision if spot else 0))

    def decide(self, cluster: Cluster, t: float) -> tuple[int, int]:
        self._target = self._target or self.min_replicas
        wanted = max(self.min_replicas, min(self.max_replicas, math.ceil(cluster.arrival_rate(t, self.qps_window_s) / self.target_qps_per_replica)))
        # SkyServe changes the target only after the wish has held for the whole delay.
        self._up_since = (self._up_since if self._up_since is not None else t) if wanted > self._target else None
        self._down_since = (self._down_since if self._down_since is not None else t) if wanted < self._target else None
        if self._up_since is not None and t - self._up_since >= self.upscale_delay_s:
            self._target, self._up_since = wanted, None
        if self._down_since is not None and t - self._down_since >= self.downscale_delay_s:
            self._target, self._down_since = wanted, None
        spot_wanted = max(0, self._target - self.base_on_demand)
        spot_ready = cluster.counts(SPOT, t).ready
        fallback = max(0, spot_wanted - spot_ready)  # dynamic on-demand fallback
        return self.base_on_demand + fallback, spot_wanted + self.overprovision


class FleetServe:
    """Our policy: the very control.tick the operator runs, fed the cluster's Prometheus-equivalent snapshot."""

    name = "fleetserve"
    interval_s = 5.0
    drains_on_notice = True

    def __init__(self, settings: LoopSettings):
        self.settings = settings
        self.memory = LoopMemory()
        self._preemptions_seen = 0

    def initial_split(self, replicas: int) -> tuple[int, int]:
        """What the operator renders for this many replicas without a plan (api.placement.split_replicas)."""
        split = split_replicas(replicas, self.settings.spot.on_demand_min, self.settings.spot.enabled,
                               self.settings.spot.max_share)
        return split.on_demand, split.spot

    def started(self, on_demand: int, spot: int) -> None:
        pass

    def decide(self, cluster: Cluster, t: float) -> tuple[int, int]:
        on_demand, spot = cluster.counts(ON_DEMAND, t), cluster.counts(SPOT, t)
        observed = Observed(
            ready=on_demand.ready + spot.ready, spot_ready=spot.ready,
            on_demand_up=on_demand.ready + on_demand.starting, spot_starting=spot.starting,
        )
        snapshot = cluster.snapshot(t, METRICS_WINDOW_S)
        if snapshot.replicas_reporting == 0:
            snapshot = MetricsUnavailable("no replica is serving yet")
        new_preemptions, self._preemptions_seen = cluster.preemptions - self._preemptions_seen, cluster.preemptions
        result = tick(self.settings, self.memory, snapshot, observed, new_preemptions, t)
        if result.plan is None:
            return on_demand.ready + on_demand.starting, spot.ready + spot.starting + spot.pending
        return result.plan.on_demand, result.plan.spot
