"""The pure scaling policy: load and capacity in, a replica count out. A replica is one whole tensor-parallel
group; ready counts come from the operator's status, which counts a group only when all its pods are ready.

`recommend` answers "how many replicas meet the TTFT SLO right now?" with the queueing model; `stabilize`
turns the stream of recommendations into a scale that rises fast and falls only after the delay.
"""

import dataclasses
import math

from fleetserve.autoscaler.estimate import CapacityEstimate
from fleetserve.autoscaler.queueing import UNSTABLE, backlog_drain_time, waiting_time_quantile


@dataclasses.dataclass(frozen=True)
class SloTarget:
    ttft_s: float
    quantile: float  # e.g. 0.95 for a p95 target
    headroom: float = 0.2  # plan for (1 - headroom) x the SLO so noise and estimate error don't breach it
    # Busy share of slots we plan for: spare capacity absorbs load that grows, or replicas that are preempted,
    # while new replicas are still cold-starting (queueing delay alone only reacts near saturation).
    max_utilization: float = 0.8


@dataclasses.dataclass(frozen=True)
class Load:
    arrival_rate: float  # requests/s
    backlog: float  # requests already queued
    in_flight: float  # requests being served (0 together with no arrivals = idle)


@dataclasses.dataclass(frozen=True)
class Recommendation:
    replicas: int
    predicted_ttft_s: float
    reason: str
    # Of `replicas`, what the arrival rate alone needs (SLO and utilisation cap, no backlog to drain). Replicas
    # beyond it only drain a queue; once it is gone they are not needed, so `stabilize` holds only these.
    sustained: int | None = None

    @property
    def held(self) -> int:
        return self.replicas if self.sustained is None else self.sustained


def service_time_at(load: Load, capacity: CapacityEstimate, replicas: int) -> float:
    """Service time when `replicas` share the load: each replica's prefill share is arrivals x prefill / replicas,
    and decoding only gets the rest of its time (the measured decode part is rescaled from the measured share)."""
    if replicas <= 0:
        return UNSTABLE
    share = load.arrival_rate * capacity.prefill_s / replicas
    if share >= 1:
        return UNSTABLE
    decode_s = capacity.service_time_s - capacity.prefill_s
    return capacity.prefill_s + decode_s * (1 - capacity.prefill_share) / (1 - share)


# A prompt whose own prefill takes more than this share of the SLO target leaves too little time for any queueing:
# no replica count helps it, so the plan reserves at least the other half of the target for the wait.
MAX_PREFILL_SHARE_OF_TARGET = 0.5


def prefill_queue_wait(load: Load, capacity: CapacityEstimate, replicas: int, quantile: float) -> tuple[float, float]:
    """(mean, `quantile`) of the time a prompt waits behind other prompts' chunks on its replica, with `replicas`
    sharing the load. A replica prefills one prompt after another (its chunks go first come first served), so it is
    a single-server queue busy rho = arrivals x prefill / replicas of the time: M/G/1, whose mean wait is
    rho / (1 - rho) x the measured prefill residual (Pollaczek-Khinchine: that residual depends on the prompt-length
    distribution, not on the replica count), and whose tail is approximately P(wait > t) = rho exp(-t rho / mean).
    Nothing measured yet: no wait predicted."""
    rho = load.arrival_rate * capacity.prefill_s / replicas if replicas > 0 else math.inf
    if rho >= 1:
        return UNSTABLE, UNSTABLE
    if rho <= 0 or capacity.prefill_residual_s <= 0:
        return 0.0, 0.0
    mean = rho / (1 - rho) * capacity.prefill_residual_s
    tail = mean / rho * math.log(rho / (1 - quantile)) if rho > 1 - quantile else 0.0
    return mean, tail


def predicted_ttft(load: Load, capacity: CapacityEstimate, replicas: int, quantile: float, target_s: float = math.inf) -> float:
    """TTFT at `quantile` with `replicas` ready: the queueing wait for a slot, then the prefill queue of the replica
    and the prompt's own prefill. The quantile of that sum is taken as the larger of (prefill-queue wait at the
    quantile + mean prefill) and (mean prefill-queue wait + prefill of the prompt at the quantile), the prompt's own
    prefill capped at MAX_PREFILL_SHARE_OF_TARGET of `target_s`: a tail of the sum comes from one of its two terms,
    rarely both."""
    service_s = service_time_at(load, capacity, replicas)
    if service_s == UNSTABLE:
        return UNSTABLE
    servers = replicas * capacity.slots_per_replica
    wait = waiting_time_quantile(load.arrival_rate, service_s, servers, quantile, capacity.service_cv2)
    prefill_wait_mean, prefill_wait_tail = prefill_queue_wait(load, capacity, replicas, quantile)
    own_cap = MAX_PREFILL_SHARE_OF_TARGET * target_s
    mean, tail = min(capacity.prefill_s, own_cap), min(max(capacity.prefill_s, capacity.prefill_tail_s), own_cap)
    return wait + max(prefill_wait_tail + mean, prefill_wait_mean + tail)


def recommend(
    load: Load,
    capacity: CapacityEstimate,
    slo: SloTarget,
    ready_replicas: int,
    cold_start_s: float,
    max_replicas: int,
) -> Recommendation:
    """Smallest replica count whose predicted TTFT meets the SLO with headroom, that stays under the utilisation
    cap and that drains the backlog (including what piles up while new replicas cold-start)."""
    if load.arrival_rate <= 0 and load.backlog <= 0 and load.in_flight <= 0:
        return Recommendation(0, capacity.prefill_s, "idle: no arrivals, queue or running requests", 0)
    target = slo.ttft_s * (1 - slo.headroom)
    # Requests keep piling up on the ready replicas until new ones finish their cold start.
    ready_service_s = service_time_at(load, capacity, ready_replicas)
    ready_rate = 0.0 if ready_service_s == UNSTABLE else ready_replicas * capacity.slots_per_replica / ready_service_s
    backlog = load.backlog + max(0.0, load.arrival_rate - ready_rate) * cold_start_s
    drain_within_s = max(slo.ttft_s, cold_start_s)
    sustained = None
    for replicas in range(1, max_replicas + 1):
        service_s = service_time_at(load, capacity, replicas)
        if service_s == UNSTABLE:
            continue
        ttft = predicted_ttft(load, capacity, replicas, slo.quantile, target)
        utilisation = load.arrival_rate * service_s / (replicas * capacity.slots_per_replica)
        if ttft > target or utilisation > slo.max_utilization:
            continue
        sustained = sustained or replicas
        drain = backlog_drain_time(backlog, load.arrival_rate, service_s, replicas * capacity.slots_per_replica)
        if drain <= drain_within_s:
            queued = f"; {backlog:.0f} queued drain in {drain:.0f}s" if backlog else ""
            return Recommendation(
                replicas, ttft,
                f"p{slo.quantile * 100:g} TTFT {ttft:.2f}s <= {target:.2f}s at {load.arrival_rate:.2f} req/s"
                f" ({capacity.slots_per_replica} slots x {service_s:.1f}s per replica){queued}",
                sustained,
            )
    ttft = predicted_ttft(load, capacity, max_replicas, slo.quantile, target)
    shown = "unbounded" if ttft == UNSTABLE else f"{ttft:.2f}s"
    return Recommendation(max_replicas, ttft, f"SLO not reachable within max={max_replicas}: predicted TTFT {shown}",
                          sustained)


def clamp(replicas: int, min_replicas: int, max_replicas: int) -> int:
    return max(min_replicas, min(max_replicas, replicas))


def stabilize(
    history: list[tuple[float, int, int]], now: float, current: int, up_window_s: float, down_delay_s: float
) -> int:
    """Kubernetes-HPA-style damping over (time, recommended replicas, of those held) history, newest last.

    Scale up to the lowest recommendation of the up window (0 s = at once); scale down only to the highest held
    recommendation of the down delay, so a dip of the load shorter than the delay never removes a replica. Replicas
    recommended only to drain a queue (`Recommendation.sustained`) are not held: when the queue is gone, so is
    their reason, and holding them for the delay paid for a fleet sized for a backlog that no longer existed.
    """
    if not history:
        return current
    up_target = min(n for t, n, _ in history if t >= now - up_window_s) if up_window_s > 0 else history[-1][1]
    down_target = max(history[-1][1], *(held for t, _, held in history if t >= now - down_delay_s))
    if up_target > current:
        return up_target
    if down_target < current:
        return down_target
    return current

